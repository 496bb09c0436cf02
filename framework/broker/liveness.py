"""A worker's own records, written from its heartbeat thread: leases, liveness, in-flight sets, asynq's records.

:class:`Liveness` is the broker part the heartbeat (:mod:`framework.worker.heartbeat`) writes through. It is
blocking and runs on a redis-py client of its own (single server, Cluster or Sentinel primary) in the heartbeat's
thread, so a worker whose event loop is busy still beats. Each call is one pipelined round trip:

* :meth:`Liveness.beat`: the worker's entry in ``<ext>:alive`` (server id -> time); the leases of the tasks it
  holds extended to now + 30 s (``ZADD XX``, as asynq's heartbeat does: a lease lost meanwhile is never
  re-added) and its in-flight set of each such queue kept for :data:`~framework.broker.base.INFLIGHT_TTL`; the
  ids of finished tasks taken out of its in-flight sets (``dequeue.lua`` adds them); and, when given, asynq's
  ``servers``/``workers`` records (:class:`ServerRecords`), so ``asynq server ls`` and asynqmon show the worker;
  with them, the members of asynq's ``servers``/``workers`` ZSETs that expired as long ago as a record lives
  are removed: a process killed without a clean stop leaves its member, which asynq never removes.
* :meth:`Liveness.clear`: those records removed at a clean shutdown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from framework.broker.base import INFLIGHT_TTL, LEASE_SECONDS

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    import redis as redis_sync

    from framework.protocol.keys import Schema

__all__ = ("Liveness", "ServerRecords")


@dataclass(frozen=True, slots=True)
class ServerRecords:
    """asynq's records of one worker process, encoded.

    Attributes:
        info: its ``ServerInfo``.
        workers: task id -> the ``WorkerInfo`` of each task it runs.
        ttl: seconds both records live unless written again.
    """

    info: bytes
    workers: Mapping[str, bytes]
    ttl: int


class Liveness:
    """The records of one worker process, written on a blocking client; see the module docstring.

    Args:
        client: a blocking redis-py client used by this object only (closed by :meth:`close`).
        schema: the key schema.
        server_id: the worker's server id (names its liveness entry and in-flight sets).
        host: its host name, and
        pid: its process id, which with the server id name asynq's records (``<host>:<pid>:<server id>``).
    """

    def __init__(self, client: redis_sync.Redis, schema: Schema, server_id: str, host: str, pid: int) -> None:
        self.client = client
        self.schema = schema
        self.server_id = server_id
        self._server_key = schema.server(host, pid, server_id)
        self._workers_key = schema.worker_set(host, pid, server_id)

    def beat(
        self,
        now: float,
        leases: Mapping[str, Sequence[str]],
        finished: Mapping[str, Sequence[str]],
        records: ServerRecords | None = None,
    ) -> None:
        """One heartbeat, in one round trip (see the module docstring).

        Args:
            now: the time (Unix s).
            leases: queue -> ids of the tasks whose leases to extend.
            finished: queue -> ids of the tasks to take out of the in-flight set.
            records: asynq's records to write as well, or None.
        """
        schema, sid = self.schema, self.server_id
        with self.client.pipeline(transaction=False) as pipe:
            pipe.zadd(schema.alive, {sid: now})
            until = int(now) + LEASE_SECONDS
            for queue, ids in leases.items():
                if ids:
                    qk = schema.queue(queue)
                    pipe.zadd(qk.lease, dict.fromkeys(ids, until), xx=True)
                    pipe.expire(qk.inflight(sid), INFLIGHT_TTL)
            for queue, ids in finished.items():
                if ids:
                    pipe.srem(schema.queue(queue).inflight(sid), *ids)
            if records is not None:
                expires = int(now) + records.ttl
                pipe.zadd(schema.servers, {self._server_key: expires})
                pipe.zadd(schema.workers, {self._workers_key: expires})
                # members of processes gone without a clean stop (SIGKILL, a lost host): asynq lists only the
                # members not expired yet and never removes the others; one expired as long as it lived is dead
                stale = int(now) - records.ttl
                pipe.zremrangebyscore(schema.servers, "-inf", stale)
                pipe.zremrangebyscore(schema.workers, "-inf", stale)
                pipe.set(self._server_key, records.info, ex=records.ttl)
                pipe.delete(self._workers_key)
                if records.workers:
                    fields: dict[Any, bytes] = dict(records.workers)  # redis-py types field names as any encodable
                    pipe.hset(self._workers_key, mapping=fields)
                    pipe.expire(self._workers_key, records.ttl)
            pipe.execute()

    def clear(self, queues: Iterable[str], *, holding: bool) -> None:
        """Remove asynq's records; unless ``holding``, the liveness entry and the in-flight sets of ``queues`` too.

        A worker that still holds tasks at shutdown (an outcome or requeue could not be written) keeps its
        liveness entry and in-flight sets, so the recoverer brings those tasks back.
        """
        schema, sid = self.schema, self.server_id
        with self.client.pipeline(transaction=False) as pipe:
            pipe.zrem(schema.servers, self._server_key)
            pipe.zrem(schema.workers, self._workers_key)
            pipe.delete(self._server_key)  # one key per DEL: redis-py's Cluster pipeline refuses more
            pipe.delete(self._workers_key)
            if not holding:
                pipe.zrem(schema.alive, sid)
                for q in queues:  # one DEL per queue: each in-flight set is in its queue's Cluster slot
                    pipe.delete(schema.queue(q).inflight(sid))
            pipe.execute()

    def close(self) -> None:
        """Close the client's connections (a client built on a given pool leaves them open itself)."""
        self.client.close()
        pool = getattr(self.client, "connection_pool", None)
        if pool is not None:
            pool.disconnect()
