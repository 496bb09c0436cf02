"""A worker's side of task limits: ask before a limited task's handler runs, give back when it ends.

Before the handler of a task whose type declares limits (:mod:`framework.limits`) runs, ``limit_take.lua``
takes a concurrency slot and a rate token for each limit that applies (per key of the payload where the
limit is keyed). A task that may not start yet is put off in the same script: it waits in the scheduled set
(asynq's state for it, so Go's tools show it as scheduled) until its reserved token is due, or until a slot
frees (a parked task is made pending by the release of a slot), spending no retry and counting neither as
processed nor as failed; the worker takes other work meanwhile. The slots a task took are given back
(``limit_release.lua``) once its outcome is written, whatever it is; a worker that dies holding one loses
it for no longer than the task's lease (the next take finds the holder no longer leased).

A handler given up on (it ran on past its timeout or its cancellation, see :mod:`framework.worker.execution`)
has its outcome written while it still runs, and may still be calling what the limit protects: its slots are
kept for it until it really ends, under a holder of its own (a retry of the task taken meanwhile needs a slot of
its own), for :data:`~framework.broker.limits.KEEP` seconds at a time, renewed while it runs. A worker that dies
meanwhile loses them for no longer than that.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from framework.broker.limits import EARLY, KEEP
from framework.limits import applied_limits

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    import structlog

    from framework.broker.broker import Broker
    from framework.limits import Applied
    from framework.task import TaskDef
    from framework.worker.outcomes import InFlight

__all__ = ("LimitGate",)

_PUT_OFF = {1: "rate", 2: "concurrency"}
_HELD = 3


class LimitGate:
    """Takes and gives back what limited tasks need; one per processor.

    Args:
        broker: the broker.
        logger: the worker's logger.
        settings: ``[limits.<name>]`` tables that replace the code's values
            (see :func:`~framework.limits.applied_limits`).
        inflight_keys: queue -> this worker's in-flight set there (a task put off leaves it).
        release: lets the processor forget a task put off (its slot is free).
        free_slot: gives a held task's concurrency slot back while it waits.
        take_slot: takes a slot again for a held task whose moment came.
        on_due: told when a task put off is due back (the forwarder passes by then).
    """

    def __init__(
        self,
        broker: Broker,
        logger: structlog.typing.FilteringBoundLogger,
        settings: Mapping[str, Mapping[str, Any]] | None,
        inflight_keys: Mapping[str, str],
        release: Callable[[InFlight], None],
        free_slot: Callable[[InFlight], None],
        take_slot: Callable[[InFlight], None],
        on_due: Callable[[float], None] | None = None,
    ) -> None:
        self.broker = broker
        self.log = logger
        self.settings = settings or {}
        self.inflight_keys = inflight_keys
        self.release = release
        self.free_slot = free_slot
        self.take_slot = take_slot
        self.on_due = on_due
        self._kept: set[asyncio.Task[None]] = set()
        """Tasks keeping the slots of handlers given up on that still run, until they end."""

    async def admit(self, inf: InFlight, taskdef: TaskDef[Any], payload: Any) -> bool:
        """Whether ``inf`` may run now (its slots are then held); if not, it was put off and let go here.

        A task whose rate token is reserved for a moment less than 2 s away is held here rather than put
        off: it gives its concurrency slot back, sleeps until its moment, takes a slot again and asks again
        (which uses the reserved token), so it starts on time.

        Raises:
            redis.exceptions.RedisError, OSError: Redis could not be asked (the task fails and is retried).
        """
        applied = applied_limits(taskdef.limits, taskdef.type, payload, self.settings)
        inflight = self.inflight_keys.get(inf.queue, "")
        taken = await self.broker.limit_take(inf.queue, inf.id, applied, inflight)
        while taken.code == _HELD:
            self.free_slot(inf)
            await asyncio.sleep(max(0.0, taken.due - self.broker.clock.now()))
            self.take_slot(inf)
            taken = await self.broker.limit_take(inf.queue, inf.id, applied, inflight)
        if taken.code == 0:
            inf.limits = tuple(a for a in applied if a.concurrency)
            return True
        if taken.code > 0:
            self.log.debug(  # counted in the limit's stats; a busy limit puts off many tasks a second
                "task_put_off",
                task_id=inf.id,
                type=taskdef.type,
                queue=inf.queue,
                limit=_PUT_OFF[taken.code],
                limits=[f"{a.name}:{a.key}" if a.key else a.name for a in applied],
                until=round(taken.due, 3),
            )
            if self.on_due is not None:
                self.on_due(taken.due - EARLY if taken.code == 1 else taken.due)
        inf.off_record = bool(inflight)
        self.release(inf)
        return False

    async def give_back(self, inf: InFlight) -> None:
        """Free the slots ``inf`` held (its outcome is written); a Redis fault leaves them to lease expiry.

        A handler given up on that still runs keeps them (see the module docstring): they pass to a holder of its
        own here, and are freed once it ends (by a task of this gate's, which the worker's stop does not wait for).
        """
        limits, inf.limits = inf.limits, ()
        running = _runs_on(inf)
        if running:
            holder = f"{inf.queue}\n{inf.id}\n{secrets.token_hex(6)}"
            await self._keep(inf, limits, holder)
            kept = asyncio.ensure_future(self._keep_until_ended(inf, limits, holder, running))
            self._kept.add(kept)
            kept.add_done_callback(self._kept.discard)
            return
        await self._release(inf, limits)

    async def _release(self, inf: InFlight, limits: Sequence[Applied], holder: str = "") -> None:
        try:
            await self.broker.limit_release(inf.queue, inf.id, limits, holder=holder)
        except (RedisError, OSError) as exc:
            self.log.warning(
                "limit_release_failed",
                task_id=inf.id,
                queue=inf.queue,
                error=str(exc),
                note="freed at lease expiry" if not holder else f"freed within {KEEP:g} s",
            )

    async def _keep(self, inf: InFlight, limits: Sequence[Applied], holder: str) -> None:
        """Keep ``inf``'s slots under ``holder`` for :data:`KEEP` s from now (a Redis fault: the next renewal)."""
        until = self.broker.clock.now() + KEEP
        try:
            await self.broker.limit_release(inf.queue, inf.id, limits, holder=holder, keep_until=until)
        except (RedisError, OSError) as exc:
            self.log.warning("limit_keep_failed", task_id=inf.id, queue=inf.queue, error=str(exc))

    async def _keep_until_ended(
        self, inf: InFlight, limits: Sequence[Applied], holder: str, running: set[asyncio.Future[Any]]
    ) -> None:
        """Renew the slots kept for ``inf``'s handler every third of :data:`KEEP` until it ends, then free them."""
        while running:
            _done, running = await asyncio.wait(running, timeout=KEEP / 3)
            if running:
                await self._keep(inf, limits, holder)
        await self._release(inf, limits, holder)


def _runs_on(inf: InFlight) -> set[asyncio.Future[Any]]:
    """What still runs of ``inf``'s handler once its outcome is written: nothing, unless the worker gave up on it.

    An async handler given up on runs on in its runner; a sync handler's thread, which cannot be stopped, runs on
    after its coroutine was cancelled (at its deadline, or given up on).
    """
    running: set[asyncio.Future[Any]] = set()
    if inf.abandoned and inf.runner is not None and not inf.runner.done():
        running.add(inf.runner)
    if inf.thread is not None and not inf.thread.done():
        running.add(asyncio.wrap_future(inf.thread))
    return running
