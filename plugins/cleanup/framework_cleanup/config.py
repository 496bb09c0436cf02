"""Settings of the cleanup plugin: the ``[plugins.cleanup]`` section, decoded into :class:`CleanupConfig`.

Example (``framework.toml``)::

    [plugins.cleanup]
    schedules = { tokens = "@every 30m", uploads = "0 3 * * *" }   # sweeper name -> cron spec
    grace = { tmp = "12h", outbox = "3d" }                          # sweeper name -> minimum age
    disabled = ["outbox"]
    abandoned_after = "48h"
    workflows_abandoned_after = "14d"

Durations are seconds (a number), Go durations (``"90m"``, ``"1h30m"``) or days (``"7d"``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from framework.scheduler.cron import parse_duration

if TYPE_CHECKING:
    from framework import Settings

__all__ = ("PLUGIN_NAME", "CleanupConfig", "load_config", "outbox_path", "to_seconds")

PLUGIN_NAME = "cleanup"
"""The plugin's entry-point name: its settings section ``[plugins.cleanup]`` and its Redis keys' prefix."""


def to_seconds(value: float | str) -> float:
    """Turn a duration setting into seconds: a number, a Go duration (``"36h"``) or days (``"7d"``).

    Raises:
        ValueError: the value is not a duration >= 0; the message says why.
    """
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("d") and text[:-1].replace(".", "", 1).isdigit():
            seconds = float(text[:-1]) * 86400
        else:
            seconds = parse_duration(text)
    else:
        seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"duration {value!r} is invalid: it must be >= 0")
    return seconds


class CleanupConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How and when sweepers run. Set by the user; read by the plugin.

    Attributes:
        schedules: sweeper name -> cron spec or ``@every <duration>``, replacing the sweeper's own.
        grace: sweeper name -> minimum age of what it removes (the time to live of ``tmp`` objects,
            the age of stale ``outbox`` files), replacing the sweeper's own.
        disabled: sweepers that get no cron entry and cannot be run.
        queue: queue of the ``cleanup:run`` tasks.
        abandoned_after: an upload whose record has not reached ``done`` this long after it was
            created is abandoned, and its files are removed.
        tmp_prefix: storage prefix of temporary uploads.
        uploads_prefix: storage prefix of the images plugin's uploads; neither prefix may hold the other.
        outbox_dir: folder of stale ``.eml`` files; relative paths are inside the data directory.
            Default: the email plugin's ``outbox_dir`` (``outbox``).
        claim_ttl: how long a run's claim on one object lasts; two runs never both count an
            object, and an object claimed by a run that died is free again after this long.
        workflows_abandoned_after: a workflow still running this long after it was created, with no step
            live (pending, active, scheduled, retry, aggregating) and none archived within this time, is
            abandoned: the ``workflows`` sweeper ends it (cancelled; its records then expire).
    """

    schedules: dict[str, str] = msgspec.field(default_factory=dict)
    grace: dict[str, float | str] = msgspec.field(default_factory=dict)
    disabled: list[str] = msgspec.field(default_factory=list)
    queue: str = "low"
    abandoned_after: float | str = "24h"
    tmp_prefix: str = "tmp/"
    uploads_prefix: str = "uploads/"
    outbox_dir: str | None = None
    claim_ttl: float | str = "1m"
    workflows_abandoned_after: float | str = "30d"

    def __post_init__(self) -> None:
        for name, value in self.grace.items():
            _check_duration(f"grace[{name!r}]", value)
        _check_duration("abandoned_after", self.abandoned_after)
        if _check_duration("workflows_abandoned_after", self.workflows_abandoned_after) < 60:
            raise ValueError(
                f"workflows_abandoned_after={self.workflows_abandoned_after!r} is invalid: it must be at least 1 minute"
            )
        if _check_duration("claim_ttl", self.claim_ttl) < 1:
            raise ValueError(f"claim_ttl={self.claim_ttl!r} is invalid: it must be at least 1 second")
        if not self.queue.strip():
            raise ValueError("queue='' is invalid: name a queue")
        for name in ("tmp_prefix", "uploads_prefix"):
            prefix = getattr(self, name)
            if not prefix.endswith("/") or prefix.startswith("/") or "//" in prefix:
                raise ValueError(f"{name}={prefix!r} is invalid: use a relative folder ending in '/', like 'tmp/'")
        if self.tmp_prefix.startswith(self.uploads_prefix) or self.uploads_prefix.startswith(self.tmp_prefix):
            raise ValueError(
                f"tmp_prefix={self.tmp_prefix!r} and uploads_prefix={self.uploads_prefix!r} are invalid: "
                "one folder holds the other, so the tmp sweeper would remove uploads after its grace period; "
                "use two separate folders"
            )

    @property
    def abandoned_seconds(self) -> float:
        """``abandoned_after`` in seconds."""
        return to_seconds(self.abandoned_after)

    @property
    def workflows_abandoned_seconds(self) -> float:
        """``workflows_abandoned_after`` in seconds."""
        return to_seconds(self.workflows_abandoned_after)

    @property
    def claim_seconds(self) -> float:
        """``claim_ttl`` in seconds."""
        return to_seconds(self.claim_ttl)

    def grace_for(self, name: str, default: float) -> float:
        """The grace period of sweeper ``name`` in seconds: the setting, else ``default``."""
        value = self.grace.get(name)
        return default if value is None else to_seconds(value)


def _check_duration(label: str, value: float | str) -> float:
    try:
        return to_seconds(value)
    except ValueError as exc:
        raise ValueError(f"{label}={value!r} is invalid: {exc}") from None


def load_config(settings: Settings) -> CleanupConfig:
    """Decode ``[plugins.cleanup]`` from ``settings``.

    Raises:
        framework.errors.ConfigError: a value is invalid; the message names it.
    """
    return settings.plugin_config(PLUGIN_NAME, CleanupConfig)


def outbox_path(settings: Settings, config: CleanupConfig) -> Path:
    """The email outbox folder: ``config.outbox_dir``, else ``[plugins.email] outbox_dir``, in the data dir."""
    folder = config.outbox_dir
    if folder is None:
        email = settings.plugins.get("email", {})
        configured = email.get("outbox_dir") if isinstance(email, dict) else None
        folder = configured if isinstance(configured, str) and configured else "outbox"
    return settings.data_path / Path(folder).expanduser()
