"""The heartbeat: extends the leases of in-flight tasks and tells the world this worker is alive.

Every ``heartbeat_interval`` it extends leases (``ZADD XX``), records the worker as alive in the
framework's own zset together with the tasks it runs (so a dead worker's tasks are recovered within
seconds instead of after the 30 s lease), and every 5 s writes asynq's server and worker records, so
``asynq server ls`` and asynqmon show our workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from framework.broker import LEASE_SECONDS
from framework.message import encode_server_info, encode_worker_info

if TYPE_CHECKING:
    from collections.abc import Iterable

    import structlog

    from framework.processor import InFlight, Processor

__all__ = ("Heartbeat", "ServerIdentity")

_SERVER_INFO_EVERY = 5.0
_SERVER_TTL = 10


class ServerIdentity:
    """Who this worker process is, as asynq names servers."""

    __slots__ = ("host", "pid", "server_id", "started")

    def __init__(self, host: str, pid: int, server_id: str) -> None:
        self.host = host
        self.pid = pid
        self.server_id = server_id
        self.started = time.time()


class Heartbeat:
    """Keeps leases and liveness records fresh for one :class:`~framework.processor.Processor`."""

    def __init__(
        self,
        processor: Processor,
        identity: ServerIdentity,
        interval: float,
        logger: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self.p = processor
        self.id = identity
        self.interval = interval
        self.log = logger
        self.status = "active"
        self._last_info = 0.0
        self._pending_inflight: list[InFlight] = []
        self._stop = asyncio.Event()
        processor.on_dequeued = self.record_dequeued

    @property
    def _redis(self):  # type: ignore[no-untyped-def]  # noqa: ANN202
        return self.p.broker.redis

    def record_dequeued(self, infs: Iterable[InFlight]) -> None:
        """Write newly started tasks to this worker's in-flight record (in the background)."""
        mapping = {i.msg.id: i.queue for i in infs}
        if mapping:
            key = self.p.broker.schema.inflight(self.id.server_id)
            task = asyncio.get_running_loop().create_task(self._record(key, mapping))
            task.add_done_callback(_ignore)

    async def _record(self, key: str, mapping: dict[str, str]) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self._redis.hset(key, mapping=mapping)

    async def beat(self) -> None:
        """One heartbeat: extend leases, refresh liveness, and now and then asynq's server records."""
        p = self.p
        schema = p.broker.schema
        by_queue: dict[str, list[InFlight]] = defaultdict(list)
        for inf in list(p.inflight.values()):
            if inf.lease.is_valid():
                by_queue[inf.queue].append(inf)
        now = p.clock.now()
        for queue, infs in by_queue.items():
            await p.broker.extend_leases(queue, [i.msg.id for i in infs])
            for i in infs:
                i.lease.extend(now + LEASE_SECONDS)
        inflight_key = schema.inflight(self.id.server_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zadd(schema.alive, {self.id.server_id: int(now)})
            pipe.delete(inflight_key)
            mapping = {i.msg.id: i.queue for infs in by_queue.values() for i in infs}
            if mapping:
                pipe.hset(inflight_key, mapping=mapping)
            await pipe.execute()
        if now - self._last_info >= _SERVER_INFO_EVERY:
            await self.write_server_info(now)
            self._last_info = now

    async def write_server_info(self, now: float) -> None:
        """Write asynq's ``servers`` and ``workers`` records (TTL 10 s)."""
        p, ident, schema = self.p, self.id, self.p.broker.schema
        server_key = schema.server(ident.host, ident.pid, ident.server_id)
        workers_key = schema.worker_set(ident.host, ident.pid, ident.server_id)
        info = encode_server_info(
            host=ident.host,
            pid=ident.pid,
            server_id=ident.server_id,
            concurrency=p.concurrency,
            queues=p.weights,
            strict_priority=p.settings.strict_priority,
            status=self.status,
            start_time=ident.started,
            active_worker_count=len(p.inflight),
        )
        workers = {
            inf.msg.id: encode_worker_info(
                host=ident.host,
                pid=ident.pid,
                server_id=ident.server_id,
                task_id=inf.msg.id,
                task_type=inf.msg.type,
                task_payload=inf.msg.payload,
                queue=inf.queue,
                start_time=inf.started,
                deadline=p._deadline(inf.msg),  # noqa: SLF001
            )
            for inf in list(p.inflight.values())
        }
        expires = int(now) + _SERVER_TTL
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zadd(schema.servers, {server_key: expires})
            pipe.zadd(schema.workers, {workers_key: expires})
            pipe.set(server_key, info, ex=_SERVER_TTL)
            pipe.delete(workers_key)
            if workers:
                pipe.hset(workers_key, mapping=workers)
                pipe.expire(workers_key, _SERVER_TTL)
            await pipe.execute()

    async def clear(self) -> None:
        """Remove this worker's records (clean shutdown)."""
        ident, schema = self.id, self.p.broker.schema
        server_key = schema.server(ident.host, ident.pid, ident.server_id)
        workers_key = schema.worker_set(ident.host, ident.pid, ident.server_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zrem(schema.servers, server_key)
            pipe.zrem(schema.workers, workers_key)
            pipe.delete(server_key, workers_key, schema.inflight(ident.server_id))
            pipe.zrem(schema.alive, ident.server_id)
            await pipe.execute()

    async def run(self) -> None:
        """Beat every ``interval`` seconds until stopped; Redis faults are logged and retried."""
        while not self._stop.is_set():
            try:
                await self.beat()
            except (RedisError, OSError) as exc:
                self.log.warning("heartbeat_failed", error=f"{type(exc).__name__}: {exc}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval)

    def stop(self) -> None:
        """Stop after the current beat."""
        self._stop.set()


def _ignore(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()
