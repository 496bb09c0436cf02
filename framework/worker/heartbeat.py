"""The heartbeat: extends the leases of in-flight tasks and tells the world this worker is alive.

It runs in a thread of its own with its own (blocking) Redis connection, so a worker whose event loop
is busy (a CPU-bound handler, a handler that blocks) still beats: it is *slow*, not dead. Only a worker
whose process is gone, or that cannot reach Redis, stops beating. Every ``heartbeat_interval`` one
pipelined round trip:

* extends the Redis leases of in-flight tasks (``ZADD XX`` to now + 30 s, as asynq's heartbeat does),
  except for tasks more than ``cancel_grace`` + 30 s past their deadline (a backstop: the processor
  gives up on a handler ``cancel_grace`` s after its deadline and writes its outcome, after which the
  task is no longer in flight; should that write never happen, the lease lapses and asynq's lease-expiry
  recovery takes over). A handler given up on that still runs is not in flight: its lease is not
  extended, whatever it does;
* records the worker in the framework's liveness zset (``<ext>:alive``, server id -> time);
* removes finished tasks from this worker's per-queue in-flight sets (``dequeue.lua`` adds them).

Every 5 s it also writes asynq's ``servers``/``workers`` records (TTL 10 s), so ``asynq server ls``
and asynqmon show our workers. A ``WorkerInfo`` carries at most the first :data:`WORKER_PAYLOAD_MAX`
bytes of its task's payload: the record is rewritten whole on every write, and a few large payloads in
flight would otherwise make it as large as they are (the fields are asynq's, so Go's tools still decode
it; they just show the payload cut short). After a successful beat the in-memory leases are extended to
``beat start + lease_ttl``. ``lease_ttl`` is shorter than ``dead_after`` (see
:mod:`framework.worker.background.recoverer`), so by the time a recoverer may judge this worker dead, every lease it
holds
has lapsed in memory and it writes nothing for those tasks.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError

from framework.broker.base import INFLIGHT_TTL, LEASE_SECONDS
from framework.protocol.message import encode_server_info, encode_worker_info
from framework.transport.connection import open_sync_redis, sync_redis_like

if TYPE_CHECKING:
    import redis as redis_sync
    import structlog
    from redis.asyncio import Redis

    from framework.transport.health import RedisHealth
    from framework.worker.outcomes import InFlight
    from framework.worker.processor import Processor

__all__ = ("WORKER_PAYLOAD_MAX", "Heartbeat", "ServerIdentity", "sync_redis")

SERVER_INFO_EVERY = 5.0
"""Seconds between writes of asynq's server and worker records (as Go does)."""
WORKER_PAYLOAD_MAX = 1024
"""Most payload bytes a task's ``WorkerInfo`` carries (the rest is cut off; the task itself is untouched)."""
_SERVER_TTL = 10


class ServerIdentity:
    """Who this worker process is, as asynq names servers (``<host>:<pid>:<server id>``)."""

    __slots__ = ("host", "pid", "server_id", "started")

    def __init__(self, host: str, pid: int, server_id: str) -> None:
        self.host = host
        self.pid = pid
        self.server_id = server_id
        self.started = time.time()


def sync_redis(url: str, like: Redis | None = None) -> redis_sync.Redis:
    """A blocking Redis client for the heartbeat thread: from ``url``, or for the server ``like`` uses.

    Single server, Redis Cluster or Sentinel-managed primary alike (see :mod:`framework.transport.connection`).
    """
    if url:
        return open_sync_redis(url)
    if like is None:
        raise ValueError("a Redis URL or client is needed")
    return sync_redis_like(like)


