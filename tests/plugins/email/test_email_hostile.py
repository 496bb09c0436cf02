"""The email plugin under bad data and faults: addresses, headers, attachments, templates, settings, replies."""

from __future__ import annotations

import asyncio
import email
import email.policy
import time
from typing import TYPE_CHECKING, Any

import pytest
from aiosmtpd.controller import Controller
from framework_email.backends import EmailDeliveryError, OutboundEmail, OutboxBackend, ResendBackend, SmtpBackend
from framework_email.config import SmtpConfig, load_config
from framework_email.message import AttachmentFile, build_message
from framework_email.render import EmailRenderer, EmailTemplateError, RenderedEmail
from framework_email.service import EmailService

from framework.errors import ConfigError, SkipRetry
from framework.settings import Settings
from tests.fixtures.resend_api import ScriptedResponse
from tests.fixtures.smtp import free_port
from tests.framework.worker_app import wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator
    from email.message import EmailMessage
    from pathlib import Path

    from tests.fixtures.resend_api import ResendApi

BODIES = RenderedEmail(html=None, text="Hello\n")
ADDRESSES = {"From": "hello@acme.test", "To": "ada@example.test"}


@pytest.fixture(autouse=True)
def _no_mail_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MAIL_FROM", "RESEND_API_KEY", "SMTP_USERNAME", "SMTP_PASSWORD"):
        monkeypatch.delenv(name, raising=False)


def _message(**overrides: Any) -> EmailMessage:
    fields: dict[str, Any] = {"sender": "hello@acme.test", "to": "ada@example.test", "subject": "Hi"}
    fields.update(overrides)
    return build_message(bodies=BODIES, key="task-1", **fields)


class _AsciiServer:
    """An aiosmtpd handler that keeps each message with its envelope; the server has no SMTPUTF8."""

    def __init__(self) -> None:
        self.received: list[tuple[list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.received.append((list(envelope.rcpt_tos), envelope.original_content))
        return "250 OK"


@pytest.fixture
def ascii_smtp() -> Iterator[tuple[_AsciiServer, int]]:
    handler = _AsciiServer()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port(), enable_SMTPUTF8=False)
    controller.start()
    try:
        yield handler, controller.port
    finally:
        controller.stop()


# -- addresses ------------------------------------------------------------------------------------


async def test_an_internationalized_domain_reaches_a_server_without_smtputf8(
    ascii_smtp: tuple[_AsciiServer, int],
) -> None:
    server, port = ascii_smtp
    message = _message(to="Jörg <jorg@bücher.example>")
    backend = SmtpBackend(SmtpConfig(host="127.0.0.1", port=port, timeout=5))

    await backend.send(OutboundEmail(message=message, key="task-1"))

    [(envelope, raw)] = server.received
    assert envelope == ["jorg@xn--bcher-kva.example"]
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert [(a.display_name, a.addr_spec) for a in parsed["To"].addresses] == [("Jörg", "jorg@xn--bcher-kva.example")]
    assert not parsed["To"].defects


@pytest.mark.parametrize("name", ["Acme Inc.", "J. R. R. Tolkien", "Mr. Smith"])
def test_a_display_name_with_a_period_is_an_address(name: str) -> None:
    message = _message(sender=f"{name} <hello@acme.test>", to=f"{name} <ada@example.test>")
    parsed = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)
    for header in ("From", "To"):
        assert [(a.display_name, a.addr_spec) for a in parsed[header].addresses] == [(name, ADDRESSES[header])]


def test_a_from_with_two_addresses_is_refused_rather_than_cut_to_the_first() -> None:
    with pytest.raises(SkipRetry, match="From"):
        _message(sender="hello@acme.test, billing@acme.test")


# -- subject --------------------------------------------------------------------------------------


@pytest.mark.parametrize("subject", ["Hi\x00there", "Hi \x1b[31mred", "Hi\x7f", "Hi\x08"])
def test_a_subject_with_control_characters_is_refused_naming_it(subject: str) -> None:
    with pytest.raises(SkipRetry, match="Subject"):
        _message(subject=subject)


def test_a_subject_with_a_tab_and_any_unicode_is_kept() -> None:
    parsed = email.message_from_bytes(_message(subject="Grüße\tan alle 👋").as_bytes(), policy=email.policy.default)
    assert parsed["Subject"] == "Grüße\tan alle 👋"


# -- attachments ----------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["image/png\x00", "text/plain\x1bx", "image /png", "a/b c", "multipart/mixed"])
def test_an_attachment_type_that_is_not_one_content_type_is_refused(content_type: str) -> None:
    with pytest.raises(SkipRetry, match=r"attachment 'file\.bin' has an invalid content type"):
        _message(attachments=[AttachmentFile("file.bin", b"\x00data", content_type)])


@pytest.mark.parametrize("content_type", ["", "message/rfc822"])
def test_an_attached_email_reaches_the_recipient_byte_for_byte(content_type: str) -> None:
    forwarded = "From: bob@example.test\r\nSubject: Grüße\r\n\r\nthe original, ü\r\n".encode()
    message = _message(attachments=[AttachmentFile("forward.eml", forwarded, content_type)])

    parsed = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)
    [part] = parsed.iter_attachments()
    assert part.get_filename() == "forward.eml"
    assert part.get_payload(decode=True) == forwarded


def test_an_attachment_type_with_parameters_is_kept() -> None:
    message = _message(attachments=[AttachmentFile("notes.txt", b"hi", "text/plain; charset=utf-8")])
    [part] = message.iter_attachments()
    assert (part.get_content_type(), part.get_param("charset")) == ("text/plain", "utf-8")


