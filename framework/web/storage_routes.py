"""The ``storage.public_url`` route (``/storage``): the local backend's objects, served so they cannot act as the app.

Objects are whatever users uploaded, and they are served from the app's own origin, the one the admin
lives on. So every answer:

- carries the content type stored with the object (see :meth:`~framework.storage.Storage.put`),
  never one guessed from the bytes (``X-Content-Type-Options: nosniff``);
- is a download (``Content-Disposition: attachment``) unless that type is a raster image that
  browsers display without running anything (PNG, JPEG, GIF, WebP, AVIF, BMP, ICO). SVG, HTML, XML,
  PDF and every other type are downloads;
- carries ``Content-Security-Policy: default-src 'none'; sandbox``, so a document a browser renders
  anyway runs no script, loads nothing and gets an opaque origin instead of the app's.

A path that is not a valid key (a NUL or other control character, ``..`` or ``.`` segments, empty
segments, a leading ``/``, backslashes) answers 400 saying what is wrong with it. The backend's own
folder (``.local-storage/``: content-type sidecars, files being written) answers 404, as a missing
object does.

Every object carries an ``ETag`` and a ``Last-Modified`` date. A request whose ``If-None-Match`` names
that tag (or ``*``), or, without ``If-None-Match``, whose ``If-Modified-Since`` is not before that date,
answers ``304 Not Modified`` without the bytes, so a browser revalidating its copy does not download it
again.

The bytes are streamed from the store a chunk at a time (:meth:`~framework.storage.Storage.open`), never
held whole in memory; a client that goes away mid-download has the file or S3 connection released. So does
a client that keeps its connection open but stops reading: once it has taken nothing for ``send_timeout``
seconds (:data:`SEND_TIMEOUT_SECONDS` by default, see :func:`storage_router`), the download is given up
(``storage_route_client_stalled`` in the log) and the connection closed, the body cut short.

A plain ``GET`` (no ``Range``, ``If-None-Match`` or ``If-Modified-Since``) opens the object and takes its
headers from what it opened: one look at the store. Any other request looks first (``stat``), so that a
``HEAD``, a ``304`` or a ``416`` opens nothing; a ``GET`` then opens the version it looked at, and looks
again if a put replaced it in between, so headers and bytes always come from one version of the object.

Answers say ``Accept-Ranges: bytes``, and a ``GET`` may ask for one byte range (video seeking, resumed
downloads), checked after the ``304`` conditions:

- ``Range: bytes=<first>-<last>``, ``bytes=<first>-`` or ``bytes=-<suffix length>`` answers
  ``206 Partial Content`` with ``Content-Range: bytes <first>-<last>/<size>`` and only those bytes (a
  ``<last>`` past the end stops at the end; a suffix longer than the object is the whole object);
- a range starting at or beyond the end (or any range of an empty object, or ``bytes=-0``) answers
  ``416 Range Not Satisfiable`` with ``Content-Range: bytes */<size>``;
- a ``Range`` that is malformed, is not in bytes, or asks for several ranges is ignored and the whole
  object is sent with ``200``: RFC 9110 (section 14.2) lets a server ignore ``Range``, and one full
  answer serves a client better than a multipart one;
- with ``If-Range``, the range is served only while the validator it carries still matches: the
  current ``ETag`` (strong comparison: a weak tag never matches) or exactly the ``Last-Modified``
  date, once that is a second old (two versions written within one second share it). Otherwise the
  object may have changed since the client's partial copy and the whole of it is sent with ``200``.

``HEAD`` answers as a ``GET`` without ``Range`` would (a server ignores ``Range`` on ``HEAD``), with the
object's ``Content-Length``.

When the store fails, the answer says so without naming its internals (paths, endpoints, buckets), which go
to the log instead (``storage_route_unavailable``, ``storage_route_failed``):

- :class:`~framework.storage.StorageUnavailable` (a disk I/O error, S3 unreachable, cutting the
  connection or answering 5xx: a retry may succeed) answers ``503 Service Unavailable`` with ``Retry-After`` (see
  :data:`RETRY_AFTER_SECONDS`), as does an object replaced on every try while it is being opened;
- any other :class:`~framework.storage.StorageError` (the store refused for good: access denied, a bad
  configuration) answers ``500 Internal Server Error``: retrying does not help, and it is this server's
  setup that is wrong, not an answer from a gateway the client could route around (``502``), and the
  local backend has no upstream at all.

Once the bytes have started (the status and headers are sent), a failure (a body cut short) can no longer
change the status: the connection is closed early, and the client sees a body shorter than its
``Content-Length``.

The app mounts this route for the local backend only: S3 buckets are downloaded from their presigned
URLs, which point at the S3 server itself. The router itself serves any :class:`~framework.storage.Storage`.
"""