class Heartbeat:
    """Keeps leases and liveness records fresh for one :class:`~framework.worker.processor.Processor`.

    Args:
        processor: the processor whose in-flight tasks it covers.
        identity: this worker's identity.
        interval: seconds between beats.
        logger: the worker's logger.
        client: a blocking Redis client, used only by this heartbeat (closed by :meth:`close`).
        health: where Redis faults are reported.
    """

    def __init__(
        self,
        processor: Processor,
        identity: ServerIdentity,
        interval: float,
        logger: structlog.typing.FilteringBoundLogger,
        client: redis_sync.Redis,
        health: RedisHealth,
    ) -> None:
        self.p = processor
        self.id = identity
        self.interval = interval
        self.log = logger
        self.redis = client
        self.health = health
        self.status = "active"
        self.beats = 0
        self._schema = processor.broker.schema
        self._last_info = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start beating in the background (call :meth:`beat` once first to register at once)."""
        self._thread = threading.Thread(target=self._loop, name="framework-heartbeat", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.safe_beat()

    def safe_beat(self) -> bool:
        """One beat; Redis faults are reported, never raised. Returns whether it succeeded."""
        try:
            self.beat()
        except (RedisError, RedisClusterException, OSError) as exc:  # a Cluster node away: RedisClusterException
            self.health.failed("heartbeat", exc)
            return False
        except Exception as exc:
            self.log.exception("heartbeat_error", error=f"{type(exc).__name__}: {exc}")
            return False
        self.health.ok("heartbeat")
        return True

    def _leases_to_extend(self, now: float) -> dict[str, list[InFlight]]:
        by_queue: dict[str, list[InFlight]] = defaultdict(list)
        horizon = LEASE_SECONDS + self.p.cancel_grace
        for inf in list(self.p.inflight.values()):
            if inf.lease.is_valid() and now <= inf.deadline + horizon:
                by_queue[inf.queue].append(inf)
        return by_queue

    def beat(self) -> None:
        """One heartbeat (blocking): leases, liveness, in-flight sets, and now and then asynq's records."""
        p, schema = self.p, self._schema
        now = p.clock.now()
        by_queue = self._leases_to_extend(now)
        finished, p.finished = p.finished, []
        done_by_queue: dict[str, list[str]] = defaultdict(list)
        for queue, task_id in finished:
            done_by_queue[queue].append(task_id)
        write_info = now - self._last_info >= SERVER_INFO_EVERY
        try:
            with self.redis.pipeline(transaction=False) as pipe:
                pipe.zadd(schema.alive, {self.id.server_id: now})
                until = int(now) + LEASE_SECONDS
                for queue, infs in by_queue.items():
                    qk = schema.queue(queue)
                    pipe.zadd(qk.lease, dict.fromkeys((i.id for i in infs), until), xx=True)
                    pipe.expire(qk.inflight(self.id.server_id), INFLIGHT_TTL)
                for queue, ids in done_by_queue.items():
                    pipe.srem(schema.queue(queue).inflight(self.id.server_id), *ids)
                if write_info:
                    self._server_info(pipe, now)
                pipe.execute()
        except BaseException:
            p.finished.extend(finished)
            raise
        for infs in by_queue.values():
            for inf in infs:
                inf.lease.extend(now + p.lease_ttl)
        if write_info:
            self._last_info = now
        self.beats += 1

    def _server_info(self, pipe: Any, now: float) -> None:
        """Queue asynq's ``servers`` and ``workers`` records (TTL 10 s) on ``pipe``."""
        p, ident, schema = self.p, self.id, self._schema
        server_key = schema.server(ident.host, ident.pid, ident.server_id)
        workers_key = schema.worker_set(ident.host, ident.pid, ident.server_id)
        infs = list(p.inflight.values())
        info = encode_server_info(
            host=ident.host,
            pid=ident.pid,
            server_id=ident.server_id,
            concurrency=p.concurrency,
            queues=p.weights,
            strict_priority=p.settings.strict_priority,
            status=self.status,
            start_time=ident.started,
            active_worker_count=len(infs),
        )
        workers = {
            inf.id: encode_worker_info(
                host=ident.host,
                pid=ident.pid,
                server_id=ident.server_id,
                task_id=inf.id,
                task_type=inf.msg.type,
                task_payload=inf.msg.payload[:WORKER_PAYLOAD_MAX],
                queue=inf.queue,
                start_time=inf.started,
                deadline=inf.deadline,
            )
            for inf in infs
        }
        ttl = max(_SERVER_TTL, int(2 * self.interval) + 1)
        expires = int(now) + ttl
        pipe.zadd(schema.servers, {server_key: expires})
        pipe.zadd(schema.workers, {workers_key: expires})
        pipe.set(server_key, info, ex=ttl)
        pipe.delete(workers_key)
        if workers:
            pipe.hset(workers_key, mapping=workers)
            pipe.expire(workers_key, ttl)

    def stop(self) -> None:
        """Stop beating and wait for the thread (blocking; at most one beat's time)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def clear(self) -> None:
        """Remove this worker's records (clean shutdown; blocking).

        The liveness entry and in-flight sets stay when tasks are still in flight (an outcome or requeue
        could not be written), so the recoverer brings those tasks back.
        """
        try:
            self._clear()
        except RedisClusterException as exc:  # a Cluster node away: a Redis fault like any other for the caller
            raise RedisConnectionError(f"{type(exc).__name__}: {exc}") from exc

    def _clear(self) -> None:
        ident, schema = self.id, self._schema
        server_key = schema.server(ident.host, ident.pid, ident.server_id)
        workers_key = schema.worker_set(ident.host, ident.pid, ident.server_id)
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrem(schema.servers, server_key)
            pipe.zrem(schema.workers, workers_key)
            pipe.delete(server_key)  # one key per DEL: redis-py's Cluster pipeline refuses more
            pipe.delete(workers_key)
            if not self.p.inflight:
                pipe.zrem(schema.alive, ident.server_id)
                for q in self.p.weights:  # one DEL per queue: each in-flight set is in its queue's Cluster slot
                    pipe.delete(schema.queue(q).inflight(ident.server_id))
            pipe.execute()

    def close(self) -> None:
        """Close the heartbeat's Redis connections (a client built on a given pool leaves them open itself)."""
        self.redis.close()
        pool = getattr(self.redis, "connection_pool", None)
        if pool is not None:
            pool.disconnect()
