"""Uploads whose ``image:process`` task ended archived without the handler marking them ``failed``.

The handler records the failures it recognises itself (a file that is no image, a missing original...).
Anything else that archives the task leaves the record saying ``processing``: an unexpected exception
retried until its retries ran out, a timeout on the last attempt, a cancellation, the recoverer's poison
pill, an archive from the dashboard or from asynq's CLI. Two paths mark such an upload ``failed``:

- :func:`record_archived`, called by the ``task_archived`` hook, for every archive a worker of ours writes
  (retries exhausted, timeouts, cancellations, ``SkipRetry``). The record's error is the task's error
  (``"<ExceptionType>: <message>"``, as stored on the task).
- :func:`reconcile`, called when the uploads route reads a record still ``processing`` that names its task:
  when the task is archived (by a path that fires no hook: the dashboard, asynq's CLI, the recoverer) or no
  longer exists (deleted), the record is marked ``failed`` and written back.

Both write only over a record that still says ``processing`` (a ``done`` or ``failed`` record is never
replaced, so the handler's own reason stays) and that names this task or no task.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import msgspec
from redis.exceptions import RedisError

from framework.errors import QueueNotFound, TaskNotFound, error_text
from framework.logging import get_logger
from framework.storage import StorageError
from framework_images.storage import UploadRecord, check_upload_id, read_record, write_record

if TYPE_CHECKING:
    from framework import Services, TaskContext
    from framework.storage import Storage

__all__ = ("ARCHIVED_WITHOUT_ERROR", "TASK_GONE", "mark_failed", "reconcile", "record_archived")

ARCHIVED_WITHOUT_ERROR = "processing stopped: its task was archived before it finished"
"""The error of an upload whose task was archived with no error of its own (archived while it waited)."""

TASK_GONE = "processing stopped: its task no longer exists (deleted from its queue)"
"""The error of an upload whose task was deleted before it finished."""

_log = get_logger("framework_images")


async def _current(storage: Storage, upload_id: str) -> UploadRecord | None:
    try:
        return await read_record(storage, upload_id)
    except msgspec.DecodeError:  # a damaged record is replaced, as the handler does
        return None


async def mark_failed(
    storage: Storage, upload_id: str, *, task_id: str, key: str, message: str, create: bool
) -> UploadRecord | None:
    """Mark the upload ``failed`` with ``message`` if its record still says ``processing``.

    The record is read again here, so a ``done`` or ``failed`` written meanwhile (by the handler) is kept.
    A record naming another task is left alone. With ``create``, an upload without a (readable) record
    gets one, as the handler's failures give it.

    Returns:
        The record written, or None when nothing was written.
    """
    previous = await _current(storage, upload_id)
    now = time.time()
    if previous is None:
        if not create:
            return None
        record = UploadRecord(
            id=upload_id, state="failed", original=key, error=message, thumbnails=[], created=now, updated=now
        )
    elif previous.state != "processing" or (previous.task_id and previous.task_id != task_id):
        return None
    else:
        record = msgspec.structs.replace(previous, state="failed", error=message, thumbnails=[], updated=now)
    await write_record(storage, record)
    return record


async def record_archived(ctx: TaskContext, error: BaseException) -> None:
    """Mark the upload of an archived ``image:process`` task ``failed`` with the task's error.

    The payload is read back from the archived task (the hook is not given it); when that fails, the
    upload named by the task id (the uploads route uses the upload id) is tried.
    """
    from framework.inspector import Inspector  # noqa: PLC0415
    from framework_images.tasks import process_image_task  # noqa: PLC0415

    services = ctx.services
    upload_id, key = ctx.id, ""
    message = error_text(error)
    try:
        details = await Inspector(services.redis, services.schema).get_task(ctx.queue, ctx.id)
        message = details.error or message  # the error as stored on the archived task
        payload = process_image_task.decode(details.payload)
        upload_id, key = check_upload_id(payload.upload_id), payload.key
    except (QueueNotFound, TaskNotFound, RedisError, OSError, ValueError, msgspec.DecodeError) as exc:
        ctx.logger.warning("image_archived_payload_unread", error=str(exc), note="the task id names the upload")
        try:
            check_upload_id(upload_id)
        except ValueError:
            return
    storage = services.storage
    written = await mark_failed(storage, upload_id, task_id=ctx.id, key=key, message=message, create=bool(key))
    if written is not None:
        ctx.logger.warning("image_archived", upload_id=upload_id, error=message, outcome="failed")


async def reconcile(services: Services, record: UploadRecord) -> UploadRecord:
    """``record`` as it should be read: ``failed`` when it says ``processing`` but its task is archived or gone.

    A record that names no task (written by another producer) is returned as it is; so is every record
    when Redis cannot be reached. The failed record is written back; when that write fails it is still
    what is answered (and the next read tries again).
    """
    if record.state != "processing" or not record.task_id or not record.queue:
        return record
    from framework.inspector import Inspector, TaskState  # noqa: PLC0415

    try:
        details = await Inspector(services.redis, services.schema).get_task(record.queue, record.task_id)
    except (QueueNotFound, TaskNotFound):
        # the route answers the upload id only after its task is queued, so a missing task was deleted
        message = TASK_GONE
    except (RedisError, OSError) as exc:  # RedisUnavailable is an OSError
        _log.warning("image_task_unreadable", upload_id=record.id, task_id=record.task_id, error=str(exc))
        return record
    else:
        if details.state is not TaskState.ARCHIVED:
            return record
        message = details.error or ARCHIVED_WITHOUT_ERROR
    storage = services.storage
    try:
        written = await mark_failed(
            storage, record.id, task_id=record.task_id, key=record.original, message=message, create=False
        )
    except StorageError as exc:
        _log.warning("image_record_unwritten", upload_id=record.id, error=str(exc))
        return msgspec.structs.replace(record, state="failed", error=message, thumbnails=[])
    if written is not None:
        _log.warning("image_archived", upload_id=record.id, task_id=record.task_id, error=message, outcome="failed")
        return written
    return await _current(storage, record.id) or record  # the handler finished meanwhile: its record
