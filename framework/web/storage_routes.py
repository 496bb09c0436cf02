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
again. ``Range`` is not supported: the whole object is sent.

S3 buckets are not served here: their presigned URLs point at the S3 server itself.
"""

from __future__ import annotations

import re
from email.utils import formatdate, parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from litestar import Request, Router, get, head
from litestar.exceptions import ClientException, NotFoundException
from litestar.response.base import ASGIResponse
from litestar.response.file import ASGIFileResponse
from litestar.status_codes import HTTP_200_OK, HTTP_304_NOT_MODIFIED

from framework.storage import DEFAULT_CONTENT_TYPE, InvalidKey, ObjectNotFound, validate_key

if TYPE_CHECKING:
    from framework.storage import LocalStorage, ObjectInfo

__all__ = ("INLINE_TYPES", "STORAGE_CSP", "storage_router")

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

    The headers are the safety ones and the validators, ``ETag`` and ``Last-Modified``, which a ``304``
    carries too.
    """
    tag = f"{info.size:x}-{info.modified!r}"
    return tag, {**_HEADERS, "ETag": f'"{tag}"', "Last-Modified": formatdate(info.modified, usegmt=True)}


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
    if since is None:
        return False
    try:
        date = parsedate_to_datetime(since)
    except (TypeError, ValueError, IndexError):
        return False
    if date.tzinfo is None:  # a date without a zone is not an HTTP-date
        return False
    return int(modified) <= date.timestamp()


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


def storage_router(store: LocalStorage, path: str) -> Router:
    """Build the route serving ``store``'s objects at ``path`` (``GET`` and ``HEAD``).

    Args:
        store: the local backend whose folder is served.
        path: the URL prefix (``settings.storage.public_url``).

    Returns:
        A router to add to the app.
    """
    prefix = "/" + path.strip("/")

    async def found(request: Request[Any, Any, Any]) -> tuple[str, ObjectInfo]:
        """The key the request names and its object's info; 400 for a key that is not one, 404 for no object."""
        key = _requested_key(request, prefix)
        if not key:
            raise NotFoundException(detail="no object here")
        try:
            validate_key(key)
        except InvalidKey as exc:
            raise ClientException(detail=str(exc)) from exc
        try:
            return key, await store.stat(key)
        except (ObjectNotFound, InvalidKey) as exc:  # InvalidKey here: the backend's reserved folder
            raise NotFoundException(detail=f"no object {key!r}") from exc

    def file(key: str, info: ObjectInfo, headers: dict[str, str], *, is_head: bool, status: int) -> ASGIFileResponse:
        media_type, inline = _media_type(info.content_type)
        if status != HTTP_304_NOT_MODIFIED:
            headers = {**headers, "Content-Type": media_type}  # as stored: no charset added, and on HEAD too
        return ASGIFileResponse(
            file_path=store.objects_dir / key,
            filename=key.rsplit("/", 1)[-1],
            media_type=media_type,
            content_disposition_type="inline" if inline else "attachment",
            headers=headers,
            status_code=status,
            is_head_response=is_head,
        )

    @get("/{key:path}", name="storage", include_in_schema=False)
    async def get_object(request: Request[Any, Any, Any]) -> ASGIResponse:
        """Download one stored object."""
        key, info = await found(request)
        tag, headers = _validators(info)
        if _not_modified(request, tag, info.modified):  # no Content-Length: a server would wait for that many bytes
            return ASGIResponse(status_code=HTTP_304_NOT_MODIFIED, headers=headers)
        return file(key, info, headers, is_head=False, status=HTTP_200_OK)

    @head("/{key:path}", name="storage/head", include_in_schema=False)
    async def head_object(request: Request[Any, Any, Any]) -> ASGIFileResponse:
        """The headers of one stored object."""
        key, info = await found(request)
        tag, headers = _validators(info)
        status = HTTP_304_NOT_MODIFIED if _not_modified(request, tag, info.modified) else HTTP_200_OK
        return file(key, info, headers, is_head=True, status=status)

    return Router(path=prefix, route_handlers=[get_object, head_object])
