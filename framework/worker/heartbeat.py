"""The heartbeat: extends the leases of in-flight tasks and tells the world this worker is alive.

It runs in a thread of its own with its own (blocking) Redis connection, so a worker whose event loop
is busy (a CPU-bound handler, a handler that blocks) still beats: it is *slow*, not dead. Only a worker
whose process is gone, or that cannot reach Redis, stops beating. Every ``heartbeat_interval`` one
pipelined round trip, written through the broker's :class:`~framework.broker.liveness.Liveness`:

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
holds has lapsed in memory and it writes nothing for those tasks.

**What the thread shares with the event loop.** Nothing by accident. What it needs of the processor that does
not change (queues and weights, concurrency, strict priority, ``cancel_grace``, ``lease_ttl``, the clock) is
copied when the heartbeat is built, on the loop's thread. The tasks come from the processor's
:class:`~framework.worker.ledger.Ledger`: a copy of the tasks in flight, taken under the ledger's lock, and the
tasks finished since the last beat, handed over under the same lock (and handed back when the beat fails, so the
next one trims them). Of a task it reads only what the ledger's rules allow: fields fixed when the task was taken,
its ``deadline`` and its lease, whose expiry only this thread moves on. :attr:`Heartbeat.status` is set by the
loop and read here: one attribute, one writer. None of this relies on the GIL: it holds on free-threaded CPython.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from typing import TYPE_CHECKING

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError

from framework.broker.base import LEASE_SECONDS
from framework.broker.liveness import ServerRecords
from framework.protocol.message import encode_server_info, encode_worker_info
from framework.transport.connection import open_sync_redis, sync_redis_like

if TYPE_CHECKING:
    from collections.abc import Sequence

    import redis as redis_sync
    import structlog
    from redis.asyncio import Redis

    from framework.broker.liveness import Liveness
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

    Build it on the event loop's thread: it copies what it needs of the processor then (see the module
    docstring) and from then on sees its tasks only through the processor's ledger.

    Args:
        processor: the processor whose in-flight tasks it covers.
        identity: this worker's identity.
        interval: seconds between beats.
        logger: the worker's logger.
        records: where it writes (the broker's blocking part, on a client of its own; closed by :meth:`close`).
        health: where Redis faults are reported.

    Attributes:
        status: asynq's server status, ``"active"`` or ``"stopped"`` (set by the worker as it stops).
        beats: beats written so far.
    """

    def __init__(
        self,
        processor: Processor,
        identity: ServerIdentity,
        interval: float,
        logger: structlog.typing.FilteringBoundLogger,
        records: Liveness,
        health: RedisHealth,
    ) -> None:
        self.id = identity
        self.interval = interval
        self.log = logger
        self.records = records
        self.health = health
        self.status = "active"
        self.beats = 0
        self._ledger = processor.ledger
        self._clock = processor.clock
        self._queues = dict(processor.weights)
        self._concurrency = processor.concurrency
        self._strict_priority = processor.settings.strict_priority
        self._horizon = LEASE_SECONDS + processor.cancel_grace
        self._lease_ttl = processor.lease_ttl
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
            if not self._stop.is_set():  # else the stopping worker closed the client under a beat Redis held
                self.health.failed("heartbeat", exc)
            return False
        except Exception as exc:
            self.log.exception("heartbeat_error", error=f"{type(exc).__name__}: {exc}")
            return False
        self.health.ok("heartbeat")
        return True

    def _leases_to_extend(self, held: Sequence[InFlight], now: float) -> dict[str, list[InFlight]]:
        by_queue: dict[str, list[InFlight]] = defaultdict(list)
        horizon = self._horizon
        for inf in held:
            if inf.lease.is_valid() and now <= inf.deadline + horizon:
                by_queue[inf.queue].append(inf)
        return by_queue

    def beat(self) -> None:
        """One heartbeat (blocking): leases, liveness, in-flight sets, and now and then asynq's records."""
        now = self._clock.now()
        finished = self._ledger.take_finished()
        held = self._ledger.snapshot()  # after: a task let go and already taken again is held, not trimmed
        by_queue = self._leases_to_extend(held, now)
        again = {inf.key for inf in held}
        done_by_queue: dict[str, list[str]] = defaultdict(list)
        for key in finished:
            if key not in again:
                done_by_queue[key[0]].append(key[1])
        write_info = now - self._last_info >= SERVER_INFO_EVERY
        try:
            self.records.beat(
                now,
                {queue: [i.id for i in infs] for queue, infs in by_queue.items()},
                done_by_queue,
                self._server_records(held) if write_info else None,
            )
        except BaseException:
            self._ledger.return_finished(finished)
            raise
        for infs in by_queue.values():
            for inf in infs:
                inf.lease.extend(now + self._lease_ttl)
        if write_info:
            self._last_info = now
        self.beats += 1

    def _server_records(self, held: Sequence[InFlight]) -> ServerRecords:
        """The ``servers`` and ``workers`` records (asynq's) of this worker and the tasks it holds."""
        ident = self.id
        info = encode_server_info(
            host=ident.host,
            pid=ident.pid,
            server_id=ident.server_id,
            concurrency=self._concurrency,
            queues=self._queues,
            strict_priority=self._strict_priority,
            status=self.status,
            start_time=ident.started,
            active_worker_count=len(held),
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
            for inf in held
        }
        return ServerRecords(info, workers, max(_SERVER_TTL, int(2 * self.interval) + 1))

    def stop(self, timeout: float = 10.0) -> None:
        """Stop beating and wait for the thread (blocking; at most one beat's time, and at most ``timeout`` s).

        A beat still in flight after ``timeout`` (Redis stalled) may write once more after this returns.
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    def clear(self) -> None:
        """Remove this worker's records (clean shutdown; blocking).

        The liveness entry and in-flight sets stay when tasks are still in flight (an outcome or requeue
        could not be written), so the recoverer brings those tasks back.
        """
        try:
            self.records.clear(self._queues, holding=self._ledger.holding())
        except RedisClusterException as exc:  # a Cluster node away: a Redis fault like any other for the caller
            raise RedisConnectionError(f"{type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        """Close the heartbeat's Redis connections."""
        self.records.close()
