"""Scheduler queries: the periodic-task entries live schedulers announce, and each entry's history.

Schedulers (Go's ``asynq.Scheduler`` and compatible ones) list their entries in
``<ns>:schedulers:{...}`` lists, registered in ``<ns>:schedulers`` (score = expiry), and record each
enqueue in ``<ns>:scheduler_history:<entry id>`` (score = enqueue time).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from framework.inspector.namespace import Part, text
from framework.inspector.tasks import MAX_PAGE_SIZE, PAST_THE_END
from framework.protocol.message import (
    SchedulerEnqueueEvent,
    SchedulerEntry,
    decode_enqueue_event,
    decode_scheduler_entry,
)

if TYPE_CHECKING:
    pass

__all__ = ("SchedulerReads",)


class SchedulerReads(Part):
    """The scheduler reads of :class:`~framework.inspector.core.Inspector`: entries and their enqueue history."""

    __slots__ = ()

    async def scheduler_entries(self) -> list[SchedulerEntry]:
        """The entries of every live scheduler, by next enqueue time; undecodable entries (and keys) are skipped."""
        now = int(self._ns.now())
        members: list[Any] = await self._redis.zrangebyscore(self._schema.schedulers, now, "+inf")
        keys = [text(k) for k in members]
        if not keys:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.lrange(key, 0, -1)
            lists = await pipe.execute(raise_on_error=False)  # a key of another type (another client's) is skipped
        entries = []
        for raw in (r for values in lists if not isinstance(values, Exception) for r in values):
            try:
                entries.append(decode_scheduler_entry(raw))
            except ValueError:
                continue
        return sorted(entries, key=lambda e: (e.next_enqueue_time is None, e.next_enqueue_time, e.id))

    async def scheduler_history(self, entry_id: str, *, page: int = 1, size: int = 20) -> list[SchedulerEnqueueEvent]:
        """The enqueues of one scheduler entry, newest first, one page at a time."""
        if page < 1 or not 1 <= size <= MAX_PAGE_SIZE:
            raise ValueError(f"page={page!r}, size={size!r} is invalid: page >= 1, size 1..{MAX_PAGE_SIZE}")
        start = min((page - 1) * size, PAST_THE_END)
        key = self._schema.scheduler_history(entry_id)
        values: list[Any] = await self._redis.zrevrange(key, start, start + size - 1)
        events = []
        for raw in values:
            try:
                events.append(decode_enqueue_event(raw))
            except ValueError:
                continue
        return events
