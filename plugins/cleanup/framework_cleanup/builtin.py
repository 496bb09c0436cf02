"""The built-in sweepers: expired tokens, temporary uploads, abandoned uploads and orphan thumbnails, old outbox mail.

=========  ===============  =======  ==========================================================
name       schedule         grace    removes
=========  ===============  =======  ==========================================================
tokens     ``@hourly``      1 min    index entries (and leftovers) of expired one-time tokens
tmp        ``30 * * * *``   24 h     storage objects under ``tmp/`` older than the grace period
uploads    ``0 2 * * *``    1 h      uploads whose record never reached ``done`` within
                                     ``abandoned_after`` (24 h) and whose processing task is not
                                     still queued, and the thumbnails and record of uploads whose
                                     original is gone
outbox     ``0 3 * * *``    7 days   ``.eml`` files in the email outbox older than the grace period
workflows  ``30 3 * * *``   1 h      index entries of expired workflows, and workflows abandoned
                                     for ``workflows_abandoned_after`` (30 days; see
                                     :mod:`framework_cleanup.workflows`)
=========  ===============  =======  ==========================================================

Uploads follow the images plugin's layout (``uploads/<id>/original.<ext>``, thumbnails next to it,
``uploads/<id>/record.json`` with ``state``, ``created`` and the ``task_id`` and ``queue`` of its
``image:process`` task); the record is read as plain JSON, so this plugin does not need
``framework-images`` installed. An upload still ``processing`` whose task is pending, scheduled,
retrying or running is kept however old (a backlog, workers down over a weekend): it is not abandoned,
only waiting. An upload with any object younger than the grace
period is left alone (it is being written), so is one whose record cannot be read (logged as
``cleanup_upload_record_unreadable`` and reported as an error): not JSON, not a record, refused by the
store, or larger than 64 KiB, which is refused unread. An upload's record is removed last, so a run cut
off halfway finds the rest next time.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from typing import TYPE_CHECKING, TypeVar

import msgspec

from framework.storage import InvalidKey, ObjectNotFound, StorageError, StorageUnavailable
from framework.web.tokens import Tokens
from framework_cleanup.config import outbox_path
from framework_cleanup.sweepers import Sweeper, SweepFn
from framework_cleanup.workflows import LIVE_STATES, as_text, sweep_workflows

if TYPE_CHECKING:
    from collections.abc import Generator, Iterator
    from pathlib import Path

    from framework.settings import Settings
    from framework.storage import ObjectInfo
    from framework.web.tokens import IndexEntry
    from framework_cleanup.config import CleanupConfig
    from framework_cleanup.sweepers import SweepContext, SweepResult

__all__ = ("builtin_sweepers", "sweep_outbox", "sweep_tmp", "sweep_tokens", "sweep_uploads")

_T = TypeVar("_T")

HOUR = 3600.0
DAY = 24 * HOUR
_TOKEN_BATCH = 500
_RECORD = "record.json"
_MAX_RECORD_BYTES = 64 * 1024
"""The largest upload record read. The images plugin writes well under 1 KiB (a state, a few keys, a thumbnail
entry per size and format, a file name, an error message), so this leaves room for far more thumbnails than
anyone configures; a larger ``record.json`` is another producer's or a hostile one, and reading it whole would
let one object fill the sweep's memory. It is refused unread and its upload left alone, never removed."""
_OUTBOX_SUFFIXES = (".eml", ".eml.tmp")
_OUTBOX_BATCH = 256
"""Outbox files looked at per trip to a worker thread."""


def builtin_sweepers(settings: Settings, config: CleanupConfig) -> list[Sweeper]:
    """The plugin's own sweepers, with their default schedules and grace periods."""
    return [
        Sweeper("tokens", "@hourly", sweep_tokens, grace=60.0, description="expired one-time tokens"),
        Sweeper("tmp", "30 * * * *", sweep_tmp(config.tmp_prefix), grace=DAY, description="temporary uploads"),
        Sweeper(
            "uploads",
            "0 2 * * *",
            sweep_uploads(config.uploads_prefix, config.abandoned_seconds),
            grace=HOUR,
            description="abandoned uploads and thumbnails whose original is gone",
        ),
        Sweeper(
            "outbox",
            "0 3 * * *",
            sweep_outbox(outbox_path(settings, config)),
            grace=7 * DAY,
            description="old .eml files in the email outbox",
        ),
        Sweeper(
            "workflows",
            "30 3 * * *",
            sweep_workflows(config.workflows_abandoned_seconds),
            grace=HOUR,
            description="index entries of expired workflows, and abandoned workflows",
        ),
    ]


