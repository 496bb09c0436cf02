"""The ``email:send`` handler when a template raises or an SMTP server refuses some recipients.

Runs the real handler against a real aiosmtpd server whose handler answers each ``RCPT`` from a script, and
against the session's Valkey, where the handler records who already has a partly refused email:

- a template that raises while rendering (any exception) is archived at once, naming the template;
- a recipient refused for now (4xx, greylisting) is retried, and the retry sends the email only to the
  recipients who do not have it yet, with the same ``Message-ID``;
- recipients refused for good (5xx) are named, and archive the task once no temporary refusal is left.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest
import structlog
from aiosmtpd.controller import Controller
from framework_email.backends import EmailDeliveryError
from framework_email.tasks import DELIVERED_TTL, SEND_EMAIL, SendEmail, delivered_key, send_email_task

from framework.context import TaskContext
from framework.errors import SkipRetry
from framework.services import Services
from framework.settings import Settings
from tests.fixtures.smtp import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from redis.asyncio import Redis

    from framework.protocol.keys import Schema

ADA, BOB, CAROL = "ada@example.test", "bob@example.test", "carol@example.test"
GREYLISTED = "450 4.2.0 greylisted, try again later"
UNKNOWN = "550 5.1.1 no such user"


@pytest.fixture(autouse=True)
def _no_mail_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MAIL_FROM", "RESEND_API_KEY", "SMTP_USERNAME", "SMTP_PASSWORD"):
        monkeypatch.delenv(name, raising=False)


def _ctx(services: Services, task_id: str, retried: int = 0) -> TaskContext:
    return TaskContext(
        id=task_id,
        type=SEND_EMAIL,
        queue="default",
        retried=retried,
        max_retry=3,
        deadline=time.time() + 60,
        headers={},
        logger=structlog.get_logger(),
        services=services,
    )


# -- rendering ------------------------------------------------------------------------------------


async def test_a_template_that_raises_while_rendering_is_archived_naming_the_template(tmp_path: Path) -> None:
    app = tmp_path / "templates"
    (app / "email").mkdir(parents=True)
    (app / "email" / "ratio.txt").write_text("Average: {{ total / count }}\n", encoding="utf-8")
    settings = Settings(data_dir=str(tmp_path / "data"), templates_dir=str(app))
    services = Services(settings=settings, redis=None, schema=None, client=None, registry=None)  # type: ignore[arg-type]
    payload = SendEmail(to=ADA, subject="S", template="ratio", data={"total": 10, "count": 0})
    with pytest.raises(SkipRetry, match=r"'ratio' \(email/ratio\.txt\) failed to render: ZeroDivisionError"):
        await send_email_task.handler(_ctx(services, "zero"), payload)
    assert not (tmp_path / "data" / "outbox").exists()


# -- recipients refused by the SMTP server --------------------------------------------------------


class _ScriptedRcpt:
    """An aiosmtpd handler answering ``RCPT`` from a script: per address, the replies of its next attempts.

    An address without a scripted reply left is accepted. Each accepted message is kept with its envelope.
    """

    def __init__(self, script: dict[str, list[str]]) -> None:
        self.script = script
        self.delivered: list[list[str]] = []
        self.message_ids: list[str] = []

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:  # noqa: N802
        replies = self.script.get(address)
        if replies:
            return replies.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.delivered.append(list(envelope.rcpt_tos))
        for line in envelope.content.decode().splitlines():
            if line.lower().startswith("message-id:"):
                self.message_ids.append(line.split(":", 1)[1].strip())
        return "250 Message accepted"


@pytest.fixture
def smtp_script() -> Iterator[tuple[_ScriptedRcpt, int]]:
    """A scripted SMTP server; the test fills ``script`` before sending."""
    handler = _ScriptedRcpt({})
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield handler, controller.port
    finally:
        controller.stop()


@pytest.fixture
def smtp_services(tmp_path: Path, redis: Redis, schema: Schema, smtp_script: tuple[_ScriptedRcpt, int]) -> Services:
    """Services with the smtp backend pointed at the scripted server and this test's Redis namespace."""
    section = {
        "backend": "smtp",
        "mail_from": "Acme <hello@acme.test>",
        "smtp": {"host": "127.0.0.1", "port": smtp_script[1], "timeout": 5},
    }
    settings = Settings(data_dir=str(tmp_path / "data"), plugins={"email": section})
    return Services(settings=settings, redis=redis, schema=schema, client=None, registry=None)  # type: ignore[arg-type]


