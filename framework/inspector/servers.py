"""Server queries: the worker processes alive now (Go's and ours) and the tasks each is running.

Servers announce themselves in ``<ns>:servers`` (score = expiry) with a ``ServerInfo`` record, and
their running tasks in ``<ns>:workers:{...}`` hashes of ``WorkerInfo``. Expired members are skipped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from framework.inspector.namespace import Part, text
from framework.protocol.message import ServerInfo, WorkerInfo, decode_server_info, decode_worker_info

if TYPE_CHECKING:
    pass

__all__ = ("ServerReads", "ServerStatus")


class ServerStatus(msgspec.Struct, frozen=True, kw_only=True):
    """A live server and the tasks it is running.

    Attributes:
        server: what the server announced (host, pid, id, concurrency, queues, status, start time).
        workers: its tasks in progress, oldest first.
    """

    server: ServerInfo
    workers: list[WorkerInfo]


class ServerReads(Part):
    """The server reads of :class:`~framework.inspector.core.Inspector`: live servers and their running tasks."""

    __slots__ = ()

    async def servers(self) -> list[ServerStatus]:
        """Every server whose heartbeat has not expired, by host, pid and id."""
        now = int(self._ns.now())
        members: list[Any] = await self._redis.zrangebyscore(self._schema.servers, now, "+inf")
        keys = [text(k) for k in members]
        if not keys:
            return []
        infos: list[ServerInfo] = []
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:  # one GET each: every server record is in a Cluster slot of its own
                pipe.get(key)
            records: list[Any] = await pipe.execute()
        for raw in records:
            if raw is None:
                continue
            try:
                infos.append(decode_server_info(raw))
            except ValueError:
                continue
        live: list[Any] = await self._redis.zrangebyscore(self._schema.workers, now, "+inf")
        live_workers = {text(k) for k in live}
        async with self._redis.pipeline(transaction=False) as pipe:
            for info in infos:
                pipe.hvals(self._schema.worker_set(info.host, info.pid, info.server_id))
            worker_values = await pipe.execute()
        out = []
        for info, values in zip(infos, worker_values, strict=True):
            key = self._schema.worker_set(info.host, info.pid, info.server_id)
            workers = _decode_workers(values) if key in live_workers else []
            out.append(ServerStatus(server=info, workers=workers))
        return sorted(out, key=lambda s: (s.server.host, s.server.pid, s.server.server_id))


def _decode_workers(values: list[bytes]) -> list[WorkerInfo]:
    workers = []
    for raw in values:
        try:
            workers.append(decode_worker_info(raw))
        except ValueError:
            continue
    return sorted(workers, key=lambda w: (w.start_time is None, w.start_time, w.task_id))
