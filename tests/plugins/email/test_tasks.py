"""The ``email:send`` task: payload (Grit-compatible), enqueue helper, handler, config, hooks, plugin backends."""

from __future__ import annotations

import base64
import email
import email.policy
import json
import time
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import framework_email.hookspecs
import msgspec
import pluggy
import pytest
import structlog
from framework_email import hooks
from framework_email.config import load_email_config
from framework_email.service import EMAIL_SERVICE, EmailService, get_email_service
from framework_email.tasks import (
    MAX_INLINE_ATTACHMENT_BYTES,
    SEND_EMAIL,
    Attachment,
    SendEmail,
    send_email,
    send_email_task,
)

from framework.context import TaskContext
from framework.errors import ConfigError, PluginError, RetryAfter, SkipRetry
from framework.hookspecs import hookimpl
from framework.plugins.manager import get_plugin_manager
from framework.plugins.templates import build_environment
from framework.services import Services
from framework.settings import Settings
from framework.storage import open_storage
from framework.storage.local import LocalStorage
from framework.task import PayloadDecodeError

if TYPE_CHECKING:
    from email.message import EmailMessage
    from pathlib import Path

    from framework_email.backends import OutboundEmail

    from tests.fixtures.resend_api import ResendApi
    from tests.fixtures.s3 import S3Server
    from tests.fixtures.smtp import SmtpInbox

PDF = b"%PDF-1.4 \x00\xff attachment"


@pytest.fixture(autouse=True)
def _no_mail_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MAIL_FROM", "RESEND_API_KEY", "SMTP_USERNAME", "SMTP_PASSWORD"):
        monkeypatch.delenv(name, raising=False)


def _settings(tmp_path: Path, email_section: dict[str, Any] | None = None, **kwargs: Any) -> Settings:
    return Settings(data_dir=str(tmp_path / "data"), plugins={"email": email_section or {}}, **kwargs)


def _services(
    tmp_path: Path,
    email_section: dict[str, Any] | None = None,
    *,
    storage: Any = None,
    templates_dir: str | None = None,
    **kwargs: Any,
) -> Services:
    settings = _settings(tmp_path, email_section, templates_dir=templates_dir)
    services = Services(settings=settings, redis=None, schema=None, client=None, registry=None, **kwargs)  # type: ignore[arg-type]
    services._storage = storage
    return services


def _ctx(services: Services, task_id: str = "task-1") -> TaskContext:
    return TaskContext(
        id=task_id,
        type=SEND_EMAIL,
        queue="default",
        retried=0,
        max_retry=3,
        deadline=time.time() + 60,
        headers={},
        logger=structlog.get_logger(),
        services=services,
    )


def _read(path: Path) -> EmailMessage:
    with path.open("rb") as file:
        return email.message_from_binary_file(file, policy=email.policy.default)


WELCOME = SendEmail(to="Ada <ada@example.test>", subject="Welcome!", template="welcome", data={"name": "Ada"})


# -- the task and its payload ---------------------------------------------------------------------


def test_task_definition() -> None:
    assert send_email_task.type == SEND_EMAIL == "email:send"
    assert send_email_task.payload is SendEmail
    assert send_email_task.queue == "default"
    assert send_email_task.max_retry == 3
    assert send_email_task.is_async


@pytest.mark.parametrize(
    ("raw", "to", "data"),
    [
        (
            b'{"to":"ada@example.test","subject":"Hi","template":"welcome","data":{"name":"Ada"}}',
            "ada@example.test",
            {"name": "Ada"},
        ),
        (b'{"to":"ada@example.test","subject":"Hi","template":"welcome","data":null}', "ada@example.test", None),
        (b'{"to":["a@x.test","b@x.test"],"subject":"Hi","template":"welcome","data":{}}', ["a@x.test", "b@x.test"], {}),
    ],
)
def test_grit_payload_decodes_unchanged(raw: bytes, to: object, data: object) -> None:
    payload = send_email_task.decode(raw)
    assert (payload.to, payload.subject, payload.template, payload.data) == (to, "Hi", "welcome", data)
    assert payload.attachments == []


def test_payload_encodes_with_grit_field_names() -> None:
    encoded = json.loads(send_email_task.encode(WELCOME))
    assert encoded == {
        "to": "Ada <ada@example.test>",
        "subject": "Welcome!",
        "template": "welcome",
        "data": {"name": "Ada"},
    }