def _payload(to: list[str]) -> SendEmail:
    return SendEmail(to=to, subject="Hi", template="welcome", data={"name": "Ada"})


async def test_a_recipient_refused_for_now_is_retried_without_sending_again_to_the_others(
    smtp_services: Services, smtp_script: tuple[_ScriptedRcpt, int], redis: Redis, schema: Schema
) -> None:
    server, _ = smtp_script
    server.script[BOB] = [GREYLISTED]
    payload = _payload([ADA, BOB])

    with pytest.raises(EmailDeliveryError) as first:
        await send_email_task.handler(_ctx(smtp_services, "grey"), payload)
    assert not isinstance(first.value, SkipRetry)
    assert BOB in str(first.value)
    assert "450" in str(first.value)
    assert server.delivered == [[ADA]]
    key = delivered_key(schema, "default", "grey")
    assert await redis.smembers(key) == {ADA.encode()}
    assert 0 < await redis.ttl(key) <= DELIVERED_TTL

    await send_email_task.handler(_ctx(smtp_services, "grey", retried=1), payload)
    assert server.delivered == [[ADA], [BOB]]
    assert server.message_ids == ["<grey@acme.test>", "<grey@acme.test>"]


async def test_a_retry_refused_again_for_now_still_leaves_out_the_recipients_who_have_it(
    smtp_services: Services, smtp_script: tuple[_ScriptedRcpt, int]
) -> None:
    server, _ = smtp_script
    server.script[BOB] = [GREYLISTED, GREYLISTED]
    payload = _payload([ADA, BOB])

    with pytest.raises(EmailDeliveryError, match=BOB):
        await send_email_task.handler(_ctx(smtp_services, "twice"), payload)
    with pytest.raises(EmailDeliveryError, match=BOB) as second:
        await send_email_task.handler(_ctx(smtp_services, "twice", retried=1), payload)
    assert f"delivered to {ADA}" in str(second.value)
    await send_email_task.handler(_ctx(smtp_services, "twice", retried=2), payload)
    assert server.delivered == [[ADA], [BOB]]


async def test_recipients_refused_for_good_are_named_and_archive_once_nothing_is_left_to_retry(
    smtp_services: Services, smtp_script: tuple[_ScriptedRcpt, int]
) -> None:
    server, _ = smtp_script
    server.script[BOB] = [GREYLISTED]
    server.script[CAROL] = [UNKNOWN, UNKNOWN]
    payload = _payload([ADA, BOB, CAROL])

    with pytest.raises(EmailDeliveryError) as first:
        await send_email_task.handler(_ctx(smtp_services, "mixed"), payload)
    assert BOB in str(first.value)
    assert f"{CAROL}: {UNKNOWN}" in str(first.value)

    with pytest.raises(SkipRetry) as second:
        await send_email_task.handler(_ctx(smtp_services, "mixed", retried=1), payload)
    assert f"{CAROL}: {UNKNOWN}" in str(second.value)
    assert BOB not in str(second.value).split("delivered to")[0]
    assert server.delivered == [[ADA], [BOB]]


async def test_a_recipient_refused_for_good_beside_accepted_ones_archives_at_once(
    smtp_services: Services, smtp_script: tuple[_ScriptedRcpt, int]
) -> None:
    server, _ = smtp_script
    server.script[CAROL] = [UNKNOWN]
    with pytest.raises(SkipRetry, match=f"{CAROL}: {UNKNOWN}"):
        await send_email_task.handler(_ctx(smtp_services, "unknown"), _payload([ADA, CAROL]))
    assert server.delivered == [[ADA]]
