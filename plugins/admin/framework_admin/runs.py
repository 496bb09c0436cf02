"""Recent runs: a task middleware that records each run's outcome and duration, and the reader for it.

asynq's records keep no start time, so a completed task's duration is unknown from the queue alone.
The admin therefore contributes a middleware (outermost of the plugins') that appends one small JSON
record per run to a capped Redis list, ``<ext>:admin:runs`` (newest first, at most :data:`MAX_RUNS`).

Every run the middleware started is recorded once, whatever ends it: ``succeeded``, ``failed`` (the
handler raised), ``timeout`` (the worker cancelled it at its deadline) or ``cancelled`` (``asynq:cancel``).
The last two are decided by the worker, not seen by the middleware: a cancelled handler may swallow the
cancellation and return, or ignore it and be given up on after ``cancel_grace`` while it runs on. Those
runs are recorded by the ``task_retried`` and ``task_archived`` hooks (:func:`record_failed_run`), when
the worker writes their outcome, with the start time the middleware kept in the task's stash. A run
interrupted by shutdown is put back in its queue and recorded when it runs again.
Records are buffered for a quarter second and written in batches (one pipelined
``LPUSH``/``LTRIM``); Redis errors are swallowed, so recording never fails a task.
Turn it off with ``record_runs = false`` in ``[plugins.admin]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec
from redis.exceptions import RedisError

from framework import StashKey
from framework_admin.config import PLUGIN_NAME
from framework_admin.schemas import RunOut

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from framework import Run, Schema, Services, TaskContext
    from framework.inspector import Inspector

__all__ = (
    "MAX_RUNS",
    "flush_runs",
    "read_runs",
    "recent_runs",
    "record_failed_run",
    "record_runs_middleware",
    "runs_key",
)

MAX_RUNS = 200
"""Runs kept in the list."""
_ERROR_CHARS = 500


def runs_key(schema: Schema) -> str:
    """LIST ``<ext>:admin:runs``: JSON records of the latest task runs, newest first."""
    return schema.ext_key(PLUGIN_NAME, "runs")


class _Record(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    queue: str
    type: str
    status: str
    attempt: int
    started: float
    finished: float
    error: str = ""


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(_Record)


_FLUSH_AFTER = 0.25
"""Seconds records wait in memory, so a busy worker writes one LPUSH per batch instead of one per task."""


class _Recorder:
    """Buffers run records of one process and writes them in batches (one pipelined LPUSH + LTRIM)."""

    def __init__(self, redis: Redis, key: str) -> None:
        self.redis = redis
        self.key = key
        self.buffer: list[bytes] = []
        self.flushing: asyncio.Task[None] | None = None

    def add(self, record: _Record) -> None:
        self.buffer.append(_encoder.encode(record))
        if len(self.buffer) > MAX_RUNS:
            del self.buffer[: len(self.buffer) - MAX_RUNS]
        if self.flushing is None or self.flushing.done():
            self.flushing = asyncio.get_running_loop().create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(_FLUSH_AFTER)
        batch, self.buffer = self.buffer, []
        if not batch:
            return
        with contextlib.suppress(RedisError, OSError):
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.lpush(self.key, *batch)
                pipe.ltrim(self.key, 0, MAX_RUNS - 1)
                await pipe.execute()


_RECORDER: StashKey[_Recorder] = StashKey("admin-runs-recorder")
_STARTED: StashKey[float | None] = StashKey("admin-run-started")
"""In a task's stash: when the middleware started the run (Unix s); None once the run is recorded."""


async def flush_runs(services: Services) -> None:
    """Wait until the records buffered in this process are written (tests, shutdown)."""
    recorder = services.stash.get(_RECORDER)
    if recorder is not None and recorder.flushing is not None:
        await recorder.flushing


async def _save(ctx: TaskContext, record: _Record) -> None:
    services = ctx.services
    recorder = services.stash.get(_RECORDER)
    if recorder is None:
        recorder = _Recorder(services.redis, runs_key(services.schema))
        services.stash[_RECORDER] = recorder
    recorder.add(record)


def _record(ctx: TaskContext, started: float, status: str, error: str = "") -> _Record:
    return _Record(
        id=ctx.id,
        queue=ctx.queue,
        type=ctx.type,
        status=status,
        attempt=ctx.attempt,
        started=started,
        finished=time.time(),
        error=error[:_ERROR_CHARS],
    )


