"""Queue queries and switches: the list of queues, per-queue stats, history, pause and unpause.

Every read is O(1) per queue plus a fixed sample: counts come from LLEN/ZCARD, never from reading a
collection, and memory is estimated from a sample of task records (:mod:`framework.inspector.memory`).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from framework.inspector.memory import estimate_memory
from framework.inspector.namespace import Part, text
from framework.protocol.keys import day_stamp

if TYPE_CHECKING:
    pass

__all__ = ("DailyStats", "MinuteStats", "QueueInfo", "QueueOps")

_DAY = 86_400
_STATES = ("pending", "active", "scheduled", "retry", "archived", "completed")


class QueueInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of one queue. Built by the inspector.

    Attributes:
        queue: the queue name.
        size: all tasks in the queue, in every state.
        pending: tasks ready to run.
        active: tasks being processed.
        scheduled: tasks waiting for their process time.
        retry: failed tasks waiting to be retried.
        archived: tasks that will not be retried.
        completed: succeeded tasks kept for their retention.
        aggregating: tasks waiting in groups.
        groups: groups that hold tasks.
        processed_today: tasks processed (succeeded or failed) today, UTC.
        failed_today: tasks that failed today, UTC.
        processed_total: tasks processed since the counter started.
        failed_total: tasks failed since the counter started.
        latency: seconds the oldest pending task has waited; ``None`` when nothing is pending or its
            enqueue time is unknown (asynq's "run" does not record one).
        memory_usage: estimated bytes used by the queue's keys and task records (sampled); 0 when
            memory was not asked for.
        paused: whether workers skip the queue.
        timestamp: when the snapshot was taken.
    """

    queue: str
    size: int
    pending: int
    active: int
    scheduled: int
    retry: int
    archived: int
    completed: int
    aggregating: int
    groups: int
    processed_today: int
    failed_today: int
    processed_total: int
    failed_total: int
    latency: float | None
    memory_usage: int
    paused: bool
    timestamp: datetime


class DailyStats(msgspec.Struct, frozen=True, kw_only=True):
    """Processed and failed counts of one queue on one UTC day.

    Attributes:
        queue: the queue name.
        date: the UTC day.
        processed: tasks processed that day.
        failed: tasks that failed that day.
    """

    queue: str
    date: date
    processed: int
    failed: int


class MinuteStats(msgspec.Struct, frozen=True, kw_only=True):
    """Processed and failed counts of one queue in one minute (the framework's own counters).

    Attributes:
        queue: the queue name.
        minute: the start of the minute.
        processed: tasks processed in that minute.
        failed: tasks that failed in that minute.
    """

    queue: str
    minute: datetime
    processed: int
    failed: int


def _int(value: Any) -> int:
    return int(value) if value else 0


class QueueOps(Part):
    """The queue part of :class:`~framework.inspector.core.Inspector`: queue list, stats, history, pause switch."""

    __slots__ = ()

    async def queues(self) -> list[str]:
        """Every queue name, sorted."""
        names = await self._redis.smembers(self._schema.all_queues)
        return sorted(text(n) for n in names)

    async def queue_info(self, queue: str, *, memory: bool = True) -> QueueInfo:
        """Counts, throughput, latency, memory and pause state of one queue."""
        qk = await self._ns.queue_keys(queue)
        now = self._ns.now()
        day = day_stamp(int(now))
        async with self._redis.pipeline(transaction=False) as pipe:
            for state in _STATES:
                (pipe.llen if state in ("pending", "active") else pipe.zcard)(getattr(qk, state))
            pipe.smembers(qk.groups)
            for counter in (qk.processed_day(day), qk.failed_day(day), qk.processed, qk.failed):
                pipe.get(counter)  # not MGET: redis-py's Cluster pipeline refuses it
            pipe.exists(qk.paused)
            pipe.lindex(qk.pending, -1)
            replies = await pipe.execute()
        counts = dict(zip(_STATES, (int(n) for n in replies), strict=False))
        group_names, *counters, paused, oldest = replies[len(_STATES) :]
        groups = sorted(text(g) for g in group_names)
        async with self._redis.pipeline(transaction=False) as pipe:
            for group in groups:
                pipe.zcard(qk.group(group))
            if oldest:
                pipe.hget(qk.task(text(oldest)), "pending_since")
            replies = await pipe.execute()
        group_sizes = dict(zip(groups, (int(n) for n in replies), strict=False))
        since = replies[len(groups)] if oldest else None
        aggregating = sum(group_sizes.values())
        usage = await estimate_memory(self._redis, qk, counts, group_sizes) if memory else 0
        latency = max(0.0, now - int(since) / 1e9) if since else None
        return QueueInfo(
            queue=queue,
            size=sum(counts.values()) + aggregating,
            **counts,
            aggregating=aggregating,
            groups=len(groups),
            processed_today=_int(counters[0]),
            failed_today=_int(counters[1]),
            processed_total=_int(counters[2]),
            failed_total=_int(counters[3]),
            latency=latency,
            memory_usage=usage,
            paused=bool(paused),
            timestamp=datetime.fromtimestamp(now, UTC),
        )

    async def all_queue_info(self, *, memory: bool = True) -> list[QueueInfo]:
        """:meth:`queue_info` of every queue, by name; queues removed meanwhile are left out."""
        out = []
        for name in await self.queues():
            try:
                out.append(await self.queue_info(name, memory=memory))
            except LookupError:
                continue
        return out

    async def history(self, queue: str, days: int = 7) -> list[DailyStats]:
        """Processed and failed counts per UTC day for the last ``days`` days, oldest first (today last)."""
        if not 1 <= days <= 90:
            raise ValueError(f"days={days!r} is invalid: must be between 1 and 90")
        qk = await self._ns.queue_keys(queue)
        today = int(self._ns.now())
        stamps = [day_stamp(today - i * _DAY) for i in range(days - 1, -1, -1)]
        keys = [k for d in stamps for k in (qk.processed_day(d), qk.failed_day(d))]
        values = await self._redis.mget(keys)
        return [
            DailyStats(
                queue=queue, date=date.fromisoformat(d), processed=_int(values[2 * i]), failed=_int(values[2 * i + 1])
            )
            for i, d in enumerate(stamps)
        ]

    async def minute_stats(self, queue: str, hours: int = 1) -> list[MinuteStats]:
        """Processed and failed counts per minute for the last ``hours`` hours, oldest first."""
        if not 1 <= hours <= 24:
            raise ValueError(f"hours={hours!r} is invalid: must be between 1 and 24")
        qk = await self._ns.queue_keys(queue)
        last = int(self._ns.now()) // 60
        minutes = list(range(last - hours * 60 + 1, last + 1))
        keys = [k for m in minutes for k in (qk.minute_stats("processed", m), qk.minute_stats("failed", m))]
        values = await self._redis.mget(keys)
        return [
            MinuteStats(
                queue=queue,
                minute=datetime.fromtimestamp(m * 60, UTC),
                processed=_int(values[2 * i]),
                failed=_int(values[2 * i + 1]),
            )
            for i, m in enumerate(minutes)
        ]

    async def pause(self, queue: str) -> bool:
        """Pause ``queue``: workers stop taking its tasks (``SETNX paused <now>``)."""
        qk = await self._ns.queue_keys(queue)
        return bool(await self._redis.setnx(qk.paused, int(self._ns.now())))

    async def unpause(self, queue: str) -> bool:
        """Resume ``queue``."""
        qk = await self._ns.queue_keys(queue)
        return bool(await self._redis.delete(qk.paused))
