"""Sentinel clients: redis-py's Sentinel-managed primary, made to follow the primary to its new server.

:mod:`framework.transport.connection` opens them for ``redis+sentinel://`` URLs. redis-py asks the sentinels for the
primary's address whenever it opens a connection, and turns a READONLY reply (a demoted primary) into a
lost connection. But a pooled connection to a former primary that still answers stays with it: after a
plain ``SENTINEL FAILOVER`` the old primary keeps accepting writes for about ten seconds before the
sentinels demote it, and those writes are then lost. So the pools here ask the sentinels at most every
:data:`FOLLOW_EVERY` seconds, when they hand out a connection, and close the connections to a former
primary (idle ones at once, in-use ones when released). Closing a client also closes its connections to
the sentinels.

The hot paths (enqueue, dequeue, acknowledge, the worker's subscriber) do not use these pools: they run on the
lean connection (:mod:`framework.transport.lean.sentinel`), which asks the same sentinel manager and follows
the primary the same way.

A client keeps the options it was opened with (:class:`SentinelSetup`), so that a blocking twin for the
worker's heartbeat thread is built from those, never from what redis-py keeps in its pools (which holds
asyncio-only objects, such as the retry policy, since redis-py 8.2).
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, NamedTuple

import redis as redis_sync
from redis.asyncio import Redis
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.sentinel import MasterNotFoundError as SyncMasterNotFoundError
from redis.sentinel import Sentinel as SyncSentinel
from redis.sentinel import SentinelConnectionPool as SyncSentinelConnectionPool

__all__ = (
    "FOLLOW_EVERY",
    "SentinelSetup",
    "open_sentinel",
    "open_sync_sentinel",
    "sentinel_setup",
    "sync_sentinel_manager",
)

FOLLOW_EVERY = 1.0
"""Seconds between a Sentinel client's checks of which server the sentinels name as the primary."""

_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)
"""What a primary search may meet while the sentinels are away (no sentinel answered, or none names a primary)."""


class SentinelSetup(NamedTuple):
    """The options a Sentinel client was opened with (plain values only, so either client kind can use them)."""

    hosts: list[tuple[str, int]]
    """The sentinels' addresses."""
    service: str
    """The primary's name."""
    sentinel_kwargs: dict[str, Any]
    """Connection options for the sentinels (password, timeouts)."""
    server: dict[str, Any]
    """Connection options for the data servers (username, password, db)."""


def _found(manager: Any, sentinel: Any, masters: Any, service: str) -> tuple[str, int] | None:
    """The primary's address if ``sentinel`` names a healthy one, moving it to the front of the list."""
    state = masters.get(service)
    if not state or not manager.check_master_state(state, service):
        return None
    sentinels = manager.sentinels
    i = sentinels.index(sentinel)  # where it is now: another search may have reordered the list meanwhile
    sentinels[0], sentinels[i] = sentinel, sentinels[0]
    return state["ip"], state["port"]


def _not_found(kind: type[RedisConnectionError], service: str, errors: list[str]) -> RedisConnectionError:
    detail = f" : {', '.join(errors)}" if errors else ""
    return kind(f"No master found for {service!r}{detail}")


class _Sentinel(Sentinel):
    """redis-py's Sentinel manager, safe for concurrent searches (see the module docstring)."""

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        errors: list[str] = []
        for sentinel in list(self.sentinels):
            try:
                masters = await sentinel.sentinel_masters()
            except (RedisConnectionError, RedisTimeoutError) as exc:
                errors.append(f"{sentinel} - {exc!r}")
                continue
            found = _found(self, sentinel, masters, service_name)
            if found is not None:
                return found
        raise _not_found(MasterNotFoundError, service_name, errors)


