"""Opening Redis: the configured URL (single server, Cluster or Sentinel), or the embedded Valkey.

URL forms:

* ``redis://[user:password@]host:port/db``, ``rediss://...`` (TLS), ``unix:///path/to.sock`` - one server;
* ``redis+cluster://[user:password@]host1:port1,host2:port2`` - a Redis Cluster, given by seed nodes;
* ``redis+sentinel://[:password@]host1:26379,host2:26379/<primary name>[/db]`` - the primary that the
  sentinels name (the password is the data servers'; ``?sentinel_password=`` gives the sentinels' own).

Every Lua script touches the keys of one queue only, all under the queue's ``{hash tag}``, so each runs
on a single Cluster slot; work that spans queues is done queue by queue.

Failover: a Cluster client refreshes its slot map on MOVED and connection errors, and reports a node
going away as :class:`ConnectionError` (:mod:`framework.transport.cluster`; the hot paths' lean connections
to the primaries do the same: :mod:`framework.transport.lean.cluster`); a Sentinel-managed client follows the
primary to its new server within a second (:mod:`framework.transport.sentinel`). The worker's heartbeat thread uses a
blocking client built the same way (:func:`open_sync_redis`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

import redis as redis_sync
from redis.asyncio import Redis
from redis.exceptions import AuthenticationError, ConnectionError, TimeoutError  # noqa: A004

from framework.errors import ConfigError, RedisUnavailable
from framework.settings import redact_url
from framework.transport.cluster import cluster_auth, is_cluster, open_cluster, open_listener, open_sync_cluster
from framework.transport.lean.fastredis import FastRedis
from framework.transport.sentinel import open_sentinel, open_sync_sentinel, sentinel_setup

if TYPE_CHECKING:
    from framework.settings import Settings

__all__ = (
    "check_connection",
    "describe_redis",
    "is_cluster",
    "open_listener",
    "open_redis",
    "open_sync_redis",
    "redact_url",
    "resolve_redis_url",
    "sync_redis_like",
)

_CLUSTER = "redis+cluster://"
_SENTINEL = "redis+sentinel://"
_SYNC_KEYS = ("host", "port", "db", "username", "password", "client_name", "protocol", "path")
_SYNC_TIMEOUTS: dict[str, Any] = {"socket_timeout": 5.0, "socket_connect_timeout": 5.0}


def resolve_redis_url(settings: Settings) -> str:
    """The Redis URL to use: ``settings.redis_url``, or the embedded Valkey in the data directory.

    The embedded server is started, or found running and reused, when no URL is configured.
    """
    if settings.redis_url:
        return settings.redis_url
    from framework.embedded.server import EmbeddedValkey  # noqa: PLC0415 - only without an external Redis

    return EmbeddedValkey(settings.data_path / "valkey").ensure()


def _hosts(netloc: str, default_port: int) -> list[tuple[str, int]]:
    out = []
    for part in filter(None, netloc.split(",")):
        host, _, port = part.rpartition(":") if ":" in part else (part, "", str(default_port))
        out.append((host.strip("[]"), int(port)))
    return out


def _split_multi_host(url: str, scheme: str) -> tuple[str | None, str | None, str, str, dict[str, list[str]]]:
    rest = url[len(scheme) :]
    rest, _, query = rest.partition("?")
    creds, _, hosts_and_path = rest.rpartition("@")
    hosts, _, path = hosts_and_path.partition("/")
    user = password = None
    if creds:
        user_part, _, pass_part = creds.partition(":")
        user = unquote(user_part) or None
        password = unquote(pass_part) or None
    return user, password, hosts, path, parse_qs(query)


def _cluster_args(url: str) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """(seed nodes, credentials) of a ``redis+cluster://`` URL."""
    user, password, hosts, _, _ = _split_multi_host(url, _CLUSTER)
    nodes = _hosts(hosts, 6379)
    if not nodes:
        raise ConfigError(f"setting redis_url={redact_url(url)!r} names no cluster seed node")
    return nodes, {"username": user, "password": password}


def _sentinel_args(url: str) -> tuple[list[tuple[str, int]], str, dict[str, Any], dict[str, Any]]:
    """(sentinel addresses, service name, sentinel kwargs, data-server kwargs) of a ``redis+sentinel://`` URL."""
    user, password, hosts, path, query = _split_multi_host(url, _SENTINEL)
    parts = [p for p in path.split("/") if p]
    if not parts:
        raise ConfigError(f"setting redis_url={redact_url(url)!r} needs the primary's name: {_SENTINEL}host:26379/NAME")
    sentinel_kwargs: dict[str, Any] = {"socket_connect_timeout": 2, "socket_timeout": 2}
    if "sentinel_password" in query:
        sentinel_kwargs["password"] = query["sentinel_password"][0]
    server = {"username": user, "password": password, "db": int(parts[1]) if len(parts) > 1 else 0}
    return _hosts(hosts, 26379), parts[0], sentinel_kwargs, server


