"""The hot loop: take free slots, dequeue in weighted order, run handlers, write outcomes under leases.

One :class:`Processor` per worker process. Async handlers run on the event loop; plain functions run
in daemon threads (:mod:`framework.worker.threads`) so a blocking handler does not stall the others.

* **Fetching.** While slots are free, queues are tried in :func:`~framework.worker.queues.order_queues` order
  (per-queue ``max``/``reserved`` limits applied) and up to ``dequeue_batch`` tasks are taken from the
  first queue that has any; ``dequeue.lua`` leases them and records them in this worker's in-flight set
  in the same step. A queue found empty goes to the end of the order for 50 ms (or until a wake-up names
  it), so a busy worker spends no round trips on empty queues. An idle worker sleeps until the wake-up
  channel says a queue got work (our clients and the forwarder publish), checking the pending lists with
  one cheap ``LLEN`` round trip a second for tasks enqueued by Go clients, which do not publish. That check is
  made for all the idle workers serving the same queues by the first to claim it, which publishes a wake-up
  for each queue it finds tasks in (:meth:`~framework.broker.transitions.WorkerTransitions.check_pending`):
  a fleet of idle workers sends one ``LLEN`` per queue a second, not one per queue and worker.
* **Known empty.** A pass that found every queue empty leaves them *known empty*: the worker waits there (its
  dequeue registered it as a waiter), and any later task reaches it as a hand-off or a wake-up naming the
  queue, or shows in the ``LLEN`` check (Go clients). Fetches skip such queues until one of those names
  them, so the fetch after a task ends dequeues only the queues named since, not every queue served: with
  hundreds of queues, one task costs a few round trips, not one per queue.
* **Running.** One asyncio task per task runs the middleware chain under the task's deadline,
  ``min(now + timeout, deadline)``, enforced by one timer for all running tasks, armed for the earliest
  deadline (no timer per task). A deadline already past at dequeue fails the task without running it.
  ``concurrency`` caps running handlers: a task whose handler finished frees its slot while its outcome
  is still being written; it stays in :attr:`Processor.inflight` (leases extended) until then.
* **Handlers that do not stop.** A handler still running ``cancel_grace`` s after it was cancelled is
  given up on: its outcome is written without it and it leaves :attr:`Processor.inflight`, but it keeps
  its slot in :attr:`Processor.overrun` until it really ends, and a copy of the same task dequeued here
  meanwhile is put back for a few seconds without spending a retry (see :mod:`framework.worker.execution`).
* **Outcomes.** Written by :class:`~framework.worker.outcomes.OutcomeWriter` under the task's lease: done
  (batched), completed, retried, archived, or requeued at shutdown. Timeouts, deadlines and cancellation
  (``asynq:cancel``) count as failures; a payload that does not decode is archived at once. Nothing is
  acknowledged before its handler returned, so a worker killed at any point loses no task.

A sync handler cannot be stopped: on timeout or cancellation the failure is written at once, but its
thread runs on until the function returns (see :mod:`framework.worker.threads`), holding its slot meanwhile.

**Shutdown** (:meth:`Processor.stop`) ends within ``shutdown_timeout + cancel_grace`` plus the time the
last outcome writes take (bounded by the lease), whatever the handlers do: a handler that ignores the
shutdown cancellation is given up on and its task put back at the head of its queue; the worker's process
entry points then end the process (see :meth:`framework.worker.worker.Worker.exit_if_abandoned`).

Running the tasks taken (handlers, deadlines, slots) is :class:`~framework.worker.execution.TaskExecution`'s, a
part the processor holds; the tasks held and their slots are kept in a :class:`~framework.worker.ledger.Ledger`,
the only state the heartbeat and watchdog threads see (through copies; see :mod:`framework.worker.ledger`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from framework.broker.base import LEASE_SECONDS
from framework.protocol.message import decode_message
from framework.retry import default_retry_delay
from framework.transport.health import RedisHealth
from framework.worker.execution import TaskCancelled, TaskExecution, deadline_of
from framework.worker.lease import Lease
from framework.worker.ledger import Ledger
from framework.worker.limits import LimitGate
from framework.worker.outcomes import InFlight, OutcomeWriter
from framework.worker.queues import order_queues
from framework.worker.threads import HandlerThreads

if TYPE_CHECKING:
    from collections.abc import Awaitable

    import pluggy
    import structlog

    from framework.broker.broker import Broker
    from framework.broker.transitions import Taken
    from framework.clock import Clock
    from framework.registry import Registry
    from framework.services import Services
    from framework.settings import Settings
    from framework.task import Middleware, RetryDelay

__all__ = ("CHECK_CLAIM", "DUPLICATE_DELAY", "IDLE_CHECK", "Processor", "TaskCancelled")

IDLE_CHECK = 1.0
"""Seconds between an idle worker's pending-list checks (for tasks of Go clients, which publish no wake-up)."""
CHECK_CLAIM = 0.9 * IDLE_CHECK
"""Seconds one idle worker's pending check stands for every worker serving the same queues (it claims the check
for that long): a little under :data:`IDLE_CHECK`, so a worker alone has its own claim lapsed by its next check."""
_MAX_BACKOFF = 5.0
_EMPTY_RECHECK = 0.05
"""Seconds a queue found empty goes to the end of the fetch order (unless a wake-up comes first)."""
DUPLICATE_DELAY = 5
"""Seconds a task dequeued while its previous run still runs here (given up on) waits in the retry set."""


