"""A lean, auto-pipelining Redis connection for the hot paths (dequeue, acknowledge, enqueue).

redis-py spends tens of microseconds of Python per command (pool checkout, argument packing, a socket
write each, health checks), and on a machine with slow system calls the write dominates. Here one
connection per event loop carries every hot-path command:

* **Auto-pipelining.** Commands issued while replies are outstanding are buffered and written together
  at the next loop iteration, so the concurrent commands of many tasks cost one ``send``; a command
  issued on an idle connection is written at once (no added latency).
* **Parsing** with ``hiredis.Reader``; replies are matched to callers in order.
* **Errors** are redis-py's exceptions (``ResponseError``, ``NoScriptError``, ``ConnectionError``...), so
  callers handle them as they would redis-py's. A broken connection fails every command in flight with
  ``ConnectionError``; the next command reconnects.

:func:`~framework.transport.lean.paths.fast_path_for` derives a :class:`RespClient` from a redis-py client when
that client talks to a single server over plain TCP, TLS (a connection given ``tls`` negotiates a session
after connecting and encrypts in memory: :mod:`framework.transport.lean.tls`) or a Unix socket with RESP2 and no
socket timeout, or with a Sentinel-managed primary (a connection given ``follow`` asks the sentinels where the
primary is: see :mod:`framework.transport.lean.sentinel`); for anything else (Cluster, custom connection
classes, credential providers) it returns ``None`` and callers keep using redis-py. The socket is closed by
:meth:`RespClient.close`, or when the connection is garbage collected (after its event loop is closed), so an
unclosed client leaks nothing and warns about nothing.

A connection speaks RESP2 unless told ``protocol=3``: :class:`~framework.transport.lean.fastredis.FastRedis`
runs redis-py's ordinary commands over one that speaks RESP3, as redis-py does, so redis-py's reply
handling applies unchanged.

The pipelined I/O is :mod:`framework.transport.lean.pipe`'s, the error mapping
:mod:`framework.transport.lean.errors`'s, and :class:`~framework.transport.lean.client.RespClient` with the
choice of clients that qualify :mod:`framework.transport.lean.client`'s.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
import weakref
from typing import TYPE_CHECKING, Any

import hiredis
from redis.exceptions import AuthenticationError, ConnectionError, RedisError  # noqa: A004
from redis.exceptions import TimeoutError as RedisTimeoutError

from framework.transport.lean.errors import DemotedReply, ReplyError, error_of
from framework.transport.lean.pipe import NOT_ENOUGH_DATA, Batch, RespPipe
from framework.transport.lean.tls import TlsChannel

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from framework.transport.lean.sentinel import Follow
    from framework.transport.lean.tls import TlsSetup

__all__ = ("RespConnection",)

SPIN_SECONDS = 100e-6
"""How long a command sent on an idle connection polls for its reply before the event loop waits."""
SPIN_MISSES = 8
SPIN_PAUSE = 1000
"""After this many windows in a row ran out, this many commands go without polling."""


class Polling:
    """When a connection polls for a reply, shared by the event-loop and the blocking connections.

    Every command may poll, until :data:`SPIN_MISSES` windows in a row ran out (a distant server): then the
    next :data:`SPIN_PAUSE` commands do not, and polling starts again.
    """

    __slots__ = ("misses", "off", "spun")

    def __init__(self) -> None:
        self.misses = 0
        self.off = 0
        """Commands left that go without polling."""
        self.spun = 0
        """Replies taken by polling (for tests and stats)."""

    def allowed(self) -> bool:
        """Whether this command may poll (a command that may not counts down the pause)."""
        if self.off:
            self.off -= 1
            return False
        return True

    def missed(self) -> None:
        """A window ran out before the reply came."""
        self.misses += 1
        if self.misses >= SPIN_MISSES:
            self.misses, self.off = 0, SPIN_PAUSE

    def hit(self) -> None:
        """The reply came within the window."""
        self.misses = 0
        self.spun += 1


class RespConnection(RespPipe):
    """One connection to one server, bound to the event loop that opened it.

    Args:
        address: ``(host, port)`` or a Unix socket path.
        username: ACL user name (None = default user).
        password: password (None = no AUTH).
        db: database number (SELECT when not 0).
        connect_timeout: seconds to wait for the TCP connection and the handshake.
        protocol: 2 (RESP2), or 3 (RESP3, negotiated with HELLO: maps, doubles and booleans as such).
        client_name: CLIENT SETNAME when given.
        spin: poll the socket briefly for the reply of a command sent on an idle connection (:meth:`_spin`).
        follow: where a Sentinel-managed primary is: asked when connecting (``address`` is then only a
            placeholder) and every ``follow.every`` seconds after; see :mod:`framework.transport.lean.sentinel`.
        tls: TLS to negotiate once connected (the handshake within ``connect_timeout``); see
            :mod:`framework.transport.lean.tls`.
    """

    def __init__(
        self,
        address: tuple[str, int] | str,
        *,
        username: str | None = None,
        password: str | None = None,
        db: int = 0,
        connect_timeout: float | None = 5.0,
        protocol: int = 2,
        client_name: str | None = None,
        spin: bool = True,
        follow: Follow | None = None,
        tls: TlsSetup | None = None,
    ) -> None:
        super().__init__(address)
        self._tls_setup = tls
        self.protocol = protocol
        self._client_name = client_name
        self._username = username
        self._password = password
        self._db = db
        self._connect_timeout = connect_timeout
        self._connecting: asyncio.Future[None] | None = None
        self.spin = spin
        """Poll briefly for the reply of a command sent on an idle connection (see :meth:`_spin`)."""
        self._polling = Polling()
        self.scripts: set[str] = set()
        """SHA1s of the scripts loaded through this connection (cleared when it reconnects)."""
        self._follow = follow
        self._watch: asyncio.Task[None] | None = None
        if follow is not None:
            self._make_error = _demoting(self._make_error, weakref.ref(self))

    # -- connecting ------------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect (and authenticate, select, ...) unless connected; a closed connection raises ``ConnectionError``."""
        if self._sock is not None:
            return
        if self.closed:
            raise ConnectionError("connection closed")
        if self._connecting is None:
            loop = asyncio.get_running_loop()
            self._connecting = loop.create_future()
            try:
                await self._connect(loop)
            except BaseException as exc:
                fut, self._connecting = self._connecting, None
                fut.set_exception(exc if isinstance(exc, Exception) else ConnectionError("connect interrupted"))
                fut.exception()  # retrieved: the other waiters get it too
                raise
            fut, self._connecting = self._connecting, None
            fut.set_result(None)
            return
        await asyncio.shield(self._connecting)

    async def _locate(self, follow: Follow) -> None:
        """Take the primary's address from the sentinels (a connection that follows one)."""
        try:
            async with asyncio.timeout(self._connect_timeout):
                self.address = await follow.locate()
        except TimeoutError as exc:
            raise RedisTimeoutError(f"timed out asking the sentinels for {follow.service!r}") from exc

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> None:
        follow = self._follow
        if follow is not None:
            await self._locate(follow)
        channel: TlsChannel | None = None
        try:
            async with asyncio.timeout(self._connect_timeout):
                sock = await self._open_socket(loop)
                if self._tls_setup is not None:
                    channel = await self._start_tls(loop, sock, self._tls_setup)
        except TimeoutError as exc:
            raise RedisTimeoutError(f"timed out connecting to {self._describe()}") from exc
        except ssl.SSLError as exc:
            raise ConnectionError(f"TLS handshake with {self._describe()} failed: {exc}") from exc
        except OSError as exc:
            raise ConnectionError(f"error connecting to {self._describe()}: {exc}") from exc
        self._loop = loop
        self._sock = sock
        if channel is not None:
            self._use_tls(channel)
        self.scripts = set()  # the server may have been restarted: its script cache is gone
        self._reader = hiredis.Reader(replyError=self._make_error, notEnoughData=NOT_ENOUGH_DATA)
        self._finalizer = weakref.finalize(self, sock.close)
        loop.add_reader(sock.fileno(), self._on_readable)
        await self._handshake()
        if follow is not None:
            self._watch = loop.create_task(_watch(weakref.ref(self), follow, self.address))

    async def _handshake(self) -> None:
        """Authenticate, name the connection and select the database, as configured."""
        handshake: list[tuple[Any, ...]] = []
        if self.protocol == 3:
            auth = ("AUTH", self._username or "default", self._password) if self._password is not None else ()
            handshake.append(("HELLO", 3, *auth))
        elif self._password is not None:
            handshake.append(("AUTH", self._username, self._password) if self._username else ("AUTH", self._password))
        if self._client_name:
            handshake.append(("CLIENT", "SETNAME", self._client_name))
        if self._db:
            handshake.append(("SELECT", self._db))
        if handshake:
            try:
                async with asyncio.timeout(self._connect_timeout):
                    for reply in await asyncio.gather(*(self._send(cmd) for cmd in handshake)):
                        if isinstance(reply, ReplyError):
                            err = error_of(reply)
                            raise err if isinstance(err, AuthenticationError) else ConnectionError(str(reply))
            except BaseException:
                self._fail(ConnectionError("handshake failed"))
                raise

    def _fail(self, exc: Exception) -> None:
        watch, self._watch = self._watch, None
        if watch is not None and self._loop is not None and not self._loop.is_closed():
            watch.cancel()
        super()._fail(exc)

    @staticmethod
    async def _start_tls(loop: asyncio.AbstractEventLoop, sock: socket.socket, setup: TlsSetup) -> TlsChannel:
        """Negotiate a TLS session on the connected ``sock`` (closed when that fails)."""
        try:
            channel = TlsChannel(setup)  # reads the CA and certificate files the first time
            await channel.handshake(loop, sock)
        except BaseException:
            sock.close()
            raise
        return channel

    async def _open_socket(self, loop: asyncio.AbstractEventLoop) -> socket.socket:
        if isinstance(self.address, str):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, self.address)
            except BaseException:
                sock.close()
                raise
            return sock
        host, port = self.address
        try:  # an address needs no resolver thread
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
        except socket.gaierror:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        error: OSError = OSError(f"cannot resolve {host}")
        for family, kind, proto, _, addr in infos:
            sock = socket.socket(family, kind, proto)
            sock.setblocking(False)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                await loop.sock_connect(sock, addr)
            except OSError as exc:
                sock.close()
                error = exc
                continue
            except BaseException:
                sock.close()
                raise
            return sock
        raise error

    async def _poll_if_quiet(self, fut: asyncio.Future[Any]) -> None:
        """Let ready tasks run once; if none of them sent a command here meanwhile, poll for the reply.

        A busy process (a worker with many tasks in flight) pipelines the next commands during that
        iteration, and then nothing blocks the loop; a sequential caller finds the connection quiet.
        """
        await asyncio.sleep(0)
        if not fut.done() and len(self._waiting) == 1:
            self._spin(fut)

    def _spin(self, fut: asyncio.Future[Any]) -> None:
        """Poll the socket for ``fut``'s reply for up to :data:`SPIN_SECONDS` before the event loop waits.

        Only for a command written on an idle connection that stayed quiet for one loop iteration
        (nothing else in flight: a lightly loaded process). A reply that comes within the window is
        handled without the thread going to sleep in ``epoll_wait`` and being woken again, which on
        virtual machines costs more than a loopback round trip itself (measured on one: 95 us per PING
        with a sleep, 30 us when polling). A miss costs at most the window, during which the event loop
        runs nothing else; windows that keep running out (a distant server) turn polling off for a while.
        """
        polling = self._polling
        if not polling.allowed():
            return
        deadline = time.perf_counter() + SPIN_SECONDS
        while not fut.done():  # a reply may come in pieces: poll until it is whole
            if self._receive():
                self._dispatch()
            elif self._sock is None or time.perf_counter() > deadline:
                polling.missed()
                return
        if self._sock is not None:  # answered (not failed) while polling
            polling.hit()

    @property
    def spun(self) -> int:
        """Replies taken by polling (for tests and stats)."""
        return self._polling.spun

    # -- commands ----------------------------------------------------------------------------------

    async def execute(self, *args: Any) -> Any:
        """Run one command; error replies raise redis-py's exceptions."""
        reply = await self.execute_raw(hiredis.pack_command(args))
        if isinstance(reply, ReplyError):
            raise error_of(reply)
        return reply

    async def execute_raw(self, data: bytes) -> Any:
        """Run one command packed by ``hiredis.pack_command``; returns the reply as hiredis parsed it.

        Error replies, top-level or nested, are :class:`ReplyError` instances, neither raised nor converted.
        """
        if self._sock is None:
            await self.open()
        # send_raw + reply, inlined: every command of the hot paths comes here, one coroutine fewer
        idle = not self._waiting
        fut = self._send_packed(data)
        if idle and self.spin:
            await self._poll_if_quiet(fut)
        return await fut

    def send_raw(self, data: bytes) -> tuple[asyncio.Future[Any], bool]:
        """Write one packed command now, on an open connection; returns its future and whether none was in flight.

        For callers with work to do while the reply travels; pass both to :meth:`reply`.
        """
        idle = not self._waiting
        return self._send_packed(data), idle

    async def reply(self, fut: asyncio.Future[Any], idle: bool) -> Any:
        """The reply of a command written by :meth:`send_raw` (polled for when the connection was idle)."""
        if idle and self.spin:
            await self._poll_if_quiet(fut)
        return await fut

    async def execute_many(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Run commands in one write; returns each reply, error replies as redis-py exception instances."""
        if not commands:
            return []
        pack = hiredis.pack_command
        replies = await self.execute_many_raw(b"".join([pack(cmd) for cmd in commands]), len(commands))
        return [error_of(r) if isinstance(r, ReplyError) else r for r in replies]

    async def execute_many_raw(self, data: bytes, n: int) -> list[Any]:
        """Run ``n`` commands packed together in ``data`` in one write; the replies as hiredis parsed them.

        The commands reach the server back to back, with no other command of this connection between them
        (so a ``MULTI`` ... ``EXEC`` written together is a transaction of its own). Error replies are
        :class:`ReplyError` instances.
        """
        if self._sock is None:
            await self.open()
        loop = self._loop
        assert loop is not None
        future: asyncio.Future[list[Any]] = loop.create_future()
        self._out(loop, data)
        self._waiting.append(Batch(future, n))
        return await future


def _demoting(make: Callable[[str], ReplyError], ref: weakref.ref[RespConnection]) -> Callable[[str], ReplyError]:
    """A ``replyError`` factory that, on ``READONLY``, makes a :class:`DemotedReply` and fails the connection next."""

    def demoting(text: str) -> ReplyError:
        reply = make(text)
        conn = ref()
        if conn is None or not text.startswith("READONLY"):
            return reply
        if conn._loop is not None:  # after the replies parsed so far are handed over
            conn._loop.call_soon(conn._fail, ConnectionError(f"{conn._describe()} is a replica now"))
        return DemotedReply(text)

    return demoting


async def _watch(ref: weakref.ref[RespConnection], follow: Follow, address: tuple[str, int] | str) -> None:
    """Fail the connection once the sentinels name another primary than ``address`` (it reconnects to that one)."""
    found = address
    while found == address:
        await asyncio.sleep(follow.every)
        if ref() is None:
            return
        try:
            found = await follow.locate()
        except (RedisError, OSError):  # away, or answering errors (a sentinel's ACL...): keep the primary, ask again
            continue
    conn = ref()  # only now: a reference held while sleeping would keep the connection alive
    if conn is not None and conn._sock is not None:
        conn._watch = None
        conn._fail(ConnectionError(f"{follow.service!r} moved from {conn._describe()} to {found[0]}:{found[1]}"))