def test_optional_fields_and_inline_bytes_travel_as_json() -> None:
    payload = SendEmail(
        to=["a@x.test"],
        subject="S",
        template="notification",
        data={"message": "m"},
        sender="Acme <hello@acme.test>",
        cc=["c@x.test"],
        reply_to="r@x.test",
        tags={"kind": "notice"},
        attachments=[Attachment(filename="a.pdf", content=PDF), Attachment(filename="b.png", key="img/b.png")],
    )
    encoded = json.loads(send_email_task.encode(payload))
    assert encoded["from"] == "Acme <hello@acme.test>"
    assert encoded["attachments"][0] == {"filename": "a.pdf", "content": base64.b64encode(PDF).decode()}
    assert encoded["attachments"][1] == {"filename": "b.png", "key": "img/b.png"}
    assert send_email_task.decode(send_email_task.encode(payload)) == payload


@pytest.mark.parametrize("attachment", [{"filename": "x"}, {"filename": "x", "content": "AA==", "key": "k"}])
def test_attachment_needs_exactly_one_source(attachment: dict[str, str]) -> None:
    raw = json.dumps({"to": "a@x.test", "subject": "S", "template": "welcome", "attachments": [attachment]})
    with pytest.raises(PayloadDecodeError, match="exactly one of content or key"):
        send_email_task.decode(raw.encode())


class _RecordingClient:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, Any, dict[str, Any]]] = []

    async def enqueue(self, task: Any, payload: Any = None, **options: Any) -> Any:
        task.encode(payload)  # what the real client does first: the payload must fit the task
        self.calls.append((task, payload, options))
        return SimpleNamespace(id="t-1", queue=options.get("queue", task.queue))


async def test_send_email_enqueues_the_payload_with_options() -> None:
    client = _RecordingClient()
    info = await send_email(
        client,  # type: ignore[arg-type]
        ("a@x.test", "b@x.test"),
        "Reset",
        "password-reset",
        {"reset_url": "https://x.test/r"},
        cc=["c@x.test"],
        reply_to=["r@x.test"],
        tags={"flow": "reset"},
        attachments=[Attachment(filename="a.txt", content=b"hi")],
        queue="critical",
        process_in=5,
    )
    assert info.queue == "critical"
    ((task, payload, options),) = client.calls
    assert task is send_email_task
    assert options == {"queue": "critical", "process_in": 5}
    assert payload == SendEmail(
        to=["a@x.test", "b@x.test"],
        subject="Reset",
        template="password-reset",
        data={"reset_url": "https://x.test/r"},
        cc=["c@x.test"],
        reply_to=["r@x.test"],
        tags={"flow": "reset"},
        attachments=[Attachment(filename="a.txt", content=b"hi")],
    )


async def test_send_email_refuses_large_inline_attachments() -> None:
    client = _RecordingClient()
    big = Attachment(filename="big.bin", content=b"x" * (MAX_INLINE_ATTACHMENT_BYTES + 1))
    with pytest.raises(ValueError, match="attach it by key"):
        await send_email(client, "a@x.test", "S", "welcome", attachments=[big])  # type: ignore[arg-type]
    assert client.calls == []


# -- the handler ----------------------------------------------------------------------------------


async def test_handler_writes_to_the_outbox_by_default(tmp_path: Path) -> None:
    services = _services(tmp_path)
    await send_email_task.handler(_ctx(services, "0a1b2c"), WELCOME)  # type: ignore[misc]

    written = _read(tmp_path / "data" / "outbox" / "0a1b2c.eml")
    assert written["To"] == "Ada <ada@example.test>"
    assert written["From"] == "noreply@localhost"
    assert written["Subject"] == "Welcome!"
    assert written["Message-ID"] == "<0a1b2c@localhost>"
    assert written.get_content_type() == "multipart/alternative"
    assert "Hi Ada," in written.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Hi Ada," in written.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "<title>Welcome!</title>" in written.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert EMAIL_SERVICE in services.stash  # built lazily, once


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


