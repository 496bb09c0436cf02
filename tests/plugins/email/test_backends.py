"""Delivery backends: the outbox, SMTP against a real aiosmtpd, Resend through the real SDK over HTTP."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email
import email.policy
import ssl
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import TYPE_CHECKING

import aiosmtplib
import pytest
import resend
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope
from framework_email.backends import EmailDeliveryError, OutboundEmail, OutboxBackend, ResendBackend, SmtpBackend
from framework_email.backends.base import safe_token
from framework_email.backends.resend import classify_resend_error, retry_after_seconds
from framework_email.backends.smtp import classify_smtp_error
from framework_email.config import EmailConfig, ResendConfig, SmtpConfig
from framework_email.message import AttachmentFile, build_message
from framework_email.render import RenderedEmail

from framework.errors import ConfigError, RetryAfter, SkipRetry
from framework.settings import Settings
from tests.fixtures.resend_api import ScriptedResponse
from tests.fixtures.smtp import free_port
from tests.fixtures.tls import make_certificates

if TYPE_CHECKING:
    from collections.abc import Iterator
    from email.message import EmailMessage
    from pathlib import Path

    from tests.fixtures.resend_api import ResendApi
    from tests.fixtures.smtp import SmtpInbox
    from tests.fixtures.tls import Certificates

PDF = b"%PDF-1.4 fake \x00\x01\x02 bytes"


def _message(key: str = "task-1", **overrides: object) -> EmailMessage:
    fields: dict[str, object] = {
        "sender": "Acme <hello@acme.test>",
        "to": ["Ada Lovelace <ada@example.test>", "bob@example.test"],
        "subject": "Your invoice for März",
        "bodies": RenderedEmail(html="<p>Hello <b>Ada</b></p>", text="Hello Ada\n"),
        "key": key,
        "cc": ["carol@example.test"],
        "bcc": ["audit@acme.test"],
        "reply_to": "support@acme.test",
        "attachments": [AttachmentFile("invoice.pdf", PDF), AttachmentFile("notes.txt", b"plain notes\n")],
    }
    fields.update(overrides)
    return build_message(**fields)  # type: ignore[arg-type]


def _outbound(key: str = "task-1", **overrides: object) -> OutboundEmail:
    return OutboundEmail(message=_message(key, **overrides), key=key, tags={"category": "billing"})


# -- outbox ---------------------------------------------------------------------------------------


async def test_outbox_writes_an_eml_file_named_after_the_key(tmp_path: Path) -> None:
    backend = OutboxBackend.from_config(EmailConfig(), Settings(data_dir=str(tmp_path)))
    path = await backend.send(_outbound("0f8e-task"))
    assert path == str(tmp_path / "outbox" / "0f8e-task.eml")
    with open(path, "rb") as file:
        parsed = email.message_from_binary_file(file, policy=email.policy.default)
    assert parsed["Subject"] == "Your invoice for März"
    assert parsed["Message-ID"] == "<0f8e-task@acme.test>"
    assert parsed["Bcc"] == "audit@acme.test"  # kept in the file, so a developer sees who would get it
    assert parsed.get_body(("plain",)).get_content() == "Hello Ada\n"  # type: ignore[union-attr]


async def test_outbox_retry_rewrites_the_same_file(tmp_path: Path) -> None:
    backend = OutboxBackend(tmp_path / "box")
    first = await backend.send(_outbound("same"))
    second = await backend.send(_outbound("same", subject="Second attempt"))
    assert first == second
    assert [p.name for p in (tmp_path / "box").iterdir()] == ["same.eml"]
    assert b"Second attempt" in (tmp_path / "box" / "same.eml").read_bytes()


async def test_outbox_hashes_keys_that_are_not_file_names(tmp_path: Path) -> None:
    path = await OutboxBackend(tmp_path).send(_outbound("../../etc/passwd"))
    assert path == str(tmp_path / f"{safe_token('../../etc/passwd')}.eml")
    assert len(list(tmp_path.iterdir())) == 1


def test_outbox_dir_may_be_absolute(tmp_path: Path) -> None:
    backend = OutboxBackend.from_config(EmailConfig(outbox_dir=str(tmp_path / "x")), Settings(data_dir="elsewhere"))
    assert backend.directory == tmp_path / "x"


# -- smtp -----------------------------------------------------------------------------------------


def _smtp(inbox: SmtpInbox, **overrides: object) -> SmtpBackend:
    return SmtpBackend(SmtpConfig(host=inbox.host, port=inbox.port, timeout=5, **overrides))  # type: ignore[arg-type]


async def test_smtp_delivers_headers_both_bodies_and_attachments(smtp_inbox: SmtpInbox) -> None:
    message_id = await _smtp(smtp_inbox).send(_outbound("smtp-1"))
    assert message_id == "<smtp-1@acme.test>"

    (received,) = smtp_inbox.wait(1)
    assert received["From"] == "Acme <hello@acme.test>"
    assert received["To"] == "Ada Lovelace <ada@example.test>, bob@example.test"
    assert received["Cc"] == "carol@example.test"
    assert received["Reply-To"] == "support@acme.test"
    assert received["Subject"] == "Your invoice for März"
    assert received["Message-ID"] == "<smtp-1@acme.test>"
    assert received["Bcc"] is None  # stripped from what travels...
    rcpt = received["X-RcptTo"]
    assert "audit@acme.test" in rcpt  # ...but the Bcc recipient is in the envelope
    assert "ada@example.test" in rcpt
    assert "carol@example.test" in rcpt
    assert received["X-MailFrom"] == "hello@acme.test"

    assert received.get_content_type() == "multipart/mixed"
    alternative = received.get_body(("related", "html", "plain"))
    assert alternative is not None
    assert received.get_body(("plain",)).get_content() == "Hello Ada\n"  # type: ignore[union-attr]
    assert received.get_body(("html",)).get_content() == "<p>Hello <b>Ada</b></p>\n"  # type: ignore[union-attr]
    parts = {part.get_filename(): part for part in received.iter_attachments()}
    assert set(parts) == {"invoice.pdf", "notes.txt"}
    assert parts["invoice.pdf"].get_content_type() == "application/pdf"
    assert parts["invoice.pdf"].get_payload(decode=True) == PDF
    assert parts["notes.txt"].get_payload(decode=True) == b"plain notes\n"


async def test_smtp_text_only_message(smtp_inbox: SmtpInbox) -> None:
    outbound = _outbound("smtp-text", bodies=RenderedEmail(html=None, text="Only text\n"), attachments=[], cc=[])
    await _smtp(smtp_inbox).send(outbound)
    (received,) = smtp_inbox.wait(1)
    assert received.get_content_type() == "text/plain"
    assert received.get_content() == "Only text\n"


async def test_smtp_connection_refused_is_temporary(smtp_inbox: SmtpInbox) -> None:
    backend = SmtpBackend(SmtpConfig(host="127.0.0.1", port=free_port(), timeout=5))
    with pytest.raises(EmailDeliveryError, match="SMTP delivery failed"):
        await backend.send(_outbound())


async def test_smtp_login_against_a_server_without_auth_is_permanent(smtp_inbox: SmtpInbox) -> None:
    backend = _smtp(smtp_inbox, username="user", password="secret")
    with pytest.raises(SkipRetry, match="does not support"):
        await backend.send(_outbound())
    assert smtp_inbox.messages() == []


async def test_smtp_starttls_against_a_plain_server_is_permanent(smtp_inbox: SmtpInbox) -> None:
    with pytest.raises(SkipRetry, match="does not support"):
        await _smtp(smtp_inbox, security="starttls").send(_outbound())


class _Keep:
    """An aiosmtpd handler that keeps each message it accepts."""

    def __init__(self) -> None:
        self.received: list[bytes | None] = []

    async def handle_DATA(self, server: object, session: object, envelope: Envelope) -> str:  # noqa: N802
        self.received.append(envelope.original_content)
        return "250 OK"


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("smtp-tls"))


@contextlib.contextmanager
def _tls_smtp(certs: Certificates, security: str) -> Iterator[tuple[_Keep, int]]:
    """An SMTP server with a certificate from the test CA: TLS from the first byte, or STARTTLS."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.server_cert, certs.server_key)
    tls: dict[str, object] = {"ssl_context": context} if security == "tls" else {"tls_context": context}
    handler = _Keep()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port(), **tls)  # type: ignore[arg-type]
    controller.start()
    try:
        yield handler, controller.port
    finally:
        controller.stop()