from __future__ import annotations

import asyncio
import re
import time
from email.utils import formatdate, parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from litestar import Request, Response, Router, route
from litestar.enums import HttpMethod
from litestar.exceptions import ClientException, HTTPException, NotFoundException
from litestar.response.base import ASGIResponse
from litestar.response.streaming import ASGIStreamingResponse
from litestar.status_codes import (
    HTTP_200_OK,
    HTTP_206_PARTIAL_CONTENT,
    HTTP_304_NOT_MODIFIED,
    HTTP_416_REQUESTED_RANGE_NOT_SATISFIABLE,
    HTTP_500_INTERNAL_SERVER_ERROR,
    HTTP_503_SERVICE_UNAVAILABLE,
)

from framework.logging import get_logger
from framework.storage import (
    DEFAULT_CONTENT_TYPE,
    InvalidKey,
    ObjectNotFound,
    StorageError,
    StorageUnavailable,
    validate_key,
)

if TYPE_CHECKING:
    from litestar.types import Message, Receive, Scope, Send

    from framework.storage import ObjectInfo, ObjectStream, Storage

__all__ = ("INLINE_TYPES", "RETRY_AFTER_SECONDS", "SEND_TIMEOUT_SECONDS", "STORAGE_CSP", "storage_router")

INLINE_TYPES = frozenset(
    {
        "image/png",
        "image/apng",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "image/avif",
        "image/bmp",
        "image/x-icon",
        "image/vnd.microsoft.icon",
    }
)
"""Content types served inline; every other type is served as a download."""

STORAGE_CSP = "default-src 'none'; sandbox"
"""The Content-Security-Policy of every stored object: no script, nothing loaded, an opaque origin."""

_ESSENCE = re.compile(r"[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+")
_HEADER_TEXT = re.compile(r"[\x20-\x7e]{1,255}")
_HEADERS = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": STORAGE_CSP}
_RANGE_SPEC = re.compile(r"[ \t]*(?:(\d{1,30})-(\d{0,30})|-(\d{1,30}))[ \t]*")
"""One byte range: ``<first>-<last>``, ``<first>-`` or ``-<suffix length>`` (longer numbers are malformed)."""
_OPEN_ATTEMPTS = 3
"""Tries to open the object that was stat'ed, while puts keep replacing it in between."""
RETRY_AFTER_SECONDS = 10
"""``Retry-After`` of a ``503``: long enough for the S3 client's own retries and a restarting store, short enough
that a browser or proxy retrying once does not give up on a blip."""
SEND_TIMEOUT_SECONDS = 60.0
"""How long a download waits for its client to take the next chunk (the default of ``storage_router``'s
``send_timeout``): longer than any pause of a live client, short enough that a client that stopped reading but
keeps its connection open does not hold the object's file or S3 connection for long. A chunk is up to 256 KiB
(:data:`~framework.storage.base.CHUNK_SIZE`), so a client slower than about 4 KiB/s is given up too."""
_log = get_logger("framework.web.storage_routes")


def _media_type(stored: str) -> tuple[str, bool]:
    """The type to serve for the ``stored`` one, and whether it is served inline.

    A stored type that is not a well-formed media type (or could break the header) becomes
    ``application/octet-stream``.
    """
    essence = stored.split(";", 1)[0].strip()
    if not _HEADER_TEXT.fullmatch(stored) or not _ESSENCE.fullmatch(essence):
        return DEFAULT_CONTENT_TYPE, False
    return stored, essence.lower() in INLINE_TYPES


