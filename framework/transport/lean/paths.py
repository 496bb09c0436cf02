"""Which lean client, if any, serves what a redis-py client serves: the choice the broker makes once.

A single server over TCP, TLS or a Unix socket gets a :class:`~framework.transport.lean.client.RespClient`; a
Sentinel-managed primary a :class:`~framework.transport.lean.sentinel.SentinelRespClient`, which follows
failovers; a Cluster a :class:`~framework.transport.lean.cluster.ClusterRespClient`, which routes by slot;
anything else (a Sentinel-managed primary or a Cluster over TLS, RESP3, timeouts, credential providers)
keeps to redis-py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from redis.asyncio.sentinel import SentinelConnectionPool

from framework.transport.cluster import is_cluster
from framework.transport.lean.client import RespClient, connection_options
from framework.transport.lean.sentinel import sentinel_fast_path

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from framework.transport.lean.cluster import ClusterRespClient

__all__ = ("fast_path_for",)


def fast_path_for(redis: Redis | Any) -> RespClient | ClusterRespClient | None:
    """A :class:`RespClient` to the server a redis-py asyncio client uses, or None when it does not qualify.

    Qualifies: a plain ``ConnectionPool`` of ``Connection`` (TCP), ``SSLConnection`` (TLS, verified as
    redis-py verifies: :mod:`framework.transport.lean.tls`) or ``UnixDomainSocketConnection``, RESP2
    (or the protocol left unset), no ``socket_timeout``, no credential provider; or a Sentinel-managed client
    of :func:`~framework.transport.sentinel.open_sentinel` with the same options for its data servers (a
    :class:`~framework.transport.lean.sentinel.SentinelRespClient`); or a Cluster client of
    :func:`~framework.transport.cluster.open_cluster` whose nodes qualify the same way (a
    :class:`~framework.transport.lean.cluster.ClusterRespClient`). Anything else keeps to redis-py.
    """
    if is_cluster(redis):
        from framework.transport.lean.cluster import cluster_fast_path  # noqa: PLC0415 - only for a Cluster

        return cluster_fast_path(redis)
    if isinstance(getattr(redis, "connection_pool", None), SentinelConnectionPool):
        return sentinel_fast_path(redis)
    found = connection_options(redis, tls=True)
    if found is None or found[2] not in (None, 2, "2"):
        return None
    return RespClient(found[0], **found[1])