async def test_smtp_tls_against_a_plain_server_is_permanent_naming_the_settings(smtp_inbox: SmtpInbox) -> None:
    with pytest.raises(SkipRetry) as raised:
        await _smtp(smtp_inbox, security="tls").send(_outbound())
    text = str(raised.value)
    assert text.startswith("SMTP TLS handshake failed: [SSL: WRONG_VERSION_NUMBER]")
    assert f"(security='tls', port={smtp_inbox.port}, validate_certs=True)" in text
    assert smtp_inbox.messages() == []


@pytest.mark.parametrize("security", ["tls", "starttls"])
async def test_smtp_server_certificate_the_settings_do_not_trust_is_permanent(
    certificates: Certificates, security: str
) -> None:
    with _tls_smtp(certificates, security) as (handler, port):
        config = SmtpConfig(host="127.0.0.1", port=port, security=security, timeout=5)  # type: ignore[arg-type]
        with pytest.raises(SkipRetry) as raised:
            await SmtpBackend(config).send(_outbound("untrusted"))
        text = str(raised.value)
        assert "CERTIFICATE_VERIFY_FAILED" in text
        assert f"(security={security!r}, port={port}, validate_certs=True)" in text
        assert handler.received == []

        # The same server takes the email once the settings stop checking its certificate.
        trusting = SmtpConfig(host="127.0.0.1", port=port, security=security, timeout=5, validate_certs=False)  # type: ignore[arg-type]
        assert await SmtpBackend(trusting).send(_outbound("trusting")) == "<trusting@acme.test>"
        assert len(handler.received) == 1