def _validators(info: ObjectInfo) -> tuple[str, dict[str, str]]:
    """The object's entity tag (its size and modification time, which every put changes) and every answer's headers.

    The store's own entity tag (S3) is part of the tag when there is one, so two puts of the same size
    within a second differ too. The headers are the safety ones and the validators, ``ETag`` and
    ``Last-Modified``, which a ``304`` carries too.
    """
    tag = f"{info.size:x}-{info.modified!r}" + (f"-{info.etag}" if info.etag else "")
    return tag, {**_HEADERS, "ETag": f'"{tag}"', "Last-Modified": formatdate(info.modified, usegmt=True)}


def _http_date(value: str) -> float | None:
    """The Unix time of an HTTP date; none for a value that is not one (a date without a zone is not)."""
    try:
        date = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return None if date.tzinfo is None else date.timestamp()


def _not_modified(request: Request[Any, Any, Any], tag: str, modified: float) -> bool:
    """Whether the request's validators say the client's copy is current (``304``).

    ``If-None-Match`` decides when present: ``*`` or a list naming ``tag`` (weak tags compare by their
    value). Otherwise an ``If-Modified-Since`` date that is not before ``modified`` (in whole seconds, as
    ``Last-Modified`` gives it) does; a date that is not one is ignored.
    """
    match = request.headers.get("if-none-match")
    if match is not None:
        quoted = f'"{tag}"'
        return any(part.strip() in ("*", quoted, "W/" + quoted) for part in match.split(","))
    since = request.headers.get("if-modified-since")
    date = None if since is None else _http_date(since)
    return date is not None and int(modified) <= date


def _if_range_holds(request: Request[Any, Any, Any], tag: str, modified: float) -> bool:
    """Whether a ``Range`` may be served: there is no ``If-Range``, or its validator is still the current one.

    An entity tag must be the current tag, compared strongly (a weak ``W/`` tag never matches); a date
    must be exactly the ``Last-Modified`` date, and that date must be a strong validator: at least a
    second old, since two versions written within one second share it (RFC 9110, section 8.8.2.2).
    Anything else means the client's partial copy may be of another version of the object.
    """
    value = request.headers.get("if-range")
    if value is None:
        return True
    value = value.strip()
    if value.startswith(('"', "W/")):
        return value == f'"{tag}"'
    date = _http_date(value)
    return date is not None and date == int(modified) and modified <= time.time() - 1


def _requested_range(value: str, size: int) -> range | None:
    """The bytes one ``Range`` header asks for, of an object of ``size`` bytes.

    Returns none when the header is to be ignored (the whole object is sent): not a ``bytes`` range,
    several ranges, or malformed (including ``<last>`` before ``<first>``). Returns an empty range
    when it cannot be satisfied: it starts at or beyond the end, or is the suffix ``-0``.
    """
    unit, equals, ranges = value.strip().partition("=")
    if not equals or unit.lower() != "bytes" or "," in ranges:
        return None
    spec = _RANGE_SPEC.fullmatch(ranges)
    if spec is None:
        return None
    first, last, suffix = spec.groups()
    if suffix is not None:
        wanted = int(suffix)
        return range(max(size - wanted, 0), size) if wanted else range(0)
    start = int(first)
    if last and int(last) < start:
        return None
    return range(start, min(int(last) + 1, size) if last else size)


def _disposition(key: str, inline: bool) -> str:
    """The ``Content-Disposition`` of the object under ``key``: its last segment as the file name."""
    kind = "inline" if inline else "attachment"
    filename = key.rsplit("/", 1)[-1]
    quoted = quote(filename)
    if quoted == filename:
        return f'{kind}; filename="{filename}"'
    return f"{kind}; filename*=utf-8''{quoted}"


def _requested_key(request: Request[Any, Any, Any], prefix: str) -> str:
    """The key in the request's path ("" when there is none).

    It is taken from the path as sent (``raw_path``, percent-decoded), not from the routed path,
    which has ``//`` collapsed and would hide a key starting with ``/``.
    """
    raw: bytes | None = request.scope.get("raw_path")
    path: str = unquote(raw.decode("latin-1")) if raw else request.scope["path"]
    root = request.scope.get("root_path", "")
    if root and path.startswith(root + prefix + "/"):
        path = path[len(root) :]
    return path[len(prefix) + 1 :] if path.startswith(prefix + "/") else ""


