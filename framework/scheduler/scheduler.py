"""The cron scheduler: enqueues each tick of each cron entry exactly once, however many schedulers run.

Entries come from settings (``[[cron]]``) and from plugins (``register_cron_entries``); every one is
checked at startup (:mod:`framework.scheduler.loader`).

**Exactly once.** Every scheduler (``framework scheduler``, ``framework run``, or one per worker replica)
computes the same tick times (``framework.scheduler.cron``; ``@every`` ticks are epoch-aligned) and, at each tick of
each entry, calls ``cron_enqueue.lua``. The script claims ``<ext>:{queue}:cron:<entry id>:<tick>`` with
``SET NX EX`` and enqueues the task in the same atomic step, so a scheduler that dies mid-tick has either
enqueued the tick or left it to the others, and two schedulers never both enqueue it. The task id
``cron:<entry id>:<tick>`` is deterministic too, and the script refuses an id that already exists.
Nothing depends on which scheduler runs first: a clock a second or two ahead fires a tick that much
earlier, and the claim makes the others' attempts no-ops.

Entry ids and claim TTLs: :mod:`framework.scheduler.resolved`; late and missed ticks: :mod:`framework.scheduler.ticks`;
what asynq reads: :mod:`framework.scheduler.records`. This module runs them (the firing loop, the heartbeat,
start, stop, signals) and re-exports their public names.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import uuid
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from framework.broker.broker import RedisBroker
from framework.clock import Clock, SystemClock
from framework.errors import FrameworkError
from framework.logging import configure_logging, get_logger
from framework.protocol.keys import Schema
from framework.registry import Registry
from framework.scheduler.loader import load_entries
from framework.scheduler.records import ENTRIES_TTL as ENTRIES_TTL  # noqa: PLC0414 - still importable from here
from framework.scheduler.records import HISTORY_MAX, SchedulerRecords
from framework.scheduler.resolved import CLAIM_TTL_MIN, ResolvedEntry, entry_id
from framework.scheduler.ticks import MISSED_AFTER, Enqueued, Ticker
from framework.transport.connection import check_connection, open_redis, resolve_redis_url

if TYPE_CHECKING:
    from collections.abc import Iterable

    import pluggy
    from redis.asyncio import Redis

    from framework.settings import Settings
    from framework.task import CronEntry

__all__ = (
    "CLAIM_TTL_MIN",
    "HISTORY_MAX",
    "MISSED_AFTER",
    "Enqueued",
    "ResolvedEntry",
    "Scheduler",
    "entry_id",
    "load_entries",
)

HEARTBEAT_INTERVAL = 10.0
_MAX_SLEEP = 10.0
_RETRY_DELAY = 1.0
_STOP_WAIT = 5.0
"""Seconds a stopping scheduler waits for its tick in progress, then for its records' removal: a Redis that holds
commands (a ``CLIENT PAUSE``, a slow command) does not hold the exit for longer. A tick is claimed and enqueued in
one script, so a tick left in flight is enqueued whole or not at all; the records expire by themselves."""


class Scheduler:
    """Fires cron entries. Run any number of them: together they enqueue each tick exactly once.

    Args:
        settings: the app's settings (``cron`` entries, namespace, Redis URL, queue defaults).
        entries: more entries, given in code.
        plugin_manager: the plugin manager (``register_cron_entries``, and task types when no registry is given).
        registry: the known task types (default: collected from the plugins).
        redis: an existing Redis client to use (default: opened from the settings, and closed on stop).
        clock: where time comes from.

    Raises:
        ConfigError: an entry from settings or code is invalid (raised here, before anything runs).
        PluginError: an entry from a plugin is invalid.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        entries: Iterable[CronEntry] = (),
        plugin_manager: pluggy.PluginManager | None = None,
        registry: Registry | None = None,
        redis: Redis | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.log = get_logger("framework.scheduler.scheduler")
        if registry is None:
            registry = Registry()
            if plugin_manager is not None:
                from framework.plugins.manager import collect_task_types  # noqa: PLC0415

                collect_task_types(plugin_manager, settings, registry)
        self.registry = registry
        self.entries = load_entries(settings, plugin_manager, registry, entries=entries, now=self.clock.now())
        self.schema = Schema(settings.namespace)
        self.host, self.pid, self.scheduler_id = socket.gethostname(), os.getpid(), str(uuid.uuid4())
        self.key = self.schema.scheduler_entries(self.host, self.pid, self.scheduler_id)
        self._redis = redis
        self._owns_redis = redis is None
        self._broker: RedisBroker | None = None
        self._records = SchedulerRecords(self.schema, self.key, settings.cron_forget_after)
        self._ticker = Ticker(self.entries, self._records, self._connect, self.clock, self.log)
        self._stop = asyncio.Event()
        self._stopped = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._started = self._stopping = False

    async def _connect(self) -> tuple[Redis, RedisBroker]:
        if self._redis is None:
            url = await asyncio.to_thread(resolve_redis_url, self.settings)
            redis = open_redis(url)
            try:
                await check_connection(redis, url)
            except FrameworkError:
                await redis.aclose()
                raise
            self._redis = redis
        if self._broker is None:
            self._broker = RedisBroker(self._redis, self.schema, self.clock)
        return self._redis, self._broker

    # -- firing and publishing -------------------------------------------------------------------

    async def fire_due(self) -> list[Enqueued]:
        """Enqueue every tick that is due at the clock's current time; return those this scheduler won.

        The first call sets the starting point: ticks before it are not fired, except the most recent
        missed tick of a ``run_missed`` entry that has fired before. Later calls fire the ticks since the
        previous call, at most :data:`MISSED_AFTER` seconds late (older ones are missed).

        Raises:
            RedisError: Redis failed before any tick was tried (ticks that fail are retried on the next call).
        """
        await self._connect()
        return await self._ticker.fire_due()

    async def beat(self) -> None:
        """Write this scheduler's entries as asynq ``SchedulerEntry`` records (TTL 20 s), for ``asynq cron ls``."""
        redis, _ = await self._connect()
        await self._records.publish(redis, self.entries, self._ticker.next, self.clock.now())

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, fire what is due, publish the entries, and keep firing in the background.

        Publishing the entries is for ``asynq cron ls`` only: if it fails (a key of another type, written by
        something else) the scheduler starts all the same and the heartbeat tries again.
        """
        if self._started:
            return
        self._started = True
        await self._connect()
        if not self.entries:
            self.log.info("scheduler_idle", reason="no cron entries")
            return
        await self.fire_due()
        try:
            await self.beat()
        except (RedisError, OSError, FrameworkError) as exc:
            self.log.warning("scheduler_heartbeat_failed", error=f"{type(exc).__name__}: {exc}")
        self._tasks = [asyncio.create_task(self._loop()), asyncio.create_task(self._heartbeat())]
        self.log.info("scheduler_started", scheduler_id=self.scheduler_id, entries=[e.name for e in self.entries])

    async def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                await self.fire_due()
            except (RedisError, OSError, FrameworkError) as exc:
                self._ticker.failed = True
                self.log.warning("scheduler_redis_error", error=f"{type(exc).__name__}: {exc}")
            await self._sleep(self._delay())

    def _delay(self) -> float:
        """Seconds until the next tick of any entry (at most 10 s; 1 s after a failure)."""
        if self._ticker.failed or not self._ticker.next:
            return _RETRY_DELAY
        return min(max(min(self._ticker.next.values()) - self.clock.now(), 0.0), _MAX_SLEEP)

    async def _heartbeat(self) -> None:
        while not await self._sleep(HEARTBEAT_INTERVAL):
            try:
                await self.beat()
            except (RedisError, OSError, FrameworkError) as exc:
                self.log.warning("scheduler_heartbeat_failed", error=f"{type(exc).__name__}: {exc}")

    async def _sleep(self, seconds: float) -> bool:
        """Sleep, waking early on stop; return whether the scheduler is stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)
        return self._stop.is_set()

    async def stop(self) -> None:
        """Stop firing, remove this scheduler's entry records, and close Redis if the scheduler opened it."""
        if self._stopping:
            return
        self._stopping = True
        self._stop.set()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=_STOP_WAIT)
            for task in pending:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._redis is not None:
            if self._tasks:
                with contextlib.suppress(RedisError, OSError):  # OSError: asyncio's TimeoutError too
                    async with asyncio.timeout(_STOP_WAIT):
                        await self._records.withdraw(self._redis)
            if self._owns_redis:
                await self._redis.aclose()
        self._stopped.set()
        self.log.info("scheduler_stopped", scheduler_id=self.scheduler_id)

    async def wait(self) -> None:
        """Wait until the scheduler has stopped."""
        await self._stopped.wait()

    async def run(self) -> None:
        """Start, run until SIGTERM/SIGINT, then stop; a second signal exits at once."""
        configure_logging(self.settings.log_level, self.settings.log_format)
        await self.start()
        loop = asyncio.get_running_loop()
        signals = 0

        def on_signal() -> None:
            nonlocal signals
            signals += 1
            if signals == 1:
                loop.create_task(self.stop())  # noqa: RUF006 - awaited through self.wait()
            else:
                self.log.warning("scheduler_exit_now", note="second signal")
                os._exit(130)

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        try:
            await self.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    async def __aenter__(self) -> Scheduler:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
