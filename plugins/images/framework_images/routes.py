"""The uploads route: ``POST <path>`` takes an image, ``GET <path>/{upload_id}`` tells how it is going.

``POST`` takes ``multipart/form-data`` with the file in the field ``file``, sent as a file (with a
file name; else 400). It refuses bodies above ``max_upload_bytes`` (413, saying the limit), stores the
original, writes the upload record, enqueues ``image:process`` and answers 202 at once::

    {"id": "9f0c...", "state": "processing", "url": "/uploads/9f0c...", "original": "<download URL>"}

``GET`` answers the upload's state and, once done, the thumbnails' download URLs::

    {"id": "...", "state": "done", "original": "...", "thumbnails": {"small": "...", ...}, ...}

``state`` is ``processing``, ``done`` or ``failed`` (then ``error`` says why, and the original has been
deleted, so ``original`` is empty). The type of the file is read from its bytes; what the client
claims is only passed along for logging. A file whose first bytes are no known image type is refused
at once (415) and never stored.

An upload still ``processing`` whose task was archived (by anything: the dashboard, asynq's CLI, the
recoverer) or deleted is answered ``failed`` with the task's error, and its record is written so
(:func:`framework_images.archived.reconcile`); its original is then kept but not offered (``original``
is empty, as for every failed upload).

Uploads are open to anyone, so by default each client address may make ``upload_limit`` of them per
``upload_window`` seconds (429 with ``Retry-After`` above, checked before the body is read); the
count is kept in Redis and shared by every web process. ``upload_limit = 0`` removes the limit.

Handlers receive the process's :class:`~framework.services.Services` from the app's ``services``
dependency and enqueue through ``services.client``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from litestar import Request, Response, Router, get, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.exceptions import (
    ClientException,
    HTTPException,
    NotFoundException,
    ServiceUnavailableException,
    TooManyRequestsException,
)
from litestar.params import Body, FromPath
from litestar.status_codes import (
    HTTP_202_ACCEPTED,
    HTTP_400_BAD_REQUEST,
    HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    HTTP_415_UNSUPPORTED_MEDIA_TYPE,
)

from framework import Services
from framework.errors import RedisUnavailable
from framework.logging import get_logger
from framework.storage import Storage
from framework.web.ratelimit import RateLimit, client_address, retry_after_seconds
from framework_images.archived import reconcile
from framework_images.config import ImagesConfig
from framework_images.processing import sniff
from framework_images.storage import (
    UploadRecord,
    UploadState,
    check_upload_id,
    new_upload_id,
    original_key,
    read_record,
    write_record,
)
from framework_images.tasks import process_image, process_image_task

if TYPE_CHECKING:
    from litestar.connection import ASGIConnection
    from litestar.handlers.base import BaseRouteHandler

__all__ = ("STATUS_ROUTE", "ThumbnailURL", "UploadAccepted", "UploadForm", "UploadStatus", "upload_router")

STATUS_ROUTE = "framework_images:upload"
"""Route name of ``GET <path>/{upload_id}``, for ``app.route_reverse``."""

_MULTIPART_SLACK = 64 * 1024  # boundaries and part headers around the file


@dataclass
class UploadForm:
    """The multipart form of ``POST <path>``.

    Attributes:
        file: the image.
    """

    file: UploadFile


class UploadAccepted(msgspec.Struct, frozen=True, kw_only=True):
    """Answer to an upload (202).

    Attributes:
        id: the upload id.
        state: ``processing``.
        url: where to ``GET`` the upload's state.
        original: download URL of the original.
    """

    id: str
    state: UploadState
    url: str
    original: str


class ThumbnailURL(msgspec.Struct, frozen=True, kw_only=True):
    """One stored thumbnail in an upload's state.

    Attributes:
        name: the size name.
        format: ``webp`` or ``jpeg``.
        width: pixel width.
        height: pixel height.
        url: download URL.
    """

    name: str
    format: str
    width: int
    height: int
    url: str


class UploadStatus(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """An upload's state.

    Attributes:
        id: the upload id.
        state: ``processing``, ``done`` or ``failed``.
        original: download URL of the original; empty once the upload failed (the original is deleted).
        mime_type: the original's type (read from its bytes once processed).
        width: the original's displayed width (0 until processed).
        height: the original's displayed height.
        thumbnails: size name -> download URL in the first configured format (empty until done).
        files: every stored thumbnail, each format.
        error: why processing failed; absent otherwise.
    """

    id: str
    state: UploadState
    original: str
    mime_type: str
    width: int
    height: int
    thumbnails: dict[str, str]
    files: list[ThumbnailURL]
    error: str | None = None


async def _read_limited(upload: UploadFile, limit: int) -> bytes:
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(
            status_code=HTTP_413_REQUEST_ENTITY_TOO_LARGE,
            detail=f"the file is larger than the upload limit of {limit} bytes",
        )
    if not data:
        raise ClientException(detail="the file is empty")
    return data


def _binary_form_field(_: Request[Any, Any, Any], __: UnicodeDecodeError) -> Response[dict[str, Any]]:
    """400 for a form part without a file name holding binary: Litestar decodes such a part as text."""
    detail = "the form is invalid: send the image in the field 'file' as a file, with a file name"
    return Response({"status_code": HTTP_400_BAD_REQUEST, "detail": detail}, status_code=HTTP_400_BAD_REQUEST)


def _filename(upload: UploadFile) -> str:
    name = (upload.filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    return name[:255]


async def _status(storage: Storage, record: UploadRecord, primary: str) -> UploadStatus:
    files = [
        ThumbnailURL(name=t.name, format=t.format, width=t.width, height=t.height, url=await storage.url(t.key))
        for t in record.thumbnails
    ]
    thumbnails = {f.name: f.url for f in files if f.format == primary}
    return UploadStatus(
        id=record.id,
        state=record.state,
        original=await storage.url(record.original) if record.state != "failed" else "",
        mime_type=record.mime_type,
        width=record.width,
        height=record.height,
        thumbnails=thumbnails,
        files=files,
        error=record.error,
    )


def upload_router(config: ImagesConfig) -> Router:
    """Build the uploads routes for ``config`` (path, size limit, formats).

    Args:
        config: the plugin's settings.

    Returns:
        A Litestar router mounted at ``config.path``.
    """
    limit = config.max_upload_bytes
    primary = config.formats[0]

    async def throttle(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        """Count the upload for the client's address; 429 once it has made ``upload_limit`` in the window."""
        if not config.upload_limit:
            return
        services: Services = connection.app.state.framework_services
        client = client_address(connection)
        uploads = RateLimit(
            services.redis, services.schema, "uploads", limit=config.upload_limit, window=config.upload_window
        )
        wait = await uploads.take(client)
        if wait:
            seconds = retry_after_seconds(wait)
            get_logger("framework_images").warning("upload_throttled", client=client, retry_after=seconds)
            raise TooManyRequestsException(
                detail=f"too many uploads from your address: try again in {seconds} s",
                headers={"Retry-After": str(seconds)},
            )

    @post(
        "/",
        status_code=HTTP_202_ACCEPTED,
        request_max_body_size=limit + _MULTIPART_SLACK,
        guards=[throttle],
        exception_handlers={UnicodeDecodeError: _binary_form_field},
        name="framework_images:create",
    )
    async def create_upload(
        request: Request[Any, Any, Any],
        data: Annotated[UploadForm, Body(media_type=RequestEncodingType.MULTI_PART)],
        services: NamedDependency[Services],
    ) -> Response[UploadAccepted]:
        """Store an uploaded image and queue its thumbnails."""
        content = await _read_limited(data.file, limit)
        kind = sniff(content[:16])
        if kind is None:
            raise HTTPException(
                status_code=HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                detail="not an image: the file's first bytes are none of the supported image types",
            )
        upload_id = new_upload_id()
        ext, mime = kind
        key = original_key(upload_id, ext)
        storage = services.storage
        now = time.time()
        await storage.put(key, content, content_type=mime)
        # the task's id is the upload's and its queue the task type's, both known before it is queued: the
        # record names the task from the start (the cleanup plugin keeps an upload whose task still waits)
        queue = process_image_task.queue
        record = UploadRecord(
            id=upload_id,
            state="processing",
            original=key,
            mime_type=mime,
            size=len(content),
            filename=_filename(data.file),
            created=now,
            updated=now,
            task_id=upload_id,
            queue=queue,
        )
        await write_record(storage, record)
        try:
            await process_image(
                services.client, upload_id, key, data.file.content_type or "", task_id=upload_id, queue=queue
            )
        except RedisUnavailable as exc:
            await storage.delete(key)
            failed = msgspec.structs.replace(record, state="failed", error=f"could not queue processing: {exc}")
            await write_record(storage, failed)
            raise ServiceUnavailableException(detail="the task queue is unavailable; try again later") from exc
        url = request.app.route_reverse(STATUS_ROUTE, upload_id=upload_id)
        body = UploadAccepted(id=upload_id, state="processing", url=url, original=await storage.url(key))
        return Response(body, status_code=HTTP_202_ACCEPTED, headers={"Location": url})

    @get("/{upload_id:str}", name=STATUS_ROUTE)
    async def get_upload(upload_id: FromPath[str], services: NamedDependency[Services]) -> UploadStatus:
        """Return an upload's state and, once done, its thumbnails' URLs."""
        try:
            check_upload_id(upload_id)
        except ValueError as exc:
            raise NotFoundException(detail=f"no upload {upload_id!r}") from exc
        record = await read_record(services.storage, upload_id)
        if record is None:
            raise NotFoundException(detail=f"no upload {upload_id!r}")
        record = await reconcile(services, record)  # its task archived or deleted: failed, not processing
        return await _status(services.storage, record, primary)

    return Router(path=config.path, route_handlers=[create_upload, get_upload], tags=["uploads"])
