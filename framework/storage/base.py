"""The storage contract: :class:`ObjectInfo`, the :class:`Storage` protocol, key rules and storage errors.

Every backend (``local``, ``s3``) implements :class:`Storage` and raises only the errors below, so
plugins handle storage the same way whatever the backend:

- :class:`InvalidKey` (also a ``ValueError``): the key breaks the rules of :func:`validate_key`.
- :class:`ObjectNotFound` (also a ``LookupError``): no object under that key.
- :class:`ObjectTooLarge` (also a ``ValueError``): the object is larger than the reader allowed
  (``get(key, max_size=...)``); nothing of it was read into memory.
- :class:`StorageUnavailable` (also a ``ConnectionError``): the store cannot be reached, timed out or
  answered with a server error (5xx). Retrying later may succeed, so a task handler lets it
  propagate and the task is retried.
- :class:`StorageError`: anything else the store refused (access denied, a bad configuration).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Protocol

import msgspec

from framework.errors import FrameworkError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Mapping

__all__ = (
    "DEFAULT_CONTENT_TYPE",
    "MAX_KEY_BYTES",
    "InvalidKey",
    "InvalidMetadata",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectTooLarge",
    "Storage",
    "StorageError",
    "StorageUnavailable",
    "validate_key",
    "validate_metadata",
    "validate_prefix",
)

DEFAULT_CONTENT_TYPE = "application/octet-stream"
MAX_KEY_BYTES = 1024
"""The longest key S3 accepts, in UTF-8 bytes; every backend applies the same limit."""

_MAX_METADATA_BYTES = 2048
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_METADATA_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_METADATA_VALUE = re.compile(r"^[\x20-\x7e]*$")


class StorageError(FrameworkError):
    """A storage operation failed for a reason other than those of the subclasses below."""


class InvalidKey(StorageError, ValueError):
    """An object key (or list prefix) breaks the key rules; the message names the key and the problem."""


class InvalidMetadata(StorageError, ValueError):
    """Object metadata breaks the rules of :func:`validate_metadata`; the message names the entry."""


class ObjectNotFound(StorageError, LookupError):
    """No object exists under the key."""


class ObjectTooLarge(StorageError, ValueError):
    """The object is larger than the ``max_size`` its reader allowed; the message names its size and the limit."""

    def __init__(self, key: str, size: int, max_size: int) -> None:
        super().__init__(f"object {key!r} is {size} bytes, more than the {max_size} bytes allowed")
        self.key = key
        self.size = size
        self.max_size = max_size


class StorageUnavailable(StorageError, ConnectionError):
    """The store could not be reached, timed out or answered with a server error; retrying may succeed."""


class ObjectInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What a store knows about one object. Set by the backend; read by callers.

    Attributes:
        key: the object key.
        size: size in bytes.
        content_type: the MIME type given to :meth:`Storage.put`. Empty in :meth:`Storage.list` results
            (S3 listings do not carry it); call :meth:`Storage.stat` for it.
        modified: last modification, Unix time in seconds.
        metadata: user metadata given to :meth:`Storage.put`, names lower-cased. Empty in
            :meth:`Storage.list` results, like ``content_type``.
        etag: the store's entity tag when it has one (S3), else empty.
    """

    key: str
    size: int
    content_type: str = ""
    modified: float = 0.0
    metadata: dict[str, str] = msgspec.field(default_factory=dict)
    etag: str = ""


