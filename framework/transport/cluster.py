"""Redis Cluster clients: redis-py's, made to fail like a single server's when a node goes away.

:mod:`framework.transport.connection` opens them for ``redis+cluster://`` URLs. What the framework relies on:

* Every key of a queue carries the queue's ``{hash tag}`` (:mod:`framework.protocol.keys`), so each Lua script runs
  in one slot, on one node; work that spans queues is done queue by queue, in pipelines redis-py splits by
  node. redis-py's Cluster pipeline refuses ``MGET``, a DEL of several keys and its ``evalsha`` method, so
  the code pipelines one GET/DEL per key and sends EVALSHA as a raw command.
* While a node fails over, redis-py closes every pooled connection to rebuild its slot map, including those
  other coroutines are using at that moment; they fail with an ``AttributeError`` inside redis-py or with
  :class:`SlotNotCoveredError`. :class:`ClusterClient` raises :class:`ConnectionError` instead, so every
  component's ordinary Redis fault handling (log once, back off, retry) covers a failover.
* PUBLISH (from a script on any primary) reaches the subscribers of every node, so a Pub/Sub listener may
  subscribe on any node (:func:`open_listener`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.exceptions import ConnectionError, RedisClusterException, SlotNotCoveredError  # noqa: A004

if TYPE_CHECKING:
    import redis as redis_sync

__all__ = ("ClusterClient", "cluster_auth", "is_cluster", "open_cluster", "open_listener", "open_sync_cluster")

_UNBOUNDED = 2**31


def is_cluster(redis: Any) -> bool:
    """Whether ``redis`` is a Redis Cluster client (asyncio or blocking)."""
    return hasattr(redis, "get_primaries") and hasattr(redis, "nodes_manager")


def _transient(exc: BaseException) -> bool:
    """Whether ``exc``, raised by redis-py's Cluster client, means "a node went away" rather than a bug."""
    if isinstance(exc, SlotNotCoveredError):
        return True
    if isinstance(exc, AttributeError):  # a connection without a socket, closed under its user
        tb, last = exc.__traceback__, None
        while tb is not None:
            last, tb = tb, tb.tb_next
        return last is not None and "redis" in Path(last.tb_frame.f_code.co_filename).parts
    # no node answers: RedisClusterException itself before redis-py 8.2, its RedisClusterUnreachableError since
    return isinstance(exc, RedisClusterException) and "cannot be connected" in str(exc)


def _lost(exc: BaseException) -> ConnectionError:
    return ConnectionError(f"Redis Cluster connection lost while the cluster changed: {type(exc).__name__}: {exc}")


class _ClusterPipeline(ClusterPipeline):
    """A Cluster pipeline whose failures during a failover are :class:`ConnectionError`."""

    async def initialize(self) -> ClusterPipeline:
        try:
            return await super().initialize()
        except (AttributeError, RedisClusterException) as exc:
            if _transient(exc):
                raise _lost(exc) from exc
            raise

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
        try:
            return await super().execute(raise_on_error, allow_redirections)
        except (AttributeError, RedisClusterException) as exc:
            if _transient(exc):
                raise _lost(exc) from exc
            raise


class ClusterClient(RedisCluster):
    """The asyncio Cluster client: a node going away is a :class:`ConnectionError`, as on a single server."""

    async def initialize(self, *args: Any, **kwargs: Any) -> RedisCluster:
        """Load the slot map (once), turning a failover's errors into :class:`ConnectionError`."""
        try:
            return await super().initialize(*args, **kwargs)
        except (AttributeError, RedisClusterException) as exc:
            if _transient(exc):
                raise _lost(exc) from exc
            raise

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        """Run a command on the node of its slot, turning a failover's errors into :class:`ConnectionError`."""
        try:
            return await super().execute_command(*args, **kwargs)
        except (AttributeError, RedisClusterException) as exc:
            if _transient(exc):
                raise _lost(exc) from exc
            raise

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> ClusterPipeline:
        """A pipeline (split by node when run) whose failover errors are :class:`ConnectionError`."""
        if shard_hint:
            raise RedisClusterException("shard_hint is deprecated in cluster mode")
        # built as redis-py builds its own ClusterPipeline (mypy sees an abstract attribute it sets later)
        return _ClusterPipeline(self, transaction)  # type: ignore[abstract]


def open_cluster(nodes: list[tuple[str, int]], auth: dict[str, Any], max_connections: int | None) -> ClusterClient:
    """An asyncio :class:`ClusterClient` from seed nodes (bytes replies; a pool per node, unbounded by default)."""
    return ClusterClient(
        startup_nodes=[ClusterNode(host, port) for host, port in nodes],
        **auth,
        decode_responses=False,
        max_connections=max_connections or _UNBOUNDED,
        socket_connect_timeout=5,
    )


def open_sync_cluster(nodes: list[tuple[str, int]], auth: dict[str, Any], **timeouts: Any) -> redis_sync.Redis:
    """A blocking :class:`redis.cluster.RedisCluster` (not a ``redis.Redis``, but with the same command methods)."""
    from redis.cluster import ClusterNode as SyncClusterNode  # noqa: PLC0415
    from redis.cluster import RedisCluster as SyncRedisCluster  # noqa: PLC0415

    startup = [SyncClusterNode(host, port) for host, port in nodes]  # type: ignore[no-untyped-call]
    client: redis_sync.Redis = SyncRedisCluster(startup_nodes=startup, **auth, **timeouts)  # type: ignore[assignment]
    return client


def cluster_auth(redis: Any) -> dict[str, Any]:
    """The user name and password a Cluster client connects with."""
    source = redis.get_connection_kwargs()
    return {k: source[k] for k in ("username", "password") if source.get(k)}


async def open_listener(redis: Any, attempt: int = 0) -> Redis | None:
    """A client of its own for a Pub/Sub listener on a Redis Cluster; None for other topologies (use ``redis``).

    PUBLISH on a Cluster reaches the subscribers of every node, so the listener may subscribe on any node;
    it gets a plain connection to node ``attempt`` (mod the node count), so that after a failure the next
    attempt tries the next node, and so that its connection is not one of the Cluster client's pooled ones
    (redis-py's Cluster pubsub borrows those, and a concurrent slot-map refresh may close it under it).
    The caller closes it.
    """
    if not is_cluster(redis):
        return None
    await redis.initialize()
    nodes = sorted(redis.get_nodes(), key=lambda n: n.name)
    node = nodes[attempt % len(nodes)]
    return Redis(
        host=node.host, port=node.port, **cluster_auth(redis), decode_responses=False, socket_connect_timeout=5
    )
