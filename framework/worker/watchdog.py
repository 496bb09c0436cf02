"""The event-loop watchdog: notices when something blocks a worker's event loop, and says what.

Async handlers share one event loop. One that blocks it (``time.sleep``, CPU-bound work, a blocking
client) stalls every other task of the process and the worker's own timers, and nothing fails: the other
tasks just wait. A :class:`LoopWatchdog` thread, one per worker process, started and stopped with the
worker, posts a callback to the loop (``call_soon_threadsafe``) every quarter of the threshold (within
0.05 to 0.5 s; 0.25 s by default) and measures how late it runs. Once it has waited longer than
``threshold`` (the ``loop_block_threshold`` setting, default 1 s; 0 turns the watchdog off) it logs
``event_loop_blocked`` (warning), once per stall, with:

* ``blocked_for``: seconds the callback has waited so far;
* ``task_id``, ``type``, ``queue``: the task whose handler the loop is running, when it is one (read
  with :func:`asyncio.current_task` for the loop, from the watchdog's thread);
* ``running``: the async handlers running in the process (at most 20, as ``type:id``);
* ``where``: the file, line and function the loop's thread is in (its innermost Python frame, from
  :func:`sys._current_frames`).

When the callback finally runs, ``event_loop_unblocked`` (warning) gives the stall's length. The cost is
one thread waking a few times a second and one callback on the loop each time.

**A loop that never comes back.** Given ``stuck_after`` and ``on_stuck``, the watchdog asks, while a stall
lasts, until when the task holding the loop may hold it (for a handler: its deadline plus ``cancel_grace``,
when the worker would give it up were the loop free). Past that, the loop is stuck for good as far as the
worker can tell, and ``on_stuck`` is called once, from the watchdog's thread, with the stall's length and the
task; the worker ends its process there (see :meth:`~framework.worker.worker.Worker.run`), so its tasks are
recovered, and a handler that does it every time ends as a poison pill. A stall whose holder is not a handler
(framework code, a plugin's hook) is only reported.

The processor asks it about the latest stall (:meth:`LoopWatchdog.stall_length`, :attr:`LoopWatchdog.culprits`)
when its deadline timer fires late, so tasks whose deadline passed while another task held the loop are
not charged for it (see :mod:`framework.worker.execution`).
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    import structlog

__all__ = ("LoopWatchdog",)

_MAX_INTERVAL = 0.5
_MIN_INTERVAL = 0.05


class LoopWatchdog:
    """Watches one event loop from a thread of its own; see the module docstring.

    Create and :meth:`start` it on the loop's thread.

    Args:
        loop: the loop to watch.
        threshold: seconds of delay that count as a blocked loop (> 0).
        logger: where ``event_loop_blocked``/``event_loop_unblocked`` go.
        describe: called from the watchdog's thread with the task the loop is running (or None); returns
            the fields naming it and the other running handlers (it must tolerate running beside the loop).
        stuck_after: called from the watchdog's thread during a stall with the task the loop is running; returns
            the Unix time after which a loop still held by it is stuck for good, or None (never).
        on_stuck: called once, from the watchdog's thread, with the stall's length and the task, when that time
            has passed and the loop is still held.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        threshold: float,
        logger: structlog.typing.FilteringBoundLogger,
        describe: Callable[[asyncio.Task[Any] | None], dict[str, Any]] | None = None,
        stuck_after: Callable[[asyncio.Task[Any]], float | None] | None = None,
        on_stuck: Callable[[float, asyncio.Task[Any]], None] | None = None,
    ) -> None:
        if threshold <= 0:
            raise ValueError(f"threshold={threshold} must be > 0")
        self.loop = loop
        self.threshold = threshold
        self.interval = min(_MAX_INTERVAL, max(_MIN_INTERVAL, threshold / 4))
        self.log = logger
        self.describe = describe
        self.stuck_after = stuck_after
        self.on_stuck = on_stuck
        self._stuck_reported = False
        self.culprits: set[asyncio.Task[Any]] = set()
        """Tasks seen running on the loop during the current stall, or the latest one (none: not a task)."""
        self.stalls = 0
        """Stalls reported so far (``event_loop_blocked`` lines)."""
        self._lock = threading.Lock()
        self._posted: float | None = None  # monotonic time the pending callback was posted
        self._in_stall = False
        self._warned = False
        self._last_stall = (0.0, 0.0)  # (monotonic end, length) of the latest stall that was reported
        self._loop_thread = threading.get_ident()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start watching (call on the loop's thread)."""
        self._loop_thread = threading.get_ident()
        self._thread = threading.Thread(target=self._run, name="framework-loop-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching; returns at once (the thread ends within one interval)."""
        self._stop.set()

    def stall_length(self) -> float:
        """Seconds the loop was blocked in the stall going on or just ended (0: none in the last 2 s).

        Measured from when the watchdog's callback was posted to when it ran (or to now, while it has
        not run yet), so it may count up to one interval more than the stall itself.
        """
        now = time.monotonic()
        with self._lock:
            if self._posted is not None and now - self._posted > self.interval:
                return now - self._posted
            end, length = self._last_stall
        return length if now - end < 2.0 else 0.0

    # -- the watchdog's thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            now = time.monotonic()
            with self._lock:
                posted = self._posted
                if posted is None:
                    self._posted = now
                elif not self._in_stall:  # the callback missed a whole interval: a stall began
                    self._in_stall = True
                    self.culprits = set()
            if posted is None:
                try:
                    self.loop.call_soon_threadsafe(self._ran, now)
                except RuntimeError:  # the loop is closed
                    return
                continue
            task = asyncio.current_task(self.loop)
            if task is not None:
                self.culprits.add(task)
            lag = now - posted
            if lag >= self.threshold and not self._warned:
                self._warned = True
                self.stalls += 1
                self._report(lag, task)
            if self._warned and task is not None:
                self._check_stuck(lag, task)

    def _check_stuck(self, lag: float, task: asyncio.Task[Any]) -> None:
        """Call ``on_stuck`` once the task holding the loop is past the time it may hold it."""
        if self.stuck_after is None or self.on_stuck is None or self._stuck_reported:
            return
        try:
            limit = self.stuck_after(task)
        except Exception:  # noqa: BLE001 - the ledger read beside the loop failed: ask again next interval
            return
        if limit is not None and time.time() > limit:
            self._stuck_reported = True
            self.on_stuck(lag, task)

    def _report(self, lag: float, task: asyncio.Task[Any] | None) -> None:
        fields: dict[str, Any] = {}
        if self.describe is not None:
            try:
                fields = self.describe(task)
            except Exception as exc:  # noqa: BLE001 - a report without names is still a report
                fields = {"describe_error": f"{type(exc).__name__}: {exc}"}
        self.log.warning(
            "event_loop_blocked",
            blocked_for=round(lag, 3),
            threshold=self.threshold,
            where=self._where(),
            **fields,
            note="an async handler (or other code on the loop) is blocking it; every other task waits",
        )

    def _where(self) -> str:
        """File, line and function of the loop thread's innermost Python frame ("" when unknown)."""
        frame = sys._current_frames().get(self._loop_thread)  # documented stdlib: another thread's frame
        if frame is None:
            return ""
        code = frame.f_code
        return f"{code.co_filename}:{frame.f_lineno} in {code.co_name}"

    # -- the loop's thread --------------------------------------------------------------------------

    def _ran(self, posted: float) -> None:
        now = time.monotonic()
        with self._lock:
            self._posted = None
            self._in_stall = False
            warned, self._warned = self._warned, False
            if warned:
                self._last_stall = (now, now - posted)
        if warned:
            self.log.warning("event_loop_unblocked", blocked_for=round(now - posted, 3))
