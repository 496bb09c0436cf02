"""A scheduler's records in Redis: its entries for ``asynq cron ls``, the enqueue history and the last fired ticks.

**Visibility** (asynq's format): every 10 s each scheduler writes its entries as ``SchedulerEntry``
protobufs to ``<ns>:schedulers:{<host>:<pid>:<uuid>}`` (TTL 20 s, ``<ns>:schedulers`` score = expiry), and
the scheduler that enqueued a tick adds a ``SchedulerEnqueueEvent`` to ``<ns>:scheduler_history:<entry
id>`` (at most 1000 kept). History and ``cron:last`` are written after the enqueue, so a scheduler killed
in between leaves the task enqueued without its history event.

**Forgetting** (ours): an entry taken out of the settings or the plugins, or one that changed (its id is a hash
of its name, spec, time zone and task type), would leave its ``<ext>:cron:entries`` record, its
``<ext>:cron:last`` tick and its history behind for good. Each heartbeat, a scheduler removes those three
for every entry that no scheduler has published for ``cron_forget_after`` seconds (``seen_at``) and that
has not fired for as long (:meth:`SchedulerRecords.forget`).

Any client may write ``<ext>:cron:last``, so it is read with care: a value that is not a whole number of
seconds within the years 1970 to 9998 (:func:`parse_tick`), or the key holding another type, reads as an entry
that has not fired, and bad data there never stops a scheduler.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import msgspec
from redis.exceptions import ResponseError

from framework.protocol.message import encode_enqueue_event, encode_scheduler_entry
from framework.scheduler.resolved import CLAIM_TTL_MIN

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping, Sequence

    from redis.asyncio import Redis

    from framework.protocol.keys import Schema
    from framework.scheduler.resolved import ResolvedEntry

__all__ = ("ENTRIES_TTL", "FORGET_AFTER", "HISTORY_MAX", "SchedulerRecords", "parse_tick")

HISTORY_MAX = 1000
"""Enqueue events kept per entry, as asynq keeps."""
ENTRIES_TTL = 20
FORGET_AFTER = 30 * 24 * 3600.0
"""Default seconds after which the records of an entry no scheduler runs are removed (``cron_forget_after``)."""
_MAX_TICK = 253_370_764_800
"""9999-01-01T00:00:00Z: a later tick cannot be shown as a date in every time zone."""


def parse_tick(raw: bytes | str | None) -> int | None:
    """A last fired tick as stored in ``<ext>:cron:last``, or ``None`` if ``raw`` is not one.

    A tick is a whole number of Unix seconds, in ASCII digits, from 1970 up to (not including) the year 9999;
    anything else (a float, text, a negative or huge number) was not written by a scheduler.
    """
    if raw is None:
        return None
    text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else raw
    text = text.strip()
    if not text.isascii() or not text.isdigit():
        return None
    tick = int(text)
    return tick if tick < _MAX_TICK else None


class SchedulerRecords:
    """What one scheduler writes to Redis, under the keys of ``schema``.

    Args:
        schema: the key names of the namespace.
        key: this scheduler's ``SchedulerEntry`` list (``<ns>:schedulers:{<host>:<pid>:<uuid>}``).
        forget_after: seconds after which the records of an entry nobody publishes or fires are removed.
    """

    def __init__(self, schema: Schema, key: str, forget_after: float = FORGET_AFTER) -> None:
        self.schema = schema
        self.key = key
        self.forget_after = forget_after

    async def record(self, redis: Redis, e: ResolvedEntry, tick: int, task_id: str, now: float) -> None:
        """Write the enqueue event to asynq's history (capped at 1000) and the entry's last fired tick."""
        history = self.schema.scheduler_history(e.id)
        async with redis.pipeline(transaction=False) as pipe:
            pipe.zremrangebyrank(history, 0, -HISTORY_MAX)
            pipe.zadd(history, {encode_enqueue_event(task_id, now): int(now)})
            pipe.hset(self.schema.cron_last, e.id, tick)
            await pipe.execute()

    async def last_ticks(self, redis: Redis, ids: list[str]) -> dict[str, int]:
        """The last fired tick of each entry of ``ids`` that has fired.

        A value that is not a tick (:func:`parse_tick`) is left out, and ``<ext>:cron:last`` holding another
        type reads as no entry having fired: the scheduler goes on firing, and writing the key fails visibly.
        """
        if not ids:
            return {}
        try:
            values = await redis.hmget(self.schema.cron_last, ids)
        except ResponseError as exc:
            if str(exc).startswith("WRONGTYPE"):
                return {}
            raise
        ticks = {i: parse_tick(v) for i, v in zip(ids, values, strict=True)}
        return {i: tick for i, tick in ticks.items() if tick is not None}

    async def publish(
        self, redis: Redis, entries: Sequence[ResolvedEntry], next_ticks: Mapping[str, float], now: float
    ) -> None:
        """Write ``entries`` as asynq ``SchedulerEntry`` records (TTL 20 s), for ``asynq cron ls``.

        Args:
            redis: the client to write with.
            entries: the scheduler's entries.
            next_ticks: the next tick to handle of each entry id (computed from ``now`` where missing).
            now: the current Unix time.
        """
        last = await self.last_ticks(redis, [e.id for e in entries])
        records = [
            encode_scheduler_entry(
                id=e.id,
                spec=e.go_spec,
                task_type=e.task_type,
                task_payload=e.payload,
                enqueue_options=e.go_options,
                next_enqueue_time=next_ticks.get(e.id) or e.schedule.next_after(now),
                prev_enqueue_time=last.get(e.id),
            )
            for e in entries
        ]
        ours: dict[Any, bytes] = {e.id: msgspec.json.encode(describe(e, now)) for e in entries}
        async with redis.pipeline(transaction=False) as pipe:
            pipe.zadd(self.schema.schedulers, {self.key: int(now) + ENTRIES_TTL})
            pipe.zremrangebyscore(self.schema.schedulers, "-inf", int(now) - CLAIM_TTL_MIN)  # long-dead schedulers
            pipe.delete(self.key)
            if records:
                pipe.lpush(self.key, *records)
                pipe.expire(self.key, ENTRIES_TTL)
                pipe.hset(self.schema.cron_entries, mapping=ours)
            await pipe.execute()
        await self.forget(redis, {e.id for e in entries}, now)

    async def forget(self, redis: Redis, running: Collection[str], now: float) -> list[str]:
        """Remove the records of the entries no scheduler has published or fired for ``forget_after`` seconds.

        An entry's ``<ext>:cron:entries`` record (whose ``seen_at`` every scheduler running it renews each
        heartbeat), its last fired tick and its ``<ns>:scheduler_history:<id>`` go together. Entries in
        ``running`` (this scheduler's) and records that do not read as ours (no ``seen_at``) are kept.

        Returns:
            The ids of the entries forgotten.
        """
        try:
            records: dict[bytes | str, bytes | str] = await redis.hgetall(self.schema.cron_entries)
        except ResponseError as exc:
            if str(exc).startswith("WRONGTYPE"):
                return []
            raise
        cutoff = now - self.forget_after
        unseen = [field for field, raw in records.items() if _text(field) not in running and _seen_at(raw) < cutoff]
        if not unseen:
            return []
        try:
            fired = await redis.hmget(self.schema.cron_last, unseen)
        except ResponseError as exc:  # another type there: no tick to keep an entry by
            if not str(exc).startswith("WRONGTYPE"):
                raise
            fired = [None] * len(unseen)
        stale = [field for field, tick in zip(unseen, fired, strict=True) if (parse_tick(tick) or 0) < cutoff]
        if not stale:
            return []
        async with redis.pipeline(transaction=False) as pipe:
            pipe.hdel(self.schema.cron_entries, *stale)
            pipe.hdel(self.schema.cron_last, *stale)
            for field in stale:  # one key per DEL: each history key is in its own Cluster slot
                pipe.delete(self.schema.scheduler_history(_text(field)))
            await pipe.execute()
        return [_text(field) for field in stale]

    async def withdraw(self, redis: Redis) -> None:
        """Remove this scheduler's ``SchedulerEntry`` records (the history and last ticks stay)."""
        async with redis.pipeline(transaction=False) as pipe:
            pipe.zrem(self.schema.schedulers, self.key)
            pipe.delete(self.key)
            await pipe.execute()


def _text(raw: bytes | str) -> str:
    """A hash field as text (bytes that are not UTF-8, which no scheduler of ours writes, are replaced)."""
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw


def _seen_at(raw: bytes | str) -> float:
    """The ``seen_at`` of an entry record (:func:`describe`); infinity when it is not one of ours."""
    try:
        seen = msgspec.json.decode(raw).get("seen_at")
    except (msgspec.DecodeError, AttributeError):
        return math.inf
    return float(seen) if isinstance(seen, int | float) and not isinstance(seen, bool) else math.inf


def describe(e: ResolvedEntry, now: float) -> dict[str, Any]:
    """Our own record of an entry (name, source, time zone: what asynq's record lacks)."""
    return {
        "id": e.id,
        "name": e.name,
        "spec": e.spec,
        "tz": e.tz,
        "task_type": e.task_type,
        "queue": e.options.queue,
        "source": e.source,
        "run_missed": e.run_missed,
        "seen_at": int(now),
    }
