"""The ``image:process`` task: make the configured thumbnails of an uploaded image.

The five parts: the type string :data:`PROCESS_IMAGE`, the payload :class:`ProcessImage`, the
enqueue helper :func:`process_image`, the handler :func:`handle_process_image` and the task
definition :data:`process_image_task`.

Outcomes:

- not an image, truncated or corrupt, too many pixels, an original larger than ``max_upload_bytes``
  (stored by another producer: it is not read into memory, nor deleted), the original missing, or a
  payload that cannot name objects: :class:`~framework.errors.SkipRetry` with a message saying which; the task
  is archived at once and the upload record says ``failed`` with that message. An original that is
  not a usable image is then deleted, so a rejected file is not left downloadable. The record is
  written before the delete: if the store fails in between, the retry finds the original again and
  records the same reason, instead of a missing original. A run that finds the original gone and the
  record already ``failed`` (the task delivered again after a rejection) keeps that reason.
- the store unreachable or answering 5xx: :class:`~framework.storage.StorageUnavailable`
  propagates and the task is retried (twice by default).
- otherwise every thumbnail is stored under :func:`~framework_images.storage.thumbnail_key` and
  the record says ``done``. Running it again writes the same bytes to the same keys.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING, Any, Unpack

import msgspec

from framework import StashKey, TaskDef
from framework.errors import SkipRetry
from framework.storage import ObjectNotFound, ObjectTooLarge, validate_key
from framework_images.config import load_config
from framework_images.errors import ImageError
from framework_images.storage import (
    ThumbnailFile,
    UploadRecord,
    check_upload_id,
    read_record,
    thumbnail_key,
    write_record,
)

if TYPE_CHECKING:
    from framework import Client, EnqueueOptions, Services, TaskContext, TaskInfo
    from framework.storage import Storage
    from framework_images.config import ImagesConfig
    from framework_images.processing import SourceImage, Thumbnail

__all__ = ("PROCESS_IMAGE", "ProcessImage", "handle_process_image", "process_image", "process_image_task")

PROCESS_IMAGE = "image:process"
"""The task type string; Go producers enqueue this type too."""


class ProcessImage(msgspec.Struct, frozen=True, kw_only=True):
    """Payload of ``image:process``: JSON ``{"upload_id", "key", "mime_type"}``, as Grit's ``ImagePayload``.

    Set by the producer (the uploads route, or a Go service); read by the handler.

    Attributes:
        upload_id: the upload's id. Text, or a number as Go producers with numeric ids send it;
            it must be 1-64 of ``A-Z a-z 0-9 _ -`` because it names the thumbnails' keys.
        key: object key of the original in the storage service.
        mime_type: the type the client claimed. Informational only: the real type is read from
            the bytes.
    """

    upload_id: str | int
    key: str
    mime_type: str = ""


class _State:
    """Per-process state of the plugin: its config and a limit on images decoded at once."""

    __slots__ = ("config", "limit")

    def __init__(self, config: ImagesConfig) -> None:
        self.config = config
        self.limit = asyncio.Semaphore(config.max_parallel or os.cpu_count() or 1)


_STATE: StashKey[_State] = StashKey("framework_images")


def _state(services: Services) -> _State:
    state = services.stash.get(_STATE)
    if state is None:
        state = _State(load_config(services.settings))
        services.stash[_STATE] = state
    return state


def _render(data: bytes, config: ImagesConfig) -> tuple[SourceImage, list[Thumbnail]]:
    """The Pillow work, run in a thread (Pillow is imported with the first image, not with the worker)."""
    from framework_images.processing import identify, make_thumbnails  # noqa: PLC0415

    source = identify(data, max_pixels=config.max_pixels)
    thumbnails = make_thumbnails(
        data,
        config.sizes,
        config.formats,
        webp_quality=config.webp_quality,
        webp_method=config.webp_method,
        jpeg_quality=config.jpeg_quality,
        reducing_gap=config.reducing_gap,
        max_pixels=config.max_pixels,
    )
    return source, thumbnails


async def _previous(storage: Storage, upload_id: str) -> UploadRecord | None:
    try:
        return await read_record(storage, upload_id)
    except msgspec.DecodeError:  # a damaged record is replaced
        return None


async def _finish(storage: Storage, upload_id: str, key: str, **fields: Any) -> UploadRecord:
    """Write the upload's record with ``fields``, keeping what the route recorded (file name, creation time)."""
    now = time.time()
    previous = await _previous(storage, upload_id)
    if previous is None:
        record = UploadRecord(id=upload_id, original=key, created=now, updated=now, **fields)
    else:
        record = msgspec.structs.replace(previous, original=key, updated=now, **fields)
    await write_record(storage, record)
    return record


