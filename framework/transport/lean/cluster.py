"""The lean client of a Redis Cluster: one lean connection per primary, each command sent to its slot's primary.

:func:`~framework.transport.lean.paths.fast_path_for` gives a Cluster client opened by
:func:`~framework.transport.cluster.open_cluster` a :class:`ClusterRespClient` (RESP2, no TLS, no socket
timeout, no credential provider; anything else keeps to redis-py). Every key the framework touches carries a
queue's ``{hash tag}``, so each script call and each command has one slot, and the client sends it to the
primary that serves that slot, on that primary's own
:class:`~framework.transport.lean.client.RespClient` (one auto-pipelining connection per event loop).
Batches (:meth:`ClusterRespClient.evalsha_many`, :meth:`ClusterRespClient.execute_many`) are split by
primary and sent to all of them at once; the replies come back in the caller's order.

The slot map comes from ``CLUSTER SLOTS``, asked of any primary it knows (the seed nodes first), when the
first command needs it and again after the cluster answers a command with a redirection or a connection
fails:

* ``MOVED`` (the slot has another primary now): the map is loaded again and the command sent to the new
  primary (the command did not run where it was refused);
* ``ASK`` (the slot is being migrated): the command goes once to the node named, after ``ASKING``;
* ``TRYAGAIN`` / ``CLUSTERDOWN`` (a migration or a failover in progress): sent again after a short pause,
  then raised as ``ConnectionError``;
* ``NOSCRIPT`` from the node an ``ASK`` named: the script is loaded on that node and the call sent there
  again (after ``ASKING``);
* a connection that fails or a connect that times out (a primary died, or its host is down):
  ``ConnectionError``, as on a single server, so the callers' ordinary fault handling (log once, back off,
  retry) covers a failover; the next command loads the map again and finds the replica that took over.

A node asked for the map that cannot be reached, or does not answer within the connect timeout, is
passed over for the next one. Callers that need the map at the same time share one load, which runs in a
task of its own: a caller cancelled while it waits (a timeout around its command) does not stop the load
the others wait for.

Pub/Sub is not here: the worker's wake-ups on a Cluster listen through
:func:`~framework.transport.cluster.open_listener`, and the handoff of a task to an idle worker (which
needs the enqueue and the waiting worker on one server) is off on a Cluster.
"""

from __future__ import annotations

import asyncio
from binascii import crc_hqx
from typing import TYPE_CHECKING, Any

import hiredis
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ConnectionError,  # noqa: A004
    MovedError,
    TryAgainError,
)
from redis.exceptions import TimeoutError as RedisTimeoutError

from framework.transport.commands import rerun_missing
from framework.transport.lean.client import RespClient
from framework.transport.lean.errors import REDIRECTIONS, ReplyError, error_of

if TYPE_CHECKING:
    from collections.abc import Sequence

    from framework.transport.commands import Arg, Key, Script, ScriptCall
    from framework.transport.lean.connection import RespConnection

__all__ = ("ClusterRespClient", "cluster_fast_path", "slot_of")

SLOTS = 16384
REDIRECTS = 5
"""How many redirections (MOVED, ASK, TRYAGAIN) one command follows before it fails."""
PAUSE = 0.05
"""Seconds to wait before sending again a command refused with TRYAGAIN or CLUSTERDOWN."""
PROBE_TIMEOUT = 5.0
"""Seconds a node asked for the slot map has to answer, when the options set no ``connect_timeout``."""

LOST = (ConnectionError, RedisTimeoutError, OSError)
"""What a node that cannot be reached raises: a failed connection, or a connect that timed out (redis-py's
``TimeoutError`` is not the builtin one, which is an ``OSError``)."""

Address = tuple[str, int]


_ASKING = b"*1\r\n$6\r\nASKING\r\n"


def _redirection(reply: Any) -> Exception | None:
    """The Cluster's redirection (MOVED, ASK, TRYAGAIN, CLUSTERDOWN) an error reply is, or None."""
    if type(reply) is not ReplyError:
        return None
    refused = error_of(reply)
    return refused if isinstance(refused, REDIRECTIONS) else None


def _retrieved(task: asyncio.Task[None]) -> None:
    """Mark a slot map load's failure as seen: every caller waiting on it may have been cancelled."""
    if not task.cancelled():
        task.exception()


def slot_of(key: str | bytes) -> int:
    """The cluster slot of ``key``: CRC16 of its ``{hash tag}`` (or of the whole key), mod 16384."""
    raw = key.encode() if isinstance(key, str) else key
    start = raw.find(b"{")
    if start > -1:
        end = raw.find(b"}", start + 1)
        if end > start + 1:
            raw = raw[start + 1 : end]
    return crc_hqx(raw, 0) % SLOTS


