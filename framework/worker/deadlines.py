"""One timer for every running task's deadline, armed for the earliest; deadlines moved on after a stalled loop.

Each handler runs under its task's deadline, ``min(now + timeout, deadline)``: :meth:`DeadlineTimer.watch`
notes it, and one ``call_at`` timer, armed for the earliest deadline (no timer per task), cancels the
handlers whose deadline passed (reason ``timeout``) and gives up on cancelled handlers still running
``cancel_grace`` seconds later (the :class:`~framework.worker.execution.TaskExecution` writes their outcome).

**Stalls.** An async handler that blocks the event loop delays everything, the deadline timer included.
With the loop watchdog on (``loop_block_threshold``, see :mod:`framework.worker.watchdog`), a timer that fires
later than that threshold means the loop was stalled: the tasks whose deadline passed meanwhile have it
moved on by the stall's length (``task_deadline_extended``, warning), except the task the watchdog saw
blocking the loop, which times out as usual. A task's deadline is moved on by at most its own time budget
(``min(timeout, deadline)`` from its start) or 60 s, whichever is more, in total; past that a stall counts
against it like time it used.
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    import structlog

    from framework.clock import Clock
    from framework.worker.outcomes import InFlight
    from framework.worker.watchdog import LoopWatchdog

__all__ = ("DeadlineTimer",)

_MIN_STALL_ALLOWANCE = 60.0
"""Seconds of stalls caused by other tasks a task's deadline may always be moved on by (more for longer tasks)."""
_STALL_SLACK = 0.5
"""Seconds a task whose deadline was moved on after a stall has at least, to take up what it was waiting for."""