async def test_handler_uses_the_configured_sender_app_name_and_templates(tmp_path: Path) -> None:
    extra, app = tmp_path / "extra-templates", tmp_path / "app-templates"
    _write(extra / "email" / "receipt.txt", "Thanks {{ name }}, from {{ app_name }}\n")
    _write(app / "email" / "receipt.txt", "the app's folder comes after template_dirs\n")
    _write(app / "email" / "welcome.txt", "App welcome for {{ name }}\n")
    section = {"mail_from": "Acme <hello@acme.test>", "app_name": "Acme", "template_dirs": [str(extra)]}
    services = _services(tmp_path, section, templates_dir=str(app))
    await send_email_task.handler(_ctx(services, "w1"), WELCOME)  # type: ignore[misc]
    welcome = _read(tmp_path / "data" / "outbox" / "w1.eml")
    assert welcome.get_body(("plain",)).get_content() == "App welcome for Ada\n"  # type: ignore[union-attr]
    assert "Thanks for signing up" in welcome.get_body(("html",)).get_content()  # type: ignore[union-attr]

    payload = SendEmail(to="b@x.test", subject="Receipt", template="receipt", data={"name": "Bo"})
    await send_email_task.handler(_ctx(services, "r1"), payload)  # type: ignore[misc]
    written = _read(tmp_path / "data" / "outbox" / "r1.eml")
    assert written["From"] == "Acme <hello@acme.test>"
    assert written["Message-ID"] == "<r1@acme.test>"
    assert written.get_content_type() == "text/plain"
    assert written.get_content() == "Thanks Bo, from Acme\n"

    override = msgspec.structs.replace(payload, sender="Billing <billing@acme.test>")
    await send_email_task.handler(_ctx(services, "r2"), override)  # type: ignore[misc]
    assert _read(tmp_path / "data" / "outbox" / "r2.eml")["From"] == "Billing <billing@acme.test>"


async def test_handler_attaches_inline_bytes_and_storage_objects(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "storage")
    await storage.put("invoices/2024/7.pdf", PDF, content_type="application/pdf")
    services = _services(tmp_path, storage=storage)
    payload = msgspec.structs.replace(
        WELCOME,
        attachments=[
            Attachment(filename="invoice.pdf", key="invoices/2024/7.pdf"),
            Attachment(filename="hello.txt", content=b"inline text\n", content_type="text/plain"),
        ],
    )
    await send_email_task.handler(_ctx(services, "att"), payload)  # type: ignore[misc]
    written = _read(tmp_path / "data" / "outbox" / "att.eml")
    assert written.get_content_type() == "multipart/mixed"
    parts = {part.get_filename(): part for part in written.iter_attachments()}
    assert parts["invoice.pdf"].get_payload(decode=True) == PDF
    assert parts["invoice.pdf"].get_content_type() == "application/pdf"
    assert parts["hello.txt"].get_payload(decode=True) == b"inline text\n"
    assert written.get_body(("plain",)) is not None


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (msgspec.structs.replace(WELCOME, template="nope"), "email template 'nope' not found"),
        (SendEmail(to="a@x.test", subject="S", template="password-reset"), "'reset_url' is undefined"),
        (msgspec.structs.replace(WELCOME, to="not an address"), "invalid To address 'not an address'"),
        (msgspec.structs.replace(WELCOME, to=[]), "no recipient"),
        (msgspec.structs.replace(WELCOME, cc=["bob@"]), "invalid Cc address 'bob@'"),
        (msgspec.structs.replace(WELCOME, subject="a\nBcc: x@y.test"), "invalid email header"),
        (
            msgspec.structs.replace(WELCOME, attachments=[Attachment(filename="gone.pdf", key="uploads/gone.pdf")]),
            "storage key 'uploads/gone.pdf' does not exist",
        ),
        (
            msgspec.structs.replace(WELCOME, attachments=[Attachment(filename="x", key="../etc/passwd")]),
            "path traversal",
        ),
        (
            msgspec.structs.replace(WELCOME, attachments=[Attachment(filename="x", content=b"1", content_type="bad")]),
            "invalid content type 'bad'",
        ),
    ],
)
async def test_permanent_problems_archive_at_once(tmp_path: Path, payload: SendEmail, message: str) -> None:
    services = _services(tmp_path, storage=LocalStorage(tmp_path / "storage"))
    with pytest.raises(SkipRetry, match=message.replace("(", r"\(").replace(")", r"\)")):
        await send_email_task.handler(_ctx(services), payload)  # type: ignore[misc]
    assert not (tmp_path / "data" / "outbox").exists()


