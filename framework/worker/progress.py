"""A running task's progress reports on their way to Redis, rate-limited: :class:`ProgressReporter`.

``ctx.progress(0.4, "resizing")`` (or ``ctx.report_progress`` from a sync handler's thread) hands a checked
report to the task's reporter. The reporter writes at most one report per ``interval`` (0.2 s) per task: a
report that comes sooner is held, replaced by any later one, and written when the interval is up, so a tight
loop of reports costs a handful of writes and the last value is never lost. A report of ``1.0`` is written
at once, unless the last write was of ``1.0`` already (a loop of them is held back like any other). When the
handler ends (returns, fails, times out), :meth:`ProgressReporter.finish` writes the last report once more,
marked ``ended``, with a short time to live (:data:`LINGER`): a page or caller that looks just after the end
still sees where the task got to, and the record then expires on its own. It is not deleted with the task's
outcome because that would add a key to asynq's own transition scripts, and an expiry covers a worker that
dies as well: while the task runs, each write sets the record to expire a minute after the task's deadline.

Writes go through the broker (:meth:`~framework.broker.transitions.WorkerTransitions.write_progress`); a
failed write is logged (``task_progress_not_written``) and never reaches the handler: progress is best effort.
A task that never reports costs nothing beyond this object.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from collections.abc import Awaitable

    import structlog

    from framework.broker.broker import Broker
    from framework.clock import Clock
    from framework.worker.outcomes import InFlight

__all__ = ("INTERVAL", "LINGER", "ProgressReporter")

INTERVAL = 0.2
"""Seconds between two progress writes of one task, at least (``1.0`` and the last report excepted)."""
LINGER = 60
"""Seconds a task's progress record is kept after its handler ended."""
_LONGEST = 365 * 24 * 3600
"""The longest a running task's record is set to live for, renewed by each write (Redis refuses an expiry far off:
a task with a timeout of centuries would leave a record that never expires)."""
_encode = msgspec.json.Encoder().encode


class ProgressReporter:
    """One running task's progress writer (a :class:`~framework.context.ProgressSink`); see the module docstring.

    Built on the event loop's thread, as the task starts.

    Args:
        inf: the task (its queue, id, attempt and deadline; a handler given up on reports nothing more).
        broker: where the writes go.
        clock: where ``updated_at`` comes from.
        logger: the worker's logger.
        interval: seconds between two writes, at least.
    """

    __slots__ = (
        "_broker",
        "_clock",
        "_dirty",
        "_ended",
        "_full",
        "_inf",
        "_last",
        "_latest",
        "_log",
        "_loop",
        "_task",
        "_timer",
        "_urgent",
        "interval",
    )

    def __init__(
        self,
        inf: InFlight,
        broker: Broker,
        clock: Clock,
        logger: structlog.typing.FilteringBoundLogger,
        interval: float = INTERVAL,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._inf = inf
        self._broker = broker
        self._clock = clock
        self._log = logger
        self._loop = loop or asyncio.get_running_loop()
        self.interval = interval
        self._latest: tuple[float, str] | None = None
        self._dirty = False
        self._ended = False
        self._urgent = False
        self._full = False
        """The last write started was of 1.0: another 1.0 waits for the interval."""
        self._last = -math.inf
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None

    def report(self, fraction: float, message: str) -> Awaitable[None] | None:
        """Take a checked report (on the loop's thread); returns the write to await when one starts now."""
        if self._ended or self._inf.abandoned:
            return None
        self._latest = (fraction, message)
        self._dirty = True
        at_once = fraction >= 1.0 and not self._full
        if self._task is not None:  # a write is under way: this report follows it
            self._urgent = self._urgent or at_once
            return None
        due = self._last + self.interval
        if not at_once and self._loop.time() < due:
            if self._timer is None:
                self._timer = self._loop.call_at(due, self._on_timer)
            return None
        return asyncio.shield(self._start())

    def report_threadsafe(self, fraction: float, message: str) -> None:
        """Take a checked report from any thread; it reaches :meth:`report` on the loop's thread, in order.

        On the loop's own thread it is taken at once: a report scheduled for later would come after the end of
        a handler that returns right after it, and be lost.
        """
        try:
            here = asyncio.get_running_loop() is self._loop
        except RuntimeError:  # no loop runs in this thread
            here = False
        if here:
            self.report(fraction, message)  # a write it starts is tracked (``finish`` waits for it)
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: the process is ending
            self._loop.call_soon_threadsafe(self.report, fraction, message)

    async def finish(self) -> None:
        """The handler ended: write the last report, marked ended, to expire :data:`LINGER` s from now.

        Nothing is written for a task that never reported, or whose handler was given up on (its outcome is
        written already).
        """
        if self._ended:
            return
        self._ended = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._latest is None or self._inf.abandoned:
            return
        if self._task is not None:
            await asyncio.wait([self._task])
        fraction, message = self._latest
        await self._store(fraction, message, ended=True)

    # -- writing -----------------------------------------------------------------------------------

    def _start(self) -> asyncio.Task[None]:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        assert self._latest is not None
        fraction, message = self._latest
        self._dirty = False
        self._full = fraction >= 1.0
        self._last = self._loop.time()
        task = self._task = self._loop.create_task(self._store(fraction, message, ended=False))
        task.add_done_callback(self._written)
        return task

    def _written(self, _task: asyncio.Task[None]) -> None:
        """A write ended: when a report came meanwhile, write it when the interval is up (at once for 1.0)."""
        self._task = None
        if not self._dirty or self._ended:
            return
        when = self._loop.time() if self._urgent else self._last + self.interval
        self._urgent = False
        self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._dirty and not self._ended and self._task is None and not self._inf.abandoned:
            self._start()

    async def _store(self, fraction: float, message: str, *, ended: bool) -> None:
        inf = self._inf
        now = self._clock.now()
        attempt = inf.msg.retried + 1
        ttl = LINGER if ended else math.ceil(min(max(inf.deadline - now, 0.0), _LONGEST)) + LINGER
        # a lone surrogate cannot be sent as UTF-8: it is stored as "?" rather than failing the handler
        message = message.encode("utf-8", "replace").decode("utf-8")
        fields: dict[str, str | int | float] = {"fraction": repr(fraction), "message": message}
        fields.update(updated_at=repr(now), attempt=attempt, ended=int(ended))
        try:
            event = _encode({**fields, "fraction": fraction, "updated_at": now, "ended": ended})
            await self._broker.write_progress(inf.queue, inf.id, fields, event, ttl)
        except Exception as exc:  # noqa: BLE001 - progress is best effort: logged, never raised into the handler
            self._log.warning("task_progress_not_written", task_id=inf.id, queue=inf.queue, error=str(exc))