async def sweep_tokens(ctx: SweepContext) -> SweepResult:
    """Remove the index entries and any leftover records of tokens that expired before the cutoff."""
    tokens = Tokens(ctx.services.redis, ctx.services.schema)
    offset = 0
    while True:
        batch = await tokens.expired(ctx.cutoff, offset=offset, limit=_TOKEN_BATCH)
        if ctx.dry_run:
            await _count_tokens(ctx, batch)
            offset += len(batch)  # nothing was removed, so page on
        else:
            for entry in batch:
                size = await tokens.discard(entry)
                if size is not None:  # None: a consume or another run removed it first
                    ctx.result.add(entry.key, size)
        if len(batch) < _TOKEN_BATCH:
            return ctx.result


async def _count_tokens(ctx: SweepContext, batch: list[IndexEntry]) -> None:
    async with ctx.services.redis.pipeline(transaction=False) as pipe:
        for entry in batch:
            pipe.strlen(entry.key)
        sizes = await pipe.execute()
    for entry, size in zip(batch, sizes, strict=True):
        ctx.result.add(entry.key, int(size))


def sweep_tmp(prefix: str) -> SweepFn:
    """A sweep removing every object under ``prefix`` last modified before the cutoff."""

    async def sweep(ctx: SweepContext) -> SweepResult:
        async for info in ctx.services.storage.list(prefix):
            if info.modified < ctx.cutoff:
                await ctx.remove_object(info)
        return ctx.result

    return sweep


class _Record(msgspec.Struct, kw_only=True):
    """The fields of the images plugin's upload record this sweeper reads."""

    state: str = ""
    original: str = ""
    created: float = 0.0
    task_id: str = ""
    queue: str = ""


_decode_record = msgspec.json.Decoder(_Record).decode


def sweep_uploads(prefix: str, abandoned_after: float) -> SweepFn:
    """A sweep removing abandoned uploads and orphan thumbnails under ``prefix`` (see the module docstring)."""

    async def sweep(ctx: SweepContext) -> SweepResult:
        group: list[ObjectInfo] = []
        current = ""
        async for info in ctx.services.storage.list(prefix):  # key order: one upload's objects are adjacent
            upload, sep, _ = info.key[len(prefix) :].partition("/")
            if not sep:
                continue
            if upload != current and group:
                await _sweep_upload(ctx, f"{prefix}{current}/", group, abandoned_after)
                group = []
            current = upload
            group.append(info)
        if group:
            await _sweep_upload(ctx, f"{prefix}{current}/", group, abandoned_after)
        return ctx.result

    return sweep


async def _read_record(ctx: SweepContext, key: str) -> _Record | None:
    """The upload record at ``key``, or None when it is gone.

    Raises:
        ObjectTooLarge: it is larger than :data:`_MAX_RECORD_BYTES` (nothing of it was read).
        msgspec.DecodeError: it is not JSON, or not an upload record.
        StorageError: the store refused the key or the read (:class:`StorageUnavailable`: it is down).
    """
    try:
        return _decode_record(await ctx.services.storage.get(key, max_size=_MAX_RECORD_BYTES))
    except ObjectNotFound:
        return None


async def _sweep_upload(ctx: SweepContext, folder: str, objects: list[ObjectInfo], abandoned_after: float) -> None:
    """Decide about one upload's objects: keep them, or remove them all (the record last)."""
    if any(info.modified >= ctx.cutoff for info in objects):
        return  # something was written within the grace period: the upload is in progress
    names = {info.key[len(folder) :]: info for info in objects}
    record = None
    if _RECORD in names:
        key = folder + _RECORD
        try:
            record = await _read_record(ctx, key)
        except StorageUnavailable:
            raise  # the store is down: the sweep ends, and the next run tries again
        except (msgspec.DecodeError, StorageError) as exc:  # too large, not a record, a key or read refused
            ctx.logger.warning("cleanup_upload_record_unreadable", key=key, error=str(exc))
            ctx.result.error(f"{key}: unreadable upload record, upload left alone ({exc})")
            return
    has_original = await _has_original(ctx, folder, names, record)
    started = record.created if record is not None and record.created > 0 else min(i.modified for i in objects)
    abandoned = (record is None or record.state != "done") and started < ctx.now - abandoned_after
    if abandoned and has_original and record is not None and await _task_live(ctx, record):
        ctx.logger.debug("cleanup_upload_waiting", upload=folder, task_id=record.task_id, queue=record.queue)
        return  # its processing task is still queued (a backlog, workers down): not abandoned
    if not abandoned and has_original:
        return
    why = "abandoned" if abandoned else "original gone"
    ctx.logger.debug("cleanup_upload_removed", upload=folder, reason=why)
    for info in sorted(objects, key=_removal_order):
        await ctx.remove_object(info)