async def _fail(
    ctx: TaskContext, storage: Storage, upload_id: str, key: str, message: str, *, delete: bool = False
) -> SkipRetry:
    """Mark the upload ``failed`` and return the error to raise.

    With ``delete``, the original is deleted afterwards, so a rejected file is not left downloadable.
    Deleting it before the record is written would lose the reason when the write fails: the retry
    would find no original and record that instead.
    """
    await _finish(storage, upload_id, key, state="failed", error=message, thumbnails=[])
    if delete:
        await storage.delete(key)
    ctx.logger.warning("image_rejected", upload_id=upload_id, key=key, error=message, deleted=delete)
    return SkipRetry(message)


async def _rejected_before(storage: Storage, upload_id: str, key: str) -> str | None:
    """The reason an earlier run rejected (and deleted) this original, if the record says so.

    A task delivered again after its run rejected the image (the worker died before archiving it)
    finds the original gone; the record keeps the real reason instead of "cannot read the original".
    """
    previous = await _previous(storage, upload_id)
    if previous is not None and previous.state == "failed" and previous.original == key and previous.error:
        return previous.error
    return None


async def handle_process_image(ctx: TaskContext, payload: ProcessImage) -> None:
    """Make and store every configured thumbnail of the original, then mark the upload ``done``.

    Raises:
        SkipRetry: the input can never be processed; the message says why.
        StorageUnavailable: the store cannot be reached; the task is retried.
    """
    try:
        upload_id = check_upload_id(payload.upload_id)
    except ValueError as exc:
        raise SkipRetry(str(exc)) from exc
    storage = ctx.services.storage
    key = payload.key
    state = _state(ctx.services)
    try:
        validate_key(key)
        data = await storage.get(key, max_size=state.config.max_upload_bytes)
    except ObjectTooLarge as exc:
        message = f"the original is {exc.size} bytes, more than max_upload_bytes={exc.max_size}"
        raise await _fail(ctx, storage, upload_id, key, message) from exc
    except (ValueError, ObjectNotFound) as exc:  # InvalidKey is a ValueError
        rejected = await _rejected_before(storage, upload_id, key)
        if rejected is not None:
            raise SkipRetry(rejected) from exc
        raise await _fail(ctx, storage, upload_id, key, f"cannot read the original: {exc}") from exc
    async with state.limit:
        try:
            source, thumbnails = await asyncio.to_thread(_render, data, state.config)
        except ImageError as exc:
            raise await _fail(ctx, storage, upload_id, key, str(exc), delete=True) from exc
    if payload.mime_type and payload.mime_type != source.mime_type:
        ctx.logger.info("image_type_differs", upload_id=upload_id, claimed=payload.mime_type, real=source.mime_type)
    keys = [thumbnail_key(upload_id, t.name, t.format) for t in thumbnails]
    await asyncio.gather(
        *(storage.put(k, t.data, content_type=t.content_type) for k, t in zip(keys, thumbnails, strict=True))
    )
    files = [
        ThumbnailFile(name=t.name, format=t.format, key=k, width=t.width, height=t.height, size=len(t.data))
        for k, t in zip(keys, thumbnails, strict=True)
    ]
    await _finish(
        storage,
        upload_id,
        key,
        state="done",
        error=None,
        mime_type=source.mime_type,
        size=len(data),
        width=source.width,
        height=source.height,
        thumbnails=files,
    )
    ctx.logger.info("image_processed", upload_id=upload_id, key=key, format=source.format, thumbnails=len(files))


process_image_task: TaskDef[ProcessImage] = TaskDef(
    type=PROCESS_IMAGE,
    payload=ProcessImage,
    handler=handle_process_image,
    queue="default",
    max_retry=2,
    timeout=300.0,
    description="Make the configured thumbnails (WebP/JPEG) of an uploaded image",
)
"""The ``image:process`` task definition: queue ``default``, 2 retries, 5 minutes."""


async def process_image(
    client: Client, upload_id: str | int, key: str, mime_type: str = "", **options: Unpack[EnqueueOptions]
) -> TaskInfo:
    """Enqueue ``image:process`` for the original stored at ``key``.

    Args:
        client: the enqueue client.
        upload_id: the upload's id.
        key: the original's object key.
        mime_type: the type the client claimed (informational).
        **options: enqueue options (``queue``, ``process_in``, ``unique``, ...).

    Returns:
        The enqueued task's info.
    """
    payload = ProcessImage(upload_id=upload_id, key=key, mime_type=mime_type)
    return await process_image_task.enqueue(client, payload, **options)
