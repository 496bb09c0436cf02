"""Running the tasks a :class:`~framework.processor.Processor` took: handlers, deadlines, slots.

One asyncio task per task runs the middleware chain under the task's deadline, ``min(now + timeout,
deadline)``, enforced by one timer for all running tasks, armed for the earliest deadline (no timer per
task). A handler that returns or fails frees its slot at once; the task stays in flight until its outcome
is written by the :class:`~framework.outcomes.OutcomeWriter`. Timeouts and cancellation (``asynq:cancel``)
become failures, a cancellation at shutdown a requeue.

:class:`TaskExecution` is a base of :class:`~framework.processor.Processor`, which holds the state declared
here; :class:`TaskCancelled` is importable from :mod:`framework.processor` as well.
"""

from __future__ import annotations

import asyncio
import inspect
import math
from functools import partial
from typing import TYPE_CHECKING, Any

from framework.context import TaskContext, lazy_logger
from framework.errors import PayloadTypeError, UnknownTaskType
from framework.middleware import Middleware, Run, build_chain
from framework.outcomes import error_text

if TYPE_CHECKING:
    from collections import Counter
    from collections.abc import Callable

    import structlog

    from framework.broker import RedisBroker
    from framework.clock import Clock
    from framework.message import TaskMessage
    from framework.outcomes import InFlight, OutcomeWriter
    from framework.registry import Registry
    from framework.services import Services
    from framework.task import TaskDef
    from framework.threads import HandlerThreads

__all__ = ("TaskCancelled", "TaskExecution")


def _timed_out(inf: InFlight) -> bool:
    """Whether the processor cancelled ``inf``'s handler at its deadline (read after an await)."""
    return inf.cancel_reason == "timeout"


class TaskCancelled(Exception):
    """The task was cancelled through the ``asynq:cancel`` channel (a failure: it is retried)."""


