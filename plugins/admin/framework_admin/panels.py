"""Panels for other built-in plugins, shown only when they are loaded: the email outbox and cleanup results.

Both are read through the other plugin's public functions, imported only when that plugin is loaded
(the admin never depends on them).

- **Email outbox**: when the ``email`` plugin is loaded with its ``outbox`` backend, the ``.eml`` files in
  ``<data_dir>/<outbox_dir>/`` are listed and previewed (text as text; HTML in a sandboxed frame).
- **Cleanup**: when the ``cleanup`` plugin is loaded, the last report of each sweeper, read with
  ``framework_cleanup.sweepers.last_results`` (or straight from ``Schema.cleanup_results``).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import importlib
import re
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from framework.services import Services
    from framework.settings import Settings

__all__ = (
    "OutboxEmail",
    "OutboxEmailDetail",
    "cleanup_enabled",
    "cleanup_results",
    "outbox_dir",
    "outbox_email",
    "outbox_list",
)

_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,200}\.eml")
_LIST_LIMIT = 50


class OutboxEmail(msgspec.Struct, frozen=True, kw_only=True):
    """An email the outbox backend wrote.

    Attributes:
        name: its file name (``<task id>.eml``).
        subject: the subject.
        sender: the From header.
        to: the To header.
        date: when the file was written.
        size: the file's size in bytes.
        has_html: whether it has an HTML body.
        has_text: whether it has a plain-text body.
    """

    name: str
    subject: str
    sender: str
    to: str
    date: datetime
    size: int
    has_html: bool
    has_text: bool


class OutboxEmailDetail(msgspec.Struct, frozen=True, kw_only=True):
    """An outbox email with its bodies.

    Attributes:
        email: the summary.
        text: the plain-text body ("" if none).
        html: the HTML body ("" if none); shown only inside a sandboxed frame.
        attachments: attachment file names.
    """

    email: OutboxEmail
    text: str
    html: str
    attachments: list[str]


def _loaded(services: Services, name: str) -> bool:
    pm = services.plugin_manager
    return pm is not None and pm.has_plugin(name)


def outbox_dir(services: Services) -> Path | None:
    """The outbox folder when the email plugin is loaded and uses the outbox backend, else ``None``."""
    if not _loaded(services, "email"):
        return None
    settings: Settings = services.settings
    try:
        config = importlib.import_module("framework_email.config").load_email_config(settings)
        backend, folder = str(config.backend), str(config.outbox_dir)
    except ImportError:
        raw: dict[str, Any] = settings.plugins.get("email", {})
        backend, folder = str(raw.get("backend", "outbox")), str(raw.get("outbox_dir", "outbox"))
    if backend != "outbox":
        return None
    path = Path(folder)
    return path if path.is_absolute() else settings.data_path / path


def _parse(path: Path) -> tuple[EmailMessage, int, float]:
    data = path.read_bytes()
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message, len(data), path.stat().st_mtime


def _summary(name: str, message: EmailMessage, size: int, mtime: float) -> OutboxEmail:
    return OutboxEmail(
        name=name,
        subject=str(message.get("subject", "")),
        sender=str(message.get("from", "")),
        to=str(message.get("to", "")),
        date=datetime.fromtimestamp(mtime, UTC),
        size=size,
        has_html=message.get_body(preferencelist=("html",)) is not None,
        has_text=message.get_body(preferencelist=("plain",)) is not None,
    )


def _list_sync(folder: Path, limit: int) -> list[OutboxEmail]:
    if not folder.is_dir():
        return []
    files = sorted(
        (p for p in folder.iterdir() if p.is_file() and _NAME.fullmatch(p.name)),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    out = []
    for path in files[:limit]:
        try:
            out.append(_summary(path.name, *_parse(path)))
        except (OSError, ValueError):
            continue
    return out


async def outbox_list(folder: Path, limit: int = _LIST_LIMIT) -> list[OutboxEmail]:
    """The newest outbox emails first (at most ``limit``)."""
    return await asyncio.to_thread(_list_sync, folder, limit)


def _body(message: EmailMessage, kind: str) -> str:
    part = message.get_body(preferencelist=(kind,))
    if part is None:
        return ""
    content = part.get_content()
    return content if isinstance(content, str) else ""


def _detail_sync(folder: Path, name: str) -> OutboxEmailDetail | None:
    if not _NAME.fullmatch(name):
        return None
    path = folder / name
    if not path.is_file():
        return None
    message, size, mtime = _parse(path)
    return OutboxEmailDetail(
        email=_summary(name, message, size, mtime),
        text=_body(message, "plain"),
        html=_body(message, "html"),
        attachments=[str(a.get_filename() or "") for a in message.iter_attachments()],
    )


async def outbox_email(folder: Path, name: str) -> OutboxEmailDetail | None:
    """One outbox email by file name; ``None`` for an unknown or invalid name."""
    return await asyncio.to_thread(_detail_sync, folder, name)


def cleanup_enabled(services: Services) -> bool:
    """Whether the cleanup plugin is loaded."""
    return _loaded(services, "cleanup")


async def cleanup_results(services: Services) -> list[dict[str, Any]]:
    """The last report of each cleanup sweeper, by name, as JSON-ready dicts."""
    try:
        last_results = importlib.import_module("framework_cleanup.sweepers").last_results
    except ImportError:
        raw: dict[Any, Any] = await services.redis.hgetall(services.schema.cleanup_results)
        out = []
        for field, value in sorted(raw.items()):
            try:
                report = msgspec.json.decode(value)
            except msgspec.DecodeError:
                continue
            if isinstance(report, dict):
                out.append({**report, "sweeper": report.get("sweeper", field.decode(errors="replace"))})
        return out
    results: dict[str, Any] = await last_results(services.redis, services.schema)
    return [msgspec.to_builtins(report) for report in results.values()]