class _ClientStalled(Exception):
    """The client took none of the answer for ``send_timeout`` seconds."""


class _ObjectResponse(ASGIStreamingResponse):
    """Streams an opened object and closes it however the answer ends: sent, failed, the client gone or stalled.

    The ASGI server has no send timeout: a client that keeps its connection open and reads nothing blocks a
    ``send`` for as long as it likes (once the socket buffers are full), holding the open file or S3 connection.
    So each ``send`` that takes longer than ``send_timeout`` ends the answer early: the stream is closed, and the
    app returns with the answer incomplete, for the server to close the connection.
    """

    __slots__ = ("send_timeout", "stream")

    def __init__(self, stream: ObjectStream, *, send_timeout: float, **kwargs: Any) -> None:
        super().__init__(iterator=stream, **kwargs)
        self.stream = stream
        self.send_timeout = send_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_or_give_up(message: Message) -> None:
            try:
                async with asyncio.timeout(self.send_timeout):
                    await send(message)
            except TimeoutError as exc:
                raise _ClientStalled from exc

        try:
            await super().__call__(scope, receive, send_or_give_up)
        except* _ClientStalled:
            _log.info("storage_route_client_stalled", key=self.stream.info.key, seconds=self.send_timeout)
        finally:
            await self.stream.aclose()  # never waits: a read still running releases the source when done


def _object_headers(key: str, info: ObjectInfo, headers: dict[str, str]) -> tuple[str, dict[str, str]]:
    """The media type and headers of an answer carrying the object's bytes (``200``, ``206``, and ``HEAD``)."""
    media_type, inline = _media_type(info.content_type)
    return media_type, {
        **headers,
        "Content-Type": media_type,  # as stored: no charset added, and on HEAD too
        "Content-Disposition": _disposition(key, inline),
        "Accept-Ranges": "bytes",
    }


def _range_to_send(request: Request[Any, Any, Any], info: ObjectInfo, tag: str) -> range | None:
    """The one range of the object a GET asks for and may have (see :func:`_requested_range`); none for all of it."""
    wanted = request.headers.get("range")
    if wanted is None or not _if_range_holds(request, tag, info.modified):
        return None
    return _requested_range(wanted, info.size)


def _same_object(opened: ObjectInfo, info: ObjectInfo) -> bool:
    return (opened.size, opened.modified, opened.etag) == (info.size, info.modified, info.etag)


def _key_of(request: Request[Any, Any, Any], prefix: str) -> str:
    """The key the request names; 400 for a key that is not one, 404 for no key at all."""
    key = _requested_key(request, prefix)
    if not key:
        raise NotFoundException(detail="no object here")
    try:
        return validate_key(key)
    except InvalidKey as exc:
        raise ClientException(detail=str(exc)) from exc


async def _stat(store: Storage, key: str) -> ObjectInfo:
    try:
        return await store.stat(key)
    except (ObjectNotFound, InvalidKey) as exc:  # InvalidKey here: the backend's reserved folder
        raise NotFoundException(detail=f"no object {key!r}") from exc


async def _open(store: Storage, key: str, start: int = 0, length: int | None = None) -> ObjectStream:
    try:
        return await store.open(key, start=start, length=length)
    except (ObjectNotFound, InvalidKey) as exc:  # InvalidKey here: the backend's reserved folder
        raise NotFoundException(detail=f"no object {key!r}") from exc


def _decided_by_the_object(request: Request[Any, Any, Any]) -> bool:
    """Whether what to answer depends on the object's info (a ``304``, a range, a ``416``), not only its bytes."""
    return any(name in request.headers for name in ("range", "if-none-match", "if-modified-since"))