# -- the attachments' size cap ---------------------------------------------------------------------


def _attaching(*attachments: Attachment) -> SendEmail:
    return msgspec.structs.replace(WELCOME, attachments=list(attachments))


async def test_a_stored_attachment_over_the_default_cap_is_archived_naming_key_size_and_cap(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "storage")
    await storage.put("exports/huge.zip", bytes(25 * 1024 * 1024 + 1))
    services = _services(tmp_path, storage=storage)
    with pytest.raises(SkipRetry) as raised:
        await send_email_task.handler(
            _ctx(services), _attaching(Attachment(filename="huge.zip", key="exports/huge.zip"))
        )  # type: ignore[misc]
    assert str(raised.value) == (
        "attachment 'huge.zip': storage key 'exports/huge.zip' is 26214401 bytes, more than the 26214400 bytes "
        "setting plugins.email.max_attachment_bytes allows for one email's attachments"
    )
    assert not (tmp_path / "data" / "outbox").exists()


async def test_the_cap_counts_inline_and_stored_files_of_one_email_together(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "storage")
    await storage.put("files/fits.bin", bytes(40))
    await storage.put("files/one-too-many.bin", bytes(41))
    services = _services(tmp_path, {"max_attachment_bytes": 64}, storage=storage)
    inline = Attachment(filename="note.txt", content=b"x" * 24)

    exact = _attaching(inline, Attachment(filename="fits.bin", key="files/fits.bin"))
    await send_email_task.handler(_ctx(services, "exact"), exact)  # type: ignore[misc]
    written = _read(tmp_path / "data" / "outbox" / "exact.eml")
    assert [len(part.get_payload(decode=True)) for part in written.iter_attachments()] == [24, 40]

    over = _attaching(inline, Attachment(filename="more.bin", key="files/one-too-many.bin"))
    with pytest.raises(SkipRetry) as raised:
        await send_email_task.handler(_ctx(services, "over"), over)  # type: ignore[misc]
    assert str(raised.value) == (
        "attachment 'more.bin': storage key 'files/one-too-many.bin' is 41 bytes, more than the 40 bytes left of "
        "the 64 bytes setting plugins.email.max_attachment_bytes allows for one email's attachments "
        "(the email's other files take 24)"
    )
    assert not (tmp_path / "data" / "outbox" / "over.eml").exists()


async def test_inline_attachments_over_the_cap_are_archived_before_storage_is_read(tmp_path: Path) -> None:
    services = _services(tmp_path, {"max_attachment_bytes": 64}, storage=LocalStorage(tmp_path / "storage"))
    payload = _attaching(
        Attachment(filename="a.txt", content=b"a" * 40),
        Attachment(filename="gone.pdf", key="uploads/gone.pdf"),  # never looked up: the inline bytes decide
        Attachment(filename="b.txt", content=b"b" * 40),
    )
    with pytest.raises(SkipRetry) as raised:
        await send_email_task.handler(_ctx(services), payload)  # type: ignore[misc]
    assert str(raised.value) == (
        "the inline attachments ('a.txt', 'b.txt') are 80 bytes, more than the 64 bytes setting "
        "plugins.email.max_attachment_bytes allows for one email's attachments"
    )


