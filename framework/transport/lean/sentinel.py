"""The lean client of a Sentinel-managed primary: the fast path, following the primary to its new server.

:func:`~framework.transport.lean.paths.fast_path_for` gives a client opened by
:func:`~framework.transport.sentinel.open_sentinel` a :class:`SentinelRespClient`. Its connections (the event
loop's, the worker's subscriber, a synchronous client's blocking ones) carry a :class:`Follow`, which they ask
for the primary's address when they connect, as redis-py's Sentinel-managed connections do. After that:

* every :data:`~framework.transport.sentinel.FOLLOW_EVERY` seconds an event-loop connection asks again, and
  when the sentinels name another server it fails with ``ConnectionError`` (commands in flight with it) and
  the next command connects to the new primary. That catches a planned failover, after which the old primary
  takes (and loses) writes for about ten seconds. A blocking connection asks before a command once that
  long has passed since it last asked.
* a ``READONLY`` reply (the server is a replica now) fails the connection the same way, and the command
  that got it raises ``ConnectionError`` (redis-py's Sentinel connections turn it into one too).

The sentinels are asked through redis-py's Sentinel manager: the asyncio client's own for the event-loop
connections, a blocking one built from the client's :class:`~framework.transport.sentinel.SentinelSetup`
for the blocking connections (made on first use, closed with the client).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from redis.asyncio.sentinel import SentinelManagedConnection

from framework.transport.lean.client import RespClient
from framework.transport.sentinel import FOLLOW_EVERY, sentinel_setup, sync_sentinel_manager

if TYPE_CHECKING:
    from framework.transport.sentinel import SentinelSetup

__all__ = ("Follow", "SentinelRespClient", "sentinel_fast_path")


class Follow:
    """Where a Sentinel-managed primary is: asks the sentinels, and remembers the last answer.

    Args:
        manager: redis-py's asyncio Sentinel manager (``discover_master``).
        setup: the options the client was opened with (for the blocking manager).
        every: seconds between an open connection's checks.
    """

    def __init__(self, manager: Any, setup: SentinelSetup, every: float = FOLLOW_EVERY) -> None:
        self.service = setup.service
        self.every = every
        self.address: tuple[str, int] = (setup.service, 0)
        """The last address the sentinels gave (the service's name and port 0 before the first answer)."""
        self._manager = manager
        self._setup = setup
        self._sync: Any = None
        self._lock = threading.Lock()

    async def locate(self) -> tuple[str, int]:
        """Ask the sentinels for the primary's address (``MasterNotFoundError``, a ``ConnectionError``, if none)."""
        host, port = await self._manager.discover_master(self.service)
        self.address = (str(host), int(port))
        return self.address

    def locate_blocking(self) -> tuple[str, int]:
        """:meth:`locate` for blocking callers (any thread)."""
        with self._lock:
            if self._sync is None:
                self._sync = sync_sentinel_manager(self._setup)
            manager = self._sync
        host, port = manager.discover_master(self.service)
        self.address = (str(host), int(port))
        return self.address

    def close(self) -> None:
        """Close the blocking manager's connections to the sentinels (a later call opens new ones)."""
        with self._lock:
            manager, self._sync = self._sync, None
        if manager is not None:
            for sentinel in manager.sentinels:
                sentinel.close()


class SentinelRespClient(RespClient):
    """A :class:`RespClient` whose connections follow a Sentinel-managed primary (see the module docstring).

    Args:
        follow: where the primary is.
        **options: as for :class:`RespClient`.
    """

    def __init__(self, follow: Follow, **options: Any) -> None:
        super().__init__(follow.address, follow=follow, **options)
        self.follow = follow

    @property
    def address(self) -> tuple[str, int]:
        """The primary's last known address."""
        return self.follow.address

    @address.setter
    def address(self, value: tuple[str, int] | str) -> None:
        """Ignored: the address is the sentinels' to tell."""

    def close(self) -> None:
        """Close the connection and the blocking connections to the sentinels (later commands open new ones)."""
        super().close()
        self.follow.close()


def sentinel_fast_path(redis: Any) -> SentinelRespClient | None:
    """The lean client for a client of :func:`~framework.transport.sentinel.open_sentinel`, or None.

    None for other Sentinel clients, and when the data servers' connections use TLS, RESP3, a socket
    timeout or a credential provider (as :func:`~framework.transport.lean.paths.fast_path_for`).
    """
    setup = sentinel_setup(redis)
    pool = getattr(redis, "connection_pool", None)
    manager = getattr(pool, "sentinel_manager", None)
    if setup is None or pool is None or manager is None:
        return None
    kwargs: dict[str, Any] = pool.connection_kwargs
    if (
        kwargs.get("socket_timeout") is not None
        or kwargs.get("credential_provider") is not None
        or kwargs.get("protocol") not in (None, 2, "2")
        or pool.connection_class is not SentinelManagedConnection
    ):
        return None
    return SentinelRespClient(
        Follow(manager, setup),
        username=kwargs.get("username"),
        password=kwargs.get("password"),
        db=int(kwargs.get("db") or 0),
        connect_timeout=kwargs.get("socket_connect_timeout") or 5.0,
    )
