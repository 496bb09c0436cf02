"""A scheduler's ticks: up to when each entry's ticks are handled, which come next, and firing those that are due.

Each tick is fired through ``cron_enqueue.lua`` (:meth:`~framework.broker.broker.RedisBroker.cron_enqueue`), which
claims the tick and enqueues its task in one step; only the scheduler that wins the claim records it.

**Late and missed ticks.** A tick that comes due while a scheduler runs is fired even if the scheduler gets
to it late (event loop blocked, Redis briefly away), up to :data:`MISSED_AFTER` seconds late. Ticks that
came due while no scheduler ran are skipped, except that an entry with ``run_missed`` runs its most recent
missed tick once (``<ext>:cron:last`` records the last fired tick of each entry). An entry that has never
fired has no missed ticks. When the one tick nobody fired is the entry's most recent, less than
:data:`MISSED_AFTER` seconds before a scheduler starts, it is late, not missed, and fires: a restart across a
tick (the only replica's rolling deploy) does not lose it; a longer downtime still skips.

**A clock stepped back.** When the clock reads earlier than the time up to which a scheduler has handled an
entry's ticks, the entry's ticks are handled again from the new time on: those it reaches a second time are
no-ops while their claims live (at least an hour past the tick, and a tick fired early by a clock that ran
ahead is held until Redis's clock reaches it), and a tick skipped while the clock was ahead fires when its
time comes. Keeping the old position instead would fire nothing until the clock caught up with it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

from redis.exceptions import RedisError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    import structlog
    from redis.asyncio import Redis

    from framework.broker.broker import RedisBroker
    from framework.clock import Clock
    from framework.scheduler.records import SchedulerRecords
    from framework.scheduler.resolved import ResolvedEntry

__all__ = ("MISSED_AFTER", "Enqueued", "Ticker")

MISSED_AFTER = 60.0
"""Seconds after which a tick nobody fired counts as missed instead of late."""


class Enqueued(NamedTuple):
    """A tick this scheduler enqueued (returned by :meth:`~framework.scheduler.scheduler.Scheduler.fire_due`)."""

    entry: str
    tick: float
    task_id: str


class Ticker:
    """The ticks of one scheduler's entries, and firing the due ones.

    Args:
        entries: the scheduler's entries.
        records: where a fired tick is recorded (history and last fired tick).
        connect: returns the scheduler's Redis client and broker, connecting on first use.
        clock: where time comes from.
        log: the scheduler's logger.
    """

    def __init__(
        self,
        entries: list[ResolvedEntry],
        records: SchedulerRecords,
        connect: Callable[[], Awaitable[tuple[Redis, RedisBroker]]],
        clock: Clock,
        log: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self.entries = entries
        self.records = records
        self._connect = connect
        self.clock = clock
        self.log = log
        self.cursor: dict[str, float] = {}  # entry id -> time up to which its ticks are handled
        self.next: dict[str, float] = {}  # entry id -> its next tick to handle
        self.failed = False  # a tick failed in the last pass: the scheduler retries sooner

    async def fire_due(self) -> list[Enqueued]:
        """Enqueue every tick that is due at the clock's current time; return those this scheduler won."""
        now = self.clock.now()
        self.failed = False
        if not self.cursor:
            await self._begin(now)
        back = max(self.cursor.values(), default=now) - now
        if back > 0:
            self._step_back(now, back)
        out: list[Enqueued] = []
        for entry in self.entries:
            if self.next[entry.id] <= now:
                out.extend(await self._catch_up(entry, now))
        return out

    def _step_back(self, now: float, back: float) -> None:
        """The clock went back ``back`` seconds: an entry whose ticks were handled past ``now`` restarts there."""
        self.log.warning("cron_clock_stepped_back", seconds=round(back, 3))
        for e in self.entries:
            if self.cursor[e.id] > now:
                self.cursor[e.id] = now
                self.next[e.id] = e.schedule.next_after(now)

    async def _begin(self, now: float) -> None:
        last = await self._last_ticks()
        for e in self.entries:
            self.cursor[e.id] = now
            self.next[e.id] = e.schedule.next_after(now)
            latest = e.schedule.prev_at_or_before(now)
            if e.id not in last or latest is None or last[e.id] >= math.floor(latest):
                continue  # never fired (nothing missed), or nothing missed since
            if now - latest < MISSED_AFTER and _following(e, last[e.id]) >= math.floor(latest):
                # only this tick came while no scheduler ran, under a minute ago (a restart across it): late
                self.cursor[e.id] = math.nextafter(latest, -math.inf)
                self.next[e.id] = latest
                continue
            if e.run_missed:
                self.next[e.id] = latest  # before the cursor: handled as missed by _catch_up
            else:
                self.log.info("cron_ticks_missed", entry=e.name, last=last[e.id], latest=latest, run_missed=False)

    async def _catch_up(self, e: ResolvedEntry, now: float) -> list[Enqueued]:
        start = max(self.cursor[e.id], now - MISSED_AFTER)
        ticks = list(e.schedule.ticks_between(start, now))
        out: list[Enqueued] = []
        if self.next[e.id] <= start:
            self.log.warning("cron_ticks_missed", entry=e.name, first=self.next[e.id], run_missed=e.run_missed)
            if e.run_missed and not ticks:
                try:
                    out.extend(await self._run_missed(e, now))
                except (RedisError, OSError) as exc:
                    self._fire_failed(e, None, exc)
                    return out
        for tick in ticks:
            try:
                fired = await self._fire(e, tick)
            except (RedisError, OSError) as exc:
                self._fire_failed(e, tick, exc)
                return out
            if fired is not None:
                out.append(fired)
        self.cursor[e.id] = now
        self.next[e.id] = e.schedule.next_after(now)
        return out

    def _fire_failed(self, e: ResolvedEntry, tick: float | None, exc: BaseException) -> None:
        """Keep ``tick`` due, so the next pass tries it again while it is not yet missed."""
        self.failed = True
        self.log.warning("cron_enqueue_failed", entry=e.name, tick=tick, error=f"{type(exc).__name__}: {exc}")
        if tick is not None:
            self.cursor[e.id] = math.nextafter(tick, -math.inf)
            self.next[e.id] = tick

    async def _run_missed(self, e: ResolvedEntry, now: float) -> list[Enqueued]:
        latest = e.schedule.prev_at_or_before(now)
        if latest is None:
            return []
        last = (await self._last_ticks([e.id])).get(e.id)
        if last is not None and last >= math.floor(latest):
            return []
        fired = await self._fire(e, latest)
        return [] if fired is None else [fired]

    async def _fire(self, e: ResolvedEntry, tick: float) -> Enqueued | None:
        _, broker = await self._connect()
        n = math.floor(tick)
        task_id = e.task_id(n)
        ttl = e.options.unique_ttl  # the task type's own uniqueness: a tick whose task is still held is skipped
        lock = broker.schema.queue(e.options.queue).unique(e.task_type, e.payload) if ttl else ""
        won = await broker.cron_enqueue(
            e.options.queue,
            e.id,
            n,
            task_id,
            e.message(task_id, lock),
            e.claim_ttl(tick),
            unique_key=lock,
            unique_ttl=ttl,
        )
        if won < 0:
            self.log.warning(
                "cron_tick_skipped", entry=e.name, tick=n, reason="the previous task still holds its unique lock"
            )
            return None
        if not won:
            self.log.debug("cron_tick_taken", entry=e.name, tick=n)
            return None
        self.log.info("cron_enqueued", entry=e.name, entry_id=e.id, tick=n, task_id=task_id, queue=e.options.queue)
        try:
            await self._record(e, n, task_id)
        except (RedisError, OSError) as exc:
            self.log.warning("cron_history_failed", entry=e.name, tick=n, error=f"{type(exc).__name__}: {exc}")
        return Enqueued(e.name, tick, task_id)

    async def _record(self, e: ResolvedEntry, tick: int, task_id: str) -> None:
        """Write the enqueue event to asynq's history (capped at 1000) and the entry's last fired tick."""
        redis, _ = await self._connect()
        await self.records.record(redis, e, tick, task_id, self.clock.now())

    async def _last_ticks(self, ids: list[str] | None = None) -> dict[str, int]:
        """The last fired tick of each entry (all of this scheduler's by default) that has fired."""
        redis, _ = await self._connect()
        return await self.records.last_ticks(redis, [e.id for e in self.entries] if ids is None else ids)


def _following(e: ResolvedEntry, last: int) -> float:
    """The tick after the one recorded as ``last`` (its whole second: an ``@every`` tick may have a fraction)."""
    tick = e.schedule.next_after(last)
    return e.schedule.next_after(tick) if tick < last + 1 else tick