class Storage(Protocol):
    """An object store: bytes under ``/``-separated keys, whatever the backend.

    Every method validates its key with :func:`validate_key` first. Blocking work (files, the
    ``minio`` client) runs in worker threads, never on the event loop.
    """

    async def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """Store ``data`` under ``key``, replacing any object there; readers never see a partial object.

        Args:
            key: the object key.
            data: the object's bytes.
            content_type: the MIME type, returned by :meth:`stat` and served with downloads.
            metadata: small ASCII name/value pairs kept with the object (see :func:`validate_metadata`).

        Returns:
            The stored object's info.
        """
        ...

    async def get(self, key: str, *, max_size: int | None = None) -> bytes:
        """Return the bytes of the object under ``key``; raises :class:`ObjectNotFound` if there is none.

        With ``max_size``, an object larger than that many bytes raises :class:`ObjectTooLarge` instead,
        without being read into memory (a reader guarding against whatever another producer stored).
        """
        ...

    async def stat(self, key: str) -> ObjectInfo:
        """Return the info of the object under ``key``; raises :class:`ObjectNotFound` if there is none."""
        ...

    async def delete(self, key: str) -> bool:
        """Delete the object under ``key``; return whether there was one."""
        ...

    def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Iterate over the objects whose keys start with ``prefix``, in key order.

        This is an async iterator (``async for info in storage.list("uploads/")``), so listing a
        large bucket does not load every key at once. ``prefix`` is a plain string prefix, as in
        S3: ``"uploads/ab"`` matches ``"uploads/abc/x"``. The results carry ``key``, ``size``,
        ``modified`` (and ``etag`` on S3) only.
        """
        ...

    async def url(self, key: str, *, expires: float = 3600) -> str:
        """Return a URL from which a browser can download the object.

        Args:
            key: the object key; the object need not exist yet.
            expires: seconds the URL stays valid (1 s to 7 days). S3 signs a presigned URL with it;
                the local backend's URLs are served by the app and do not expire.
        """
        ...

    async def check(self) -> None:
        """Check that the store is reachable and usable; raises :class:`StorageUnavailable` if not."""
        ...

    async def close(self) -> None:
        """Release connections; the store must not be used afterwards."""
        ...


def _segment_problem(key: str) -> str | None:
    for segment in key.split("/"):
        if not segment:
            return "empty segments are not allowed ('//' or a trailing '/')"
        if segment in (".", ".."):
            return f"path traversal is not allowed (a {segment!r} segment)"
    return None


_KEY_RULES: tuple[tuple[Callable[[str], bool], str], ...] = (
    (lambda key: not key, "it is empty"),
    (lambda key: key.startswith("/"), "absolute paths are not allowed (it starts with '/')"),
    (lambda key: "\\" in key, "backslashes are not allowed (separate segments with '/')"),
    (lambda key: bool(_CONTROL_CHARS.search(key)), "control characters are not allowed"),
    (lambda key: any(0xD800 <= ord(ch) <= 0xDFFF for ch in key), "it is not valid UTF-8 text (lone surrogates)"),
)


def _key_problem(key: str) -> str | None:
    """Say what is wrong with ``key``, or return None when it is valid."""
    for broken, problem in _KEY_RULES:
        if broken(key):
            return problem
    size = len(key.encode("utf-8"))
    if size > MAX_KEY_BYTES:
        return f"it is {size} bytes long; at most {MAX_KEY_BYTES} are allowed"
    return _segment_problem(key)


def validate_key(key: str) -> str:
    r"""Check an object key and return it unchanged.

    A key is non-empty UTF-8 text of at most 1024 bytes, made of ``/``-separated segments. It must
    not start with ``/`` (absolute path), contain ``\\`` or control characters, have empty segments
    (``a//b``, ``a/``) or ``.``/``..`` segments (path traversal).

    Args:
        key: the key to check.

    Raises:
        InvalidKey: the key breaks a rule; the message names the key and the rule.
    """
    if not isinstance(key, str):
        raise InvalidKey(f"invalid object key {key!r}: it must be a string, not {type(key).__name__}")
    problem = _key_problem(key)
    if problem is not None:
        raise InvalidKey(f"invalid object key {key!r}: {problem}")
    return key


def validate_prefix(prefix: str) -> str:
    """Check a list prefix and return it unchanged.

    A prefix is empty, or complete segments that follow the key rules, then an optional partial
    last segment (``"uploads/ab"``, ``"uploads/."``).

    Raises:
        InvalidKey: the prefix breaks a key rule.
    """
    if not isinstance(prefix, str):
        raise InvalidKey(f"invalid list prefix {prefix!r}: it must be a string")
    complete, _, partial = prefix.rpartition("/")
    if prefix.startswith("/"):
        problem: str | None = "absolute paths are not allowed (it starts with '/')"
    else:
        problem = _key_problem(complete) if complete else None
    if problem is None and partial not in ("", ".", ".."):
        problem = _key_problem(partial)
    if problem is not None:
        raise InvalidKey(f"invalid list prefix {prefix!r}: {problem}")
    return prefix


def validate_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """Check user metadata and return it with lower-cased names (S3 lower-cases them too).

    Names are ASCII letters, digits, ``-`` and ``_``; values are printable ASCII (they travel as
    HTTP headers on S3); all of it together is at most 2 KiB.

    Raises:
        InvalidMetadata: an entry breaks a rule; the message names it.
    """
    if not metadata:
        return {}
    out: dict[str, str] = {}
    total = 0
    for name, value in metadata.items():
        lowered = name.lower()
        if not _METADATA_NAME.match(lowered):
            raise InvalidMetadata(f"invalid metadata name {name!r}: use ASCII letters, digits, '-' and '_'")
        if not isinstance(value, str) or not _METADATA_VALUE.match(value):
            raise InvalidMetadata(f"invalid metadata value for {name!r}: {value!r} is not printable ASCII text")
        total += len(lowered) + len(value)
        out[lowered] = value
    if total > _MAX_METADATA_BYTES:
        raise InvalidMetadata(f"metadata is {total} bytes; at most {_MAX_METADATA_BYTES} are allowed")
    return out
