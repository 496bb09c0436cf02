"""Sentinel clients: redis-py's Sentinel-managed primary, made to follow the primary to its new server.

:mod:`framework.connection` opens them for ``redis+sentinel://`` URLs. redis-py asks the sentinels for the
primary's address whenever it opens a connection, and turns a READONLY reply (a demoted primary) into a
lost connection. But a pooled connection to a former primary that still answers stays with it: after a
plain ``SENTINEL FAILOVER`` the old primary keeps accepting writes for about ten seconds before the
sentinels demote it, and those writes are then lost. So the pools here ask the sentinels at most every
:data:`FOLLOW_EVERY` seconds, when they hand out a connection, and close the connections to a former
primary (idle ones at once, in-use ones when released). Closing a client also closes its connections to
the sentinels.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import redis as redis_sync
from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.exceptions import RedisError
from redis.sentinel import Sentinel as SyncSentinel
from redis.sentinel import SentinelConnectionPool as SyncSentinelConnectionPool

__all__ = ("FOLLOW_EVERY", "open_sentinel", "open_sync_sentinel", "sentinel_pool", "sentinel_setup")

FOLLOW_EVERY = 1.0
"""Seconds between a Sentinel client's checks of which server the sentinels name as the primary."""


class _FollowingPool(SentinelConnectionPool):
    """A Sentinel connection pool that follows the primary to its new server (see the module docstring)."""

    _checked = 0.0

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        now = time.monotonic()
        if now - self._checked >= FOLLOW_EVERY:
            self._checked = now
            with contextlib.suppress(RedisError, OSError):  # sentinels away: keep the primary we know
                await self.get_master_address()  # type: ignore[no-untyped-call]
        return await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]


class _SyncFollowingPool(SyncSentinelConnectionPool):
    """The blocking variant of :class:`_FollowingPool`."""

    _checked = 0.0

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        now = time.monotonic()
        if now - self._checked >= FOLLOW_EVERY:
            self._checked = now
            with contextlib.suppress(RedisError, OSError):
                self.get_master_address()  # type: ignore[no-untyped-call]
        return super().get_connection(*args, **kwargs)


class _SentinelPrimary(Redis):
    """The client of a Sentinel-managed primary: closing it closes its pool and its sentinel connections."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool=True)
        for sentinel in self.connection_pool.sentinel_manager.sentinels:  # type: ignore[attr-defined]
            await sentinel.aclose()


class _SyncSentinelPrimary(redis_sync.Redis):
    """The blocking variant of :class:`_SentinelPrimary`."""

    def close(self) -> None:
        super().close()
        self.connection_pool.disconnect()
        for sentinel in self.connection_pool.sentinel_manager.sentinels:  # type: ignore[attr-defined]
            sentinel.close()


def open_sentinel(
    hosts: list[tuple[str, int]],
    service: str,
    sentinel_kwargs: dict[str, Any],
    server: dict[str, Any],
    max_connections: int | None = None,
) -> Redis:
    """An asyncio client of the primary the sentinels at ``hosts`` name ``service`` (bytes replies).

    Args:
        hosts: the sentinels' addresses.
        service: the primary's name.
        sentinel_kwargs: connection options for the sentinels (password, timeouts).
        server: connection options for the data servers (username, password, db).
        max_connections: cap of the pool (default: unbounded).
    """
    sentinel = Sentinel(hosts, sentinel_kwargs=sentinel_kwargs, **server, socket_connect_timeout=5)  # type: ignore[no-untyped-call]
    kwargs: dict[str, Any] = {"decode_responses": False}
    if max_connections:
        kwargs["max_connections"] = max_connections
    master: Redis = sentinel.master_for(
        service, redis_class=_SentinelPrimary, connection_pool_class=_FollowingPool, **kwargs
    )
    return master


def open_sync_sentinel(
    hosts: list[tuple[str, int]], service: str, sentinel_kwargs: dict[str, Any], server: dict[str, Any], **timeouts: Any
) -> redis_sync.Redis:
    """The blocking variant of :func:`open_sentinel`."""
    sentinel = SyncSentinel(hosts, sentinel_kwargs=sentinel_kwargs, **server, **timeouts)  # type: ignore[no-untyped-call]
    master: redis_sync.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        service, redis_class=_SyncSentinelPrimary, connection_pool_class=_SyncFollowingPool
    )
    return master


def sentinel_pool(redis: Any) -> Any:
    """The Sentinel connection pool of ``redis``, or None when it is not a Sentinel-managed client."""
    pool = getattr(redis, "connection_pool", None)
    return pool if hasattr(pool, "sentinel_manager") else None


def sentinel_setup(pool: Any) -> tuple[list[tuple[str, int]], str, dict[str, Any], dict[str, Any]]:
    """(sentinel addresses, service name, sentinel options, data-server options) of a Sentinel pool."""
    manager = pool.sentinel_manager
    hosts = [
        (s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
        for s in manager.sentinels
    ]
    server = {k: pool.connection_kwargs[k] for k in ("username", "password", "db") if k in pool.connection_kwargs}
    return hosts, pool.service_name, dict(manager.sentinel_kwargs), server