class _SyncSentinel(SyncSentinel):
    """The blocking variant of :class:`_Sentinel` (threads sharing one client search concurrently too)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reorder = threading.Lock()

    def discover_master(self, service_name: str) -> tuple[str, int]:
        errors: list[str] = []
        for sentinel in list(self.sentinels):
            try:
                masters = sentinel.sentinel_masters()
            except (RedisConnectionError, RedisTimeoutError) as exc:
                errors.append(f"{sentinel} - {exc!r}")
                continue
            with self._reorder:
                found = _found(self, sentinel, masters, service_name)
            if found is not None:
                return found
        raise _not_found(SyncMasterNotFoundError, service_name, errors)


class _FollowingPool(SentinelConnectionPool):
    """A Sentinel connection pool that follows the primary to its new server (see the module docstring)."""

    _checked = 0.0

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        now = time.monotonic()
        if now - self._checked >= FOLLOW_EVERY:
            self._checked = now
            with contextlib.suppress(*_UNREACHABLE):  # sentinels away: keep the primary; anything else is raised
                await self.get_master_address()  # type: ignore[no-untyped-call]
        return await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]


class _SyncFollowingPool(SyncSentinelConnectionPool):
    """The blocking variant of :class:`_FollowingPool`."""

    _checked = 0.0

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        now = time.monotonic()
        if now - self._checked >= FOLLOW_EVERY:
            self._checked = now
            with contextlib.suppress(*_UNREACHABLE):
                self.get_master_address()  # type: ignore[no-untyped-call]
        return super().get_connection(*args, **kwargs)


class _SentinelPrimary(Redis):
    """The client of a Sentinel-managed primary: closing it closes its pool and its sentinel connections."""

    setup: SentinelSetup

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        try:
            await super().aclose(close_connection_pool=True)
        finally:
            for sentinel in self.connection_pool.sentinel_manager.sentinels:  # type: ignore[attr-defined]
                await sentinel.aclose()


class _SyncSentinelPrimary(redis_sync.Redis):
    """The blocking variant of :class:`_SentinelPrimary`."""

    setup: SentinelSetup

    def close(self) -> None:
        try:
            super().close()
            self.connection_pool.disconnect()
        finally:
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
    sentinel = _Sentinel(hosts, sentinel_kwargs=dict(sentinel_kwargs), **server, socket_connect_timeout=5)
    kwargs: dict[str, Any] = {"decode_responses": False}
    if max_connections:
        kwargs["max_connections"] = max_connections
    master: _SentinelPrimary = sentinel.master_for(
        service, redis_class=_SentinelPrimary, connection_pool_class=_FollowingPool, **kwargs
    )
    master.setup = SentinelSetup(list(hosts), service, dict(sentinel_kwargs), dict(server))
    return master


def open_sync_sentinel(
    hosts: list[tuple[str, int]], service: str, sentinel_kwargs: dict[str, Any], server: dict[str, Any], **timeouts: Any
) -> redis_sync.Redis:
    """The blocking variant of :func:`open_sentinel`."""
    sentinel = _SyncSentinel(hosts, sentinel_kwargs=dict(sentinel_kwargs), **server, **timeouts)
    master: _SyncSentinelPrimary = sentinel.master_for(
        service, redis_class=_SyncSentinelPrimary, connection_pool_class=_SyncFollowingPool
    )
    master.setup = SentinelSetup(list(hosts), service, dict(sentinel_kwargs), dict(server))
    return master


def sync_sentinel_manager(setup: SentinelSetup) -> SyncSentinel:
    """A blocking Sentinel manager for the sentinels of ``setup`` (safe for concurrent searches).

    Only its ``discover_master`` is meant for use; close its ``sentinels`` when done.
    """
    return _SyncSentinel(list(setup.hosts), sentinel_kwargs=dict(setup.sentinel_kwargs), **setup.server)


def sentinel_setup(redis: Any) -> SentinelSetup | None:
    """The options a Sentinel-managed client was opened with, or None when ``redis`` is not one of ours."""
    if isinstance(redis, (_SentinelPrimary, _SyncSentinelPrimary)):
        return redis.setup
    return None