class _DamagingLink:
    """A TCP relay to a TLS server that flips one bit of the server's first encrypted record on the first
    connection only, as a faulty middlebox or link would: the client's decryption of it fails."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.connections = 0
        self.tasks: set[asyncio.Task[None]] = set()

    async def relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, damage: bool) -> None:
        pending = b""
        try:
            while data := await reader.read(65536):
                if not damage:
                    writer.write(data)
                    continue
                pending += data
                out = b""
                while damage and len(pending) >= 5 and len(pending) >= 5 + int.from_bytes(pending[3:5], "big"):
                    end = 5 + int.from_bytes(pending[3:5], "big")
                    record, pending = pending[:end], pending[end:]
                    if record[0] == 23:  # application data: in TLS 1.3, the handshake after ServerHello
                        record = record[:-1] + bytes([record[-1] ^ 1])
                        damage = False
                    out += record
                if not damage:
                    out, pending = out + pending, b""
                writer.write(out)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target)
        first = self.connections == 1
        await asyncio.gather(
            self.relay(client_reader, server_writer, damage=False),
            self.relay(server_reader, client_writer, damage=first),
        )

    def accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(self.serve(reader, writer))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


async def test_smtp_tls_record_damaged_on_the_way_stays_temporary(certificates: Certificates) -> None:
    """A record damaged between the server and the worker fails the handshake with ``bad record mac``: the
    next attempt meets an undamaged link and passes, so the email must be retried, not archived."""
    with _tls_smtp(certificates, "tls") as (handler, port):
        link = _DamagingLink(port)
        relay = await asyncio.start_server(link.accept, "127.0.0.1", 0)
        relay_port = relay.sockets[0].getsockname()[1]
        config = SmtpConfig(host="127.0.0.1", port=relay_port, security="tls", timeout=5, validate_certs=False)  # type: ignore[arg-type]
        try:
            with pytest.raises(EmailDeliveryError) as raised:
                await SmtpBackend(config).send(_outbound("damaged"))
            assert "DECRYPTION_FAILED_OR_BAD_RECORD_MAC" in str(raised.value.__cause__)
            assert handler.received == []

            assert await SmtpBackend(config).send(_outbound("damaged")) == "<damaged@acme.test>"
            assert len(handler.received) == 1
        finally:
            relay.close()
            for task in list(link.tasks):
                task.cancel()
            await asyncio.gather(*link.tasks, return_exceptions=True)
            await relay.wait_closed()


def _cut_mid_handshake() -> aiosmtplib.SMTPConnectError:
    error = aiosmtplib.SMTPConnectError("Error connecting to 127.0.0.1 on port 465: EOF occurred")
    error.__cause__ = ssl.SSLEOFError(8, "EOF occurred in violation of protocol")
    return error


def test_smtp_connection_cut_mid_handshake_stays_temporary() -> None:
    assert type(classify_smtp_error(_cut_mid_handshake())) is EmailDeliveryError
    assert type(classify_smtp_error(ssl.SSLEOFError(8, "EOF occurred"))) is EmailDeliveryError
    assert type(classify_smtp_error(ssl.SSLError(1, "[SSL] handshake failure"))) is SkipRetry
    alert = ssl.SSLError(1, "[SSL: TLSV1_ALERT_INTERNAL_ERROR] tlsv1 alert internal error")
    alert.reason = "TLSV1_ALERT_INTERNAL_ERROR"  # the server failed on its side
    assert type(classify_smtp_error(alert)) is EmailDeliveryError


def test_smtp_needs_a_sender() -> None:
    with pytest.raises(ConfigError, match="MAIL_FROM"):
        SmtpBackend.from_config(EmailConfig(backend="smtp"), Settings())
    backend = SmtpBackend.from_config(EmailConfig(mail_from="a@b.test", smtp=SmtpConfig(security="tls")), Settings())
    assert backend.port == 465


@pytest.mark.parametrize(
    ("error", "outcome", "text"),
    [
        (
            aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(550, "no such user", "x@y")]),
            SkipRetry,
            "550 no such user",
        ),
        (
            aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(450, "greylisted", "x@y")]),
            EmailDeliveryError,
            "450 greylisted",
        ),
        (aiosmtplib.SMTPAuthenticationError(535, "bad credentials"), SkipRetry, "login refused: 535"),
        (aiosmtplib.SMTPAuthenticationError(454, "try later"), EmailDeliveryError, "454"),
        (aiosmtplib.SMTPSenderRefused(553, "not allowed", "a@b"), SkipRetry, "553"),
        (aiosmtplib.SMTPDataError(552, "too big"), SkipRetry, "552 too big"),
        (aiosmtplib.SMTPResponseException(421, "closing"), EmailDeliveryError, "421"),
        (aiosmtplib.SMTPServerDisconnected("gone"), EmailDeliveryError, "gone"),
        (aiosmtplib.SMTPConnectTimeoutError("slow"), EmailDeliveryError, "slow"),
        (ConnectionRefusedError(111, "refused"), EmailDeliveryError, "refused"),
        (aiosmtplib.SMTPNotSupported("no AUTH"), SkipRetry, "no AUTH"),
    ],
)
def test_smtp_error_classification(error: BaseException, outcome: type[Exception], text: str) -> None:
    result = classify_smtp_error(error)
    assert type(result) is outcome
    assert text in str(result)


# -- resend ---------------------------------------------------------------------------------------


def _resend(api: ResendApi) -> ResendBackend:
    return ResendBackend(api.api_key)


async def test_resend_sends_the_email_with_an_idempotency_key(resend_api: ResendApi) -> None:
    resend_api.reply(200, {"id": "re-123"})
    assert await _resend(resend_api).send(_outbound("task-42")) == "re-123"

    (request,) = resend_api.requests
    assert (request.method, request.path) == ("POST", "/emails")
    assert request.headers["authorization"] == f"Bearer {resend_api.api_key}"
    assert request.headers["idempotency-key"] == "email-send/task-42"
    body = request.json
    assert body["from"] == "Acme <hello@acme.test>"
    assert body["to"] == ["Ada Lovelace <ada@example.test>", "bob@example.test"]
    assert body["cc"] == ["carol@example.test"]
    assert body["bcc"] == ["audit@acme.test"]
    assert body["reply_to"] == ["support@acme.test"]
    assert body["subject"] == "Your invoice for März"
    assert body["html"] == "<p>Hello <b>Ada</b></p>\n"
    assert body["text"] == "Hello Ada\n"
    assert body["tags"] == [{"name": "category", "value": "billing"}]
    attachments = {a["filename"]: a for a in body["attachments"]}
    assert base64.b64decode(attachments["invoice.pdf"]["content"]) == PDF
    assert attachments["invoice.pdf"]["content_type"] == "application/pdf"
    assert base64.b64decode(attachments["notes.txt"]["content"]) == b"plain notes\n"


async def test_resend_retry_reuses_the_idempotency_key(resend_api: ResendApi) -> None:
    resend_api.reply(500, {"statusCode": 500, "name": "application_error", "message": "boom"})
    backend = _resend(resend_api)
    with pytest.raises(EmailDeliveryError):
        await backend.send(_outbound("task-7"))
    await backend.send(_outbound("task-7"))
    keys = [r.headers["idempotency-key"] for r in resend_api.requests]
    assert keys == ["email-send/task-7", "email-send/task-7"]


async def test_resend_html_only_message_has_no_text(resend_api: ResendApi) -> None:
    await _resend(resend_api).send(_outbound(bodies=RenderedEmail(html="<p>x</p>", text=None), attachments=[]))
    body = resend_api.requests[0].json
    assert body["html"] == "<p>x</p>\n"
    assert "text" not in body
    assert "attachments" not in body


async def test_resend_validation_error_is_permanent(resend_api: ResendApi) -> None:
    resend_api.reply(422, {"statusCode": 422, "name": "validation_error", "message": "Invalid `to` field."})
    with pytest.raises(SkipRetry, match=r"Invalid `to` field\."):
        await _resend(resend_api).send(_outbound())


async def test_resend_rate_limit_retries_after_the_given_delay(resend_api: ResendApi) -> None:
    resend_api.reply(
        429,
        {"statusCode": 429, "name": "rate_limit_exceeded", "message": "Too many requests"},
        headers={"Retry-After": "7"},
    )
    with pytest.raises(RetryAfter) as caught:
        await _resend(resend_api).send(_outbound())
    assert caught.value.delay == 7.0
    assert "Too many requests" in str(caught.value)


async def test_resend_rate_limit_without_retry_after_uses_backoff(resend_api: ResendApi) -> None:
    resend_api.reply(429, {"statusCode": 429, "name": "daily_quota_exceeded", "message": "Quota"})
    with pytest.raises(EmailDeliveryError, match="Quota"):
        await _resend(resend_api).send(_outbound())


async def test_resend_server_error_is_temporary(resend_api: ResendApi) -> None:
    resend_api.reply(500, {"statusCode": 500, "name": "application_error", "message": "Internal"})
    with pytest.raises(EmailDeliveryError, match="Internal"):
        await _resend(resend_api).send(_outbound())


async def test_resend_non_json_gateway_error_is_temporary(resend_api: ResendApi) -> None:
    resend_api.script(ScriptedResponse(status=502, body="<html>Bad gateway</html>", content_type="text/html"))
    with pytest.raises(EmailDeliveryError, match="502"):
        await _resend(resend_api).send(_outbound())


@pytest.mark.parametrize(
    ("status", "name"),
    [(401, "missing_api_key"), (403, "invalid_api_key"), (403, "validation_error"), (400, "validation_error")],
)
async def test_resend_auth_and_other_client_errors_are_permanent(resend_api: ResendApi, status: int, name: str) -> None:
    resend_api.reply(status, {"statusCode": status, "name": name, "message": f"{name} happened"})
    with pytest.raises(SkipRetry, match=str(status)):
        await _resend(resend_api).send(_outbound())


async def test_resend_connection_refused_is_temporary(resend_api: ResendApi) -> None:
    backend = ResendBackend(resend_api.api_key, api_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(EmailDeliveryError, match="unreachable"):
        await backend.send(_outbound())
    assert resend_api.requests == []


async def test_resend_concurrent_idempotent_request_is_temporary(resend_api: ResendApi) -> None:
    resend_api.reply(409, {"statusCode": 409, "name": "concurrent_idempotent_requests", "message": "in flight"})
    with pytest.raises(EmailDeliveryError, match="in flight"):
        await _resend(resend_api).send(_outbound())
    resend_api.reply(409, {"statusCode": 409, "name": "invalid_idempotent_request", "message": "payload differs"})
    with pytest.raises(SkipRetry, match="payload differs"):
        await _resend(resend_api).send(_outbound())


def test_resend_needs_a_key_and_a_sender() -> None:
    with pytest.raises(ConfigError, match="RESEND_API_KEY"):
        ResendBackend.from_config(EmailConfig(backend="resend", mail_from="a@b.test"), Settings())
    with pytest.raises(ConfigError, match="MAIL_FROM"):
        ResendBackend.from_config(EmailConfig(backend="resend", resend=ResendConfig(api_key="re_x")), Settings())
    backend = ResendBackend.from_config(
        EmailConfig(mail_from="a@b.test", resend=ResendConfig(api_key="re_x", api_url="http://127.0.0.1:9")), Settings()
    )
    assert (backend.api_key, backend.api_url) == ("re_x", "http://127.0.0.1:9")


def test_retry_after_parsing() -> None:
    now = time.time()
    later = format_datetime(datetime.fromtimestamp(now, UTC) + timedelta(seconds=30), usegmt=True)
    assert retry_after_seconds({"Retry-After": "2.5"}) == 2.5
    assert retry_after_seconds({"retry-after": later}, now=now) == pytest.approx(30, abs=1)
    assert retry_after_seconds({"ratelimit-reset": "4"}) == 4.0
    assert retry_after_seconds({"retry-after": "-3"}) == 0.0
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


def test_resend_error_classification_without_http() -> None:
    timeout = resend.exceptions.ResendError(500, "HttpClientError", "timed out", "retry")
    assert isinstance(classify_resend_error(timeout), EmailDeliveryError)
    odd = resend.exceptions.ResendError("weird", "whatever", "?", "")
    assert isinstance(classify_resend_error(odd), EmailDeliveryError)