class ClusterRespClient:
    """Lean connections to every primary of a Cluster, commands routed by slot; see the module docstring.

    Implements :class:`~framework.transport.commands.Commands`. A batch is split by primary, and a batch's
    commands to different primaries do not keep their order relative to each other (each primary's keep theirs).

    Args:
        seeds: ``(host, port)`` of nodes to ask for the slot map first.
        **options: ``username``, ``password``, ``connect_timeout`` for each node's
            :class:`~framework.transport.lean.connection.RespConnection`.
    """

    def __init__(self, seeds: Sequence[Address], **options: Any) -> None:
        self.seeds: list[Address] = list(seeds)
        self._options = options
        self._owner: list[Address | None] = [None] * SLOTS
        self._nodes: dict[Address, RespClient] = {}
        self._mapped = False
        self._loading: asyncio.Task[None] | None = None
        self.reloads = 0
        """Times the slot map was loaded (for tests and stats)."""

    @property
    def options(self) -> dict[str, Any]:
        """The connection options every node's connection uses."""
        return dict(self._options)

    @property
    def primaries(self) -> list[Address]:
        """The primaries of the current slot map (empty before it is loaded)."""
        return list(self._nodes)

    # -- the slot map -------------------------------------------------------------------------------

    def _address(self, key: Key) -> Address:
        """The primary serving ``key``'s slot (the first seed before the map is loaded)."""
        return self._owner[slot_of(key)] or self.seeds[0]

    def node(self, key: Key) -> RespClient:
        """The client of the primary serving ``key``'s slot (the first seed before the map is loaded)."""
        return self._client(self._address(key))

    def _client(self, address: Address) -> RespClient:
        client = self._nodes.get(address)
        if client is None:
            client = self._nodes[address] = RespClient(address, **self._options)
        return client

    def owner(self, key: Key) -> Address | None:
        """The address of the primary serving ``key``, or None before the slot map is loaded (any thread)."""
        return self._owner[slot_of(key)] if self._mapped else None

    def connection_for(self, key: Key) -> RespConnection:
        """The running loop's connection to the primary serving ``key`` (call :meth:`ready` first)."""
        return self.node(key).connection()

    async def ready(self) -> None:
        """Load the slot map unless it is loaded."""
        if not self._mapped:
            await self.reload()

    async def reload(self) -> None:
        """Load the slot map from the first node that answers (concurrent callers share one load).

        The load runs in a task of its own, shielded from each caller: a caller cancelled while it waits
        leaves the load running for the others (it is bounded by the nodes' timeouts, and its map serves the
        next command anyway).
        """
        loop = asyncio.get_running_loop()
        loading = self._loading
        if loading is None or loading.done() or loading.get_loop() is not loop:
            loading = self._loading = loop.create_task(self._load())
            loading.add_done_callback(_retrieved)
        try:
            await asyncio.shield(loading)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if loading.cancelled() and current is not None and not current.cancelling():
                # the load itself was cancelled (its loop shutting down), not this caller
                raise ConnectionError("slot map load interrupted") from None
            raise

    async def _load(self) -> None:
        known = [a for a in self._nodes if a not in self.seeds]
        errors: list[str] = []
        wait = self._options.get("connect_timeout") or PROBE_TIMEOUT
        for address in [*self.seeds, *known]:
            probe = RespClient(address, **self._options)
            try:
                conn = probe.connection()
                async with asyncio.timeout(wait):
                    await conn.open()
                async with asyncio.timeout(wait):  # a node that accepts but never answers is passed over
                    slots = await conn.execute("CLUSTER", "SLOTS")
            except LOST as exc:
                errors.append(f"{address[0]}:{address[1]}: {str(exc) or f'no answer within {wait} s'}")
                continue
            finally:
                probe.close()
            if slots:
                self._apply(slots, address)
                return
            errors.append(f"{address[0]}:{address[1]}: no slots assigned")
        self._mapped = False
        raise ConnectionError("no Redis Cluster node gave a slot map: " + "; ".join(errors))

    def _apply(self, slots: list[Any], asked: Address) -> None:
        owner: list[Address | None] = [None] * SLOTS
        for entry in slots:
            start, end, primary = int(entry[0]), int(entry[1]), entry[2]
            host = primary[0].decode() if isinstance(primary[0], bytes) else str(primary[0])
            address = (host if host and host != "?" else asked[0], int(primary[1]))
            owner[start : end + 1] = [address] * (end - start + 1)
        in_use = set(owner) - {None}
        for address in [a for a in self._nodes if a not in in_use]:
            self._nodes.pop(address).close()
        self._owner = owner
        self._mapped = True
        self.reloads += 1

    def forget(self) -> None:
        """The slot map may be out of date (a node failed): the next :meth:`ready` or command loads it.

        For callers that write on :meth:`connection_for`'s connection themselves (the prepared and bulk
        enqueues), whose failed connection this client does not see. Cheap: nothing is closed or sent.
        """
        self._mapped = False

    def _lost(self, address: Address, exc: BaseException) -> ConnectionError:
        """A node's connection failed: the map is forgotten, and the caller raises this."""
        self.forget()
        return ConnectionError(f"Redis Cluster node {address[0]}:{address[1]}: {exc}")

    # -- Commands -----------------------------------------------------------------------------------

    async def evalsha(self, script: Script, keys: Sequence[Key], args: Sequence[Arg]) -> Any:
        """Run a Lua script on its first key's primary (EVALSHA, loading it once on NOSCRIPT)."""
        if not self._mapped:
            await self.reload()
        address = self._address(keys[0])
        try:
            return await self._client(address).evalsha(script, keys, args)
        except REDIRECTIONS:
            pass  # the general path follows the redirection
        except LOST as exc:
            raise self._lost(address, exc) from exc
        reply = (await self.evalsha_many([(script, keys, args)]))[0]
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def evalsha_many(self, calls: Sequence[ScriptCall]) -> list[Any]:
        """Script calls split by primary, sent to all at once; see :meth:`Commands.evalsha_many`."""
        commands = [("EVALSHA", s.sha, len(k), *k, *a) for s, k, a in calls]
        asked: dict[int, Address] = {}
        replies = await self._commands(commands, [k[0] for _, k, _ in calls], answered_after_ask=asked)

        async def again(indexes: list[int]) -> list[Any]:
            # SCRIPT LOAD, then the call, on the node that answered NOSCRIPT: the node an ASK named (each
            # after ASKING, which SCRIPT LOAD ignores) or the slot's primary
            pairs: list[tuple[Any, ...]] = []
            keys: list[Key] = []
            asking: dict[int, Address] = {}
            for i in indexes:
                script, k, _ = calls[i]
                if i in asked:
                    asking[len(pairs)] = asking[len(pairs) + 1] = asked[i]
                pairs += [("SCRIPT", "LOAD", script.source), commands[i]]
                keys += [k[0], k[0]]
            return (await self._commands(pairs, keys, asking))[1::2]

        return await rerun_missing(replies, again)

    async def execute_many(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Plain commands, each sent to the primary of its first argument (its key or channel); see there."""
        return await self._commands(commands, [c[1] for c in commands])

    async def execute(self, *args: Any) -> Any:
        """One command, sent to the primary of its first argument (its key)."""
        reply = (await self._commands([args], [args[1]]))[0]
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def resend(self, key: Key, command: bytes, refused: Exception) -> Any:
        """Send a packed command again after a redirection ``refused`` it (the map reloaded first on MOVED).

        For the prepared enqueue, which writes its packed command on :meth:`connection_for`'s connection:
        returns the reply as hiredis parsed it (an error as a :class:`ReplyError`); raises ``ConnectionError``
        when the cluster keeps redirecting it.
        """
        asking = {0: refused.node_addr} if type(refused) is AskError else {}
        if not asking:
            if isinstance(refused, (TryAgainError, ClusterDownError)):
                await asyncio.sleep(PAUSE)
            await self.reload()
        reply = (await self._routed([command], [key], asking))[0]
        if isinstance(reply, ConnectionError):
            raise reply
        return reply

    async def _commands(
        self,
        commands: Sequence[tuple[Any, ...]],
        keys: Sequence[Key],
        asking: dict[int, Address] | None = None,
        answered_after_ask: dict[int, Address] | None = None,
    ) -> list[Any]:
        """:meth:`_routed` for unpacked commands; error replies as redis-py exception instances."""
        pack = hiredis.pack_command
        replies = await self._routed([pack(command) for command in commands], keys, asking, answered_after_ask)
        return [error_of(r) if isinstance(r, ReplyError) else r for r in replies]

    async def _routed(
        self,
        packed: Sequence[bytes],
        keys: Sequence[Key],
        asking: dict[int, Address] | None = None,
        answered_after_ask: dict[int, Address] | None = None,
    ) -> list[Any]:
        """Send each packed command to its key's primary, following redirections; replies in order.

        Error replies come back in place as :class:`ReplyError` (a command the cluster kept redirecting as
        ``ConnectionError``). ``asking``: commands to send first to the node an ``ASK`` named.
        ``answered_after_ask``, when given, is filled with the commands whose reply came from the node an
        ``ASK`` named, and that node (where a script that node lacks must be loaded).
        """
        if not self._mapped:
            await self.reload()
        replies: list[Any] = [None] * len(packed)
        todo = list(range(len(packed)))
        asking = asking or {}
        asked = answered_after_ask if answered_after_ask is not None else {}
        for attempt in range(REDIRECTS + 1):
            groups: dict[Address, list[int]] = {}
            for i in todo:
                groups.setdefault(asking.get(i) or self._address(keys[i]), []).append(i)
                asked.pop(i, None)
            asked.update(asking)
            got = await self._send_all(groups, packed, asking)
            todo, asking, reload, pause = [], {}, False, False
            for i, reply in got:
                replies[i] = reply
                refused = _redirection(reply)
                if refused is None:
                    continue
                todo.append(i)
                if type(refused) is MovedError:
                    reload = True
                elif type(refused) is AskError:
                    asking[i] = refused.node_addr
                else:
                    pause = True
            if not todo or attempt == REDIRECTS:
                break
            if pause:
                await asyncio.sleep(PAUSE)
            if reload or pause:
                await self.reload()
        for i in todo:
            replies[i] = ConnectionError(f"Redis Cluster kept redirecting the command: {error_of(replies[i])}")
        return replies

    async def _send_all(
        self, groups: dict[Address, list[int]], packed: Sequence[bytes], asking: dict[int, Address]
    ) -> list[tuple[int, Any]]:
        """Each group to its node, all at once; (command index, reply) pairs. A node that fails fails the lot."""
        sends = [self._send(address, packed, indexes, asking) for address, indexes in groups.items()]
        results: list[Any]
        if len(sends) == 1:  # one node (the usual case) is awaited as it is: no task, no gather
            try:
                results = [await sends[0]]
            except LOST as exc:
                results = [exc]
        else:
            results = await asyncio.gather(*sends, return_exceptions=True)
        out: list[tuple[int, Any]] = []
        for (address, indexes), result in zip(groups.items(), results, strict=True):
            if isinstance(result, LOST):
                raise self._lost(address, result) from result
            if isinstance(result, BaseException):
                raise result
            out += zip(indexes, result, strict=True)
        return out

    async def _send(
        self, address: Address, packed: Sequence[bytes], indexes: list[int], asking: dict[int, Address]
    ) -> list[Any]:
        """The commands ``indexes`` of ``packed`` on ``address``'s connection, those in ``asking`` after ``ASKING``."""
        conn = self._client(address).connection()
        if not asking:
            return await conn.execute_many_raw(b"".join([packed[i] for i in indexes]), len(indexes))
        data = b"".join([_ASKING + packed[i] if i in asking else packed[i] for i in indexes])
        asked = sum(1 for i in indexes if i in asking)
        got = await conn.execute_many_raw(data, len(indexes) + asked)
        out, k = [], 0
        for i in indexes:  # drop the ASKING replies
            k += i in asking
            out.append(got[k])
            k += 1
        return out

    def close(self) -> None:
        """Close every node's connection (a later command opens new ones)."""
        for client in self._nodes.values():
            client.close()


def cluster_fast_path(redis: Any) -> ClusterRespClient | None:
    """The lean client for a Cluster client of :func:`~framework.transport.cluster.open_cluster`, or None.

    None when its nodes' connections use TLS, RESP3 or a credential provider (as
    :func:`~framework.transport.lean.paths.fast_path_for` for a single server). redis-py's Cluster client
    gives its connections a socket timeout of its own (5 s) that a URL cannot set; the lean connections
    have none, as on a single server: a node that dies fails its connections at once.
    """
    from redis.asyncio.connection import Connection  # noqa: PLC0415

    kwargs: dict[str, Any] = redis.get_connection_kwargs()
    if (
        kwargs.get("credential_provider") is not None
        or kwargs.get("protocol") not in (None, 2, "2")
        or kwargs.get("connection_class", Connection) is not Connection
    ):
        return None
    seeds = [(str(n.host), int(n.port)) for n in redis.nodes_manager.startup_nodes.values()]
    if not seeds:
        return None
    return ClusterRespClient(
        seeds,
        username=kwargs.get("username"),
        password=kwargs.get("password"),
        connect_timeout=kwargs.get("socket_connect_timeout") or 5.0,
    )
