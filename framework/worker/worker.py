"""Worker assembly and lifecycle.

:class:`Worker` builds the registry, the middleware chain and the components, starts them, and shuts
down gracefully. Components, in start order:

1. the heartbeat (a thread: leases, liveness, asynq's server records), which beats once before anything
   else so the worker is on record before it takes a task;
2. the forwarder, the recoverer, the janitor, the workflow checker and, when aggregators are registered, the
   group aggregator;
3. a listener on the wake-up channel (new work) and on ``asynq:cancel`` (cancel a running task);
4. the processor's fetch loop;
5. the event-loop watchdog (a thread, unless ``loop_block_threshold`` is 0; see :mod:`framework.worker.watchdog`).

Shutdown (:meth:`Worker.stop`, or SIGTERM/SIGINT under :meth:`Worker.run`): stop fetching, wait up to
``shutdown_timeout`` for running tasks, then cancel the unfinished ones and put them back at the head of
their queue without spending a retry, stop the components (the heartbeat last, so leases stay fresh
meanwhile) and remove the worker's records. A handler that ignores its cancellation is given up on after
``cancel_grace`` seconds: its task is put back all the same and the handler is left running. So
:meth:`Worker.stop` returns within ``shutdown_timeout + cancel_grace`` plus a few seconds at most (the
last outcome writes, the components' exit), whatever the handlers do. Such a handler would keep
``asyncio.run`` from ever returning (it cancels what is left and waits for it), so the process entry
points (:meth:`Worker.run`, ``framework worker``, the supervisor's children) then end the process with
:meth:`Worker.exit_if_abandoned`. In-process (``async with Worker(...)``, ``framework run``'s worker),
:meth:`Worker.stop` returns all the same and the handler stays a task on the caller's loop (listed by
:attr:`Worker.abandoned`); whatever runs that loop decides whether to wait for it. Under
:meth:`Worker.run` a second signal exits at once; the tasks still running are then recovered by another
worker (see :mod:`framework.worker.background.recoverer`).

Redis faults: every component logs through one :class:`~framework.transport.health.RedisHealth` (one
``redis_unavailable`` warning, one ``redis_reconnected``), backs off and carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import random
import signal
import socket
import uuid
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisClusterException, RedisError

from framework.broker.base import LEASE_SECONDS
from framework.broker.broker import RedisBroker
from framework.broker.liveness import Liveness
from framework.client.client import Client
from framework.clock import Clock, SystemClock
from framework.errors import ConfigError
from framework.logging import configure_default_logging, configure_logging, flush_streams, get_logger
from framework.plugins.calls import contributions_by_plugin
from framework.plugins.lifecycle import fire_shutdown, fire_startup
from framework.protocol.keys import Schema, cluster_slot_problem
from framework.registry import Registry
from framework.services import Services
from framework.task import Middleware
from framework.transport.cluster import is_cluster
from framework.transport.connection import check_connection, open_listener, open_redis, resolve_redis_url
from framework.transport.health import EVICTION_FIX, RedisHealth, eviction_risk
from framework.transport.lean.subscriber import Subscriber
from framework.worker.background.aggregator import Aggregator, GroupAggregator, collect_aggregators
from framework.worker.background.forwarder import Forwarder
from framework.worker.background.janitor import Janitor
from framework.worker.background.periodic import Periodic
from framework.worker.background.recoverer import Recoverer, default_dead_after
from framework.worker.background.workflows import WorkflowChecker
from framework.worker.heartbeat import Heartbeat, ServerIdentity, sync_redis
from framework.worker.middleware import logging_middleware
from framework.worker.processor import Processor
from framework.worker.watchdog import LoopWatchdog

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    import pluggy
    from redis.asyncio import Redis

    from framework.settings import Settings
    from framework.task import RetryDelay, TaskDef

__all__ = ("Worker",)

EXIT_SECOND_SIGNAL = 130
"""Exit status after a second SIGTERM/SIGINT (no graceful shutdown)."""
EXIT_LOOP_STUCK = 70
"""Exit status when a handler held the event loop past its deadline and ``cancel_grace`` (EX_SOFTWARE)."""


class Worker:
    """A worker process: runs tasks of the configured queues until stopped.

    Args:
        settings: the app's settings.
        tasks: task definitions to serve (in addition to the plugins').
        middleware: app middleware, innermost after the plugins' (see :mod:`framework.worker.middleware`).
        aggregators: group aggregators (in addition to the plugins', see :mod:`framework.worker.background.aggregator`).
        plugin_manager: the plugin manager (task types, middleware, aggregators and events from plugins).
        redis: an existing Redis client to use (default: opened from the settings).
        clock: where time comes from.
        retry_delay: the global retry policy (default exponential backoff with jitter;
            :func:`framework.retry.asynq_retry_delay` is Go's).
        services: share the services of a web app in the same process.
        dead_after: seconds of heartbeat silence after which a worker counts as dead (default
            ``max(6, 4 * heartbeat_interval)``; lower it only when no Go worker serves these queues).
        max_recoveries: crash recoveries after which a task is archived as a poison pill.
        rng: random source for weighted queue order.
        wrap_broker: called with each broker the worker builds (its components' and its client's), returns the
            one to use instead; tests wrap it to inject faults (:class:`framework.testing.FaultyBroker`).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        tasks: Iterable[TaskDef[Any]] = (),
        middleware: Iterable[Middleware] = (),
        aggregators: Iterable[Aggregator] = (),
        plugin_manager: pluggy.PluginManager | None = None,
        redis: Redis | None = None,
        clock: Clock | None = None,
        retry_delay: RetryDelay | None = None,
        services: Services | None = None,
        dead_after: float | None = None,
        max_recoveries: int = 3,
        rng: random.Random | None = None,
        wrap_broker: Callable[[RedisBroker], RedisBroker] | None = None,
    ) -> None:
        configure_default_logging(settings.log_level, settings.log_format)  # a plain script's worker
        self.settings = settings
        self.pm = plugin_manager
        self.clock = clock or SystemClock()
        self.log = get_logger("framework.worker.worker")
        self.identity = ServerIdentity(socket.gethostname(), os.getpid(), str(uuid.uuid4()))
        self.registry = services.registry if services is not None else Registry()
        for task in tasks:
            self.registry.add(task)
        if plugin_manager is not None and services is None:
            from framework.plugins.manager import collect_task_types  # noqa: PLC0415

            collect_task_types(plugin_manager, settings, self.registry)
        self.aggregators = list(aggregators)
        if plugin_manager is not None:
            self.aggregators += collect_aggregators(plugin_manager, settings)
        self.dead_after = dead_after if dead_after is not None else default_dead_after(settings.heartbeat_interval)
        if self.dead_after <= 2 * settings.heartbeat_interval or self.dead_after < 2:
            raise ValueError(f"dead_after={self.dead_after} must be at least 2 s and more than 2 heartbeat intervals")
        self.max_recoveries = max_recoveries
        self.health = RedisHealth(self.log)
        self.processor: Processor | None = None
        self.heartbeat: Heartbeat | None = None
        self.watchdog: LoopWatchdog | None = None
        self._app_middleware = list(middleware)
        self._redis = redis
        self._owns_redis = redis is None and services is None
        self._services = services
        self._retry_delay = retry_delay
        self._rng = rng
        self.wrap_broker = wrap_broker
        self._url = services.extra.get("redis_url", "") if services is not None else ""
        self._components: list[Periodic] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self.owns_process = False
        """The worker runs its own process (:meth:`run`, ``framework worker``): a handler that holds the event loop
        past its deadline and ``cancel_grace`` then ends the process (:meth:`_loop_stuck`). Set before :meth:`start`."""
        self._plugins_started = False
        self._stopped = asyncio.Event()
        self._started = False
        self._stopping = False
        self._stalled = False  # a shutdown write got no answer from Redis within shutdown_timeout

    def _middleware(self) -> list[Middleware]:
        """The chain's middleware, outermost first: the built-in, the plugins' in load order, the app's.

        Raises:
            PluginError: a plugin's ``register_middleware`` raised or returned something that is not a list;
                names the plugin.
        """
        chain: list[Middleware] = [logging_middleware]
        if self.pm is not None:
            for _, contributed in contributions_by_plugin(self.pm, "register_middleware", settings=self.settings):
                chain.extend(contributed)
        chain.extend(self._app_middleware)
        return chain

    async def _connect(self) -> Services:
        if self._services is not None:
            return self._services
        if self._redis is None:
            self._url = await asyncio.to_thread(resolve_redis_url, self.settings)
            self._redis = open_redis(self._url, max_connections=None)
        await check_connection(self._redis, self._url or "redis")
        schema = Schema(self.settings.namespace)
        client = Client(
            self._redis,
            schema=schema,
            settings=self.settings,
            registry=self.registry,
            clock=self.clock,
            wrap_broker=self.wrap_broker,
        )
        self._services = Services(
            settings=self.settings,
            redis=self._redis,
            schema=schema,
            client=client,
            registry=self.registry,
            plugin_manager=self.pm,
        )
        if self._url:
            self._services.extra["redis_url"] = self._url
        if self.pm is not None:
            self._services.jinja_from(functools.partial(_build_jinja, self.settings, self.pm))
        return self._services

    async def start(self) -> None:
        """Connect, list the task types' limits (``<ext>:limits``), build the components and start them.

        Raises:
            PluginError: a plugin's ``register_middleware`` failed (before anything is opened), or a middleware,
                an aggregator or a plugin's contribution is unusable.
            Exception: whatever else stops start-up part-way (Redis going away, a cancellation). Either way, what
                the start opened is stopped and closed first: the components, the heartbeat and its records,
                the watchdog and the worker's own Redis connections (a shared client is left open).
        """
        middleware = self._middleware()
        try:
            await self._start(middleware)
        except BaseException:
            await self._undo_start()
            raise

    async def _start(self, middleware: list[Middleware]) -> None:
        built = self._services is None
        services = await self._connect()
        if built and self.pm is not None:  # its own process's services: the plugins start with them
            await fire_startup(self.pm, services)
            self._plugins_started = True
        s = self.settings
        broker = RedisBroker(services.redis, services.schema, self.clock)
        if self.wrap_broker is not None:
            broker = self.wrap_broker(broker)
        if is_cluster(services.redis):
            for queue in s.queues:
                problem = cluster_slot_problem(queue)
                if problem is not None:
                    raise ConfigError(f"setting queues: {problem}")
        await broker.register_queues(s.queues)
        await self._warn_of_eviction(services)
        await self._declare_limits(services)
        hook = self.pm.hook if self.pm is not None else None
        self.processor = Processor(
            broker,
            self.registry,
            s,
            services,
            middleware,
            hook,
            self.clock,
            self.log,
            retry_delay=self._retry_delay,
            rng=self._rng,
            server_id=self.identity.server_id,
            lease_ttl=min(float(LEASE_SECONDS), self.dead_after - 1.0),
            health=self.health,
        )
        ident = self.identity
        records = Liveness(
            sync_redis(self._url, services.redis), services.schema, ident.server_id, ident.host, ident.pid
        )
        self.heartbeat = Heartbeat(self.processor, ident, s.heartbeat_interval, self.log, records, self.health)
        await asyncio.to_thread(self.heartbeat.beat)
        self.heartbeat.start()
        forwarder = Forwarder(broker, s.queues, self.log, s.forward_interval)
        forwarding = Periodic(forwarder, s.forward_interval, self.health, self.clock)

        def on_retry(when: float) -> None:  # the pass at a retry's due time is this worker's to claim
            forwarder.note_due(when)
            forwarding.due_at(when)

        self.processor.outcomes.on_retry = on_retry
        recoverer = Recoverer(
            broker,
            s.queues,
            self.log,
            dead_after=self.dead_after,
            max_recoveries=self.max_recoveries,
            retry_delay=self._retry_delay,
            lost=self.processor.lost,
            server_id=self.identity.server_id,
            held=self.processor.ledger,
        )
        self._components = [
            forwarding,
            Periodic(recoverer, s.recoverer_interval, self.health, self.clock),
            Periodic(
                Janitor(broker, s.queues, self.log, _keyed_limits(self.registry)),
                s.janitor_interval,
                self.health,
                self.clock,
            ),
            Periodic(
                WorkflowChecker(broker.workflows, s.queues, self.log, s.workflow_check_interval),
                s.workflow_check_interval,
                self.health,
                self.clock,
            ),
        ]
        if self.aggregators:
            aggregator = GroupAggregator(
                broker, services.client, self.registry, self.aggregators, list(s.queues), self.log
            )
            self._components.append(Periodic(aggregator, aggregator.interval, self.health, self.clock))
        self._tasks = [self._spawn(c.run(), c.name) for c in self._components]
        listen = self._listen_lean(services, broker) if broker.handoff else self._listen(services)
        self._tasks.append(self._spawn(listen, "Listener"))
        self._tasks.append(self._spawn(self.processor.run(), "Processor"))
        if s.loop_block_threshold > 0:
            execution = self.processor.execution
            self.watchdog = LoopWatchdog(
                asyncio.get_running_loop(),
                s.loop_block_threshold,
                self.log,
                execution.stall_report,
                stuck_after=execution.stuck_after if self.owns_process else None,
                on_stuck=self._loop_stuck,
            )
            self.processor.execution.deadlines.watchdog = self.watchdog
            self.watchdog.start()
        self._started = True
        self.log.info(
            "worker_started",
            server_id=self.identity.server_id,
            pid=self.identity.pid,
            queues=dict(s.queues),
            concurrency=s.concurrency,
            task_types=sorted(t.type for t in self.registry),
            dead_after=self.dead_after,
        )

    async def _warn_of_eviction(self, services: Services) -> None:
        """Log ``redis_may_evict`` (warning) when the server may drop the queues' keys once full.

        Nothing stops: the policy is the operator's, and a server that is never full evicts nothing; but a task
        evicted is lost without an error anywhere, so the start says so (``framework doctor`` too). A server
        that refuses ``INFO`` is not checked.
        """
        try:
            risk = await eviction_risk(services.redis)
        except (RedisError, OSError) as exc:
            self.log.debug("redis_eviction_unknown", error=f"{type(exc).__name__}: {exc}")
            return
        if risk is not None:
            self.log.warning("redis_may_evict", detail=risk, fix=EVICTION_FIX)

    async def _declare_limits(self, services: Services) -> None:
        """List the limits this worker's task types declare in ``<ext>:limits`` (one HSET), for the dashboard.

        Without any, nothing is written and the inspector's code is not imported.

        Raises:
            ConfigError: task types declare limits and Redis is a Cluster (limits need one server or Sentinel).
        """
        limited = sorted(task.type for task in self.registry if task.limits)
        if not limited:
            return
        if is_cluster(services.redis):
            raise ConfigError(
                f"task types {', '.join(limited)} declare limits, which need one Redis server (or Sentinel): on a "
                "Cluster a limit's keys and its queue's keys live in different slots, and every limited task would "
                "fail with CROSSSLOT; remove the limits from these task types or run them against one server"
            )
        from framework.inspector.limits import encode_declarations, limit_declarations  # noqa: PLC0415

        declared = limit_declarations(self.registry, self.settings.limits)
        if declared:
            await services.redis.hset(services.schema.limits_index(), mapping=encode_declarations(declared))

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=f"framework-{name}")
        task.add_done_callback(self._component_done)
        return task

    def _component_done(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled() or self._stopping:
            return
        exc = task.exception()
        if exc is not None:
            self.log.error("worker_component_crashed", component=task.get_name(), error=f"{type(exc).__name__}: {exc}")
            asyncio.get_running_loop().create_task(self.stop())

    async def _listen(self, services: Services) -> None:
        """Follow the wake-up and cancel channels; reconnect with backoff when Redis goes away.

        On a Redis Cluster, PUBLISH (from a script on any primary) reaches the subscribers of every node,
        so one connection to one node hears every queue's wake-ups and every cancel request.
        """
        schema = services.schema
        backoff = 0.2
        attempt = 0
        while True:
            own: Redis | None = None
            pubsub: Any = None
            try:
                own = await open_listener(services.redis, attempt)  # a Cluster: any node hears every PUBLISH
                pubsub = (own or services.redis).pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(schema.wakeup_channel, schema.cancel_channel)
                self.health.ok("listener")
                backoff = 0.2
                if self.processor is not None:
                    self.processor.wake()  # anything enqueued while we were not listening
                async for message in pubsub.listen():
                    self._on_message(schema, message)
            except (RedisError, RedisClusterException, OSError) as exc:
                self.health.failed("listener", exc, retry_in=backoff)
                attempt += 1
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                with contextlib.suppress(RedisError, OSError, RuntimeError):
                    if pubsub is not None:
                        await pubsub.aclose()
                with contextlib.suppress(RedisError, OSError, RuntimeError):
                    if own is not None:
                        await own.aclose()

    async def _listen_lean(self, services: Services, broker: RedisBroker) -> None:
        """The same channels on a lean subscriber (single server or Sentinel primary), and this worker's handoff.

        While subscribed, the processor registers as a waiter when it finds its queues empty, and an
        enqueue then hands its task straight to it: one hop from the client to the handler's start.
        """
        schema = services.schema
        handoff = schema.handoff_channel(self.identity.server_id).encode()
        channels = (schema.wakeup_channel.encode(), schema.cancel_channel.encode())

        def on_message(channel: bytes, data: bytes) -> None:
            p = self.processor
            if p is None:
                return
            if channel == handoff:
                queue, task_id, msg = _split_handoff(data)
                p.handoff(queue, task_id, msg)
            else:
                self._on_message(schema, {"type": "message", "channel": channel, "data": data})

        backoff = 0.2
        assert broker.fast is not None
        while True:
            sub = Subscriber(broker.fast, on_message)
            try:
                await sub.subscribe([*channels, handoff])
                self.health.ok("listener")
                backoff = 0.2
                if self.processor is not None:
                    self.processor.handoff_ready = True
                    self.processor.wake()  # anything enqueued while we were not listening
                reason = await sub.wait_closed()
                raise reason
            except (RedisError, OSError) as exc:
                self._handoff_off(sub)
                self.health.failed("listener", exc, retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                self._handoff_off(sub)

    def _handoff_off(self, sub: Subscriber) -> None:
        """The subscriber is gone: stop registering as a waiter (stale registrations are dropped by enqueues)."""
        if self.processor is not None:
            self.processor.handoff_ready = False
        sub.close()

    def _on_message(self, schema: Schema, message: dict[str, Any]) -> None:
        p = self.processor
        if p is None or message.get("type") != "message":
            return
        channel = message["channel"].decode()
        data = message["data"].decode()
        if channel == schema.wakeup_channel:
            if data in p.weights:
                p.wake(data)
        elif channel == schema.cancel_channel and p.cancel(data):
            self.log.info("task_cancel_requested", task_id=data)

    async def stop(self) -> None:
        """Graceful shutdown: stop fetching, wait ``shutdown_timeout``, requeue what is still running.

        Returns within ``shutdown_timeout + cancel_grace`` plus a few seconds, even when handlers ignore
        their cancellation: those are left running (see :attr:`abandoned` and the module docstring).
        """
        if not self._started:
            return
        if self._stopping:  # a second call (a signal, then ``async with``'s exit) returns when the first is done
            await self._stopped.wait()
            return
        self._stopping = True
        p = self.processor
        timeout = self.settings.shutdown_timeout
        self.log.info("worker_stopping", running=len(p.inflight) if p else 0, timeout=timeout)
        if p is not None:
            if self.heartbeat is not None:
                self.heartbeat.status = "stopped"
            # the shutdown timeout counts from here: a Redis that does not answer (a CLIENT PAUSE, a slow
            # command) while the worker withdraws takes from it instead of adding to it
            loop = asyncio.get_running_loop()
            until = loop.time() + timeout
            await self._withdraw(p, timeout)
            await p.stop(max(0.0, until - loop.time()))
        await self._close()
        self._stopped.set()
        self.log.info("worker_stopped", unfinished=len(p.inflight) if p else 0, abandoned=len(self.abandoned))

    async def _close(self) -> None:
        """Stop the components, the heartbeat (removing the worker's records) and the watchdog; close own Redis."""
        for c in self._components:
            c.stop()
        pending = set(self._tasks)
        while pending:  # a component may swallow a cancellation (redis-py's pubsub while it connects): cancel again
            for t in pending:
                t.cancel()
            _, pending = await asyncio.wait(pending, timeout=1.0)
        if self.heartbeat is not None:
            hb = self.heartbeat
            if self._stalled or (self.processor is not None and self.processor.fetch_unsettled):
                # Redis held a shutdown write past the shutdown timeout: waiting for a beat in flight and for
                # the records' removal would hold the exit for as long as it stalls. The records stay, so
                # the others' recoverers bring back whatever this worker still held, as for a killed worker.
                hb.stop(timeout=0.0)
                self.log.warning(
                    "worker_records_not_cleared",
                    error="Redis did not answer within shutdown_timeout",
                    note="other workers recover what this worker held once its heartbeat is silent for dead_after",
                )
            else:
                await asyncio.to_thread(hb.stop)
                if hb.beats:  # on record: a first beat that failed wrote nothing
                    try:
                        await asyncio.to_thread(hb.clear)
                    except (RedisError, OSError) as exc:
                        self.log.warning("worker_records_not_cleared", error=f"{type(exc).__name__}: {exc}")
            hb.close()
        if self._plugins_started and self.pm is not None and self._services is not None:
            self._plugins_started = False
            await fire_shutdown(self.pm, self._services)  # after the last task, before Redis closes
        if self._owns_redis and self._redis is not None:
            await self._redis.aclose()
        if self.watchdog is not None:
            self.watchdog.stop()

    async def _undo_start(self) -> None:
        """After a start that failed part-way: stop and close what it opened, and log whatever that raised.

        The worker is left as before :meth:`start` (its own Redis client is opened again by the next one).
        """
        self._stopping = True  # a component ending now does not call stop()
        try:
            await self._close()
        except Exception as exc:  # noqa: BLE001 - the start's own error is the one raised
            self.log.warning("worker_start_not_undone", error=f"{type(exc).__name__}: {exc}")
        finally:
            self._stopping = False
            self._components, self._tasks = [], []
            self.processor = self.heartbeat = self.watchdog = None
            if self._owns_redis:
                self._redis = self._services = None

    @property
    def abandoned(self) -> list[str]:
        """``type:id`` of the async handlers given up on that still run on the loop.

        Each ignored its cancellation (at its deadline or at shutdown) past ``cancel_grace``; its task's
        outcome is written already and nothing the handler does later is.
        """
        p = self.processor
        if p is None:
            return []
        return [f"{i.msg.type}:{i.id}" for i in p.overrun.values() if i.runner is not None and not i.runner.done()]

    def exit_if_abandoned(self) -> None:
        """End the process now if handlers given up on still run on the loop (call after :meth:`stop`).

        Their tasks are back in their queue (or failed) already, but ``asyncio.run`` cancels the tasks left
        when its coroutine returns and waits for them: forever, for one that ignores cancellation. So the
        process entry points call this last: it logs ``worker_exit_abandoned`` (warning, naming them) and
        ends the process with ``os._exit(0)``. Log lines are written by then; ``atexit`` handlers do not run.
        Sync handlers' threads do not count: they are daemon threads, which never hold up an exit.
        """
        abandoned = self.abandoned
        if not abandoned:
            return
        self.log.warning(
            "worker_exit_abandoned",
            handlers=abandoned,
            note="they ignore cancellation; their tasks were given back; exiting without waiting for them",
        )
        flush_streams()
        os._exit(0)

    def _loop_stuck(self, blocked_for: float, task: asyncio.Task[Any]) -> None:
        """The handler holding the event loop is past its deadline and ``cancel_grace``: end the process.

        Called from the watchdog's thread, only for a worker that owns its process (:meth:`run`). Nothing on the
        loop can run: not the deadline's cancellation, not a signal handler, not a graceful stop. The heartbeat
        thread would keep the worker alive, and its tasks leased, for as long as the handler holds the loop. So
        the process ends (status :data:`EXIT_LOOP_STUCK`); the recoverer of another worker brings its tasks back
        after ``dead_after``, charging the handler's task with the death when it was the only one held, so one
        that always does this is archived as a poison pill after ``max_recoveries`` deaths.
        """
        p = self.processor
        fields = p.execution.stall_report(task) if p is not None else {}
        self.log.error(
            "event_loop_stuck",
            blocked_for=round(blocked_for, 3),
            **fields,
            note="the handler holding the event loop is past its deadline and cancel_grace; ending the process",
        )
        flush_streams()
        os._exit(EXIT_LOOP_STUCK)

    async def _withdraw(self, p: Processor, timeout: float) -> None:
        """Stop being a waiter: after this no enqueue hands a task here (one already on its way is given back).

        Given up after ``timeout`` seconds without an answer (Redis paused or busy): a stale registration is
        dropped by the next enqueue, and a task handed here meanwhile is recovered as a dead worker's.
        """
        if not p.handoff_ready:
            return
        p.handoff_ready = False
        try:
            async with asyncio.timeout(timeout):
                await p.broker.withdraw(list(p.weights), self.identity.server_id)
        except TimeoutError:  # before OSError, its base class
            self._stalled = True
            self.log.warning("worker_withdraw_failed", error=f"Redis did not answer within {timeout:g} s")
        except (RedisError, OSError) as exc:  # a stale registration is dropped by the next enqueue
            self.log.warning("worker_withdraw_failed", error=f"{type(exc).__name__}: {exc}")

    async def wait(self) -> None:
        """Wait until the worker has stopped."""
        await self._stopped.wait()

    async def run(self, *, hard_exit: bool = True) -> None:
        """Start, run until SIGTERM/SIGINT, then stop gracefully; a second signal exits at once (status 130).

        Args:
            hard_exit: end the process once stopped when handlers given up on still run
                (:meth:`exit_if_abandoned`); pass False to clean up something else first, then call it.
        """
        configure_logging(self.settings.log_level, self.settings.log_format)
        # loggers bound before logging was configured keep structlog's defaults: bind them again
        self.log = self.health.log = get_logger("framework.worker.worker")
        loop = asyncio.get_running_loop()
        signals = 0

        def on_signal(signum: int) -> None:
            nonlocal signals
            signals += 1
            if signals == 1:
                self.log.info("worker_signal", signal=signal.Signals(signum).name, note="graceful shutdown")
                if self._started:
                    loop.create_task(self.stop())  # noqa: RUF006 - awaited through self.wait()
            else:
                self.log.warning("worker_exit_now", signal=signal.Signals(signum).name, note="second signal")
                os._exit(EXIT_SECOND_SIGNAL)

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)
        self.owns_process = True  # a handler that holds the loop for good ends the process (_loop_stuck)
        try:
            await self.start()
            if signals:  # a signal came while starting
                await self.stop()
            await self.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        if hard_exit:
            self.exit_if_abandoned()

    async def __aenter__(self) -> Worker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def _build_jinja(settings: Settings, pm: pluggy.PluginManager) -> Any:
    """The worker's Jinja environment, built when a handler first reads ``services.jinja``."""
    from framework.plugins.templates import build_environment  # noqa: PLC0415 - Jinja loads only for workers that render

    return build_environment(settings, pm)


def _split_handoff(data: bytes) -> tuple[str, str, bytes]:
    """(queue, task id, encoded message) of a handoff note: ``<len>:<queue><len>:<id><message>``."""
    colon = data.index(b":")
    end = colon + 1 + int(data[:colon])
    queue = data[colon + 1 : end].decode()
    colon = data.index(b":", end)
    start = colon + 1 + int(data[end:colon])
    return queue, data[colon + 1 : start].decode(), data[start:]


def _keyed_limits(registry: Registry) -> list[str]:
    """The names of the keyed limits this worker's task types declare (the janitor prunes their seen keys)."""
    return sorted({limit.name or task.type for task in registry for limit in task.limits if limit.key is not None})
