"""The one place that names the plugin's objects, and the upload record kept with them.

Every upload lives under ``uploads/<upload_id>/``::

    uploads/<id>/original.<ext>     the file as uploaded (extension from its real type)
    uploads/<id>/<size>.webp        a thumbnail per configured size (and .jpg when configured)
    uploads/<id>/record.json        the upload record: state, original, thumbnails, error

Keeping the state with the files (not in Redis) means one listing of ``uploads/`` shows every
upload and its state, so a cleanup job can find abandoned ones without another store.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import TYPE_CHECKING, Literal

import msgspec

from framework.storage import ObjectNotFound

if TYPE_CHECKING:
    from framework.storage import Storage

__all__ = (
    "UPLOADS_PREFIX",
    "ThumbnailFile",
    "UploadRecord",
    "UploadState",
    "check_upload_id",
    "new_upload_id",
    "original_key",
    "read_record",
    "record_key",
    "thumbnail_key",
    "upload_prefix",
    "write_record",
)

UPLOADS_PREFIX = "uploads/"

UploadState = Literal["processing", "done", "failed"]
"""``processing`` until the task has run; then ``done`` or ``failed`` (with an error)."""

_UPLOAD_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_EXTENSIONS = {"webp": "webp", "jpeg": "jpg"}


def new_upload_id() -> str:
    """A new random upload id (32 hex digits)."""
    return uuid.uuid4().hex


def check_upload_id(upload_id: str | int) -> str:
    """Return ``upload_id`` as text if it can name objects: 1-64 of ``A-Z a-z 0-9 _ -``.

    Go producers send numeric ids (``42``); they become ``"42"``.

    Raises:
        ValueError: it cannot be used in a key; the message says why.
    """
    text = str(upload_id)
    if isinstance(upload_id, bool) or not _UPLOAD_ID.match(text):
        raise ValueError(f"invalid upload_id {upload_id!r}: use 1-64 letters, digits, '_' or '-'")
    return text


def upload_prefix(upload_id: str) -> str:
    """``uploads/<id>/``: the prefix of every object of one upload."""
    return f"{UPLOADS_PREFIX}{check_upload_id(upload_id)}/"


def original_key(upload_id: str, ext: str) -> str:
    """``uploads/<id>/original.<ext>``."""
    return f"{upload_prefix(upload_id)}original.{ext}"


def thumbnail_key(upload_id: str, size: str, fmt: str) -> str:
    """``uploads/<id>/<size>.webp`` (``.jpg`` for ``jpeg``)."""
    return f"{upload_prefix(upload_id)}{size}.{_EXTENSIONS.get(fmt, fmt)}"


def record_key(upload_id: str) -> str:
    """``uploads/<id>/record.json``."""
    return f"{upload_prefix(upload_id)}record.json"


class ThumbnailFile(msgspec.Struct, frozen=True, kw_only=True):
    """One stored thumbnail, as listed in the record.

    Attributes:
        name: the size name.
        format: ``webp`` or ``jpeg``.
        key: its object key.
        width: pixel width.
        height: pixel height.
        size: bytes.
    """

    name: str
    format: str
    key: str
    width: int
    height: int
    size: int


class UploadRecord(msgspec.Struct, frozen=True, kw_only=True):
    """The state of one upload, stored as JSON at :func:`record_key`. Written by the route and the task.

    Attributes:
        id: the upload id.
        state: ``processing``, ``done`` or ``failed``.
        original: the original's object key.
        mime_type: the original's type: sniffed by the route, then read from the pixels by the task.
        size: the original's size in bytes.
        filename: the name the client gave (informational).
        width: the original's width as displayed (0 until processed).
        height: the original's height as displayed.
        thumbnails: the stored thumbnails, largest first (empty until done).
        error: why processing failed.
        created: Unix time of the upload.
        updated: Unix time of the last change.
        task_id: the id of the ``image:process`` task the upload route enqueued (empty for records
            written otherwise); with ``queue``, what tells the cleanup plugin that the upload is
            still waiting for its task rather than abandoned.
        queue: that task's queue.
    """

    id: str
    state: UploadState
    original: str
    mime_type: str = ""
    size: int = 0
    filename: str = ""
    width: int = 0
    height: int = 0
    thumbnails: list[ThumbnailFile] = msgspec.field(default_factory=list)
    error: str | None = None
    created: float = msgspec.field(default_factory=time.time)
    updated: float = msgspec.field(default_factory=time.time)
    task_id: str = ""
    queue: str = ""


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(UploadRecord).decode


async def read_record(storage: Storage, upload_id: str) -> UploadRecord | None:
    """Return the upload's record, or None when there is none.

    Raises:
        msgspec.DecodeError: the stored record is not a valid record.
    """
    try:
        data = await storage.get(record_key(upload_id))
    except ObjectNotFound:
        return None
    return _decode(data)


async def write_record(storage: Storage, record: UploadRecord) -> None:
    """Store ``record`` at its key, replacing the previous one."""
    await storage.put(record_key(record.id), _encode(record), content_type="application/json")
