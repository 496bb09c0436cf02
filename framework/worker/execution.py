"""Running the tasks a :class:`~framework.worker.processor.Processor` took: handlers, deadlines, slots.

One asyncio task per task runs the middleware chain under the task's deadline, ``min(now + timeout,
deadline)``, enforced by one timer for all running tasks, armed for the earliest deadline (no timer per
task). A handler that returns or fails frees its slot at once; the task stays in flight until its outcome
is written by the :class:`~framework.worker.outcomes.OutcomeWriter`. Timeouts and cancellation (``asynq:cancel``)
become failures, a cancellation at shutdown a requeue. Once the worker has cancelled a handler, the reason it
had (``inf.cancel_reason``) decides the outcome, whatever the handler does with its ``CancelledError``:
re-raises it, swallows it and returns, or turns it into another exception (``except CancelledError: raise
MyError``), as Go's asynq decides from the handler's context and not from what the handler returns. Anything
else a handler raises is its failure (a retry, or the archive once its retries are spent): any
``BaseException`` (``GeneratorExit``, a library's own subclass such as a test framework's ``Failed``,
``SystemExit``, ``KeyboardInterrupt``), and a ``CancelledError`` it raises itself while nobody cancelled its
runner (it awaited something another part cancelled). None of these may end the runner without an outcome:
the task would stay in flight, its lease extended by the heartbeat, and its slot lost. A
``KeyboardInterrupt`` is the handler's own, not a signal: a sync handler's runs in a thread, where no
signal is delivered, and under :meth:`~framework.worker.worker.Worker.run` SIGINT is handled by the
event loop's signal handler, which raises nothing in handler code. (A worker embedded in an application
that leaves SIGINT to ``asyncio.run`` gets a ``KeyboardInterrupt`` from a second Ctrl-C wherever the loop
is; one that lands in a handler fails that task, and the next ends the process.) Two outcomes are decided
before the middleware chain
runs, so each is logged here: a payload that does not decode into the task's payload type is archived
(``task_payload_invalid``), and a task whose type has no handler here is put back for another worker
(``task_type_unknown``, see :meth:`~framework.worker.outcomes.OutcomeWriter.unknown_type`).

**Middleware that drops the handler.** The chains are built when the worker starts, so a middleware that
gives no run stops start-up (see :mod:`~framework.worker.middleware`). Where middleware other than the
built-in one is installed, each call of the handler below them is recorded for the attempt: when the chain
returns and no call was ever started (a middleware called the next run without awaiting it), the task
fails, naming those middleware, instead of being marked done; a call that never started is closed, so the
handler cannot run after the task's outcome is written.

**Handlers that do not stop.** A handler past its deadline, or cancelled (``asynq:cancel``, shutdown), is
cancelled and gets ``cancel_grace`` seconds (a setting, default 2 s) to end. One that ends in time has its
outcome written as usual: a failure (timeout, cancellation) even when it swallowed the cancellation and
returned, a requeue at shutdown. One that is still running then (it caught ``CancelledError`` and goes on)
is *given up on*: ``task_overrun`` is logged (error) and its outcome is written at once, through the
same :class:`~framework.worker.outcomes.OutcomeWriter` calls (a timeout spends a retry, or archives the task once
its retries are exhausted; at shutdown it is put back at the head of its queue, spending none). The task
leaves the in-flight map, so its lease is no longer extended, and whatever the handler later returns or
raises writes nothing. Its slot stays taken until it really ends, so ``concurrency`` stays honest, and
while it runs this process starts no second copy of the same (queue, id): a retry dequeued here meanwhile is
put back for a few seconds, spending no retry (``task_deferred``). Its end is logged
(``task_overrun_ended``, with its duration) and frees the slot. A sync handler cannot be cancelled at all:
at its deadline its coroutine is cancelled at once and its outcome written, but its thread runs on, and it
keeps its slot and blocks a second copy in the same way until the function returns (``task_overrun`` then
``task_overrun_ended``).

:class:`TaskExecution` is a part the :class:`~framework.worker.processor.Processor` holds: it is given what it
works with (the processor's :class:`~framework.worker.ledger.Ledger`, its outcome writer, the handlers) and owns
the deadline timer (:class:`~framework.worker.deadlines.DeadlineTimer`, which also moves deadlines on after a
stalled loop); :class:`TaskCancelled` is importable from :mod:`framework.worker.processor` as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from contextvars import ContextVar
from functools import partial
from typing import TYPE_CHECKING, Any

from framework.context import TaskContext, lazy_logger
from framework.errors import PayloadTypeError, PluginError, ResultTooLarge, ResultTypeError, TaskCancelled
from framework.protocol.workflow import step_of
from framework.settings import MAX_RESULT_SIZE
from framework.task import Middleware, Run
from framework.worker.deadlines import DeadlineTimer
from framework.worker.middleware import build_chain, logging_middleware, middleware_name
from framework.worker.outcomes import error_text
from framework.worker.progress import ProgressReporter
from framework.worker.steps import fill_input

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine
    from concurrent.futures import Future

    import structlog

    from framework.clock import Clock
    from framework.protocol.message import TaskMessage
    from framework.registry import Registry
    from framework.services import Services
    from framework.task import TaskDef
    from framework.worker.ledger import Ledger
    from framework.worker.limits import LimitGate
    from framework.worker.outcomes import InFlight, OutcomeWriter
    from framework.worker.threads import HandlerThreads

__all__ = ("TaskCancelled", "TaskExecution", "deadline_of")

_RUNNING: ContextVar[InFlight | None] = ContextVar("framework_running_task", default=None)
"""The task a runner runs, set in the runner's own context (a sync handler's invoker records its thread there)."""

_HANDLER_CALLS: ContextVar[list[Coroutine[Any, Any, None]] | None] = ContextVar("framework_handler_calls", default=None)
"""The handler's coroutines the middleware made in this attempt, set in the runner's own context when checked."""


def _cancelled_from_outside() -> bool:
    """Whether something other than the worker cancelled the running runner (an event loop's teardown, say).

    A ``CancelledError`` nobody asked the runner for came from the handler itself: it is the handler's failure.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _returns_none(handler: Callable[..., Any]) -> bool:
    """Whether ``handler`` is annotated to return None (so there is no result to keep)."""
    annotations = getattr(handler, "__annotations__", None) or {}
    return "return" in annotations and annotations["return"] in (None, "None")


def deadline_of(msg: TaskMessage, now: float) -> float:
    """``min(now + timeout, deadline)``; 30 minutes when neither is set (as Go does)."""
    timeout, deadline = msg.timeout, msg.deadline
    if deadline <= 0:
        return now + (timeout if timeout > 0 else 1800)
    if timeout > 0:
        return min(now + timeout, float(deadline))
    return float(deadline)


def _recorded(run: Run) -> Run:
    """``run``, each call's coroutine recorded in :data:`_HANDLER_CALLS` (see :meth:`TaskExecution._run_chain`)."""

    def recorded(ctx: TaskContext, payload: Any) -> Awaitable[None]:
        coro = run(ctx, payload)
        calls = _HANDLER_CALLS.get()
        if calls is not None and inspect.iscoroutine(coro):
            calls.append(coro)
        return coro

    return recorded


def _never_started(calls: list[Coroutine[Any, Any, None]]) -> list[Coroutine[Any, Any, None]]:
    """The recorded calls that never started; each is closed, so it cannot start later."""
    unrun = [coro for coro in calls if inspect.getcoroutinestate(coro) == inspect.CORO_CREATED]
    for coro in unrun:
        coro.close()
    return unrun


def _ending_progress(chain: Run) -> Run:
    """``chain``, then the end of the task's progress reports, however the handler ended (see :mod:`.progress`)."""

    async def run(ctx: TaskContext, payload: Any) -> Any:
        try:
            return await chain(ctx, payload)
        finally:
            if isinstance(ctx._progress, ProgressReporter):  # None unless the handler reported
                await ctx._progress.finish()

    return run


class TaskExecution:
    """Runs taken tasks to their outcome, watches their deadlines and frees their slots.

    Args:
        ledger: the tasks the processor holds, and their slots.
        outcomes: writes what happened to each task.
        registry: task types and their handlers.
        services: what handlers see as ``ctx.services``.
        middleware: the middleware chain, outermost first.
        clock: where time comes from.
        logger: the worker's logger.
        threads: where sync handlers run.
        write_result: stores a running task's result bytes (``ctx.write_result``): ``(queue, id, data)``.
        release: lets a task go once its outcome is settled (the processor's, which also clears a crash
            suspect's mark).
        cancel_grace: seconds a cancelled handler gets to end before it is given up on.
        unknown_type_wait: seconds a task whose type has no handler here is put back before it is archived.
        max_result_size: the largest result, in bytes, a task may store (returned or written); a larger one is
            :class:`~framework.errors.ResultTooLarge`.

    """

    def __init__(
        self,
        ledger: Ledger,
        outcomes: OutcomeWriter,
        registry: Registry,
        services: Services,
        middleware: list[Middleware],
        clock: Clock,
        logger: structlog.typing.FilteringBoundLogger,
        threads: HandlerThreads,
        *,
        write_result: Callable[[str, str, bytes], Awaitable[None]],
        release: Callable[[InFlight], None],
        cancel_grace: float,
        unknown_type_wait: float,
        max_result_size: int = MAX_RESULT_SIZE,
    ) -> None:
        self.ledger = ledger
        self.outcomes = outcomes
        self.registry = registry
        self.services = services
        self.clock = clock
        self.log = logger
        self.threads = threads
        self.cancel_grace = cancel_grace
        self.unknown_type_wait = unknown_type_wait
        self.limits: LimitGate | None = None
        """Asks the limits of a limited task type before its handler runs (set by the processor)."""
        self._write_result = write_result
        self.max_result_size = max_result_size
        self._release = release
        self._inflight = ledger.inflight  # read here on the loop's thread only; the ledger changes it
        self._middleware = middleware
        self._checked = [middleware_name(mw) for mw in middleware if mw is not logging_middleware]
        """The middleware that may drop the handler's call (every one but the built-in), by name."""
        self._chains: dict[str, Run] = {}
        self.deadlines = DeadlineTimer(ledger.inflight, clock, logger, cancel_grace, self.abandon)
        """The one timer for every running task's deadline (and the cancelled ones' grace)."""
        for taskdef in registry:  # a middleware that gives no run stops start-up, not every task
            self._chain(taskdef)

    # -- running -----------------------------------------------------------------------------------

    def _chain(self, taskdef: TaskDef[Any]) -> Run:
        chain = self._chains.get(taskdef.type)
        if chain is None:
            invoker = self._invoker(taskdef)
            chain = build_chain(_recorded(invoker) if self._checked else invoker, self._middleware)
            chain = self._chains[taskdef.type] = _ending_progress(chain)
        return chain

    async def _run_chain(self, taskdef: TaskDef[Any], ctx: TaskContext, payload: Any) -> None:
        """Run ``taskdef``'s chain; fail when the middleware called the handler but never let it start.

        Raises:
            PluginError: every call of the handler was left unstarted (a missing ``await``).
        """
        chain = self._chain(taskdef)
        if not self._checked:
            await chain(ctx, payload)
            return
        calls: list[Coroutine[Any, Any, None]] = []
        _HANDLER_CALLS.set(calls)
        try:
            await chain(ctx, payload)
        finally:
            unrun = _never_started(calls)
        if unrun and len(unrun) == len(calls):
            raise PluginError(
                "a middleware called the handler without awaiting it, so the handler did not run; "
                f"middleware: {', '.join(self._checked)}"
            )

    def _invoker(self, taskdef: TaskDef[Any]) -> Run:
        """The innermost run of ``taskdef``: calls the handler and keeps what it returns on the task in flight.

        The value is kept here, below the middleware (which need not pass it on), for :meth:`_result_of`. An
        async handler annotated ``-> None`` runs as it is, without a wrapping frame.
        """
        handler: Callable[..., Any] = taskdef.handler
        if taskdef.is_async:
            if taskdef.result is None and _returns_none(handler):
                run: Run = taskdef.handler  # an async handler is a Run as it is
                return run

            async def call(ctx: TaskContext, payload: Any) -> None:
                value = await handler(ctx, payload)
                if value is not None:
                    inf = _RUNNING.get()
                    if inf is not None:
                        inf.result = value

            return call
        threads = self.threads

        async def call_in_thread(ctx: TaskContext, payload: Any) -> None:
            future = threads.submit(handler, ctx, payload)
            inf = _RUNNING.get()
            if inf is not None:
                inf.thread = future  # a thread that runs on past a cancellation keeps the slot (see _handler_done)
            result = await asyncio.wrap_future(future)
            if inspect.isawaitable(result):  # a plain function that returned a coroutine
                result = await result
            if result is not None and inf is not None:
                inf.result = result

        return call_in_thread

    def _result_of(self, inf: InFlight, taskdef: TaskDef[Any]) -> ResultTypeError | ResultTooLarge | None:
        """Encode the value the handler returned into ``inf.result`` (JSON bytes), or say why it cannot be stored.

        Returns:
            The error that fails the task: the value does not fit the task's result type (None too, unless the
            type allows it: a handler declared to return ``Out`` that returns nothing broke its promise), or it
            is larger than ``max_result_size`` once encoded (Redis could not store it, with or without a result
            type). A value a task without a result type returned that is not JSON-encodable is dropped instead
            (logged, ``task_result_dropped``): the handler did its work, and never promised a result.
        """
        value = inf.result
        if value is None and taskdef.result is None:
            return None  # nothing returned, nothing promised
        try:
            data = taskdef.encode_result(value)
        except ResultTypeError as exc:
            inf.result = None
            if taskdef.result is not None:
                return exc
            self.log.warning(
                "task_result_dropped", task_id=inf.id, type=inf.msg.type, queue=inf.queue, error=error_text(exc)
            )
            return None
        inf.result = data
        try:
            self._check_result_size(inf.msg.type, data, "returned")
        except ResultTooLarge as exc:
            inf.result = None
            return exc
        return None

    def _check_result_size(self, task_type: str, data: bytes, how: str) -> None:
        """Refuse a result over ``max_result_size`` (:class:`~framework.errors.ResultTooLarge`)."""
        limit = self.max_result_size
        if len(data) > limit:
            raise ResultTooLarge(
                f"the result task {task_type!r} {how} is {len(data):,} bytes, over the limit of {limit:,} bytes "
                "(setting max_result_size)"
            )

    async def _store_result(self, inf: InFlight, data: bytes) -> None:
        """``ctx.write_result``: check the bytes, then store them on the running task."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"ctx.write_result takes bytes, not {type(data).__name__}")
        data = bytes(data)
        self._check_result_size(inf.msg.type, data, "wrote")
        await self._write_result(inf.queue, inf.id, data)

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
            _write_result=partial(self._store_result, inf),
            _new_progress=partial(
                ProgressReporter, inf, self.outcomes.broker, self.clock, self.log, loop=asyncio.get_running_loop()
            ),
        )

    def _timeout_error(self, inf: InFlight) -> TimeoutError:
        msg = inf.msg
        if msg.deadline > 0 and inf.deadline >= msg.deadline:
            return TimeoutError(f"task deadline exceeded (deadline {msg.deadline}, Unix s)")
        return TimeoutError(f"task timed out after {msg.timeout}s")

    async def execute(self, inf: InFlight) -> None:
        """Run ``inf`` to its outcome (the body of its runner task)."""
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
                self._handler_done(inf)
                await self.outcomes.unknown_type(inf, self.unknown_type_wait)
                return
            try:
                payload = await self._payload(inf, taskdef)
            except PayloadTypeError as exc:
                self._handler_done(inf)
                self.log.error(
                    "task_payload_invalid",
                    task_id=inf.id,
                    type=inf.msg.type,
                    queue=inf.queue,
                    error=error_text(exc),
                    outcome="archived",
                )
                await self.outcomes.fail(inf, exc, taskdef, permanent=True)
                return
            remaining = await self._ready(inf, taskdef, payload)
            if remaining is None:
                return
            _RUNNING.set(inf)
            self.deadlines.watch(inf, remaining)
            await self._run_chain(taskdef, ctx, payload)
            if inf.cancel_reason:  # the handler swallowed its cancellation and returned: its reason decides
                raise asyncio.CancelledError
        except BaseException as exc:  # noqa: BLE001 - whatever a handler raises becomes an outcome, never escapes
            await self._raised(inf, taskdef, exc)
        else:
            if self._handler_done(inf):
                wrong = self._result_of(inf, taskdef) if taskdef is not None else None
                if wrong is not None:
                    # a result too large for Redis would be as large on a retry: archived at once
                    await self.outcomes.fail(inf, wrong, taskdef, permanent=isinstance(wrong, ResultTooLarge))
                else:
                    await self.outcomes.succeed(inf, ctx)

    async def _ready(self, inf: InFlight, taskdef: TaskDef[Any], payload: Any) -> float | None:
        """Seconds the handler may run, or None when a limit put the task off (it waits in Redis; its slot is free).

        Raises:
            TimeoutError: its deadline passed before it started.
        """
        if taskdef.limits and self.limits is not None and not await self.limits.admit(inf, taskdef, payload):
            self._handler_done(inf)
            return None
        remaining = self.deadlines.time_left(inf)
        if remaining <= 0:
            raise self._timeout_error(inf)
        return remaining

    async def _payload(self, inf: InFlight, taskdef: TaskDef[Any]) -> Any:
        """The task's payload, with a workflow step's input filled in (see :mod:`framework.worker.steps`)."""
        payload = taskdef.decode(inf.msg.payload)
        step = step_of(inf.msg.headers) if inf.msg.headers else None
        if step is not None and step.input:
            payload = await fill_input(self.outcomes.broker, step, payload)
        return payload

    async def _raised(self, inf: InFlight, taskdef: TaskDef[Any] | None, exc: BaseException) -> None:
        """The handler (or what runs before it) raised ``exc``: its failure, unless it was cancelled.

        Once the worker cancelled it, the reason decides, even when the handler turned its ``CancelledError``
        into another exception. A ``CancelledError`` while neither the worker nor anything else cancelled the
        runner is the handler's own (it awaited something another part cancelled): a failure like any other.
        """
        if inf.cancel_reason or (isinstance(exc, asyncio.CancelledError) and _cancelled_from_outside()):
            await self._cancelled(inf, taskdef, exc)
        elif self._handler_done(inf):
            await self.outcomes.fail(inf, exc, taskdef)

    async def _cancelled(self, inf: InFlight, taskdef: TaskDef[Any] | None, exc: BaseException) -> None:
        """The handler was cancelled: write the outcome its reason calls for, however it ended (``exc``).

        Without a reason (cancelled from outside the worker) the task is released and ``exc`` re-raised.
        """
        if not self._handler_done(inf):
            return  # given up on earlier: its outcome is written already
        reason = inf.cancel_reason
        if reason == "shutdown":
            await self.outcomes.requeue(inf)
        elif reason == "timeout":
            self._uncancel()
            await self.outcomes.fail(inf, self._timeout_error(inf), taskdef)
        elif reason == "cancel":
            await self.outcomes.fail(inf, TaskCancelled("task cancelled through the asynq:cancel channel"), taskdef)
        else:  # cancelled from outside the processor: the recoverer owns the task
            self._release(inf)
            raise exc

    @staticmethod
    def _uncancel() -> None:
        """Withdraw the processor's own cancellation request, so later awaits of this task run normally."""
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()

    # -- handlers that do not stop -----------------------------------------------------------------

    def abandon(self, inf: InFlight) -> None:
        """Give up on a cancelled handler that is still running: write its outcome now, keep its slot until it ends."""
        reason = inf.cancel_reason
        inf.abandoned = True
        inf.writing = True  # no longer cancellable; the timer passes it by
        self.ledger.keep_slot(inf)
        msg = inf.msg
        self._log_overrun(
            inf, reason, "the handler ignored its cancellation: given up on, it runs on and nothing it does is written"
        )
        if reason == "shutdown":
            self.outcomes.spawn(self._write_for(inf, self.outcomes.requeue(inf)))
            return
        if reason == "timeout":
            error: Exception = self._timeout_error(inf)
        else:
            error = TaskCancelled("task cancelled through the asynq:cancel channel")
        self.outcomes.spawn(self._write_for(inf, self.outcomes.fail(inf, error, self.registry.get(msg.type))))

    async def _write_for(self, inf: InFlight, write: Awaitable[None]) -> None:
        """Write the outcome of a handler given up on (in the background), as :meth:`execute` would."""
        try:
            await write
        except Exception as exc:
            self.log.exception("task_outcome_error", task_id=inf.id, queue=inf.queue, error=error_text(exc))
            self._release(inf)

    def _log_overrun(self, inf: InFlight, reason: str, note: str) -> None:
        self.log.error(
            "task_overrun",
            task_id=inf.id,
            type=inf.msg.type,
            queue=inf.queue,
            timeout=inf.msg.timeout,
            reason=reason,
            grace=self.cancel_grace,
            outcome="requeued" if reason == "shutdown" else "failed",
            note=note,
        )

    def _thread_runs_on(self, inf: InFlight, thread: Future[Any]) -> None:
        """A sync handler's coroutine ended (cancelled) while its thread still runs: keep the slot until it returns."""
        self.ledger.keep_slot(inf)  # no second copy of the task starts here meanwhile
        self._log_overrun(
            inf,
            inf.cancel_reason or "cancelled",
            "a thread cannot be stopped: its slot stays taken until the function returns",
        )
        loop = asyncio.get_running_loop()

        def ended(_future: Future[Any]) -> None:  # in the handler's thread (or here, if it already ended)
            with contextlib.suppress(RuntimeError):  # the loop is closed: the process is ending
                loop.call_soon_threadsafe(self._overrun_ended, inf)

        thread.add_done_callback(ended)

    def _overrun_ended(self, inf: InFlight) -> None:
        """A handler given up on has ended at last: log it and free its slot."""
        if not self.ledger.end_overrun(inf):
            return
        self.log.warning(
            "task_overrun_ended",
            task_id=inf.id,
            type=inf.msg.type,
            queue=inf.queue,
            duration=round(self.clock.now() - inf.started, 3),
            note="slot freed; nothing written",
        )

    def stall_report(self, task: asyncio.Task[Any] | None) -> dict[str, Any]:
        """Log fields for the watchdog: the task the loop runs (if ``task`` is a runner), the async handlers running.

        Called from the watchdog's thread: it reads a copy of the ledger, and of each task only what the
        ledger's rules allow (see :mod:`framework.worker.ledger`).
        """
        fields: dict[str, Any] = {}
        running: list[str] = []
        registry = self.registry
        for inf in self.ledger.snapshot(overrun=True):
            if task is not None and inf.runner is task:
                fields.update(task_id=inf.id, type=inf.msg.type, queue=inf.queue)
            taskdef = registry.get(inf.msg.type)
            if taskdef is not None and taskdef.is_async and inf.ctx is not None and (inf.abandoned or not inf.writing):
                running.append(f"{inf.msg.type}:{inf.id}")
        fields["running"] = running[:20]
        if len(running) > 20:
            fields["running_count"] = len(running)
        return fields

    def stuck_after(self, task: asyncio.Task[Any]) -> float | None:
        """For the watchdog: until when the handler run by ``task`` may hold the event loop (Unix s), or None.

        Its deadline plus ``cancel_grace``: were the loop free, the worker would have given the handler up by
        then. None when ``task`` runs no handler of this worker. Called from the watchdog's thread (a copy of
        the ledger; of the task only its deadline, which moves on only on the loop, and the loop is held).
        """
        for inf in self.ledger.snapshot():
            if inf.runner is task:
                return inf.deadline + self.cancel_grace
        return None

    # -- slots -------------------------------------------------------------------------------------

    def _handler_done(self, inf: InFlight) -> bool:
        """The handler returned or failed: its slot is free; the task stays in flight until its outcome is written.

        Returns False when there is nothing more to do: the handler was given up on earlier (its outcome is
        written already; its slot is freed now). A sync handler whose coroutine was cancelled while its thread
        runs on keeps its slot until the thread's function returns.
        """
        if inf.abandoned:
            self._overrun_ended(inf)
            return False
        inf.writing = True
        if inf.holds_slot:
            thread = inf.thread
            if thread is not None and not thread.done():
                self._thread_runs_on(inf, thread)
                return True
            self.ledger.free_slot(inf)
        return True