async def _answer(
    store: Storage, prefix: str, request: Request[Any, Any, Any], *, is_head: bool, send_timeout: float
) -> ASGIResponse:
    """The answer to a GET or HEAD: 304, 416, or the object (whole, 200, or one range of it, 206).

    A plain GET opens the object and takes the headers from what it opened: one look at the store. A HEAD
    looks (``stat``) only, and a GET whose answer depends on the object's info looks first, so that a ``304``
    or ``416`` opens nothing, then opens the version it looked at (or looks again if a put replaced it).
    """
    key = _key_of(request, prefix)
    if not is_head and not _decided_by_the_object(request):
        stream = await _open(store, key)
        media_type, headers = _object_headers(key, stream.info, _validators(stream.info)[1])
        headers["Content-Length"] = str(stream.length)
        return _ObjectResponse(
            stream, send_timeout=send_timeout, status_code=HTTP_200_OK, headers=headers, media_type=media_type
        )
    for _ in range(_OPEN_ATTEMPTS):
        info = await _stat(store, key)
        tag, headers = _validators(info)
        if _not_modified(request, tag, info.modified):  # no Content-Length: a server would wait for the bytes
            return ASGIResponse(status_code=HTTP_304_NOT_MODIFIED, headers=headers)
        media_type, headers = _object_headers(key, info, headers)
        part = None if is_head else _range_to_send(request, info, tag)
        if part is not None and not part:
            return ASGIResponse(
                status_code=HTTP_416_REQUESTED_RANGE_NOT_SATISFIABLE,
                headers={**_HEADERS, "Content-Range": f"bytes */{info.size}", "Accept-Ranges": "bytes"},
                media_type="text/plain",
            )
        if part is not None:
            headers["Content-Range"] = f"bytes {part.start}-{part.stop - 1}/{info.size}"
        start, length = (part.start, len(part)) if part is not None else (0, info.size)
        headers["Content-Length"] = str(length)
        status = HTTP_200_OK if part is None else HTTP_206_PARTIAL_CONTENT
        if is_head:
            return ASGIResponse(status_code=status, headers=headers, media_type=media_type, is_head_response=True)
        stream = await _open(store, key, start, length)  # 404: deleted since the stat
        if _same_object(stream.info, info) and stream.length == length:
            return _ObjectResponse(
                stream, send_timeout=send_timeout, status_code=status, headers=headers, media_type=media_type
            )
        await stream.aclose()  # replaced since the stat: its size, dates and ranges are the new object's
    raise HTTPException(
        status_code=HTTP_503_SERVICE_UNAVAILABLE,
        detail=f"object {key!r} keeps changing; try again",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def _store_failed(request: Request[Any, Any, Any], exc: StorageError) -> Response[dict[str, Any]]:
    """``503`` with ``Retry-After`` for a store that may work again soon, ``500`` for one that refused for good.

    The body is a fixed sentence: the error's own text names server paths, endpoints and buckets, so it
    only goes to the log.
    """
    if isinstance(exc, StorageUnavailable):
        _log.warning("storage_route_unavailable", path=request.url.path, error=str(exc))
        status, detail = HTTP_503_SERVICE_UNAVAILABLE, "storage is unavailable for now; try again later"
        headers = {**_HEADERS, "Retry-After": str(RETRY_AFTER_SECONDS)}
    else:
        _log.error("storage_route_failed", path=request.url.path, error=str(exc), error_type=type(exc).__name__)
        status, detail = HTTP_500_INTERNAL_SERVER_ERROR, "storage refused to serve this object"
        headers = dict(_HEADERS)
    return Response({"status_code": status, "detail": detail}, status_code=status, headers=headers)


def storage_router(store: Storage, path: str, *, send_timeout: float = SEND_TIMEOUT_SECONDS) -> Router:
    """Build the route serving ``store``'s objects at ``path`` (``GET`` and ``HEAD``).

    Args:
        store: the store whose objects are served (the app mounts it for the local backend).
        path: the URL prefix (``settings.storage.public_url``).
        send_timeout: seconds a download waits for its client to take the next chunk before it gives up,
            closing the object and the connection.

    Returns:
        A router to add to the app.
    """
    prefix = "/" + path.strip("/")

    # One handler for both methods: Litestar wants a HEAD-only handler to return no response at all.
    @route("/{key:path}", http_method=[HttpMethod.GET, HttpMethod.HEAD], name="storage", include_in_schema=False)
    async def serve_object(request: Request[Any, Any, Any]) -> ASGIResponse:
        """Download one stored object or one byte range of it (``GET``), or its headers (``HEAD``)."""
        is_head = request.method == HttpMethod.HEAD
        return await _answer(store, prefix, request, is_head=is_head, send_timeout=send_timeout)

    return Router(path=prefix, route_handlers=[serve_object], exception_handlers={StorageError: _store_failed})
