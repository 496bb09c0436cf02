"""Reading and following a running task's progress (``ctx.progress``): :class:`TaskProgress`, :class:`ProgressReads`.

A worker stores each task's last report in a small hash of our own beside the task, which expires a minute
after the task's deadline while it runs and a minute after its handler ended, and publishes each write on
the task's progress channel (see :mod:`framework.worker.progress`). Reads here never change anything.
"""

from __future__ import annotations

import contextlib
import math
from datetime import datetime
from typing import TYPE_CHECKING, Any

import msgspec

from framework.inspector.namespace import from_unix, text

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from framework.inspector.namespace import Namespace
    from framework.protocol.keys import Schema

__all__ = ("FINAL_STATES", "ProgressReads", "TaskProgress", "progress_finished", "progress_from_event")

FINAL_STATES = frozenset({"completed", "archived"})
"""Task states after which no progress comes (a task that is gone counts too)."""
_FIELDS = ("fraction", "message", "updated_at", "attempt", "ended")


class TaskProgress(msgspec.Struct, frozen=True, kw_only=True):
    """A task's last progress report, as its handler made it (``ctx.progress``).

    Set by the framework; callers read it.

    Attributes:
        fraction: how much was done, from 0 to 1.
        message: what the task was doing (at most 200 characters; may be empty).
        updated_at: when the report was written (UTC).
        attempt: the attempt that reported it (1 for the first run).
        ended: the attempt's handler has ended (the record expires a minute later).
    """

    fraction: float
    message: str
    updated_at: datetime | None
    attempt: int
    ended: bool

    @property
    def percent(self) -> int:
        """The fraction as a whole percentage, rounded down (0.999 is 99, not 100)."""
        return math.floor(self.fraction * 100)


def _from_fields(values: Sequence[Any]) -> TaskProgress | None:
    """A :class:`TaskProgress` from the hash's values (in :data:`_FIELDS` order); None when there is no record."""
    if values[0] is None:
        return None
    return TaskProgress(
        fraction=float(values[0]),
        message=text(values[1]),
        updated_at=from_unix(float(values[2] or 0)),
        attempt=int(values[3] or 0),
        ended=text(values[4]) == "1",
    )


class _Published(msgspec.Struct):
    """A report as a worker publishes it on the task's progress channel (see :mod:`framework.worker.progress`)."""

    fraction: float
    message: str
    updated_at: float
    attempt: int
    ended: bool


_decode_published = msgspec.json.Decoder(_Published).decode


def progress_from_event(data: bytes) -> TaskProgress | None:
    """A :class:`TaskProgress` from a message published on a progress channel; None for anything that is not one."""
    try:
        event = _decode_published(data)
        updated_at = from_unix(event.updated_at)
    except (msgspec.DecodeError, ValueError, OverflowError, OSError):  # a time no datetime holds too
        return None
    return TaskProgress(
        fraction=event.fraction,
        message=event.message,
        updated_at=updated_at,
        attempt=event.attempt,
        ended=event.ended,
    )


async def progress_finished(redis: Any, schema: Schema, queue: str, task_id: str) -> bool:
    """Whether the task is gone or in a final state (no more progress can come)."""
    state = await redis.hget(schema.queue(queue).task(task_id), "state")
    return state is None or text(state) in FINAL_STATES


class ProgressReads:
    """The inspector's progress part: read a task's progress, or follow it as it changes.

    Args:
        ns: the namespace it reads.
    """

    def __init__(self, ns: Namespace) -> None:
        self._ns = ns
        self._redis = ns.redis

    async def progress(self, queue: str, task_id: str) -> TaskProgress | None:
        """The last progress report of a task; None when it reported none (or its record expired)."""
        values = await self._redis.hmget(self._ns.schema.queue(queue).progress(task_id), _FIELDS)
        return _from_fields(values)

    async def progress_many(self, tasks: Sequence[tuple[str, str]]) -> list[TaskProgress | None]:
        """:meth:`progress` of several ``(queue, task id)`` pairs, in one round trip, in order."""
        if not tasks:
            return []
        schema = self._ns.schema
        async with self._redis.pipeline(transaction=False) as pipe:
            for queue, task_id in tasks:
                pipe.hmget(schema.queue(queue).progress(task_id), _FIELDS)
            replies = await pipe.execute()
        return [_from_fields(values) for values in replies]

    async def _finished(self, queue: str, task_id: str) -> bool:
        return await progress_finished(self._redis, self._ns.schema, queue, task_id)

    async def watch_progress(self, queue: str, task_id: str, *, idle: float = 5.0) -> AsyncIterator[TaskProgress]:
        """Yield a task's progress reports as they are written, starting with the stored one.

        Subscribes to the task's progress channel (no polling of the record). Ends when the task is completed,
        archived or gone: checked when an attempt's handler ends and after ``idle`` seconds without a report
        (so a worker that died does not leave the caller waiting). A task waiting for a retry is followed into
        its next attempt. Reports published while the caller is busy are kept by the subscription, in order.

        Args:
            queue: the task's queue.
            task_id: its id.
            idle: seconds without a report after which the task's state is checked.
        """
        qk = self._ns.schema.queue(queue)
        pubsub = self._redis.pubsub()
        try:
            await pubsub.subscribe(qk.progress_channel(task_id))
            last = await self.progress(queue, task_id)
            if last is not None:
                yield last
            if (last is None or last.ended) and await self._finished(queue, task_id):
                return
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=idle)
                report = progress_from_event(message["data"]) if message is not None else None
                if report is not None and report != last:
                    last = report
                    yield report
                if (report is None or report.ended) and await self._finished(queue, task_id):
                    return
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
