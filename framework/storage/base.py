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

:meth:`Storage.open` reads an object (or a byte range of it) a chunk at a time, as an
:class:`ObjectStream`, so serving a large object never holds it whole in memory.
"""

from __future__ import annotations

import asyncio
import re
import threading
from typing import TYPE_CHECKING, Protocol, Self

import msgspec

from framework.errors import FrameworkError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Mapping
    from types import TracebackType

__all__ = (
    "CHUNK_SIZE",
    "DEFAULT_CONTENT_TYPE",
    "MAX_KEY_BYTES",
    "InvalidKey",
    "InvalidMetadata",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStream",
    "ObjectTooLarge",
    "Storage",
    "StorageError",
    "StorageUnavailable",
    "check_range",
    "validate_key",
    "validate_metadata",
    "validate_prefix",
)

DEFAULT_CONTENT_TYPE = "application/octet-stream"
MAX_KEY_BYTES = 1024
"""The longest key S3 accepts, in UTF-8 bytes; every backend applies the same limit."""
CHUNK_SIZE = 256 * 1024
"""The most bytes an :class:`ObjectStream` reads at once."""

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


class ObjectStream:
    """The bytes of one object, or of a range of it, read a chunk at a time: what :meth:`Storage.open` returns.

    It is an async iterator of non-empty ``bytes`` chunks (at most :data:`CHUNK_SIZE` each) that ends
    after ``length`` bytes. Each read runs in a worker thread. Close it when done, with ``async with``
    or :meth:`aclose`, also when not reading it to the end: that releases the open file or the S3
    connection. It closes itself once all ``length`` bytes are read or a read fails. Closing never
    waits: a read still running in its thread (its reader was cancelled) closes the source when it
    ends.

    A body that ends early (the connection to the store broke) raises :class:`StorageUnavailable`, as
    a failed read does.

    Attributes:
        info: the object being read, as it was when opened: its ``size`` is the whole object's, and
            ``content_type``, ``modified`` and ``metadata`` are set (``etag`` on S3). A put after the
            open does not change what the stream yields.
        start: the offset of the first byte yielded.
        length: how many bytes it yields in all.
    """

    def __init__(
        self,
        info: ObjectInfo,
        *,
        start: int,
        length: int,
        read: Callable[[int], bytes],
        release: Callable[[], None],
    ) -> None:
        """Wrap an open source: ``read(n)`` returns up to ``n`` bytes (blocking), ``release()`` frees the source."""
        self.info = info
        self.start = start
        self.length = length
        self._read = read
        self._release = release
        self._remaining = length
        self._lock = threading.Lock()  # held by a read and by the release: never both at once
        self._closing = False
        self._released = False

    @property
    def closed(self) -> bool:
        """Whether the source (file, connection) has been released."""
        return self._released

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> bytes:
        if self._remaining <= 0 or self._closing:
            self._close()
            raise StopAsyncIteration
        try:
            chunk = await asyncio.to_thread(self._read_locked, min(CHUNK_SIZE, self._remaining))
        except BaseException:  # a failed read, or a reader cancelled while the thread may still be reading
            self._close()
            raise
        if not chunk:
            self._close()
            done = self.length - self._remaining
            raise StorageUnavailable(f"object {self.info.key!r} ended after {done} of the {self.length} bytes expected")
        self._remaining -= len(chunk)
        if self._remaining <= 0:
            self._close()
        return chunk

    async def aclose(self) -> None:
        """Release the source; reading afterwards ends the iteration. Closing twice is harmless."""
        self._close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._close()

    def _read_locked(self, size: int) -> bytes:
        """Read in a worker thread; release the source afterwards if it was closed meanwhile."""
        with self._lock:
            data = b"" if self._released else self._read(size)
        if self._closing:  # closed while reading: the closer could not take the lock, so release here
            self._release_once()
        return data

    def _release_once(self) -> None:
        with self._lock:
            self._release_held()

    def _release_held(self) -> None:
        if not self._released:
            self._released = True
            self._release()

    def _close(self) -> None:
        """Release now unless a read holds the source; that read then releases it when it returns."""
        self._closing = True  # set before trying the lock: a read that still holds it sees this when done
        if self._lock.acquire(blocking=False):
            try:
                self._release_held()
            finally:
                self._lock.release()


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

    async def open(self, key: str, *, start: int = 0, length: int | None = None) -> ObjectStream:
        """Open the object under ``key`` to read it a chunk at a time, from byte ``start`` on.

        Nothing but the first response (S3) or the file handle (local) is taken until the stream is
        read, and the object is never held in memory whole. Close the stream when done (see
        :class:`ObjectStream`)::

            async with await storage.open("videos/1.mp4", start=1024, length=4096) as stream:
                async for chunk in stream:
                    ...

        Args:
            key: the object key.
            start: the offset of the first byte to read. At or beyond the end, the stream is empty.
            length: how many bytes to read at most; none reads to the end.

        Returns:
            The stream; its ``info`` describes the object as opened and its ``length`` is the number
            of bytes it yields (``length``, or fewer when the object ends first).

        Raises:
            ObjectNotFound: there is no object under ``key``.
            ValueError: ``start`` or ``length`` is negative.
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


def check_range(start: int, length: int | None) -> None:
    """Check the byte range given to :meth:`Storage.open`.

    Raises:
        ValueError: ``start`` or ``length`` is negative or not an integer.
    """
    for name, value in (("start", start), ("length", length)):
        if value is None and name == "length":
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name}={value!r} is invalid: byte offsets and lengths are integers from 0")


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
