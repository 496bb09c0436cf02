"""Worker assembly and lifecycle.

:class:`Worker` builds the registry, the middleware chain and the components (processor, heartbeat,
forwarder, recoverer, janitor, and a listener for the wake-up and cancel channels), starts them in
one task group, and shuts down gracefully: stop fetching, wait up to ``shutdown_timeout`` for running
tasks, then put the unfinished ones back at the head of their queue without spending a retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import uuid
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from framework.broker import RedisBroker
from framework.client import Client
from framework.clock import Clock, SystemClock
from framework.connection import check_connection, open_redis, resolve_redis_url
from framework.forwarder import Forwarder
from framework.heartbeat import Heartbeat, ServerIdentity
from framework.janitor import Janitor
from framework.keys import Schema
from framework.logging import configure_logging, get_logger
from framework.middleware import Middleware, logging_middleware
from framework.processor import Processor
from framework.recoverer import Recoverer
from framework.registry import Registry
from framework.services import Services

if TYPE_CHECKING:
    from collections.abc import Iterable

    import pluggy
    from redis.asyncio import Redis

    from framework.settings import Settings
    from framework.task import RetryDelay, TaskDef

__all__ = ("Worker",)


class Worker:
    """A worker process: runs tasks of the configured queues until stopped.

    Args:
        settings: the app's settings.
        tasks: task definitions to serve (in addition to the plugins').
        middleware: app middleware, innermost after the plugins'.
        plugin_manager: the plugin manager (task types, middleware and events from plugins).
        redis: an existing Redis client to use (default: opened from the settings).
        clock: where time comes from.
        retry_delay: the global retry policy (default exponential backoff with jitter).
        services: share the services of a web app in the same process.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        tasks: Iterable[TaskDef[Any]] = (),
        middleware: Iterable[Middleware] = (),
        plugin_manager: pluggy.PluginManager | None = None,
        redis: Redis | None = None,
        clock: Clock | None = None,
        retry_delay: RetryDelay | None = None,
        services: Services | None = None,
    ) -> None:
        self.settings = settings
        self.pm = plugin_manager
        self.clock = clock or SystemClock()
        self.log = get_logger("framework.worker")
        self.identity = ServerIdentity(socket.gethostname(), os.getpid(), str(uuid.uuid4()))
        self.registry = services.registry if services is not None else Registry()
        for task in tasks:
            self.registry.add(task)
        if plugin_manager is not None and services is None:
            from framework.plugins import collect_task_types  # noqa: PLC0415

            collect_task_types(plugin_manager, settings, self.registry)
        self._app_middleware = list(middleware)
        self._redis = redis
        self._owns_redis = redis is None and services is None
        self._services = services
        self._retry_delay = retry_delay
        self._url = ""
        self.processor: Processor | None = None
        self._components: list[Any] = []
        self._stopped = asyncio.Event()
        self._stopping = False
        self._group_tasks: list[asyncio.Task[Any]] = []

    def _middleware(self) -> list[Middleware]:
        chain: list[Middleware] = [logging_middleware]
        if self.pm is not None:
            for contributed in self.pm.hook.register_middleware(settings=self.settings)[::-1]:
                chain.extend(contributed or [])
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
        client = Client(self._redis, schema=schema, settings=self.settings, registry=self.registry, clock=self.clock)
        self._services = Services(
            settings=self.settings,
            redis=self._redis,
            schema=schema,
            client=client,
            registry=self.registry,
            plugin_manager=self.pm,
        )
        if self.pm is not None:
            from framework.jinja import build_environment  # noqa: PLC0415

            self._services.jinja = build_environment(self.settings, self.pm)
        return self._services

    async def start(self) -> None:
        """Connect, build the components and start them in the background."""
        services = await self._connect()
        s = self.settings
        broker = RedisBroker(services.redis, services.schema, self.clock)
        await broker.register_queues(s.queues)
        hook = self.pm.hook if self.pm is not None else None
        self.processor = Processor(
            broker, self.registry, s, services, self._middleware(), hook, self.clock, self.log, self._retry_delay
        )
        heartbeat = Heartbeat(self.processor, self.identity, s.heartbeat_interval, self.log)
        self._heartbeat = heartbeat
        self._components = [
            heartbeat,
            Forwarder(broker, s.queues, s.forward_interval, self.log),
            Recoverer(broker, s.queues, s.recoverer_interval, self.log, retry_delay=self._retry_delay),
            Janitor(broker, s.queues, s.janitor_interval, self.log),
        ]
        await heartbeat.beat()
        self._listener = asyncio.create_task(self._listen(services))
        self._group_tasks = [asyncio.create_task(c.run()) for c in self._components]
        self._group_tasks.append(asyncio.create_task(self.processor.run()))
        self.log.info(
            "worker_started",
            server_id=self.identity.server_id,
            queues=dict(s.queues),
            concurrency=s.concurrency,
            task_types=sorted(t.type for t in self.registry),
        )

    async def _listen(self, services: Services) -> None:
        """Follow the wake-up and cancel channels; reconnect with backoff when Redis goes away."""
        schema = services.schema
        backoff = 0.2
        while True:
            pubsub = services.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(schema.wakeup_channel, schema.cancel_channel)
                backoff = 0.2
                if self.processor is not None:
                    self.processor.wake()
                async for message in pubsub.listen():
                    self._on_message(schema, message)
            except (RedisError, OSError) as exc:
                self.log.warning("listener_disconnected", error=f"{type(exc).__name__}: {exc}", retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                with contextlib.suppress(RedisError, OSError, RuntimeError):
                    await pubsub.aclose()

    def _on_message(self, schema: Schema, message: dict[str, Any]) -> None:
        p = self.processor
        if p is None or message.get("type") != "message":
            return
        channel = message["channel"].decode()
        data = message["data"].decode()
        if channel == schema.wakeup_channel:
            if data in p.weights:
                p.wake()
        elif channel == schema.cancel_channel and p.cancel(data):
            self.log.info("task_cancel_requested", task_id=data)

    async def stop(self) -> None:
        """Graceful shutdown: stop fetching, wait ``shutdown_timeout``, requeue what is still running."""
        if self._stopping:
            return
        self._stopping = True
        self.log.info("worker_stopping", running=len(self.processor.inflight) if self.processor else 0)
        if self.processor is not None:
            self._heartbeat.status = "stopped"
            await self.processor.stop(self.settings.shutdown_timeout)
        for c in self._components:
            c.stop()
        for t in self._group_tasks:
            t.cancel()
        self._listener.cancel()
        await asyncio.gather(*self._group_tasks, self._listener, return_exceptions=True)
        with contextlib.suppress(RedisError, OSError):
            await self._heartbeat.clear()
        if self._owns_redis and self._redis is not None:
            await self._redis.aclose()
        self._stopped.set()
        self.log.info("worker_stopped")

    async def wait(self) -> None:
        """Wait until the worker has stopped."""
        await self._stopped.wait()

    async def run(self) -> None:
        """Start, run until SIGTERM/SIGINT, then stop gracefully; a second signal exits at once."""
        configure_logging(self.settings.log_level, self.settings.log_format)
        await self.start()
        loop = asyncio.get_running_loop()
        signals = 0

        def on_signal() -> None:
            nonlocal signals
            signals += 1
            if signals == 1:
                loop.create_task(self.stop())  # noqa: RUF006 - awaited through self.wait()
            else:
                self.log.warning("worker_exit_now", note="second signal")
                os._exit(130)

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        try:
            await self.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    async def __aenter__(self) -> Worker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
