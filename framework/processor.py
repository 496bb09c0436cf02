"""The hot loop: take free slots, dequeue in weighted order, run handlers, write outcomes under leases.

One :class:`Processor` per worker process. Async handlers run on the event loop; plain functions run
in a thread pool so a blocking handler does not stall the others. Successful tasks are acknowledged
in batches (one script call for every task that finished in the same loop iteration). No write is
made for a task whose lease has run out: the recoverer owns it then.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from framework.broker import LEASE_SECONDS
from framework.context import TaskContext
from framework.errors import PayloadTypeError, RetryAfter, UnknownTaskType
from framework.events import fire_event, has_impls
from framework.lease import Lease
from framework.message import decode_message, encode_message
from framework.middleware import Middleware, Run, build_chain
from framework.queues import order_queues
from framework.retry import Archive, Drop, decide, default_retry_delay

if TYPE_CHECKING:
    import pluggy
    import structlog

    from framework.broker import RedisBroker
    from framework.clock import Clock
    from framework.message import TaskMessage
    from framework.registry import Registry
    from framework.services import Services
    from framework.settings import Settings
    from framework.task import RetryDelay, TaskDef

__all__ = ("InFlight", "Processor")

_IDLE_POLL = 1.0
"""Seconds an idle worker waits between checks when no wake-up arrives (tasks enqueued by Go clients)."""


class _Cancelled(Exception):
    """The task was cancelled through the cancel channel."""


class InFlight:
    """A task this process is running."""

    __slots__ = ("cancel_reason", "lease", "msg", "queue", "runner", "started")

    def __init__(self, msg: TaskMessage, queue: str, lease: Lease) -> None:
        self.msg = msg
        self.queue = queue
        self.lease = lease
        self.started = time.time()
        self.runner: asyncio.Task[None] | None = None
        self.cancel_reason = ""

    @property
    def key(self) -> tuple[str, str]:
        """(queue, id): task ids are unique per queue only."""
        return (self.queue, self.msg.id)


class Processor:
    """Dequeues and runs tasks.

    Args:
        broker: the Redis broker.
        registry: task types and their handlers.
        settings: concurrency, queues, limits, shutdown timeout.
        services: what handlers see as ``ctx.services``.
        middleware: the middleware chain, outermost first (built-ins included by the caller).
        hook: the plugin hook relay, for task events and ``retry_delay_for`` (optional).
        clock: where time comes from.
        logger: the worker's logger.
        retry_delay: the global retry policy.
        rng: random source for queue order.
    """

    def __init__(
        self,
        broker: RedisBroker,
        registry: Registry,
        settings: Settings,
        services: Services,
        middleware: list[Middleware],
        hook: pluggy.HookRelay | None,
        clock: Clock,
        logger: structlog.typing.FilteringBoundLogger,
        retry_delay: RetryDelay | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.broker = broker
        self.registry = registry
        self.settings = settings
        self.services = services
        self.hook = hook
        self.clock = clock
        self.log = logger
        self.retry_delay = retry_delay or default_retry_delay
        self.rng = rng or random.Random()
        self.concurrency = settings.concurrency
        self.weights = dict(settings.queues)
        self.inflight: dict[tuple[str, str], InFlight] = {}
        self.running_per_queue: Counter[str] = Counter()
        self.executor = ThreadPoolExecutor(max_workers=settings.concurrency, thread_name_prefix="framework-task")
        self.on_dequeued: Any = None
        self._middleware = middleware
        self._chains: dict[str, Run] = {}
        self._slot_free = asyncio.Event()
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._acks: dict[str, list[InFlight]] = {}
        self._flush_pending = False
        self._events = {name: has_impls(hook, name) for name in ("task_succeeded", "task_retried", "task_archived")}
        self._delay_hook = has_impls(hook, "retry_delay_for")

    # -- signals from outside --------------------------------------------------------------------

    def wake(self) -> None:
        """New work may be pending (wake-up channel)."""
        self._wakeup.set()

    def cancel(self, task_id: str) -> bool:
        """Cancel the running task with this id (cancel channel); returns whether it runs here."""
        for inf in self.inflight.values():
            if inf.msg.id == task_id and inf.runner is not None and not inf.runner.done():
                inf.cancel_reason = "cancel"
                inf.runner.cancel()
                return True
        return False

    # -- fetching ----------------------------------------------------------------------------------

    def _allowed(self, queue: str, free: int) -> int:
        """How many more tasks of ``queue`` may start now, given per-queue caps and reservations."""
        limits = self.settings.queue_limits
        if not limits:
            return free
        running = self.running_per_queue
        held_for_others = sum(
            max(0, lim.reserved - running[q]) for q, lim in limits.items() if q != queue and q in self.weights
        )
        n = free - held_for_others
        own = limits.get(queue)
        if own is not None and own.max:
            n = min(n, own.max - running[queue])
        return n

    async def _fetch(self, free: int) -> int:
        batch = self.settings.dequeue_batch
        for queue in order_queues(self.weights, self.settings.strict_priority, self.rng):
            n = self._allowed(queue, free)
            if n <= 0:
                continue
            msgs = await self.broker.dequeue(queue, min(n, batch))
            if msgs:
                self._start(queue, msgs)
                return len(msgs)
        return 0

    def _start(self, queue: str, msgs: list[bytes]) -> None:
        lease_until = self.clock.now() + LEASE_SECONDS
        started = []
        for data in msgs:
            msg = decode_message(data)
            inf = InFlight(msg, queue, Lease(self.clock, lease_until))
            self.inflight[inf.key] = inf
            self.running_per_queue[queue] += 1
            inf.runner = asyncio.create_task(self._execute(inf))
            started.append(inf)
        if self.on_dequeued is not None:
            self.on_dequeued(started)

    async def run(self) -> None:
        """Fetch and start tasks until :meth:`stop` is called."""
        backoff = 0.1
        while not self._stopping:
            free = self.concurrency - len(self.inflight)
            if free <= 0:
                self._slot_free.clear()
                await self._slot_free.wait()
                continue
            self._wakeup.clear()
            try:
                got = await self._fetch(free)
                backoff = 0.1
            except (RedisError, OSError) as exc:
                self.log.warning("dequeue_failed", error=f"{type(exc).__name__}: {exc}", retry_in=backoff)
                await self._sleep_unless_stopping(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if got == 0 and not self._stopping:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), _IDLE_POLL)

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), seconds)

    # -- running -----------------------------------------------------------------------------------

    def _chain(self, taskdef: TaskDef[Any]) -> Run:
        chain = self._chains.get(taskdef.type)
        if chain is None:
            chain = self._chains[taskdef.type] = build_chain(self._invoker(taskdef), self._middleware)
        return chain

    def _invoker(self, taskdef: TaskDef[Any]) -> Run:
        handler = taskdef.handler
        if taskdef.is_async:

            async def call_async(ctx: TaskContext, payload: Any) -> None:
                await handler(ctx, payload)  # type: ignore[misc]

            return call_async
        executor = self.executor

        async def call_in_thread(ctx: TaskContext, payload: Any) -> None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(executor, functools.partial(handler, ctx, payload))

        return call_in_thread

    def _context(self, inf: InFlight, deadline: float) -> TaskContext:
        msg = inf.msg
        broker, queue, task_id = self.broker, inf.queue, msg.id

        async def write_result(data: bytes) -> None:
            await broker.write_result(queue, task_id, data)

        return TaskContext(
            id=msg.id,
            type=msg.type,
            queue=inf.queue,
            retried=msg.retried,
            max_retry=msg.retry,
            deadline=deadline,
            headers=msg.headers,
            logger=self.log.bind(task_id=msg.id, type=msg.type, queue=inf.queue, retried=msg.retried),
            services=self.services,
            _write_result=write_result,
        )

    def _deadline(self, msg: TaskMessage) -> float:
        now = self.clock.now()
        candidates = []
        if msg.timeout > 0:
            candidates.append(now + msg.timeout)
        if msg.deadline > 0:
            candidates.append(float(msg.deadline))
        return min(candidates) if candidates else now + 1800

    async def _execute(self, inf: InFlight) -> None:
        msg = inf.msg
        deadline = self._deadline(msg)
        ctx = self._context(inf, deadline)
        try:
            taskdef = self.registry.get(msg.type)
            if taskdef is None:
                raise UnknownTaskType(f"no handler is registered for task type {msg.type!r} in this worker")
            payload = taskdef.decode(msg.payload)
            loop_deadline = asyncio.get_running_loop().time() + max(0.0, deadline - self.clock.now())
            try:
                async with asyncio.timeout_at(loop_deadline):
                    await self._chain(taskdef)(ctx, payload)
            except TimeoutError:
                what = "deadline" if msg.deadline and deadline >= msg.deadline else f"timeout of {msg.timeout}s"
                raise TimeoutError(f"task exceeded its {what}") from None
        except asyncio.CancelledError:
            if inf.cancel_reason == "shutdown":
                await self._requeue(inf)
                return
            if inf.cancel_reason == "cancel":
                await self._fail(inf, ctx, _Cancelled("task was cancelled"), None)
                return
            raise
        except PayloadTypeError as exc:
            await self._fail(inf, ctx, exc, None, permanent=True)
        except Exception as exc:  # noqa: BLE001 - a handler exception becomes an outcome, never escapes
            taskdef_or_none = self.registry.get(msg.type)
            await self._fail(inf, ctx, exc, taskdef_or_none)
        else:
            await self._succeed(inf, ctx)

    # -- outcomes ----------------------------------------------------------------------------------

    def _release(self, inf: InFlight) -> None:
        if self.inflight.pop(inf.key, None) is not None:
            self.running_per_queue[inf.queue] -= 1
            self._slot_free.set()

    def _lease_lost(self, inf: InFlight) -> bool:
        if inf.lease.is_valid():
            return False
        self.log.warning("lease_expired", task_id=inf.msg.id, queue=inf.queue, note="outcome not written")
        self._release(inf)
        return True

    async def _succeed(self, inf: InFlight, ctx: TaskContext) -> None:
        msg = inf.msg
        if msg.retention > 0:
            if not self._lease_lost(inf):
                now = int(self.clock.now())
                msg.completed_at = now
                data = encode_message(msg)
                await self._write_retrying(
                    inf,
                    lambda: self.broker.mark_complete(inf.queue, msg.id, data, now + msg.retention, msg.unique_key),
                )
        else:
            self._acks.setdefault(inf.queue, []).append(inf)
            if not self._flush_pending:
                self._flush_pending = True
                asyncio.get_running_loop().call_soon(self._start_flush)
        if self._events["task_succeeded"] and self.hook is not None:
            await fire_event(self.hook, "task_succeeded", self.log, ctx=ctx)

    def _start_flush(self) -> None:
        asyncio.create_task(self._flush())  # noqa: RUF006 - tracked through self.inflight until released

    async def _flush(self) -> None:
        self._flush_pending = False
        batches, self._acks = self._acks, {}
        for queue, infs in batches.items():
            live = [i for i in infs if not self._lease_lost(i)]
            if live:
                await self._write_many(queue, live)

    async def _write_many(self, queue: str, infs: list[InFlight]) -> None:
        backoff = 0.1
        while True:
            infs = [i for i in infs if not self._lease_lost(i)]
            if not infs:
                return
            try:
                await self.broker.done(queue, [(i.msg.id, i.msg.unique_key) for i in infs])
            except (RedisError, OSError) as exc:
                self.log.warning("ack_failed", queue=queue, tasks=len(infs), error=str(exc), retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            for i in infs:
                self._release(i)
            return

    async def _requeue(self, inf: InFlight) -> None:
        if not self._lease_lost(inf):
            try:
                await self.broker.requeue(inf.queue, inf.msg.id)
            except (RedisError, OSError) as exc:
                self.log.error("requeue_failed", task_id=inf.msg.id, error=str(exc), note="recovered by lease")
            self.log.info("task_requeued", task_id=inf.msg.id, queue=inf.queue)
        self._release(inf)

    def _delay_for(self, ctx: TaskContext, taskdef: TaskDef[Any] | None, error: BaseException) -> float:
        if isinstance(error, RetryAfter):
            return error.delay
        if self._delay_hook and self.hook is not None:
            chosen = self.hook.retry_delay_for(ctx=ctx, error=error)
            if chosen is not None:
                return float(chosen)
        if taskdef is not None and taskdef.retry_delay is not None:
            return float(taskdef.retry_delay(ctx.retried, error))
        return float(self.retry_delay(ctx.retried, error))

    async def _fail(
        self,
        inf: InFlight,
        ctx: TaskContext,
        error: BaseException,
        taskdef: TaskDef[Any] | None,
        *,
        permanent: bool = False,
    ) -> None:
        msg = inf.msg
        text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        outcome = decide(msg.retried, msg.retry, error, 0.0)
        if permanent:
            outcome = Archive()
        if isinstance(outcome, Drop):
            self._acks.setdefault(inf.queue, []).append(inf)
            if not self._flush_pending:
                self._flush_pending = True
                asyncio.get_running_loop().call_soon(self._start_flush)
            return
        if self._lease_lost(inf):
            return
        now = int(self.clock.now())
        msg.error_msg = text
        msg.last_failed_at = now
        if isinstance(outcome, Archive):
            data = encode_message(msg)
            await self._write_retrying(inf, lambda: self.broker.archive(inf.queue, msg.id, data))
            if self._events["task_archived"] and self.hook is not None:
                await fire_event(self.hook, "task_archived", self.log, ctx=ctx, error=error)
            return
        delay = self._delay_for(ctx, taskdef, error)
        msg.retried += 1
        data = encode_message(msg)
        retry_at = int(now + max(0.0, delay) + 0.999)
        await self._write_retrying(inf, lambda: self.broker.retry(inf.queue, msg.id, data, retry_at, failure=True))
        if self._events["task_retried"] and self.hook is not None:
            await fire_event(self.hook, "task_retried", self.log, ctx=ctx, error=error)

    async def _write_retrying(self, inf: InFlight, make_call: Any) -> None:
        """Run ``make_call()`` (a broker write), retrying through Redis faults while the lease holds."""
        backoff = 0.1
        while True:
            try:
                await make_call()
                break
            except (RedisError, OSError) as exc:
                self.log.warning("write_failed", task_id=inf.msg.id, error=str(exc), retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                if self._lease_lost(inf):
                    return
        self._release(inf)

    # -- shutdown ----------------------------------------------------------------------------------

    async def stop(self, timeout: float) -> None:
        """Stop fetching, let running tasks finish for ``timeout`` seconds, then requeue the rest."""
        self._stopping = True
        self._wakeup.set()
        self._slot_free.set()
        runners = [i.runner for i in self.inflight.values() if i.runner is not None]
        if runners:
            _done, pending = await asyncio.wait(runners, timeout=timeout)
            for inf in list(self.inflight.values()):
                if inf.runner in pending:
                    inf.cancel_reason = "shutdown"
                    inf.runner.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
        if self._acks:
            await self._flush()
        self.executor.shutdown(wait=False, cancel_futures=True)
