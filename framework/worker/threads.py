"""The threads that run plain-function (sync) handlers: :class:`HandlerThreads`.

Why not ``concurrent.futures.ThreadPoolExecutor``: Python cannot stop a thread, so a sync handler that
overruns its timeout, or is cancelled, keeps running until it returns. In a fixed-size pool such a
thread would hold a pool slot and starve later tasks, and since its threads are joined at interpreter
exit it would also hold up the exit of a worker that is shutting down. Here every thread is a daemon,
a new one starts whenever no idle thread is waiting, and idle threads end after ``idle_timeout``. So a
stuck handler costs one thread (and its task's slot, below), and a worker process exits when its event
loop is done, even while a stuck handler still runs (it dies with the process).

When its timeout fires or it is cancelled, the task's failure (or requeue, at shutdown) is written at
once, as Go's asynq does for a handler that ignores its context, but the thread keeps the task's slot
until the function returns (the processor is told through the call's future), and no second copy of
the task starts in the process meanwhile (see :mod:`framework.worker.execution`). So the threads running
handlers never outnumber ``concurrency``.
"""

from __future__ import annotations

import contextvars
import queue
import threading
from concurrent.futures import Executor, Future
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ("HandlerThreads",)

P = ParamSpec("P")
T = TypeVar("T")

_STOP = object()


class HandlerThreads(Executor):
    """A growing pool of daemon threads; see the module docstring.

    Args:
        name: thread name prefix.
        idle_timeout: seconds an idle thread waits for work before it ends.
    """

    def __init__(self, name: str = "framework-task", idle_timeout: float = 30.0) -> None:
        self._name = name
        self._idle_timeout = idle_timeout
        self._work: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._count = 0
        self._shutdown = False

    @property
    def busy(self) -> int:
        """Threads running a call now (including handlers that overran their timeout)."""
        with self._lock:
            return self._count - self._idle

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Run ``fn(*args, **kwargs)`` in a thread, with the caller's context variables."""
        future: Future[T] = Future()
        ctx = contextvars.copy_context()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot submit after shutdown")
            self._work.put((future, ctx, fn, args, kwargs))
            if self._idle > 0:
                self._idle -= 1
                return future
            self._count += 1
            n = self._count
        threading.Thread(target=self._run, name=f"{self._name}-{n}", daemon=True).start()
        return future

    def _run(self) -> None:
        while True:
            try:
                item = self._work.get(timeout=self._idle_timeout)
            except queue.Empty:
                with self._lock:
                    # a submit may have counted on this thread as idle just now: take its item then
                    if self._work.empty() and self._idle > 0:
                        self._idle -= 1
                        self._count -= 1
                        return
                continue
            if item is _STOP:
                with self._lock:
                    self._count -= 1
                return
            future, ctx, fn, args, kwargs = item
            if future.set_running_or_notify_cancel():
                try:
                    result = ctx.run(fn, *args, **kwargs)
                except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task, which turns it into an outcome
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            with self._lock:
                self._idle += 1

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop idle threads; running ones finish (or die with the process: they are daemons).

        Args:
            wait: ignored; daemon threads are never joined.
            cancel_futures: cancel calls that have not started.
        """
        with self._lock:
            self._shutdown = True
            count = self._count
        while cancel_futures:
            try:
                item = self._work.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                item[0].cancel()
        for _ in range(count):
            self._work.put(_STOP)