async def test_a_stored_attachment_over_the_cap_on_s3_is_archived(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    s3_server.client().make_bucket(s3_bucket)
    storage = open_storage(s3_server.settings(s3_bucket))
    try:
        await storage.put("reports/small.csv", b"a,b\n" * 10)
        await storage.put("reports/big.csv", bytes(4096))
        services = _services(tmp_path, {"max_attachment_bytes": 1024}, storage=storage)
        await send_email_task.handler(
            _ctx(services, "small"), _attaching(Attachment(filename="s.csv", key="reports/small.csv"))
        )  # type: ignore[misc]
        [part] = _read(tmp_path / "data" / "outbox" / "small.eml").iter_attachments()
        assert part.get_payload(decode=True) == b"a,b\n" * 10
        with pytest.raises(SkipRetry, match=r"storage key 'reports/big\.csv' is 4096 bytes, more than the 1024 bytes"):
            await send_email_task.handler(
                _ctx(services, "big"), _attaching(Attachment(filename="b.csv", key="reports/big.csv"))
            )  # type: ignore[misc]
    finally:
        await storage.close()
    assert not (tmp_path / "data" / "outbox" / "big.eml").exists()


@pytest.mark.parametrize("cap", [0, -1])
def test_a_cap_below_one_byte_is_a_config_error(tmp_path: Path, cap: int) -> None:
    with pytest.raises(ConfigError, match=rf"max_attachment_bytes={cap} is invalid"):
        load_email_config(_settings(tmp_path, {"max_attachment_bytes": cap}))


async def test_handler_over_smtp(tmp_path: Path, smtp_inbox: SmtpInbox) -> None:
    section = {
        "backend": "smtp",
        "mail_from": "Acme <hello@acme.test>",
        "smtp": {"host": smtp_inbox.host, "port": smtp_inbox.port, "timeout": 5},
    }
    services = _services(tmp_path, section)
    payload = SendEmail(
        to="ada@example.test",
        subject="Verify",
        template="verify-email",
        data={"verify_url": "https://acme.test/v?t=1&u=2", "code": "1234"},
        bcc=["audit@acme.test"],
    )
    await send_email_task.handler(_ctx(services, "smtp-task"), payload)  # type: ignore[misc]
    (received,) = smtp_inbox.wait(1)
    assert received["Message-ID"] == "<smtp-task@acme.test>"
    assert received["Subject"] == "Verify"
    assert "audit@acme.test" in received["X-RcptTo"]
    assert received["Bcc"] is None
    assert "https://acme.test/v?t=1&amp;u=2" in received.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "https://acme.test/v?t=1&u=2" in received.get_body(("plain",)).get_content()  # type: ignore[union-attr]


async def test_handler_over_resend(tmp_path: Path, resend_api: ResendApi, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESEND_API_KEY", resend_api.api_key)
    monkeypatch.setenv("MAIL_FROM", "Acme <hello@acme.test>")
    services = _services(tmp_path, {"backend": "resend", "resend": {"api_url": resend_api.url}})
    payload = msgspec.structs.replace(WELCOME, tags={"flow": "signup"})
    resend_api.reply(
        429, {"statusCode": 429, "name": "rate_limit_exceeded", "message": "slow down"}, headers={"Retry-After": "3"}
    )
    with pytest.raises(RetryAfter) as caught:
        await send_email_task.handler(_ctx(services, "rs-1"), payload)  # type: ignore[misc]
    assert caught.value.delay == 3.0
    await send_email_task.handler(_ctx(services, "rs-1"), payload)  # type: ignore[misc]

    first, second = resend_api.requests
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"] == "email-send/rs-1"
    assert second.json["from"] == "Acme <hello@acme.test>"
    assert second.json["to"] == ["Ada <ada@example.test>"]
    assert second.json["tags"] == [{"name": "flow", "value": "signup"}]
    assert "Hi Ada," in second.json["text"]


# -- config, service, hooks -----------------------------------------------------------------------


def test_environment_secrets_win_over_the_file() -> None:
    section = {"mail_from": "file@x.test", "smtp": {"username": "file-user"}, "resend": {"api_key": "file-key"}}
    settings = Settings(plugins={"email": section})
    from_file = load_email_config(settings, environ={})
    assert (from_file.mail_from, from_file.smtp.username, from_file.resend.api_key) == (
        "file@x.test",
        "file-user",
        "file-key",
    )
    env = {"MAIL_FROM": "env@x.test", "SMTP_USERNAME": "u", "SMTP_PASSWORD": "p", "RESEND_API_KEY": "re_env"}
    config = load_email_config(settings, environ=env)
    assert (config.mail_from, config.smtp.username, config.smtp.password, config.resend.api_key) == (
        "env@x.test",
        "u",
        "p",
        "re_env",
    )
    assert config.template_dirs == []


def test_invalid_section_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"plugins\.email"):
        load_email_config(Settings(plugins={"email": {"smtp": {"security": "ssl3"}}}), environ={})


def test_unknown_backend_names_the_choices() -> None:
    with pytest.raises(ConfigError, match="backend='pigeon' is invalid: choose one of outbox, resend, smtp"):
        EmailService.from_settings(Settings(plugins={"email": {"backend": "pigeon"}}), environ={})


def test_hooks_register_the_task() -> None:
    assert hooks.register_task_types(Settings()) == [send_email_task]


async def test_startup_builds_the_service_where_tasks_run(tmp_path: Path) -> None:
    web = _services(tmp_path, role="web")
    hooks.startup(web)
    assert EMAIL_SERVICE not in web.stash

    worker = _services(tmp_path, {"backend": "resend"}, role="worker")
    with pytest.raises(ConfigError, match="RESEND_API_KEY"):  # a bad config stops start-up
        hooks.startup(worker)

    worker = _services(tmp_path, role="worker")
    hooks.startup(worker)
    service = worker.stash[EMAIL_SERVICE]
    assert get_email_service(worker) is service
    await hooks.shutdown(worker)


class _MemoryBackend:
    def __init__(self) -> None:
        self.sent: list[OutboundEmail] = []
        self.closed = False

    async def send(self, email: OutboundEmail) -> str:
        self.sent.append(email)
        return f"memory-{len(self.sent)}"

    async def aclose(self) -> None:
        self.closed = True


class _MemoryPlugin:
    def __init__(self) -> None:
        self.backend = _MemoryBackend()

    @hookimpl
    def register_email_backends(self, settings: Settings) -> dict[str, Any]:
        return {"memory": lambda config, settings: self.backend}


def _plugin_manager(*plugins: object) -> pluggy.PluginManager:
    pm = pluggy.PluginManager("framework")
    pm.add_hookspecs(framework_email.hookspecs)
    for plugin in plugins:
        pm.register(plugin)
    return pm


async def test_a_plugin_adds_a_backend_through_the_hook(tmp_path: Path) -> None:
    plugin = _MemoryPlugin()
    services = _services(tmp_path, {"backend": "memory"}, plugin_manager=_plugin_manager(plugin))
    await send_email_task.handler(_ctx(services, "mem-1"), WELCOME)  # type: ignore[misc]
    (sent,) = plugin.backend.sent
    assert sent.key == "mem-1"
    assert sent.message["Message-ID"] == "<mem-1@localhost>"
    await hooks.shutdown(services)
    assert plugin.backend.closed


def test_backend_names_must_be_unique(tmp_path: Path) -> None:
    class _Clash:
        @hookimpl
        def register_email_backends(self, settings: Settings) -> dict[str, Any]:
            return {"smtp": lambda config, settings: None}

    services = _services(tmp_path, plugin_manager=_plugin_manager(_Clash()))
    with pytest.raises(PluginError, match="'smtp' is registered twice"):
        get_email_service(services)
    services = _services(tmp_path, plugin_manager=_plugin_manager(_MemoryPlugin(), _MemoryPlugin()))
    with pytest.raises(PluginError, match="'memory' is registered twice"):
        get_email_service(services)


async def test_with_the_frameworks_plugin_manager_and_shared_jinja(tmp_path: Path) -> None:
    plugin = _MemoryPlugin()
    app = tmp_path / "app-templates"
    _write(
        app / "email" / "welcome.html",
        '{% extends "default:email/welcome.html" %}{% block footer %}Acme HQ{% endblock %}',
    )
    settings = _settings(tmp_path, {"backend": "memory"}, templates_dir=str(app), load_plugins=["email"])
    pm = get_plugin_manager(settings, extra=[("memory", plugin)])  # adds framework_email.hookspecs first
    assert [send_email_task] in pm.hook.register_task_types(settings=settings, plugin_manager=pm)
    services = Services(
        settings=settings,
        redis=None,  # type: ignore[arg-type]
        schema=None,  # type: ignore[arg-type]
        client=None,  # type: ignore[arg-type]
        registry=None,  # type: ignore[arg-type]
        plugin_manager=pm,
        jinja=build_environment(settings, pm),
    )
    await send_email_task.handler(_ctx(services, "pm-1"), WELCOME)  # type: ignore[misc]
    (sent,) = plugin.backend.sent
    html = sent.message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "Acme HQ" in html
    assert "Thanks for signing up" in html
    assert "Hi Ada," in sent.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