class Processor:
    """Dequeues and runs tasks.

    Args:
        broker: the broker (:class:`~framework.broker.broker.RedisBroker`, or a stand-in).
        registry: task types and their handlers.
        settings: concurrency, queues, limits, batch size.
        services: what handlers see as ``ctx.services``.
        middleware: the middleware chain, outermost first (built-ins included by the caller).
        hook: the plugin hook relay, for task events and ``retry_delay_for`` (optional).
        clock: where time comes from.
        logger: the worker's logger.
        retry_delay: the global retry policy (default :func:`~framework.retry.default_retry_delay`).
        rng: random source for queue order.
        server_id: this worker's id; names its in-flight sets ("" records none).
        lease_ttl: seconds an in-memory lease lasts from its last extension (at most 30 s, the Redis lease).
        health: where Redis faults are reported.

    Attributes:
        ledger: the tasks held and their slots (:class:`~framework.worker.ledger.Ledger`); ``inflight``,
            ``overrun`` are its maps, for the loop's thread.
        execution: runs the tasks taken (:class:`~framework.worker.execution.TaskExecution`).
        outcomes: writes their outcomes (:class:`~framework.worker.outcomes.OutcomeWriter`).
    """

    def __init__(
        self,
        broker: Broker,
        registry: Registry,
        settings: Settings,
        services: Services,
        middleware: list[Middleware],
        hook: pluggy.HookRelay | None,
        clock: Clock,
        logger: structlog.typing.FilteringBoundLogger,
        *,
        retry_delay: RetryDelay | None = None,
        rng: random.Random | None = None,
        server_id: str = "",
        lease_ttl: float = LEASE_SECONDS,
        health: RedisHealth | None = None,
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
        self.server_id = server_id
        self.lease_ttl = min(float(LEASE_SECONDS), lease_ttl)
        self.health = health or RedisHealth(logger)
        self.cancel_grace = settings.cancel_grace  # seconds a cancelled handler gets before it is given up on
        self.ledger = Ledger(self._signal_free, record=bool(server_id))
        self.inflight = self.ledger.inflight
        """Tasks taken and not yet finished: running, or with their outcome being written (the ledger's)."""
        self.overrun = self.ledger.overrun
        """Handlers given up on (or sync handlers whose thread outlived their coroutine) that still run, by
        (queue, id): each holds its slot until it ends, and no second copy of its task starts here meanwhile."""
        self.threads = HandlerThreads()
        self._inflight_keys = {q: broker.schema.queue(q).inflight(server_id) if server_id else "" for q in self.weights}
        self._slot_free = asyncio.Event()
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._fetch_done = asyncio.Event()
        self._fetch_started = False
        self._limited = self._woken_all = False
        self._empty_until: dict[str, float] = {}
        self._known_empty: set[str] = set()
        """Queues a pass found empty along with every other, and no wake-up named since: fetches skip them."""
        self._woken: set[str] = set()
        """Queues a wake-up named since the current pass began (a reply may arrive after the wake-up it raced)."""
        # the key of the claim on the pending check of this worker's queues (made at its first check), and the
        # event-loop time of the next check a busy worker makes for its known-empty queues
        self._check_claim, self._next_check = "", 0.0
        self._suspect: tuple[str, str] | None = None
        """(queue, id) of the crash suspect running alone here: nothing else is taken until it is released."""
        self._isolate: str | None = None
        """A queue whose next task is a crash suspect: once this worker holds nothing, it takes that alone."""
        self.handed_off = 0
        """Tasks started through a handoff (for stats and tests)."""
        self._dequeuing = 0
        """Slots a dequeue in flight may fill: a handoff arriving meanwhile counts them as taken."""
        self.handoff_ready = False
        """Set by the worker while its subscriber listens on this worker's handoff channel: an empty dequeue
        then registers the worker as a waiter, and the next enqueue hands its task straight here."""
        self.outcomes = OutcomeWriter(
            broker, clock, logger, self.health, hook, self.retry_delay, self._release, self._inflight_keys
        )
        self.lost = self.outcomes.lost
        """(queue, id, when) of tasks whose lease lapsed here; this worker's recoverer gives them back."""
        self.execution = TaskExecution(
            self.ledger,
            self.outcomes,
            registry,
            services,
            middleware,
            clock,
            logger,
            self.threads,
            write_result=broker.write_result,
            release=self._release,
            cancel_grace=self.cancel_grace,
            unknown_type_wait=settings.unknown_type_wait,
            max_result_size=settings.max_result_size,
        )
        self._execute = self.execution.execute
        self.limits = self.execution.limits = LimitGate(
            broker,
            logger,
            settings.limits,
            self._inflight_keys,
            self._release,
            self.ledger.free_slot,
            self.ledger.take_slot,
            on_due=self._due,
        )

    @property
    def running(self) -> int:
        """Handlers running now (what ``concurrency`` caps; a task whose outcome is being written has none)."""
        return self.ledger.running

    # -- signals from outside --------------------------------------------------------------------

    def wake(self, queue: str | None = None) -> None:
        """New work may be pending: in ``queue`` (wake-up channel), or anywhere (reconnection)."""
        if queue is None:
            self._empty_until.clear()
            self._known_empty.clear()
            self._woken_all = True
        else:
            self._empty_until.pop(queue, None)
            self._known_empty.discard(queue)
            self._woken.add(queue)
        self._wakeup.set()

    def cancel(self, task_id: str) -> bool:
        """Cancel the running task with this id (cancel channel); returns whether it runs here."""
        for inf in list(self.inflight.values()):
            if inf.id == task_id and inf.runner is not None and not inf.writing and not inf.runner.done():
                if not inf.cancel_reason:  # one already being cancelled keeps its reason
                    self.execution.deadlines.cancel(inf, "cancel")
                return True
        return False

    # -- fetching ----------------------------------------------------------------------------------

    def _allowed(self, queue: str, free: int) -> int:
        """How many more tasks of ``queue`` may start now, given per-queue caps and reservations."""
        limits = self.settings.queue_limits
        if not limits:
            return free
        running = self.ledger.running_per_queue
        held_for_others = sum(
            max(0, lim.reserved - running[q]) for q, lim in limits.items() if q != queue and q in self.weights
        )
        n = free - held_for_others
        own = limits.get(queue)
        if own is not None and own.max:
            n = min(n, own.max - running[queue])
        return n

    async def _fetch(self, free: int) -> int:
        if self._isolate is not None:
            return await self._fetch_suspect(self._isolate)
        batch = self.settings.dequeue_batch
        self._limited = False
        self._woken, self._woken_all = set(), False
        order = order_queues(self.weights, self.settings.strict_priority, self.rng)
        known_empty = self._known_empty
        if known_empty:  # nothing came there since this worker found them empty: no round trip for them
            order = [q for q in order if q not in known_empty]
        empty = self._empty_until
        if empty:
            now = asyncio.get_running_loop().time()
            if len(order) > 1:
                # queues found empty a moment ago go last: no round trip is spent on them while others have work
                order = [q for q in order if empty.get(q, 0.0) <= now] + [q for q in order if empty.get(q, 0.0) > now]
        found_empty: list[str] = []
        for queue in order:
            free = min(free, self.concurrency - self.running)  # tasks handed off during a dequeue took slots
            if free <= 0:
                return 1  # they started: the fetch loop waits for a slot
            n = self._allowed(queue, free)
            if n <= 0:
                self._limited = True
                continue
            waiter = self.server_id if self.handoff_ready else ""
            taken, sent = await self._dequeue(queue, min(n, batch), waiter, alone=not (self.inflight or self.overrun))
            if taken.blocked:  # a crash suspect is next: finish what this worker holds, then take it alone
                self._isolate = queue
                self.log.info("suspect_waiting", queue=queue, note="finishing running tasks to run it alone")
                return 0
            if taken:
                self._start(queue, taken, suspect=taken.suspect, since=sent)
                return len(taken)
            empty[queue] = asyncio.get_running_loop().time() + _EMPTY_RECHECK
            found_empty.append(queue)
        if not self._woken_all:  # nothing anywhere: each queue found empty is skipped until a wake-up names it
            woken = self._woken
            known_empty.update(q for q in found_empty if q not in woken)
        return 0

    async def _dequeue(self, queue: str, count: int, waiter: str = "", *, alone: bool) -> tuple[Taken, float]:
        """The broker's dequeue, and when it was sent (the tasks' leases in Redis start no earlier).

        While it is in flight, the slots it may fill count as taken (:meth:`handoff`).
        """
        self._dequeuing += count
        sent = self.clock.now()
        try:
            return await self.broker.dequeue(queue, count, self._inflight_keys[queue], waiter, alone=alone), sent
        finally:
            self._dequeuing -= count

    async def _fetch_suspect(self, queue: str) -> int:
        """Take the crash suspect at the head of ``queue`` alone (this worker holds nothing now).

        Not while a handler given up on still runs here (it could take the process down too): another
        worker takes the suspect, or this one asks again after its idle wait.
        """
        self._isolate = None
        if self.overrun:
            return 0
        taken, sent = await self._dequeue(queue, 1, alone=True)
        if taken:
            self._start(queue, taken, suspect=taken.suspect, since=sent)
        return len(taken)

    def _must_wait(self) -> bool:
        """A crash suspect runs alone here, or waits for this worker to finish what it holds."""
        return self._suspect is not None or (self._isolate is not None and bool(self.inflight))

    def handoff(self, queue: str, task_id: str, data: bytes) -> None:
        """A task an enqueue handed straight to this worker (leased to it and on its in-flight record).

        Started at once when a slot is free; otherwise (the worker got busy since it registered, or is
        stopping) it goes back to the head of its queue for any worker to take. Either way the fetch loop
        wakes up, to register again or to take what else is pending. The slots a dequeue in flight may fill
        count as taken: that dequeue's tasks start when it returns, whatever arrived meanwhile.
        """
        free = self.concurrency - self.running - self._dequeuing
        if (
            not self._stopping
            and not self._must_wait()
            and queue in self.weights
            and free > 0
            and self._allowed(queue, free) > 0
        ):
            self.handed_off += 1
            self._start(queue, [(task_id, data)])
        else:
            self.outcomes.spawn(self._give_back(queue, task_id))
        self.wake(queue)

    async def _give_back(self, queue: str, task_id: str) -> None:
        self.ledger.forget((queue, task_id))
        await self._try(self.broker.requeue(queue, task_id, wake=True), task_id)

    def _put_back_duplicate(self, queue: str, task_id: str, data: bytes) -> None:
        """A task was dequeued while its previous run still runs here: put it back for later, unchanged.

        It goes to the retry set for :data:`DUPLICATE_DELAY` seconds without spending a retry or counting
        as a failure (the message is stored as it was taken), for this worker, once the previous run has
        ended, or any other to take.
        """
        retry_at = math.ceil(self.clock.now()) + DUPLICATE_DELAY
        self.log.warning(
            "task_deferred",
            task_id=task_id,
            queue=queue,
            retry_in=DUPLICATE_DELAY,
            reason="its previous run, given up on, still runs in this process",
        )
        self.ledger.forget((queue, task_id))
        self.outcomes.spawn(self._retry_later(queue, task_id, data, retry_at))

    async def _retry_later(self, queue: str, task_id: str, data: bytes, retry_at: int) -> None:
        written = await self._try(self.broker.retry(queue, task_id, data, retry_at, failure=False), task_id)
        if written and self.outcomes.on_retry is not None:
            self.outcomes.on_retry(retry_at)

    async def _try(self, write: Awaitable[object], task_id: str) -> bool:
        """Run a background write for ``task_id``; a Redis fault is reported, and the write given up.

        Given up safely: the task's lease lapses and the recoverer brings it back (a suspect mark left
        behind only makes the task run alone once more).
        """
        try:
            await write
        except (RedisError, OSError) as exc:
            self.health.failed("processor", exc, task_id=task_id)
            return False
        return True

    def _start(
        self, queue: str, taken: list[tuple[str, bytes]], *, suspect: bool = False, since: float | None = None
    ) -> None:
        """Hold and run the tasks just taken; their leases count from ``since``, when the dequeue was sent.

        The lease in Redis was set when the dequeue ran, and the recoverer relies on the worker's own lease
        never outliving it: a worker paused between the dequeue and here (SIGSTOP, a VM or a long GC pause)
        may have been judged dead and its tasks run elsewhere meanwhile. A task whose lease ran out so
        is not run and nothing is written for it: the recoverer owns it.
        """
        now = self.clock.now()
        lease_until = (now if since is None else since) + self.lease_ttl
        if lease_until <= now:
            for task_id, _ in taken:
                self.log.warning(
                    "task_lease_lapsed", task_id=task_id, queue=queue, note="not run: the recoverer owns it"
                )
                self.ledger.forget((queue, task_id))
            return
        clock, inflight, overrun = self.clock, self.inflight, self.overrun
        held: list[InFlight] = []
        if suspect and (self.inflight or self.overrun):
            # a task handed off while the dequeue was in flight runs here: the suspect goes back to the head of
            # its queue, and is taken alone once this worker has finished what it holds
            for task_id, _ in taken:
                self.outcomes.spawn(self._give_back(queue, task_id))
            self._isolate = queue
            return
        for task_id, data in taken:
            if (queue, task_id) in overrun or (queue, task_id) in inflight:
                self._put_back_duplicate(queue, task_id, data)  # its previous run still runs here
                continue
            try:
                msg = decode_message(data)
            except ValueError as exc:
                self.outcomes.spawn(self._archive_undecodable(queue, task_id, data, exc))
                self.ledger.forget((queue, task_id))
                if suspect:
                    self.outcomes.spawn(self._clear_suspect(queue, task_id))
                continue
            held.append(InFlight(task_id, msg, queue, Lease(clock, lease_until), deadline_of(msg, now), now))
        if not held:
            return
        self.ledger.hold(queue, held)
        execute, create_task = self._execute, asyncio.create_task
        for inf in held:
            if suspect:
                self._suspect = inf.key
                self.log.warning("suspect_running_alone", task_id=inf.id, queue=queue, type=inf.msg.type)
            inf.runner = create_task(execute(inf))

    @property
    def fetch_unsettled(self) -> bool:
        """Whether a dequeue is still waiting for Redis's answer (after :meth:`stop`: Redis stalled meanwhile).

        Such a dequeue may still take tasks for this worker when Redis answers it.
        """
        return self._fetch_started and not self._fetch_done.is_set()

    async def run(self) -> None:
        """Fetch and start tasks until :meth:`stop` is called."""
        self._fetch_started = True
        try:
            await self._fetch_loop()
        finally:
            self._fetch_done.set()

    async def _fetch_loop(self) -> None:
        backoff = 0.1
        while not self._stopping:
            free = self.concurrency - self.running
            if free <= 0 or self._must_wait():
                self._slot_free.clear()
                await self._slot_free.wait()
                continue
            self._wakeup.clear()
            try:
                got = await self._fetch(free)
            except (RedisError, OSError) as exc:
                self.health.failed("processor", exc, retry_in=backoff)
                await self._wait_wakeup(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)
                continue
            self.health.ok("processor")
            backoff = 0.1
            if got == 0 and self._isolate is None:
                await self._idle()
                continue
            if self._known_empty and asyncio.get_running_loop().time() >= self._next_check:
                # busy with some queues: the others found empty get the same once-a-second check an idle worker
                # makes, or tasks a Go client put there (no wake-up) would wait until this worker ran out of work
                with contextlib.suppress(RedisError, OSError):  # the next fetch reports it
                    await self._check_pending()
            await asyncio.sleep(0)  # the tasks just taken start before the next dequeue is sent

    async def _wait_wakeup(self, seconds: float) -> bool:
        """Wait for a wake-up for at most ``seconds``; returns whether one came."""
        if self._wakeup.is_set():
            return True
        try:
            async with asyncio.timeout(seconds):
                await self._wakeup.wait()
        except TimeoutError:
            return False
        return True

    async def _idle(self) -> None:
        """Sleep until a wake-up, or until the once-a-second ``LLEN`` check finds pending work.

        The check is claimed: when another idle worker serving the same queues made it a moment ago, this one
        sends nothing more (that worker publishes a wake-up for each queue where it finds tasks).
        """
        while not self._stopping and not await self._wait_wakeup(IDLE_CHECK):
            if self._limited:
                return  # tasks may be waiting for a limited queue's slot: look again
            try:
                if await self._check_pending():
                    return
            except (RedisError, OSError):
                return  # the fetch reports it and backs off

    async def _check_pending(self) -> bool:
        """The claimed ``LLEN`` check (see :meth:`_idle`); whether it found tasks here (those queues are open again).

        False too when another worker holds the claim: it looks this time, and wakes this one should it find
        anything.
        """
        broker = self.broker
        self._next_check = asyncio.get_running_loop().time() + IDLE_CHECK
        if not self._check_claim:
            self._check_claim = broker.pending_check_key(self.weights)
        counts = await broker.check_pending(list(self.weights), self._check_claim, CHECK_CLAIM, self.server_id)
        if not counts or not any(counts):
            return False
        for queue, count in zip(self.weights, counts, strict=True):  # only those queues are looked at again
            if count:
                self._empty_until.pop(queue, None)
                self._known_empty.discard(queue)
        return True

    def _due(self, when: float) -> None:
        """A task put off by a limit may start at ``when``: the forwarder passes by then."""
        if self.outcomes.on_retry is not None:
            self.outcomes.on_retry(when)

    def _release(self, inf: InFlight) -> None:
        """Let ``inf`` go (see :meth:`Ledger.release <framework.worker.ledger.Ledger.release>`)."""
        self.ledger.release(inf)
        if inf.limits:  # its outcome is written: the concurrency slots it held go back
            self.outcomes.spawn(self.limits.give_back(inf))
        if self._suspect == inf.key:  # it ran alone and this worker lived: not the one that kills workers
            self._suspect = None
            self.outcomes.spawn(self._clear_suspect(inf.queue, inf.id))

    def _signal_free(self) -> None:
        """Wake the fetch loop: a slot (or a queue's limited share) may be free now."""
        self._slot_free.set()
        if self._limited:
            self._wakeup.set()

    async def _clear_suspect(self, queue: str, task_id: str) -> None:
        await self._try(self.broker.clear_suspect(queue, task_id), task_id)

    async def _archive_undecodable(self, queue: str, task_id: str, data: bytes, exc: ValueError) -> None:
        """A stored message that is not a TaskMessage cannot run: archive it as it is."""
        self.log.error("task_message_invalid", task_id=task_id, queue=queue, error=str(exc))
        await self._try(self.broker.archive(queue, task_id, data), task_id)

    # -- shutdown ----------------------------------------------------------------------------------

    async def stop(self, timeout: float) -> None:
        """Stop fetching, let running tasks finish for ``timeout`` seconds, then requeue the rest.

        Tasks still running then are cancelled and put back at the head of their queue without spending
        a retry (one already cancelled, at its deadline or through ``asynq:cancel``, keeps that outcome). A
        handler still running ``cancel_grace`` seconds later ignores its cancellation: it is given up on,
        its task is put back all the same, and it is left running, holding nothing but its slot
        (:attr:`overrun`; :meth:`~framework.worker.worker.Worker.exit_if_abandoned` ends the process over it).
        Outcome writes in progress get until their lease lapses. So this returns within ``timeout +
        cancel_grace`` plus the time the last writes take, whatever the handlers do.

        A dequeue in flight is waited for (it starts its tasks first), but only within ``timeout``: one that
        Redis holds (a ``CLIENT PAUSE``, a slow command) may land after this returns, and its tasks then
        belong to a worker that is gone (:attr:`fetch_unsettled`; the worker keeps its liveness records so
        that the recoverers of the others bring them back).
        """
        self._stopping = True
        self._wakeup.set()
        self._slot_free.set()
        loop = asyncio.get_running_loop()
        until = loop.time() + timeout
        if self._fetch_started and not self._fetch_done.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._fetch_done.wait()  # a dequeue in flight starts its tasks first
        runners = {i.runner for i in self.inflight.values() if i.runner is not None and not i.abandoned}
        if runners:
            _done, pending = await asyncio.wait(runners, timeout=max(0.0, until - loop.time()))
            cancelled: set[asyncio.Task[None]] = set()
            for inf in list(self.inflight.values()):
                if inf.runner in pending and not inf.writing:
                    if not inf.cancel_reason:
                        self.execution.deadlines.cancel_handler(inf, "shutdown")
                    cancelled.add(inf.runner)
            if cancelled:
                await asyncio.wait(cancelled, timeout=self.cancel_grace)
                for inf in list(self.inflight.values()):
                    if inf.runner in cancelled and not inf.writing and not inf.runner.done():
                        self.execution.abandon(inf)
        self.outcomes.flush()
        # until nothing is left: a write that ends spawns more (a slot's release, a suspect cleared)
        until = loop.time() + self.lease_ttl + 1
        while (
            left := {
                i.runner
                for i in self.inflight.values()
                if i.runner is not None and not i.runner.done() and not i.abandoned
            }
            | self.outcomes.background
        ):
            if loop.time() >= until:
                break
            await asyncio.wait(left, timeout=until - loop.time())
        self.execution.deadlines.stop()
        self.threads.shutdown(wait=False, cancel_futures=True)
        self.broker.close()  # the hot-path connection (reopened should anything still use it)
