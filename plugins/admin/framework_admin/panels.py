"""Panels showing what other plugins offer (the ``register_admin_panels`` hook): the email outbox and cleanup results.

The admin never imports those plugins: they offer plain values through the hook, collected once per
process (:func:`panel_sources`), and a panel is shown only when some plugin offers it.

- **Email outbox** (``"outbox"``: a folder): its ``.eml`` files are listed and previewed (text as text;
  HTML in a sandboxed frame). The ``email`` plugin offers it while its ``outbox`` backend is in use.
- **Cleanup** (``"cleanup"``: ``async (services) -> list[dict]``): the last report of each sweeper,
  offered by the ``cleanup`` plugin.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from framework import StashKey, await_me_maybe

if TYPE_CHECKING:
    from framework import Services

__all__ = (
    "OutboxEmail",
    "OutboxEmailDetail",
    "cleanup_enabled",
    "cleanup_results",
    "outbox_dir",
    "outbox_email",
    "outbox_list",
    "panel_sources",
)

_PANELS: StashKey[dict[str, Any]] = StashKey("framework_admin.panels")

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


def panel_sources(services: Services) -> dict[str, Any]:
    """Panel name -> what plugins offer it (``register_admin_panels``), asked once per process.

    pluggy calls the most recently loaded plugin first, and the first offer of a panel wins.
    """
    sources = services.stash.get(_PANELS)
    if sources is None:
        sources = {}
        pm = services.plugin_manager
        hook = getattr(pm.hook, "register_admin_panels", None) if pm is not None else None
        for offered in hook(settings=services.settings) if hook is not None else []:
            for name, source in dict(offered or {}).items():
                sources.setdefault(name, source)
        services.stash[_PANELS] = sources
    return sources


def outbox_dir(services: Services) -> Path | None:
    """The outbox folder a plugin offers (the email plugin, with its ``outbox`` backend), else ``None``."""
    folder = panel_sources(services).get("outbox")
    return Path(folder) if folder is not None else None


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
    """Whether a plugin (the cleanup plugin) offers the cleanup panel."""
    return callable(panel_sources(services).get("cleanup"))


async def cleanup_results(services: Services) -> list[dict[str, Any]]:
    """The last report of each cleanup sweeper, as JSON-ready dicts (``[]`` when nobody offers the panel)."""
    source = panel_sources(services).get("cleanup")
    if not callable(source):
        return []
    reports = await await_me_maybe(source(services))
    return [dict(report) for report in reports or []]