class DeadlineTimer:
    """The deadline timer of one processor's running tasks; see the module docstring.

    Args:
        inflight: the tasks in flight (the processor's ledger's map, read on the loop's thread).
        clock: where time comes from.
        logger: the worker's logger.
        cancel_grace: seconds a cancelled handler gets to end before it is given up on.
        abandon: gives up on a cancelled handler still running past its grace (writes its outcome).

    Attributes:
        watchdog: the loop watchdog, when the worker runs one (it tells stalls from time a task used).
    """

    def __init__(
        self,
        inflight: Mapping[tuple[str, str], InFlight],
        clock: Clock,
        logger: structlog.typing.FilteringBoundLogger,
        cancel_grace: float,
        abandon: Callable[[InFlight], None],
    ) -> None:
        self._inflight = inflight
        self.clock = clock
        self.log = logger
        self.cancel_grace = cancel_grace
        self._abandon = abandon
        self.watchdog: LoopWatchdog | None = None
        self._timer: asyncio.Handle | None = None
        self._timer_at = math.inf
        """Event-loop time the timer is armed for. Kept here: for a time less than a millisecond away, uvloop's
        ``call_at`` returns a plain ``Handle`` (run at the next iteration), which has no ``when()``."""
        self._moved: list[tuple[InFlight, float]] = []

    def watch(self, inf: InFlight, remaining: float) -> None:
        """Cancel ``inf``'s handler ``remaining`` seconds from now (the timer fires by then)."""
        loop = asyncio.get_running_loop()
        inf.expires = when = loop.time() + remaining
        self._arm(loop, when)

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        """Make sure the timer fires by ``when`` (event-loop time)."""
        if self._timer is None or when < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = when
            self._timer = loop.call_at(when, self._on_timer)

    def cancel(self, inf: InFlight, reason: str) -> None:
        """Cancel ``inf``'s handler for ``reason``, and give up on it if it still runs ``cancel_grace`` s later."""
        self.cancel_handler(inf, reason)
        self._arm(asyncio.get_running_loop(), inf.give_up_at)

    def stop(self) -> None:
        """Disarm the timer (the processor has stopped)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def cancel_handler(self, inf: InFlight, reason: str) -> None:
        """Cancel ``inf``'s handler for ``reason``; the caller gives up on it if it still runs ``cancel_grace`` s later.

        (:meth:`cancel` arms the timer for that; :meth:`_on_timer` arms it itself.)
        """
        inf.cancel_reason = reason
        inf.give_up_at = asyncio.get_running_loop().time() + self.cancel_grace
        if inf.ctx is not None and inf.runner is not None:  # one that has not started sees the reason when it starts
            inf.runner.cancel()

    def _on_timer(self) -> None:
        """Cancel the handlers past their deadline, give up on cancelled ones past their grace; arm the timer again.

        When the timer fires late by more than the watchdog's threshold, the loop was stalled: deadlines that
        passed meanwhile are moved on instead, for the tasks that did not cause the stall (see the module
        docstring).
        """
        timer, self._timer = self._timer, None
        loop = asyncio.get_running_loop()
        now = loop.time()
        stall = self._stall(self._timer_at if timer is not None else None, now)
        culprits = self.watchdog.culprits if stall and self.watchdog is not None else set()
        moved: list[InFlight] = []
        earliest = math.inf
        for inf in list(self._inflight.values()):
            runner = inf.runner
            if inf.writing or runner is None or runner.done():
                continue
            if inf.cancel_reason:
                if inf.give_up_at <= now:
                    if stall and runner not in culprits and self._allow_stall(inf, stall):
                        inf.give_up_at = max(inf.give_up_at + stall, now + _STALL_SLACK)
                        inf.deadline += stall
                        moved.append(inf)
                    else:
                        self._abandon(inf)
                        continue
                earliest = min(earliest, inf.give_up_at)
                continue
            if inf.expires <= now:
                if stall and runner not in culprits and self._allow_stall(inf, stall):
                    inf.expires = max(inf.expires + stall, now + _STALL_SLACK)
                    inf.deadline += stall  # the heartbeat extends the lease up to the deadline (plus 30 s)
                    moved.append(inf)
                else:
                    self.cancel_handler(inf, "timeout")
                    earliest = min(earliest, inf.give_up_at)
                    continue
            earliest = min(earliest, inf.expires)
        for inf in moved:
            self._note_moved(inf, stall)
        if earliest < math.inf:
            self._arm(loop, earliest)

    def time_left(self, inf: InFlight) -> float:
        """Seconds left before ``inf``'s deadline as its handler starts.

        A task that had time left when it was taken, but whose deadline passed while it waited for a stalled
        loop to start it, has its deadline moved on by the stall first (same cap as in :meth:`_on_timer`).
        """
        now = self.clock.now()
        remaining = inf.deadline - now
        watchdog = self.watchdog
        if remaining > 0 or watchdog is None or inf.deadline <= inf.started:
            return remaining
        stall = min(now - inf.started, watchdog.stall_length())
        if stall <= watchdog.threshold or not self._allow_stall(inf, stall):
            return remaining
        inf.deadline += stall
        self._note_moved(inf, stall)
        return max(inf.deadline - now, _STALL_SLACK)

    def _note_moved(self, inf: InFlight, stall: float) -> None:
        """Record a deadline moved on for a stall; one ``task_deadline_extended`` line per loop iteration."""
        if not self._moved:
            asyncio.get_running_loop().call_soon(self._log_moved)
        self._moved.append((inf, stall))

    def _log_moved(self) -> None:
        moved, self._moved = self._moved, []
        self.log.warning(
            "task_deadline_extended",
            tasks=[f"{inf.msg.type}:{inf.id}" for inf, _ in moved[:20]],
            count=len(moved),
            by=round(max(stall for _, stall in moved), 3),
            note="the event loop was blocked by another task when their deadline passed: not charged to them",
        )

    def _stall(self, armed_for: float | None, now: float) -> float:
        """Seconds the loop was stalled: the timer armed for ``armed_for`` fired late past the watchdog's threshold."""
        watchdog = self.watchdog
        if watchdog is None or armed_for is None:
            return 0.0
        late = now - armed_for
        if late <= watchdog.threshold:
            return 0.0
        return max(late, watchdog.stall_length())

    @staticmethod
    def _allow_stall(inf: InFlight, stall: float) -> bool:
        """Whether ``inf`` may have ``stall`` more seconds (and count them); see the module docstring for the cap."""
        budget = inf.deadline - inf.extended - inf.started
        if inf.extended + stall > max(budget, _MIN_STALL_ALLOWANCE):
            return False
        inf.extended += stall
        return True