def _finish(ctx: TaskContext) -> float | None:
    """When the run of ``ctx`` started, if it is still to be recorded (and from now on it is not)."""
    started = ctx.stash.get(_STARTED)
    if started is not None:
        ctx.stash[_STARTED] = None
    return started


def _cancel_requested() -> bool:
    """Whether this asyncio task was asked to cancel (the worker: a timeout, ``cancel``, shutdown)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def record_runs_middleware(run: Run) -> Run:
    """Wrap a handler so that each run's outcome and duration is recorded for the dashboard.

    A run the worker cancelled (timeout, ``cancel``, shutdown) is left to :func:`record_failed_run`,
    which records it when the worker writes its outcome, even if the handler swallowed the cancellation
    and returned.
    """

    async def recorded(ctx: TaskContext, payload: Any) -> None:
        ctx.stash[_STARTED] = time.time()
        try:
            await run(ctx, payload)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            started = _finish(ctx)
            if started is not None:
                await _save(ctx, _record(ctx, started, "failed", f"{type(exc).__name__}: {exc}"))
            raise
        if not _cancel_requested():
            started = _finish(ctx)
            if started is not None:
                await _save(ctx, _record(ctx, started, "succeeded"))

    return recorded


async def record_failed_run(ctx: TaskContext, error: BaseException) -> None:
    """Record a run whose failure the worker decided (a timeout, a cancellation), once it is written.

    Runs the middleware recorded already, and tasks it never started (an undecodable payload, a
    deadline passed before the handler began), are passed by.
    """
    started = _finish(ctx)
    if started is None:
        return
    from framework import TaskCancelled  # noqa: PLC0415

    status = "failed"
    if isinstance(error, TimeoutError):
        status = "timeout"
    elif isinstance(error, TaskCancelled):
        status = "cancelled"
    await _save(ctx, _record(ctx, started, status, f"{type(error).__name__}: {error}"))


def _when(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


async def read_runs(redis: Redis, schema: Schema, limit: int = 50) -> list[RunOut]:
    """The latest recorded runs, newest first; records that cannot be read are skipped."""
    raw: list[Any] = await redis.lrange(runs_key(schema), 0, max(0, limit - 1))
    out = []
    for item in raw:
        try:
            r = _decoder.decode(item)
        except msgspec.DecodeError:
            continue
        out.append(
            RunOut(
                id=r.id,
                queue=r.queue,
                type=r.type,
                status=r.status,
                attempt=r.attempt,
                started_at=_when(r.started),
                finished_at=_when(r.finished),
                duration=round(max(0.0, r.finished - r.started), 6),
                error=r.error,
            )
        )
    return out


async def _from_lists(inspector: Inspector, limit: int) -> list[RunOut]:
    """Finished runs as the queue alone knows them (no durations): completed and archived tasks."""
    out = []
    for queue in await inspector.queues():
        done = await inspector.list_tasks(queue, "completed", size=limit, reverse=True)
        failed = await inspector.list_tasks(queue, "archived", size=limit, reverse=True)
        out += [
            RunOut(
                id=t.id,
                queue=t.queue,
                type=t.type,
                status="completed",
                attempt=t.retried + 1,
                finished_at=t.completed_at,
            )
            for t in done.tasks
        ]
        out += [
            RunOut(
                id=t.id,
                queue=t.queue,
                type=t.type,
                status="archived",
                attempt=t.retried + 1,
                finished_at=t.last_failed_at,
                error=t.error,
            )
            for t in failed.tasks
        ]
    epoch = datetime.fromtimestamp(0, UTC)
    return sorted(out, key=lambda r: r.finished_at or epoch, reverse=True)[:limit]


async def recent_runs(inspector: Inspector, services: Services, limit: int = 20) -> list[RunOut]:
    """Tasks running now (with their time so far), then the latest finished runs, newest first.

    Finished runs come from the recorded list; when nothing was recorded (``record_runs`` off, or only
    Go workers), from the completed and archived tasks instead, without durations.
    """
    now = datetime.now(UTC)
    active = [
        RunOut(
            id=w.task_id,
            queue=w.queue,
            type=w.task_type,
            status="active",
            started_at=w.start_time,
            duration=round((now - w.start_time).total_seconds(), 3) if w.start_time else None,
        )
        for server in await inspector.servers()
        for w in server.workers
    ]
    finished = await read_runs(services.redis, services.schema, limit)
    if not finished:
        finished = await _from_lists(inspector, limit)
    return active + finished