# -- settings -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mail_from", ["Acme", "Acme <>", "hello@acme.test, other@acme.test"])
@pytest.mark.parametrize("backend", ["outbox", "smtp"])
def test_a_sender_that_is_not_one_address_is_a_config_error_naming_it(
    tmp_path: Path, backend: str, mail_from: str
) -> None:
    settings = Settings(data_dir=str(tmp_path), plugins={"email": {"backend": backend, "mail_from": mail_from}})
    with pytest.raises(ConfigError, match="mail_from"):
        EmailService.from_settings(settings)


def test_a_sender_from_the_environment_is_checked_too(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path), plugins={"email": {"backend": "smtp"}})
    with pytest.raises(ConfigError, match="MAIL_FROM"):
        EmailService.from_settings(settings, environ={"MAIL_FROM": "not an address"})


@pytest.mark.parametrize(
    ("smtp", "named"),
    [({"port": 70000}, "port"), ({"port": 0}, "port"), ({"timeout": 0}, "timeout"), ({"timeout": -1}, "timeout")],
)
def test_smtp_settings_that_can_never_work_are_config_errors(tmp_path: Path, smtp: dict[str, Any], named: str) -> None:
    settings = Settings(data_dir=str(tmp_path), plugins={"email": {"backend": "smtp", "smtp": smtp}})
    with pytest.raises(ConfigError, match=named):
        load_config(settings)


def test_a_resend_api_url_that_is_not_http_is_a_config_error(tmp_path: Path) -> None:
    section = {"backend": "resend", "mail_from": "hello@acme.test", "resend": {"api_url": "api.resend.test"}}
    settings = Settings(data_dir=str(tmp_path), plugins={"email": section})
    with pytest.raises(ConfigError, match="api_url"):
        load_config(settings)


def test_a_template_folder_that_does_not_exist_is_a_config_error(tmp_path: Path) -> None:
    section = {"mail_from": "hello@acme.test", "template_dirs": [str(tmp_path / "tempaltes")]}
    settings = Settings(data_dir=str(tmp_path), plugins={"email": section})
    with pytest.raises(ConfigError, match=r"template_dirs.*tempaltes"):
        EmailService.from_settings(settings)


# -- Resend replies -------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [{}, [], {"id": None}, {"object": "email"}])
async def test_a_success_reply_without_an_email_id_is_a_delivery_error(resend_api: ResendApi, body: Any) -> None:
    resend_api.reply(200, body)
    with pytest.raises(EmailDeliveryError, match="id"):
        await ResendBackend(resend_api.api_key).send(OutboundEmail(message=_message(), key="task-1"))


async def test_a_success_reply_that_is_not_json_is_a_delivery_error(resend_api: ResendApi) -> None:
    resend_api.script(ScriptedResponse(status=200, body="<html>ok</html>", content_type="text/html"))
    with pytest.raises(EmailDeliveryError):
        await ResendBackend(resend_api.api_key).send(OutboundEmail(message=_message(), key="task-1"))


# -- templates ------------------------------------------------------------------------------------


async def test_a_template_file_that_is_not_utf8_is_permanent_and_named(tmp_path: Path) -> None:
    (tmp_path / "email").mkdir()
    (tmp_path / "email" / "legacy.html").write_bytes("<p>Grüße {{ name }}</p>".encode("latin-1"))
    renderer = EmailRenderer([tmp_path])
    with pytest.raises(EmailTemplateError, match=r"'legacy' \(email/legacy\.html\) is broken: not UTF-8"):
        await renderer.render("legacy", {"name": "Ada"})


# -- outbox ---------------------------------------------------------------------------------------


async def test_two_attempts_at_once_at_one_email_leave_one_whole_file(tmp_path: Path) -> None:
    backend = OutboxBackend(tmp_path)
    message = build_message(
        sender="hello@acme.test",
        to="ada@example.test",
        subject="Hi",
        bodies=RenderedEmail(None, "x" * 500_000),
        key="k",
    )
    outbound = OutboundEmail(message=message, key="k")
    for _ in range(10):  # the writes overlap in threads; each round gives them another chance to collide
        results = await asyncio.gather(*(backend.send(outbound) for _ in range(8)), return_exceptions=True)
        assert results == [str(tmp_path / "k.eml")] * 8
    assert [p.name for p in tmp_path.iterdir()] == ["k.eml"]
    assert (tmp_path / "k.eml").read_bytes() == message.as_bytes()


async def test_a_template_that_loops_for_long_leaves_the_event_loop_free(tmp_path: Path) -> None:
    (tmp_path / "email").mkdir()
    spin = "{% for i in range(n) %}{% endfor %}{{ ended() }}done\n"
    (tmp_path / "email" / "spin.txt").write_text(spin, encoding="utf-8")
    renderer = EmailRenderer([tmp_path])
    ended: list[float] = []

    def end() -> str:
        ended.append(time.monotonic())
        return ""

    with pytest.raises(TimeoutError):  # the task's timeout can fire while the template runs
        await asyncio.wait_for(renderer.render("spin", {"n": 15_000_000, "ended": end}), 0.1)
    timed_out = time.monotonic()

    async def render_ended() -> bool:  # the abandoned render ends in its thread meanwhile
        return bool(ended)

    await wait_until(render_ended, timeout=60)
    assert timed_out < ended[0]  # the loop was free while the template ran: the timeout fired before it ended
