"""The per-loop :class:`RespClient`, and which redis-py clients may use one (see :mod:`framework.transport.lean.paths`).

A :class:`RespClient` hands out one :class:`~framework.transport.lean.connection.RespConnection` per event loop, and
is the lean implementation of :class:`~framework.transport.commands.Commands` (scripts and batches of commands on
that connection). It is derived from a redis-py client that talks to a single server over plain TCP, TLS
(``rediss://``: :mod:`framework.transport.lean.tls`) or a Unix socket with RESP2 and no socket timeout, or to
a Sentinel-managed primary the same way (whose connections follow the primary:
:mod:`framework.transport.lean.sentinel`); for anything else (Cluster, custom connection classes, credential
providers) :func:`~framework.transport.lean.paths.fast_path_for` returns ``None`` and callers keep using
redis-py. Everything here is also importable from
:mod:`framework.transport.lean.connection`.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from redis.asyncio.connection import Connection, ConnectionPool, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import NoScriptError

from framework.transport.commands import rerun_missing

if TYPE_CHECKING:
    from collections.abc import Sequence

    from redis.asyncio import Redis

    from framework.transport.commands import Arg, Key, Script, ScriptCall
    from framework.transport.lean.connection import RespConnection

__all__ = ("RespClient", "connection_options")


class RespClient:
    """Hands out one :class:`RespConnection` per event loop (the last loop used), opened lazily.

    What a Cluster's :class:`~framework.transport.lean.cluster.ClusterRespClient` also offers
    (:meth:`connection_for`, :meth:`ready`, :meth:`resend`, :meth:`forget`) lets the prepared enqueue paths
    serve both.

    Args:
        address: ``(host, port)`` or a Unix socket path.
        **options: ``username``, ``password``, ``db``, ``connect_timeout`` (and ``follow``, ``tls``) for
        :class:`~framework.transport.lean.connection.RespConnection`.
    """

    def __init__(self, address: tuple[str, int] | str, **options: Any) -> None:
        self.address = address
        self._options = options
        self._conn: RespConnection | None = None

    @property
    def options(self) -> dict[str, Any]:
        """The connection options (credentials, database, protocol, ...) every connection of this client uses."""
        return dict(self._options)

    def connection_for(self, key: Key) -> RespConnection:
        """The connection for a command on ``key``: :meth:`connection` (a Cluster picks the key's primary)."""
        return self.connection()

    async def ready(self) -> None:
        """Nothing to prepare (a Cluster loads its slot map)."""

    async def resend(self, key: Key, command: bytes, refused: Exception) -> Any:
        """Only a Cluster redirects a command: ``refused`` is raised."""
        raise refused

    def forget(self) -> None:
        """Nothing to forget (a Cluster forgets its slot map after a node failed)."""

    def connection(self) -> RespConnection:
        """The connection for the running loop (a new one when the loop changed)."""
        conn = self._conn
        if conn is not None and not conn.closed:
            if conn.loop is None or conn.loop is asyncio.get_running_loop():
                return conn
            self._drop(conn)
        from framework.transport.lean.connection import RespConnection  # noqa: PLC0415 - framework.transport.lean.connection imports this module

        conn = self._conn = RespConnection(self.address, **self._options)
        return conn

    @staticmethod
    def _drop(conn: RespConnection) -> None:
        """Close a connection now, or on its loop when that loop runs in another thread."""
        loop = conn.loop
        if loop is not None and loop.is_running() and not loop.is_closed() and loop is not _running_loop():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(conn.close)
                return
        conn.close()

    async def execute(self, *args: Any) -> Any:
        """Run one command on this loop's connection."""
        return await self.connection().execute(*args)

    async def execute_many(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Run commands in one write; error replies come back as exception instances."""
        return await self.connection().execute_many(commands)

    async def evalsha(self, script: Script, keys: Sequence[Key], args: Sequence[Arg]) -> Any:
        """Run a Lua script on this loop's connection (EVALSHA, loading it once on NOSCRIPT)."""
        conn = self.connection()
        try:
            return await conn.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            await conn.execute("SCRIPT", "LOAD", script.source)
            return await conn.execute("EVALSHA", script.sha, len(keys), *keys, *args)

    async def evalsha_many(self, calls: Sequence[ScriptCall]) -> list[Any]:
        """Run many script calls in one write; see :meth:`~framework.transport.commands.Commands.evalsha_many`.

        Scripts this connection has not loaded yet are loaded ahead of the batch, in the same write, so a
        batch is never split (and reordered) by a NOSCRIPT answer.
        """
        conn = self.connection()
        load = {s.sha: s for s, _, _ in calls if s.sha not in conn.scripts}
        commands: list[tuple[Any, ...]] = [("SCRIPT", "LOAD", s.source) for s in load.values()]
        commands += [("EVALSHA", s.sha, len(k), *k, *a) for s, k, a in calls]
        results = (await conn.execute_many(commands))[len(load) :]
        conn.scripts.update(load)

        async def again(missing: list[int]) -> list[Any]:
            for script in {calls[i][0].sha: calls[i][0] for i in missing}.values():
                await conn.execute("SCRIPT", "LOAD", script.source)
            return await conn.execute_many(
                [("EVALSHA", calls[i][0].sha, len(calls[i][1]), *calls[i][1], *calls[i][2]) for i in missing]
            )

        return await rerun_missing(results, again)

    def close(self) -> None:
        """Close the connection (a later command opens a new one)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            self._drop(conn)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def connection_options(
    redis: Redis | Any, *, tls: bool = False
) -> tuple[tuple[str, int] | str, dict[str, Any], Any] | None:
    """(address, :class:`RespConnection` options, redis-py's ``protocol`` setting) of a client's server.

    None unless the client is redis-py's with a plain ``ConnectionPool`` of ``Connection`` (TCP) or
    ``UnixDomainSocketConnection`` (or, with ``tls``, ``SSLConnection``: the options then hold the
    :class:`~framework.transport.lean.tls.TlsSetup` redis-py's options make), no ``socket_timeout`` and no
    credential provider.
    """
    pool = getattr(redis, "connection_pool", None)
    if type(pool) is not ConnectionPool:
        return None
    kwargs: dict[str, Any] = pool.connection_kwargs
    if kwargs.get("socket_timeout") is not None or kwargs.get("credential_provider") is not None:
        return None
    options: dict[str, Any] = {
        "username": kwargs.get("username"),
        "password": kwargs.get("password"),
        "db": int(kwargs.get("db") or 0),
        "connect_timeout": kwargs.get("socket_connect_timeout") or 5.0,
    }
    if pool.connection_class is Connection:
        address: tuple[str, int] | str = (kwargs.get("host", "localhost"), int(kwargs.get("port", 6379)))
    elif pool.connection_class is UnixDomainSocketConnection:
        address = kwargs["path"]
    elif tls and pool.connection_class is SSLConnection:
        from framework.transport.lean.tls import tls_setup  # noqa: PLC0415 - only for a rediss:// client

        options["tls"] = tls_setup(kwargs)
        if options["tls"] is None:
            return None
        address = (kwargs.get("host", "localhost"), int(kwargs.get("port", 6379)))
    else:
        return None
    return address, options, kwargs.get("protocol")