class TaskExecution:
    """Runs taken tasks to their outcome, watches their deadlines and frees their slots."""

    broker: RedisBroker
    registry: Registry
    services: Services
    clock: Clock
    log: structlog.typing.FilteringBoundLogger
    server_id: str
    threads: HandlerThreads
    outcomes: OutcomeWriter
    inflight: dict[tuple[str, str], InFlight]
    running: int
    running_per_queue: Counter[str]
    finished: list[tuple[str, str]]
    _middleware: list[Middleware]
    _chains: dict[str, Run]
    _slot_free: asyncio.Event
    _wakeup: asyncio.Event
    _limited: bool
    _timer: asyncio.TimerHandle | None

    # -- running -----------------------------------------------------------------------------------

    def _chain(self, taskdef: TaskDef[Any]) -> Run:
        chain = self._chains.get(taskdef.type)
        if chain is None:
            chain = self._chains[taskdef.type] = build_chain(self._invoker(taskdef), self._middleware)
        return chain

    def _invoker(self, taskdef: TaskDef[Any]) -> Run:
        if taskdef.is_async:
            run: Run = taskdef.handler  # type: ignore[assignment] # an async handler is a Run as it is
            return run
        handler: Callable[..., Any] = taskdef.handler
        threads = self.threads

        async def call_in_thread(ctx: TaskContext, payload: Any) -> None:
            result = await asyncio.get_running_loop().run_in_executor(threads, handler, ctx, payload)
            if inspect.isawaitable(result):  # a plain function that returned a coroutine
                await result

        return call_in_thread

    def _context(self, inf: InFlight) -> TaskContext:
        msg, task_id = inf.msg, inf.id
        return TaskContext(
            id=msg.id or task_id,
            type=msg.type,
            queue=inf.queue,
            retried=msg.retried,
            max_retry=msg.retry,
            deadline=inf.deadline,
            headers=dict(msg.headers) if msg.headers else {},
            logger=lazy_logger(self.log, task_id=task_id, type=msg.type, queue=inf.queue, retried=msg.retried),
            services=self.services,
            _write_result=partial(self.broker.write_result, inf.queue, task_id),
        )

    @staticmethod
    def _deadline(msg: TaskMessage, now: float) -> float:
        """``min(now + timeout, deadline)``; 30 minutes when neither is set (as Go does)."""
        timeout, deadline = msg.timeout, msg.deadline
        if deadline <= 0:
            return now + (timeout if timeout > 0 else 1800)
        if timeout > 0:
            return min(now + timeout, float(deadline))
        return float(deadline)

    def _timeout_error(self, inf: InFlight) -> TimeoutError:
        msg = inf.msg
        if msg.deadline > 0 and inf.deadline >= msg.deadline:
            return TimeoutError(f"task deadline exceeded (deadline {msg.deadline}, Unix s)")
        return TimeoutError(f"task timed out after {msg.timeout}s")

    async def _execute(self, inf: InFlight) -> None:
        try:
            await self._execute_inner(inf)
        except asyncio.CancelledError:
            self._release(inf)  # cancelled from outside the processor: the recoverer owns the task
            raise
        except Exception as exc:
            self.log.exception("task_outcome_error", task_id=inf.id, queue=inf.queue, error=error_text(exc))
            self._release(inf)

    async def _execute_inner(self, inf: InFlight) -> None:
        ctx = inf.ctx = self._context(inf)
        taskdef = self.registry.get(inf.msg.type)
        try:
            if inf.cancel_reason:
                raise asyncio.CancelledError  # cancelled before it started
            if taskdef is None:
                raise UnknownTaskType(f"no handler is registered for task type {inf.msg.type!r} in this worker")
            try:
                payload = taskdef.decode(inf.msg.payload)
            except PayloadTypeError as exc:
                self._handler_done(inf)
                await self.outcomes.fail(inf, exc, taskdef, permanent=True)
                return
            remaining = inf.deadline - self.clock.now()
            if remaining <= 0:
                raise self._timeout_error(inf)
            self._watch(inf, remaining)
            await self._chain(taskdef)(ctx, payload)
            if _timed_out(inf):  # the handler swallowed the cancellation and returned
                self._uncancel()
                raise self._timeout_error(inf)
        except asyncio.CancelledError:
            self._handler_done(inf)
            reason = inf.cancel_reason
            if reason == "shutdown":
                await self.outcomes.requeue(inf)
            elif reason == "timeout":
                self._uncancel()
                await self.outcomes.fail(inf, self._timeout_error(inf), taskdef)
            elif reason == "cancel":
                await self.outcomes.fail(inf, TaskCancelled("task cancelled through the asynq:cancel channel"), taskdef)
            else:
                self._release(inf)
                raise
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - a handler exception becomes an outcome, never escapes
            self._handler_done(inf)
            await self.outcomes.fail(inf, exc, taskdef)
        else:
            self._handler_done(inf)
            await self.outcomes.succeed(inf, ctx)

    @staticmethod
    def _uncancel() -> None:
        """Withdraw the processor's own cancellation request, so later awaits of this task run normally."""
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()

    # -- timeouts: one timer for all running tasks, armed for the earliest deadline -----------------

    def _watch(self, inf: InFlight, remaining: float) -> None:
        loop = asyncio.get_running_loop()
        inf.expires = when = loop.time() + remaining
        if self._timer is None or when < self._timer.when():
            if self._timer is not None:
                self._timer.cancel()
            self._timer = loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        """Cancel every running handler past its deadline; arm the timer for the next deadline."""
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        earliest = math.inf
        for inf in self.inflight.values():
            if inf.writing or inf.cancel_reason or inf.runner is None:
                continue
            if inf.expires <= now:
                inf.cancel_reason = "timeout"
                inf.runner.cancel()
            elif inf.expires < earliest:
                earliest = inf.expires
        if earliest < math.inf:
            self._timer = loop.call_at(earliest, self._on_timer)

    # -- slots -------------------------------------------------------------------------------------

    def _handler_done(self, inf: InFlight) -> None:
        """The handler returned or failed: its slot is free; the task stays in flight until its outcome is written."""
        inf.writing = True
        if inf.holds_slot:
            inf.holds_slot = False
            self.running -= 1
            self.running_per_queue[inf.queue] -= 1
            self._slot_free.set()
            if self._limited:
                self._wakeup.set()

    def _release(self, inf: InFlight) -> None:
        if self.inflight.pop(inf.key, None) is not None:
            if inf.holds_slot:
                inf.holds_slot = False
                self.running -= 1
                self.running_per_queue[inf.queue] -= 1
            if self.server_id and not inf.off_record:
                self.finished.append(inf.key)
            self._slot_free.set()
            if self._limited:
                self._wakeup.set()