def open_redis(url: str, *, max_connections: int | None = None) -> Redis:
    """Create an asyncio Redis client for ``url`` (bytes replies; connections open lazily).

    Returns a :class:`~framework.transport.cluster.ClusterClient` (a ``redis.asyncio.RedisCluster``, with the same
    command methods) for ``redis+cluster://`` URLs and a Sentinel-managed client for ``redis+sentinel://``
    URLs. ``max_connections`` caps each pool (per node on a Cluster); a full pool raises, it does not wait.
    A ``redis://`` or ``unix://`` URL gives a :class:`~framework.transport.lean.fastredis.FastRedis`:
    redis-py's client, with its ordinary commands on one auto-pipelining connection (the pool keeps
    blocking and stateful commands).
    """
    if url.startswith(_CLUSTER):
        cluster: Redis = open_cluster(*_cluster_args(url), max_connections)  # type: ignore[assignment]
        return cluster
    if url.startswith(_SENTINEL):
        return open_sentinel(*_sentinel_args(url), max_connections)
    client_class = FastRedis if url.startswith(("redis://", "unix://")) else Redis
    return client_class.from_url(
        url,
        decode_responses=False,
        max_connections=max_connections,
        socket_connect_timeout=5,
        health_check_interval=30,
    )


def describe_redis(redis: Any) -> str:
    """Where ``redis`` connects, as a URL without password (for error messages)."""
    if is_cluster(redis):
        return _CLUSTER + ",".join(f"{n.host}:{n.port}" for n in redis.get_nodes())
    setup = sentinel_setup(redis)
    if setup is not None:
        return _SENTINEL + ",".join(f"{h}:{p}" for h, p in setup.hosts) + f"/{setup.service}"
    kwargs = redis.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    return redact_url(f"redis://{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}")


def open_sync_redis(url: str) -> redis_sync.Redis:
    """A blocking client for ``url`` (any of the three forms), with 5 s socket timeouts.

    For threads that must not depend on the event loop (the worker's heartbeat). A ``redis+cluster://``
    URL gives a :class:`redis.cluster.RedisCluster` (same command methods; pipelines are split by node,
    and a pipelined DEL takes one key).
    """
    if url.startswith(_CLUSTER):
        return open_sync_cluster(*_cluster_args(url), **_SYNC_TIMEOUTS)
    if url.startswith(_SENTINEL):
        return open_sync_sentinel(*_sentinel_args(url), **_SYNC_TIMEOUTS)
    return redis_sync.Redis.from_url(url, **_SYNC_TIMEOUTS)


def sync_redis_like(redis: Any) -> redis_sync.Redis:
    """A blocking client for the server (or Cluster, or Sentinel primary) an asyncio client ``redis`` uses."""
    if is_cluster(redis):
        return open_sync_cluster([(n.host, n.port) for n in redis.get_nodes()], cluster_auth(redis), **_SYNC_TIMEOUTS)
    setup = sentinel_setup(redis)
    if setup is not None:
        return open_sync_sentinel(*setup, **_SYNC_TIMEOUTS)
    source = redis.connection_pool.connection_kwargs
    kwargs = {k: source[k] for k in _SYNC_KEYS if k in source}
    conn_class: Any = redis_sync.connection.Connection
    if "path" in kwargs:
        conn_class = redis_sync.connection.UnixDomainSocketConnection
        kwargs.pop("host", None)
        kwargs.pop("port", None)
    elif redis.connection_pool.connection_class.__name__ == "SSLConnection" or any(
        k.startswith("ssl_") for k in source
    ):
        conn_class = redis_sync.connection.SSLConnection
        kwargs.update({k: v for k, v in source.items() if k.startswith("ssl_")})
    pool = redis_sync.ConnectionPool(connection_class=conn_class, **kwargs, **_SYNC_TIMEOUTS)
    return redis_sync.Redis(connection_pool=pool)


async def check_connection(redis: Redis, url: str) -> None:
    """PING Redis; raise :class:`RedisUnavailable` naming the URL (without its password) if it fails."""
    try:
        await redis.ping()
    except (ConnectionError, TimeoutError, AuthenticationError, OSError) as exc:
        raise RedisUnavailable(f"cannot reach Redis at {redact_url(url)}: {exc}") from exc
