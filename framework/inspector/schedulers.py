"""Scheduler queries: the periodic-task entries live schedulers announce, and each entry's history.

Schedulers (Go's ``asynq.Scheduler`` and compatible ones) list their entries in
``<ns>:schedulers:{...}`` lists, registered in ``<ns>:schedulers`` (score = expiry), and record each
enqueue in ``<ns>:scheduler_history:<entry id>`` (score = enqueue time).
"""

from __future__ import annotations

from typing import Any

from framework.inspector._base import InspectorBase, text
from framework.inspector.tasks import MAX_PAGE_SIZE
from framework.protocol.message import (
    SchedulerEnqueueEvent,
    SchedulerEntry,
    decode_enqueue_event,
    decode_scheduler_entry,
)

__all__ = ("SchedulersMixin",)


class SchedulersMixin(InspectorBase):
    """Reads of scheduler entries and their enqueue history."""

    async def scheduler_entries(self) -> list[SchedulerEntry]:
        """The entries of every live scheduler, by next enqueue time; undecodable entries are skipped."""
        now = int(self._now())
        members: list[Any] = await self.redis.zrangebyscore(self.schema.schedulers, now, "+inf")
        keys = [text(k) for k in members]
        if not keys:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.lrange(key, 0, -1)
            lists = await pipe.execute()
        entries = []
        for raw in (r for values in lists for r in values):
            try:
                entries.append(decode_scheduler_entry(raw))
            except ValueError:
                continue
        return sorted(entries, key=lambda e: (e.next_enqueue_time is None, e.next_enqueue_time, e.id))

    async def scheduler_history(self, entry_id: str, *, page: int = 1, size: int = 20) -> list[SchedulerEnqueueEvent]:
        """The enqueues of one scheduler entry, newest first, one page at a time.

        Raises:
            ValueError: a bad page or size.
        """
        if page < 1 or not 1 <= size <= MAX_PAGE_SIZE:
            raise ValueError(f"page={page!r}, size={size!r} is invalid: page >= 1, size 1..{MAX_PAGE_SIZE}")
        start = (page - 1) * size
        values: list[Any] = await self.redis.zrevrange(self.schema.scheduler_history(entry_id), start, start + size - 1)
        events = []
        for raw in values:
            try:
                events.append(decode_enqueue_event(raw))
            except ValueError:
                continue
        return events