async def _has_original(ctx: SweepContext, folder: str, names: dict[str, ObjectInfo], record: _Record | None) -> bool:
    if any(name.startswith("original.") for name in names):
        return True
    if record is None or not record.original:
        return False
    if record.original.startswith(folder):
        return record.original[len(folder) :] in names
    try:  # the record names an original kept elsewhere
        await ctx.services.storage.stat(record.original)
    except (ObjectNotFound, InvalidKey):
        return False
    return True


async def _task_live(ctx: SweepContext, record: _Record) -> bool:
    """Whether the record's processing task is still pending, scheduled, retrying or running."""
    if record.state != "processing" or not record.task_id or not record.queue:
        return False
    state = await ctx.services.redis.hget(ctx.services.schema.queue(record.queue).task(record.task_id), "state")
    return state is not None and as_text(state) in LIVE_STATES


def _removal_order(info: ObjectInfo) -> tuple[int, str]:
    name = info.key.rsplit("/", 1)[-1]
    rank = 2 if name == _RECORD else 1 if name.startswith("original.") else 0
    return rank, info.key


def sweep_outbox(directory: Path) -> SweepFn:
    """A sweep removing ``.eml`` files (and abandoned ``.eml.tmp`` files) in ``directory`` older than the cutoff.

    The folder is read as the sweep goes, :data:`_OUTBOX_BATCH` files at a time, never listed whole first:
    an outbox can hold millions of files.
    """

    async def sweep(ctx: SweepContext) -> SweepResult:
        stale = _stale_files(directory, ctx.cutoff)
        taking: asyncio.Future[list[tuple[Path, int]]] | None = None
        try:
            while True:
                # shielded: a sweep cancelled meanwhile waits below for the thread that walks the folder
                taking = asyncio.ensure_future(asyncio.to_thread(_take, stale, _OUTBOX_BATCH))
                batch = await asyncio.shield(taking)
                for path, size in batch:
                    if ctx.dry_run or await asyncio.to_thread(_unlink, path):
                        ctx.result.add(str(path), size)
                if len(batch) < _OUTBOX_BATCH:
                    return ctx.result
        finally:
            # the folder is closed when the sweep ends however it ends (a cancelled one's traceback would keep
            # it open as long as the exception is kept), once no thread reads it any more
            if taking is not None and not taking.done():
                await asyncio.wait([taking])
                if not taking.cancelled():
                    taking.exception()  # the sweep's outcome is its own error: this one is only retrieved
            stale.close()

    return sweep


def _take(it: Iterator[_T], n: int) -> list[_T]:
    return list(itertools.islice(it, n))


def _stale_files(directory: Path, cutoff: float) -> Generator[tuple[Path, int]]:
    """The mail files in ``directory`` last modified before ``cutoff``, with their sizes, in the folder's order.

    Each file is looked at when it is reached, so one removed by then is left out. The folder stays open
    between batches; it is closed when the walk ends, or when the sweep closes the generator (it does when
    it ends early: cancelled, or failed).
    """
    try:
        entries = os.scandir(directory)
    except FileNotFoundError:
        return
    with entries:
        for entry in entries:
            if not entry.name.endswith(_OUTBOX_SUFFIXES):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:  # removed meanwhile
                continue
            if entry.is_file(follow_symlinks=False) and st.st_mtime < cutoff:
                yield directory / entry.name, st.st_size


def _unlink(path: Path) -> bool:
    """Remove ``path``; False if it was already gone (another run removed it)."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True
