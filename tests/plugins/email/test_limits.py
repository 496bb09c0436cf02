"""The provider's limit on ``email:send``: built from ``[plugins.email]``, checked, and kept by real workers.

The last test runs two ``framework worker`` processes with the ``resend`` backend against a local stand-in
for Resend that answers ``429`` to any request above its rate in a sliding one-second window, and expects
every email sent exactly once with no ``429`` at all.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest
from framework_email import hooks
from framework_email.config import DEFAULT_RATE_LIMITS, EmailConfig, provider_limit
from framework_email.tasks import SEND_EMAIL, send_email, send_email_task, send_email_task_for

from framework.errors import ConfigError
from framework.limits import applied_limits
from framework.plugins.manager import get_plugin_manager
from framework.settings import Settings
from tests.framework.worker_app import ROOT, env_for, stop_process, wait_until

if TYPE_CHECKING:
    from pathlib import Path

    from tests.fixtures.resend_api import ResendApi


def _settings(**email: Any) -> Settings:
    return Settings(plugins={"email": {"mail_from": "Shop <shop@example.com>", **email}})


def _limit_of(settings: Settings) -> tuple[str, str, int] | None:
    """(name, rate, concurrency) of the limit on the task type the plugin registers, or None."""
    (task,) = hooks.register_task_types(settings)
    assert task.type == SEND_EMAIL
    if not task.limits:
        assert task is send_email_task
        return None
    (limit,) = task.limits
    return limit.name or "", str(limit.rate) if limit.rate else "", limit.concurrency or 0


def test_resend_keeps_just_under_its_documented_default_rate() -> None:
    assert DEFAULT_RATE_LIMITS["resend"] == "5/3s"  # Resend's 2/s, less room for a request's way out
    assert _limit_of(_settings(backend="resend")) == ("email-provider", "5/3s", 0)


@pytest.mark.parametrize("backend", ["outbox", "smtp", "postmark"])
def test_other_backends_have_no_limit_by_default(backend: str) -> None:
    assert _limit_of(_settings(backend=backend)) is None


@pytest.mark.parametrize(
    ("email", "expected"),
    [
        ({"backend": "resend", "rate_limit": "10/s"}, ("email-provider", "10/s", 0)),
        ({"backend": "resend", "rate_limit": "9/1.1s"}, ("email-provider", "9/1.1s", 0)),
        ({"backend": "smtp", "rate_limit": "100/min", "concurrency_limit": 4}, ("email-provider", "100/min", 4)),
        ({"backend": "smtp", "concurrency_limit": 2, "limit_name": "mail.relay"}, ("mail.relay", "", 2)),
        ({"backend": "resend", "rate_limit": "", "concurrency_limit": 3}, ("email-provider", "", 3)),
    ],
)
def test_the_limit_on_the_task_type_has_the_configured_values(
    email: dict[str, Any], expected: tuple[str, str, int]
) -> None:
    assert _limit_of(_settings(**email)) == expected


@pytest.mark.parametrize("off", ["", "none", "None", " off "])
def test_an_empty_or_none_rate_turns_the_limit_off(off: str) -> None:
    assert _limit_of(_settings(backend="resend", rate_limit=off)) is None


def test_framework_limit_settings_change_the_email_limit_by_its_name() -> None:
    settings = _settings(backend="resend").replace(limits={"email-provider": {"rate": "5/s", "burst": 3}})
    (task,) = hooks.register_task_types(settings)
    (applied,) = applied_limits(task.limits, task.type, None, settings.limits)
    assert (applied.name, str(applied.rate), applied.burst, applied.concurrency) == ("email-provider", "5/s", 3, 0)


@pytest.mark.parametrize(
    ("email", "message"),
    [
        ({"rate_limit": "2/x"}, "setting plugins.email.rate_limit='2/x' is invalid"),
        ({"rate_limit": "two per second"}, "setting plugins.email.rate_limit='two per second' is invalid"),
        ({"rate_limit": "0/s"}, "setting plugins.email.rate_limit='0/s' is invalid"),
        ({"concurrency_limit": -1}, "setting plugins.email.concurrency_limit=-1 is invalid"),
        ({"rate_limit": "1/s", "limit_name": "email provider"}, "setting plugins.email.limit_name='email provider'"),
    ],
)
def test_bad_limit_settings_are_rejected_naming_the_setting(email: dict[str, Any], message: str) -> None:
    settings = _settings(backend="resend", **email)
    with pytest.raises(ConfigError, match=re.escape(message)):
        hooks.register_task_types(settings)
    with pytest.raises(ConfigError, match=r"plugins\.email"):
        provider_limit(EmailConfig(backend="resend", **email))


def test_a_concurrency_limit_of_another_type_is_named_by_the_section() -> None:
    with pytest.raises(ConfigError, match=r"plugins\.email\.concurrency_limit"):
        _settings(backend="resend", concurrency_limit="many").plugin_config("email", EmailConfig)


def test_doctor_checks_the_limit_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESEND_API_KEY", "re_test")
    settings = _settings(backend="resend", rate_limit="fast")
    pm = get_plugin_manager(settings.replace(load_plugins=["email"]))
    with pytest.raises(ConfigError, match=r"plugins\.email\.rate_limit='fast'"):
        hooks.check_config(settings, pm)


def test_the_limited_task_type_keeps_everything_else() -> None:
    limited = send_email_task_for(EmailConfig(backend="resend"))
    assert limited is not send_email_task
    for name in ("type", "payload", "handler", "queue", "max_retry", "timeout", "description"):
        assert getattr(limited, name) == getattr(send_email_task, name)


# -- real workers against a provider that refuses requests above its rate --------------------------------


def _start_worker(settings: Settings, log: Path, api_key: str) -> subprocess.Popen[bytes]:
    """``framework worker`` with the email plugin and ``settings``; its output goes to ``log``."""
    env = env_for(settings, FRAMEWORK_LOAD_PLUGINS="email", RESEND_API_KEY=api_key)
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "framework", "worker"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )


EMAILS = 14
"""Emails the two workers send at 2 a second: seven seconds of sending, enough for the rate to be held throughout."""


async def test_two_workers_at_the_default_rate_send_every_email_once_without_a_429_from_a_2_per_second_api(
    settings: Any, client: Any, redis: Any, schema: Any, resend_api: ResendApi, tmp_path: Path
) -> None:
    resend_api.limit_rate(2, per=1.0)  # Resend's documented default: 2 requests a second
    email = {"backend": "resend", "mail_from": "Shop <shop@example.com>", "resend": {"api_url": resend_api.url}}
    s = settings.replace(plugins={"email": email}, heartbeat_interval=0.5)
    procs = [_start_worker(s, tmp_path / f"w{i}.log", resend_api.api_key) for i in range(2)]
    try:

        async def both_alive() -> bool:
            return int(await redis.zcard(schema.alive)) == 2

        await wait_until(both_alive, timeout=30)
        ids = [
            (await send_email(client, f"user{n}@example.com", f"Hello {n}", "welcome", {"name": f"U{n}"})).id
            for n in range(EMAILS)
        ]

        async def all_sent() -> bool:
            return resend_api.statuses().count(200) >= len(ids)

        with contextlib.suppress(AssertionError):  # what was refused is reported below, with its time
            await wait_until(all_sent, timeout=60, interval=0.2)
    finally:
        for proc in procs:
            stop_process(proc)
    requests = list(resend_api.requests)
    times = [r.at for r in requests]
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(times)]
    spans = [round(b - a, 3) for a, b in zip(times, times[2:], strict=False)]
    print(f"{len(requests)} requests; gaps between arrivals (s): {gaps}; shortest span of three: {min(spans)}")
    refused = [(round(r.at - times[0], 3), r.headers.get("idempotency-key")) for r in requests if r.status == 429]
    assert not refused, f"answered 429 (seconds after the first request, key): {refused}"
    keys = [r.headers.get("idempotency-key") for r in requests]
    assert sorted(keys) == sorted(f"email-send/{i}" for i in ids)  # each email exactly once
    assert sorted(r.json["to"][0] for r in requests) == sorted(f"user{n}@example.com" for n in range(EMAILS))
