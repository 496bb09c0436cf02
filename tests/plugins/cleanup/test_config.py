"""``[plugins.cleanup]``: durations, defaults, invalid values and the outbox folder."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from framework_cleanup.config import CleanupConfig, load_config, outbox_path, to_seconds

from framework.errors import ConfigError

if TYPE_CHECKING:
    from framework.settings import Settings


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(0, 0.0), (90, 90.0), (1.5, 1.5), ("90s", 90.0), ("1h30m", 5400.0), ("36h", 129600.0), ("7d", 604800.0)],
)
def test_to_seconds(value: Any, seconds: float) -> None:
    assert to_seconds(value) == seconds


@pytest.mark.parametrize("value", ["-1h", -5, "soon", "7 days", "d", "1.2.3d", float("inf")])
def test_to_seconds_refuses(value: Any) -> None:
    with pytest.raises(ValueError, match="duration"):
        to_seconds(value)


def test_defaults(settings: Settings) -> None:
    config = load_config(settings)
    assert config == CleanupConfig()
    assert (config.queue, config.abandoned_seconds, config.claim_seconds) == ("low", 86400.0, 60.0)
    assert (config.tmp_prefix, config.uploads_prefix) == ("tmp/", "uploads/")
    assert config.grace_for("tmp", 5.0) == 5.0


def test_values_from_settings(settings: Settings) -> None:
    settings = settings.replace(
        plugins={"cleanup": {"grace": {"tmp": "2h", "outbox": 60}, "abandoned_after": "2d", "claim_ttl": 30}}
    )
    config = load_config(settings)
    assert (config.grace_for("tmp", 0), config.grace_for("outbox", 0)) == (7200.0, 60.0)
    assert (config.abandoned_seconds, config.claim_seconds) == (172800.0, 30.0)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"grace": {"tmp": "forever"}}, "grace"),
        ({"abandoned_after": "-1h"}, "abandoned_after"),
        ({"claim_ttl": 0.5}, "claim_ttl"),
        ({"queue": " "}, "queue"),
        ({"tmp_prefix": "tmp"}, "tmp_prefix"),
        ({"uploads_prefix": "/uploads/"}, "uploads_prefix"),
        ({"schedule": {}}, "schedule"),
    ],
)
def test_invalid_values_name_the_setting(settings: Settings, section: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=rf"\[plugins.cleanup\].*{message}"):
        load_config(settings.replace(plugins={"cleanup": section}))


def test_outbox_path(settings: Settings) -> None:
    assert outbox_path(settings, CleanupConfig()) == settings.data_path / "outbox"
    email = settings.replace(plugins={"email": {"outbox_dir": "mail"}})
    assert outbox_path(email, CleanupConfig()) == settings.data_path / "mail"
    assert outbox_path(email, CleanupConfig(outbox_dir="/var/spool/out")).as_posix() == "/var/spool/out"
