"""The tasks a processor holds, their slots, and what other threads may see of them.

A worker's event loop owns every task its processor takes (an :class:`~framework.worker.outcomes.InFlight`).
Two threads besides the loop look at those tasks: the heartbeat (:mod:`framework.worker.heartbeat`) extends
their leases, writes asynq's records of them and trims the worker's in-flight sets, and the loop watchdog
(:mod:`framework.worker.watchdog`) names the handlers running when the loop stalls. :class:`Ledger` is where
they meet. Its rule does not lean on the GIL, so it holds as well on free-threaded CPython:

* **One writer.** Only the loop's thread changes the ledger, and every change to what other threads read
  (the ``inflight`` and ``overrun`` maps, the list of finished tasks) is made holding the ledger's
  :class:`threading.Lock`. The loop reads its maps without the lock: nothing else writes them.
* **Copies for other threads.** Another thread never reads the maps themselves: :meth:`Ledger.snapshot` copies
  them under the lock, and :meth:`Ledger.take_finished` swaps the finished list out under it (a beat that
  fails hands it back with :meth:`Ledger.return_finished`). So a task released while the heartbeat writes is
  trimmed by the next beat, never lost and never trimmed twice.
* **What a copy's tasks may be read for.** Fields fixed when the task was taken (id, queue, message type
  and payload, start time), and two single-writer values: the task's ``deadline`` (moved on by the loop after
  a stall) and its lease's expiry (moved on by the heartbeat only; the loop only reads it). A read of either
  sees the old value or the new one, and either is safe. The watchdog also reads a few flags the loop sets
  (``runner``, ``ctx``, ``writing``, ``abandoned``), to name tasks in a log line only.

The lock is taken once per batch of tasks started and once per task released, never across an ``await``;
the heartbeat holds it only to copy a map.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from framework.worker.outcomes import InFlight

__all__ = ("Ledger", "TaskKey")

TaskKey = tuple[str, str]
"""(queue, id): task ids are unique per queue only."""


class Ledger:
    """The tasks one processor holds and the slots they take; see the module docstring.

    Args:
        on_free: called on the loop's thread whenever a slot (or a task's place) may have become free.
        record: keep the tasks let go for the heartbeat, which takes them out of the worker's in-flight sets
            (False when the worker records no in-flight sets).

    Attributes:
        inflight: tasks taken and not yet finished (running, or with their outcome being written), by
            (queue, id). The loop's thread only; other threads call :meth:`snapshot`.
        overrun: handlers given up on (or sync handlers whose thread outlived their coroutine) that still run,
            by (queue, id): each holds its slot until it ends. The loop's thread only.
        running: handlers running now (what ``concurrency`` caps; a task whose outcome is being written has none).
        running_per_queue: the same, per queue.
    """

    __slots__ = ("_finished", "_lock", "_on_free", "_record", "inflight", "overrun", "running", "running_per_queue")

    def __init__(self, on_free: Callable[[], None], *, record: bool = True) -> None:
        self.inflight: dict[TaskKey, InFlight] = {}
        self.overrun: dict[TaskKey, InFlight] = {}
        self.running = 0
        self.running_per_queue: Counter[str] = Counter()
        self._finished: list[TaskKey] = []
        self._lock = threading.Lock()
        self._on_free = on_free
        self._record = record

    def __contains__(self, key: object) -> bool:
        """Whether the task ``key`` (queue, id) is held here: in flight, or a handler given up on that still runs."""
        return key in self.inflight or key in self.overrun

    # -- the loop's side -----------------------------------------------------------------------------

    def hold(self, queue: str, tasks: Iterable[InFlight]) -> None:
        """Tasks of ``queue`` were taken: they are in flight, each holding a slot."""
        inflight = self.inflight
        started = 0
        with self._lock:
            for inf in tasks:
                inflight[inf.key] = inf
                started += 1
        self.running += started
        self.running_per_queue[queue] += started

    def release(self, inf: InFlight) -> bool:
        """``inf`` is finished here (outcome written, lease lost, or cancelled from outside); False if not held.

        Its slot is freed if it still held one, and it is kept for the heartbeat to trim from the in-flight set
        unless its acknowledgement took it out already (``off_record``).
        """
        key = inf.key
        with self._lock:
            if self.inflight.pop(key, None) is None:
                return False
            if self._record and not inf.off_record:
                self._finished.append(key)
        if inf.holds_slot:
            inf.holds_slot = False
            self._uncount(inf.queue)
        self._on_free()
        return True

    def forget(self, key: TaskKey) -> None:
        """A task taken but never held (put back at once): only its in-flight set entry is left to trim."""
        if self._record:
            with self._lock:
                self._finished.append(key)

    def free_slot(self, inf: InFlight) -> None:
        """``inf``'s handler is done: its slot is free (the task stays in flight until its outcome is written)."""
        if inf.holds_slot:
            inf.holds_slot = False
            self._uncount(inf.queue)
            self._on_free()

    def take_slot(self, inf: InFlight) -> None:
        """``inf`` (which gave its slot back while it waited for a limit) runs now: it holds a slot again.

        Taken at once, even when that makes one more running than ``concurrency`` for a moment: the fetch takes
        nothing new until the count is back under it.
        """
        if not inf.holds_slot:
            inf.holds_slot = True
            self.running += 1
            self.running_per_queue[inf.queue] += 1

    def keep_slot(self, inf: InFlight) -> None:
        """``inf``'s handler runs on past its outcome: its slot passes to :attr:`overrun` until it ends."""
        if inf.holds_slot:
            inf.holds_slot = False
            with self._lock:
                self.overrun[inf.key] = inf

    def end_overrun(self, inf: InFlight) -> bool:
        """A handler in :attr:`overrun` has ended: free its slot. False when ``inf`` is not (or no longer) there."""
        key = inf.key
        with self._lock:
            if self.overrun.get(key) is not inf:
                return False
            del self.overrun[key]
        self._uncount(inf.queue)
        self._on_free()
        return True

    def _uncount(self, queue: str) -> None:
        self.running -= 1
        self.running_per_queue[queue] -= 1

    # -- other threads' side -------------------------------------------------------------------------

    def snapshot(self, *, overrun: bool = False) -> tuple[InFlight, ...]:
        """The tasks in flight now (and, with ``overrun``, the handlers given up on that still run): a copy."""
        with self._lock:
            if overrun:
                return (*self.inflight.values(), *self.overrun.values())
            return tuple(self.inflight.values())

    def holding(self) -> bool:
        """Whether any task is in flight."""
        with self._lock:
            return bool(self.inflight)

    def take_finished(self) -> list[TaskKey]:
        """The tasks let go since the last call (each is returned once), for the heartbeat to trim."""
        with self._lock:
            finished, self._finished = self._finished, []
        return finished

    def return_finished(self, keys: Iterable[TaskKey]) -> None:
        """Hand back what :meth:`take_finished` returned when it could not be written (the next beat tries again)."""
        with self._lock:
            self._finished.extend(keys)

    @property
    def finished(self) -> list[TaskKey]:
        """The tasks let go and not yet taken by :meth:`take_finished` (a copy)."""
        with self._lock:
            return list(self._finished)
