"""Opening Redis: the configured URL (single server, Cluster or Sentinel), or the embedded Valkey.

URL forms:

* ``redis://[user:password@]host:port/db``, ``rediss://...`` (TLS), ``unix:///path/to.sock`` - one server;
* ``redis+cluster://[user:password@]host1:port1,host2:port2`` - a Redis Cluster, given by seed nodes;
* ``redis+sentinel://[:password@]host1:26379,host2:26379/<primary name>[/db]`` - the primary that the
  sentinels name (the password is the data servers'; ``?sentinel_password=`` gives the sentinels' own).

Every Lua script touches the keys of one queue only, all under the queue's ``{hash tag}``, so each runs
on a single Cluster slot.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

from redis.asyncio import Redis
from redis.exceptions import AuthenticationError, ConnectionError, TimeoutError  # noqa: A004

from framework.errors import ConfigError, RedisUnavailable

if TYPE_CHECKING:
    from framework.settings import Settings

__all__ = ("check_connection", "open_redis", "redact_url", "resolve_redis_url")

_CLUSTER = "redis+cluster://"
_SENTINEL = "redis+sentinel://"


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0] if ":" in creds else ""
    return f"{scheme}://{user}:***@{host}" if user else f"{scheme}://***@{host}"


def resolve_redis_url(settings: Settings) -> str:
    """The Redis URL to use: ``settings.redis_url``, or the embedded Valkey in the data directory.

    The embedded server is started, or found running and reused, when no URL is configured.
    """
    if settings.redis_url:
        return settings.redis_url
    from framework.embedded import EmbeddedValkey  # noqa: PLC0415 - only without an external Redis

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


def _open_cluster(url: str, max_connections: int | None) -> Any:
    from redis.asyncio.cluster import ClusterNode, RedisCluster  # noqa: PLC0415

    user, password, hosts, _, _ = _split_multi_host(url, _CLUSTER)
    nodes = [ClusterNode(host, port) for host, port in _hosts(hosts, 6379)]
    if not nodes:
        raise ConfigError(f"setting redis_url={redact_url(url)!r} names no cluster seed node")
    return RedisCluster(
        startup_nodes=nodes,
        username=user,
        password=password,
        decode_responses=False,
        max_connections=max_connections or 100,
        socket_connect_timeout=5,
    )


def _open_sentinel(url: str, max_connections: int | None) -> Redis:
    from redis.asyncio.sentinel import Sentinel  # noqa: PLC0415

    user, password, hosts, path, query = _split_multi_host(url, _SENTINEL)
    parts = [p for p in path.split("/") if p]
    if not parts:
        raise ConfigError(f"setting redis_url={redact_url(url)!r} needs the primary's name: {_SENTINEL}host:26379/NAME")
    service, db = parts[0], int(parts[1]) if len(parts) > 1 else 0
    sentinel_kwargs: dict[str, Any] = {"socket_connect_timeout": 2, "socket_timeout": 2}
    if "sentinel_password" in query:
        sentinel_kwargs["password"] = query["sentinel_password"][0]
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        _hosts(hosts, 26379),
        sentinel_kwargs=sentinel_kwargs,
        username=user,
        password=password,
        db=db,
        socket_connect_timeout=5,
    )
    kwargs: dict[str, Any] = {"decode_responses": False}
    if max_connections:
        kwargs["max_connections"] = max_connections
    master: Redis = sentinel.master_for(service, **kwargs)
    return master


def open_redis(url: str, *, max_connections: int | None = None) -> Redis:
    """Create an asyncio Redis client for ``url`` (bytes replies; connections open lazily).

    Returns a :class:`redis.asyncio.RedisCluster` for ``redis+cluster://`` URLs (it offers the same
    command methods) and a Sentinel-managed client for ``redis+sentinel://`` URLs.
    """
    if url.startswith(_CLUSTER):
        cluster: Redis = _open_cluster(url, max_connections)
        return cluster
    if url.startswith(_SENTINEL):
        return _open_sentinel(url, max_connections)
    return Redis.from_url(
        url,
        decode_responses=False,
        max_connections=max_connections,
        socket_connect_timeout=5,
        health_check_interval=30,
    )


async def check_connection(redis: Redis, url: str) -> None:
    """PING Redis; raise :class:`RedisUnavailable` naming the URL (without its password) if it fails."""
    try:
        await redis.ping()
    except (ConnectionError, TimeoutError, AuthenticationError, OSError) as exc:
        raise RedisUnavailable(f"cannot reach Redis at {redact_url(url)}: {exc}") from exc
