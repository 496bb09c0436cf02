"""Writing a task's outcome under its lease: done, completed, retry, archive or requeue, then the task events.

:class:`OutcomeWriter` serves the :class:`~framework.worker.processor.Processor`:

* **Success.** Without a retention, ``done`` is acknowledged in batches: one ``done.lua`` call for every
  task of a queue that finished in the same event-loop iteration, written in the background (tracked in
  :attr:`OutcomeWriter.background`; the task's runner waits for it only when a ``task_succeeded`` hook
  needs to know it was written). With a retention, ``mark_complete``.
* **Failure.** Retried after the retry policy's delay, or archived (retries exhausted,
  :class:`~framework.errors.SkipRetry`, a payload that does not decode); a
  :class:`~framework.errors.RevokeTask` is acknowledged as done, as asynq does. The error stored is
  ``"<ExceptionType>: <message>"``.
* **Unknown type.** A task whose type has no handler in this worker is put back for a worker that has
  one, spending no retry, and archived once no worker took it for ``unknown_type_wait`` seconds (see
  :meth:`OutcomeWriter.unknown_type`).
* **Shutdown.** ``requeue`` puts the task back at the head of its queue, spending no retry.
* **Handlers given up on.** For a handler that ignores its cancellation the processor writes the outcome
  without waiting for it, through these same calls (``fail`` for a timeout or ``asynq:cancel``,
  ``requeue`` at shutdown), run in the background (:meth:`OutcomeWriter.spawn`); the handler's own end
  writes nothing (see :mod:`framework.worker.execution`).
* **Leases.** A write is made only while the task's lease is valid; it is retried through Redis faults
  while the lease stays valid and dropped once it lapses. The task is then remembered in :attr:`lost`, so
  the worker's recoverer can give it back once that is safe.
* **Events.** ``task_succeeded``/``task_retried``/``task_archived`` fire after the write, and only when it
  changed the task; plugin errors are logged and swallowed.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from framework.errors import ERROR_TEXT_MAX, RetryAfter, TaskCancelled, UnknownTaskType, error_text
from framework.plugins.events import event_callers, fire_callers, has_impls
from framework.protocol.message import encode_message
from framework.protocol.workflow import step_of
from framework.retry import Archive, Drop, decide, default_retry_delay
from framework.worker.steps import archive

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping
    from concurrent.futures import Future

    import pluggy
    import structlog

    from framework.broker.broker import Broker
    from framework.clock import Clock
    from framework.context import TaskContext
    from framework.limits import Applied
    from framework.protocol.message import TaskMessage
    from framework.task import RetryDelay, TaskDef
    from framework.transport.health import RedisHealth
    from framework.worker.lease import Lease

__all__ = ("CANCELLED_BY_CALLER", "ERROR_TEXT_MAX", "UNKNOWN_TYPE_DELAYS", "InFlight", "OutcomeWriter", "error_text")

MAX_RETRY_DELAY = 365 * 24 * 3600.0
"""The longest wait before a retry: a larger, infinite or NaN delay (a ``RetryAfter`` or a retry policy's) is
brought within [0, this], so the retry's time is always a real one and the task always gets its outcome."""


CANCELLED_BY_CALLER = "task cancelled by its caller (Client.cancel)"
"""The ``TaskCancelled`` message a task cancelled through ``Client.cancel`` while it ran is archived with."""


def _bounded(delay: float) -> float:
    """``delay`` within [0, :data:`MAX_RETRY_DELAY`]: NaN and negatives are 0, infinities and beyond the most."""
    if delay > 0.0:
        return min(delay, MAX_RETRY_DELAY)
    return 0.0


_MAX_BACKOFF = 5.0
UNKNOWN_TYPE_DELAYS = (5, 300)
"""Shortest and longest delay (s) before a task whose type has no handler here is offered again; in between,
the delay is the time since it was first put back, so it roughly doubles each time."""
UNKNOWN_TYPE_LOG_INTERVAL = 10.0
"""Seconds between two ``task_type_unknown`` deferral lines of one task type in one queue (per process); the
deferrals in between are counted in the next line's ``also_deferred``."""
UNKNOWN_TYPE_LINES_MAX = 256
"""Most (type, queue) pairs whose last ``task_type_unknown`` line a worker remembers. Types come from whoever
enqueues (a type per tenant or per report, a deploy that renames many): past this many, the memory starts over,
so a long-running worker does not keep one entry for every unknown type it ever met. A pair forgotten so gets
its next line at once, and the deferrals it had counted since its last line are not reported."""


class InFlight:
    """A task this process is running (or writing the outcome of).

    Attributes:
        id: the task id (as stored in Redis).
        msg: the decoded message.
        queue: its queue.
        lease: the in-memory lease; no write once it lapsed.
        deadline: Unix time by which the handler must finish (moved on by ``extended``).
        started: when it was taken (Unix s).
        runner: the asyncio task running it.
        ctx: its context, once it started.
        cancel_reason: ``"cancel"`` (cancel channel), ``"shutdown"`` or ``"timeout"`` when cancelled by the worker.
        writing: the handler is done and the outcome is being written (no longer cancellable).
        holds_slot: the task counts against the worker's concurrency (until its handler is done; a handler
            that runs on after its outcome was decided hands its slot to the processor's ``overrun`` record).
        expires: event-loop time of its deadline, once its handler started.
        off_record: its id already left the worker's in-flight set (the acknowledgement removed it), so the
            heartbeat has nothing to trim for it.
        give_up_at: event-loop time at which a cancelled handler that is still running is given up on.
        abandoned: the worker gave up on the handler (it ignored its cancellation); the outcome was written
            without it, and nothing it does later is written.
        thread: the future of a sync handler's thread, once submitted.
        extended: seconds the deadline was moved on for event-loop stalls other tasks caused.
        result: what the handler returned (None: nothing), then its JSON bytes, stored with the success.
        limits: the limits whose concurrency slots it holds (given back once its outcome is written).
    """

    __slots__ = (
        "abandoned",
        "cancel_reason",
        "ctx",
        "deadline",
        "expires",
        "extended",
        "give_up_at",
        "holds_slot",
        "id",
        "lease",
        "limits",
        "msg",
        "off_record",
        "queue",
        "result",
        "runner",
        "started",
        "thread",
        "writing",
    )

    def __init__(
        self, task_id: str, msg: TaskMessage, queue: str, lease: Lease, deadline: float, started: float | None = None
    ) -> None:
        self.id = task_id
        self.msg = msg
        self.queue = queue
        self.lease = lease
        self.deadline = deadline
        self.started = time.time() if started is None else started
        self.runner: asyncio.Task[None] | None = None
        self.ctx: TaskContext | None = None
        self.cancel_reason = ""
        self.writing = False
        self.holds_slot = True
        self.expires = math.inf
        self.off_record = False
        self.give_up_at = math.inf
        self.abandoned = False
        self.thread: Future[Any] | None = None
        self.extended = 0.0
        self.result: Any = None
        self.limits: tuple[Applied, ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        """(queue, id): task ids are unique per queue only."""
        return (self.queue, self.id)


class OutcomeWriter:
    """Writes outcomes for one processor; see the module docstring.

    Args:
        broker: the broker.
        clock: where time comes from.
        logger: the worker's logger.
        health: where Redis faults are reported.
        hook: the plugin hook relay (events, ``retry_delay_for``), or None.
        retry_delay: the worker's retry policy.
        release: frees the task's slot in the processor (called once per task).
        inflight_keys: queue -> this worker's in-flight set there ("" or absent: none); batched
            acknowledgements take their ids out of it.
    """

    def __init__(
        self,
        broker: Broker,
        clock: Clock,
        logger: structlog.typing.FilteringBoundLogger,
        health: RedisHealth,
        hook: pluggy.HookRelay | None,
        retry_delay: RetryDelay,
        release: Callable[[InFlight], None],
        inflight_keys: Mapping[str, str] | None = None,
    ) -> None:
        self.broker = broker
        self.inflight_keys = inflight_keys or {}
        self.clock = clock
        self.log = logger
        self.health = health
        self.hook = hook
        self.retry_delay = retry_delay
        self.release = release
        self.lost: list[tuple[str, str, float]] = []
        """(queue, id, when) of tasks whose lease lapsed here; the worker's recoverer gives them back."""
        self.on_retry: Callable[[float], None] | None = None
        """Told the Unix time a retry written here is due (the worker's forwarder, to pass by then)."""
        self.background: set[asyncio.Task[Any]] = set()
        self._acks: dict[str, list[tuple[InFlight, asyncio.Future[bool] | None]]] = {}
        self._flush_scheduled = False
        self._events = {name: has_impls(hook, name) for name in ("task_succeeded", "task_retried", "task_archived")}
        self._delay_hook = has_impls(hook, "retry_delay_for")
        self._callers = {name: event_callers(hook, name) for name, on in self._events.items() if on and hook}
        """Each event's per-plugin callers, built once (the plugins of a running worker do not change)."""
        self._unknown_lines: dict[tuple[str, str], list[float]] = {}
        """(type, queue) -> [time of its last deferral line, deferrals since, not logged one by one]; at most
        :data:`UNKNOWN_TYPE_LINES_MAX` pairs."""

    def spawn(self, coro: Awaitable[Any]) -> None:
        """Run ``coro`` in the background, tracked until it ends (the processor waits for these on stop)."""
        task = asyncio.ensure_future(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def lease_lost(self, inf: InFlight) -> bool:
        """True (and the slot released, the task remembered in :attr:`lost`) when ``inf``'s lease lapsed."""
        if inf.lease.is_valid():
            return False
        self.log.warning("task_lease_lost", task_id=inf.id, queue=inf.queue, note="outcome not written")
        self.lost.append((inf.queue, inf.id, self.clock.now()))
        self.release(inf)
        return True

    async def _fire(self, name: str, ctx: TaskContext | None, error: BaseException | None = None) -> None:
        if self._events[name] and self.hook is not None and ctx is not None:
            kwargs: dict[str, Any] = {"ctx": ctx} if error is None else {"ctx": ctx, "error": error}
            await fire_callers(self._callers[name], name, self.log, **kwargs)

    async def succeed(self, inf: InFlight, ctx: TaskContext) -> None:
        """The handler returned: done (batched), or completed when the task has a retention."""
        msg = inf.msg
        step = step_of(msg.headers) if msg.headers else None
        if msg.retention > 0:
            if self.lease_lost(inf):
                return
            now = int(self.clock.now())
            msg.completed_at = now
            data = encode_message(msg)
            expires = now + msg.retention
            unique = msg.unique_key
            result = inf.result or b""
            if step is not None:
                ok = await self._write(
                    inf, lambda: self.broker.step_complete(step, inf.queue, inf.id, data, expires, unique, result)
                )
            else:
                ok = await self._write(
                    inf, lambda: self.broker.mark_complete(inf.queue, inf.id, data, expires, unique, result)
                )
        elif step is not None:
            # a step is acknowledged on its own: its script also advances the workflow (not batched)
            result = inf.result or b""
            ok = await self._write(
                inf,
                lambda: self._step_ack(
                    inf,
                    lambda inflight: self.broker.step_done(step, inf.queue, inf.id, msg.unique_key, result, inflight),
                ),
            )
        elif self._events["task_succeeded"]:
            written: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            self._ack(inf, written)
            ok = await written
        else:
            self._ack(inf)  # nothing waits for the write: the batch is written, and tracked, in the background
            return
        if ok:
            await self._fire("task_succeeded", ctx)

    def _ack(self, inf: InFlight, written: asyncio.Future[bool] | None = None) -> None:
        """Queue a ``done`` for the batch written at the end of this loop iteration.

        ``written``, if given, gets whether the write changed the task.
        """
        batch = self._acks.get(inf.queue)
        if batch is None:
            batch = self._acks[inf.queue] = []
        batch.append((inf, written))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._start_flush)

    def flush(self) -> None:
        """Start writing the acknowledgements queued so far now (shutdown), rather than at the end of the iteration."""
        if self._acks:
            self._start_flush()

    def _start_flush(self) -> None:
        self._flush_scheduled = False
        batches, self._acks = self._acks, {}
        for queue, items in batches.items():
            self.spawn(self._write_acks(queue, items))

    async def _write_acks(self, queue: str, items: list[tuple[InFlight, asyncio.Future[bool] | None]]) -> None:
        backoff = 0.1
        while True:
            live = []
            for inf, future in items:
                if self.lease_lost(inf):
                    if future is not None:
                        future.set_result(False)
                else:
                    live.append((inf, future))
            if not live:
                return
            inflight = self.inflight_keys.get(queue, "")
            try:
                found = await self.broker.done(
                    queue, [(i.id, i.msg.unique_key, i.result or b"") for i, _ in live], inflight
                )
            except (RedisError, OSError) as exc:
                self.health.failed("processor", exc, tasks=len(live), retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)
                items = live
                continue
            self.health.ok("processor")
            for (inf, future), n in zip(live, found, strict=True):
                if not n:
                    self.log.warning("task_not_active", task_id=inf.id, queue=queue, note="finished elsewhere")
                inf.off_record = bool(inflight)
                self.release(inf)
                if future is not None:
                    future.set_result(bool(n))
            return

    async def _step_ack(self, inf: InFlight, call: Callable[[str], Awaitable[int]]) -> int:
        """Acknowledge a workflow step alone (its script also advances the workflow): done, out of the in-flight set."""
        inflight = self.inflight_keys.get(inf.queue, "")
        found = await call(inflight)
        inf.off_record = bool(inflight)
        return found

    async def _write(self, inf: InFlight, make_call: Callable[[], Awaitable[int]]) -> bool:
        """Run a broker write for ``inf``, retrying through Redis faults while its lease holds; then release it.

        Returns whether the write changed the task (False: lease lost, or the task is no longer active).
        """
        found = await self._attempt(inf, make_call)
        if found is None:
            return False
        self.release(inf)
        return bool(found)

    async def _attempt(self, inf: InFlight, make_call: Callable[[], Awaitable[int]]) -> int | None:
        """Run a broker write for ``inf``, retrying through Redis faults while its lease holds.

        Returns the script's answer (0, logged: the task is no longer active), or None once the lease lapsed
        (the task is released then). A task that is still leased stays in flight.
        """
        backoff = 0.1
        while True:
            if self.lease_lost(inf):
                return None
            try:
                found = await make_call()
            except (RedisError, OSError) as exc:
                self.health.failed("processor", exc, task_id=inf.id, retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)
                continue
            self.health.ok("processor")
            if not found:
                self.log.warning("task_not_active", task_id=inf.id, queue=inf.queue, note="finished elsewhere")
            return found

    async def _cancelled_by_caller(self, inf: InFlight) -> bool:
        """Whether ``Client.cancel`` asked for this cancellation (archived then), rather than ``asynq:cancel`` alone.

        A Redis fault reads as no: the task is retried, as any cancellation through ``asynq:cancel`` is.
        """
        try:
            return await self.broker.cancel_requested(inf.queue, inf.id)
        except (RedisError, OSError):
            return False

    async def requeue(self, inf: InFlight) -> None:
        """Put an unfinished task back at the head of its queue (shutdown), spending no retry."""
        if await self._write(inf, lambda: self.broker.requeue(inf.queue, inf.id)):
            self.log.info("task_requeued", task_id=inf.id, queue=inf.queue, reason="shutdown")

    async def unknown_type(self, inf: InFlight, wait: float) -> None:
        """No handler is registered here for the task's type: put it back for a worker that has one, or archive it.

        A Go worker, or one of ours with other task types, may handle the type, and during a rolling deploy
        new code may enqueue a type that old workers do not know yet. So the task is not failed: it goes to
        the retry set (shown as *retry* by asynq's tools, with the reason as its error) without spending a
        retry or counting as processed or failed, as asynq does with an error that is not a failure, and it
        is logged (``task_type_unknown``, warning, ``outcome="deferred"``): the first deferral of a type in a queue
        at once, then at most one line per :data:`UNKNOWN_TYPE_LOG_INTERVAL` seconds, whose ``also_deferred``
        counts the deferrals since the previous line (a backlog of 20,000 such tasks, say during a rolling
        deploy, made 20,000 lines each time it came round). The delay starts at 5 s
        and grows with the time since the task was first put back, up to 5 minutes
        (:data:`UNKNOWN_TYPE_DELAYS`). Once ``wait`` seconds have passed since then (the worker's
        ``unknown_type_wait``; 0 = at once), the worker that takes it archives it with the error
        ``"UnknownTaskType: no worker registers task type '<type>'"``, logged at error level
        (``outcome="archived"``), and ``task_archived`` fires. Run from the archive, it gets the full wait again.
        """
        msg = inf.msg
        now = int(self.clock.now())
        deferred = UnknownTaskType(
            f"no handler is registered for task type {msg.type!r} in the worker that took it; "
            "put back for a worker that registers it"
        )
        msg.error_msg = error_text(deferred)
        msg.last_failed_at = now
        data = encode_message(msg)
        due = await self._attempt(
            inf, lambda: self.broker.defer(inf.queue, inf.id, data, now=now, wait=wait, delays=UNKNOWN_TYPE_DELAYS)
        )
        if due is None:
            return
        fields = {"task_id": inf.id, "type": msg.type, "queue": inf.queue}
        if due >= 0:
            self.release(inf)
            if due > 0:
                self._log_deferral(fields, msg.error_msg, due - now)
                if self.on_retry is not None:
                    self.on_retry(due)
            return
        waited = f" (none took it within {wait:g} s)" if wait > 0 else ""
        error = UnknownTaskType(f"no worker registers task type {msg.type!r}{waited}")
        msg.error_msg = error_text(error)
        data = encode_message(msg)
        self.log.error("task_type_unknown", **fields, error=msg.error_msg, outcome="archived")
        if await self._write(inf, lambda: archive(self.broker, inf.queue, inf.id, msg, data)):
            await self._fire("task_archived", inf.ctx, error)

    def _log_deferral(self, fields: dict[str, str], error: str, retry_in: int) -> None:
        """Log a deferral of a task of unknown type, or count it for the next line (see :meth:`unknown_type`)."""
        now = time.monotonic()
        key = (fields["type"], fields["queue"])
        seen = self._unknown_lines.get(key)
        if seen is not None and now - seen[0] < UNKNOWN_TYPE_LOG_INTERVAL:
            seen[1] += 1
            return
        extra = {"also_deferred": int(seen[1])} if seen is not None and seen[1] else {}
        if seen is None and len(self._unknown_lines) >= UNKNOWN_TYPE_LINES_MAX:
            self._unknown_lines.clear()
        self._unknown_lines[key] = [now, 0]
        self.log.warning("task_type_unknown", **fields, error=error, outcome="deferred", retry_in=retry_in, **extra)

    def _delay_for(self, inf: InFlight, taskdef: TaskDef[Any] | None, error: BaseException) -> float:
        """The delay :meth:`_chosen_delay` picks; the default policy's when that one raises or gives no number.

        A broken policy must not keep the task from its retry: its outcome would never be written, and the
        task would sit active until its lease ran out. The fault is logged (``retry_delay_failed``).
        """
        try:
            return self._chosen_delay(inf, taskdef, error)
        except Exception as exc:  # noqa: BLE001 - logged; the task is retried all the same
            delay = default_retry_delay(inf.msg.retried, error)
            self.log.error(
                "retry_delay_failed", task_id=inf.id, queue=inf.queue, error=error_text(exc), retry_in=round(delay, 3)
            )
            return delay

    def _chosen_delay(self, inf: InFlight, taskdef: TaskDef[Any] | None, error: BaseException) -> float:
        """``RetryAfter``, then the ``retry_delay_for`` hook, then the task type's policy, then the worker's."""
        if isinstance(error, RetryAfter):
            return error.delay
        retried = inf.msg.retried
        if self._delay_hook and self.hook is not None and inf.ctx is not None:
            chosen = self.hook.retry_delay_for(ctx=inf.ctx, error=error)
            if chosen is not None:
                return float(chosen)
        if taskdef is not None and taskdef.retry_delay is not None:
            return float(taskdef.retry_delay(retried, error))
        return float(self.retry_delay(retried, error))

    async def fail(
        self, inf: InFlight, error: BaseException, taskdef: TaskDef[Any] | None, *, permanent: bool = False
    ) -> None:
        """The handler failed: retry, archive (``permanent`` or exhausted) or, for ``RevokeTask``, done."""
        msg = inf.msg
        if isinstance(error, TaskCancelled) and not permanent and await self._cancelled_by_caller(inf):
            permanent = True
            error = TaskCancelled(CANCELLED_BY_CALLER)
        outcome = Archive() if permanent else decide(msg.retried, msg.retry, error, 0.0)
        if isinstance(outcome, Drop):
            self.log.info("task_revoked", task_id=inf.id, queue=inf.queue, error=error_text(error))
            step = step_of(msg.headers) if msg.headers else None
            if step is None:
                self._ack(inf)
                return
            text = error_text(error)
            await self._write(
                inf,
                lambda: self._step_ack(
                    inf,
                    lambda inflight: self.broker.step_revoked(step, inf.queue, inf.id, msg.unique_key, text, inflight),
                ),
            )
            return
        now = self.clock.now()
        msg.error_msg = error_text(error)
        msg.last_failed_at = int(now)
        if isinstance(outcome, Archive):
            data = encode_message(msg)
            if await self._write(inf, lambda: archive(self.broker, inf.queue, inf.id, msg, data)):
                await self._fire("task_archived", inf.ctx, error)
            return
        delay = self._delay_for(inf, taskdef, error)
        msg.retried += 1
        data = encode_message(msg)
        retry_at = math.ceil(now + _bounded(delay))
        if await self._write(inf, lambda: self.broker.retry(inf.queue, inf.id, data, retry_at, failure=True)):
            if self.on_retry is not None:
                self.on_retry(retry_at)
            await self._fire("task_retried", inf.ctx, error)
