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

:func:`fast_path_for` derives a :class:`RespClient` from a redis-py client when that client talks to a
single server over plain TCP or a Unix socket with RESP2 and no socket timeout; for anything else (TLS,
Cluster, Sentinel, custom connection classes, credential providers) it returns ``None`` and callers keep
using redis-py. The socket is closed by :meth:`RespClient.close`, or when the connection is garbage
collected (after its event loop is closed), so an unclosed client leaks nothing and warns about nothing.

A connection speaks RESP2 unless told ``protocol=3``: :class:`~framework.fastredis.FastRedis` runs redis-py's
ordinary commands over one that speaks RESP3, as redis-py does, so redis-py's reply handling applies unchanged.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import time
import weakref
from typing import TYPE_CHECKING, Any

import hiredis
from redis.asyncio.connection import Connection, ConnectionPool, UnixDomainSocketConnection
from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    ConnectionError,  # noqa: A004
    NoScriptError,
    ReadOnlyError,
    ResponseError,
)
from redis.exceptions import TimeoutError as RedisTimeoutError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from redis.asyncio import Redis

__all__ = (
    "NOT_ENOUGH_DATA",
    "ReplyError",
    "RespClient",
    "RespConnection",
    "connection_options",
    "error_of",
    "fast_path_for",
)

_READ_SIZE = 256 * 1024
SPIN_SECONDS = 100e-6
"""How long a command sent on an idle connection polls for its reply before the event loop waits."""
_SPIN_MISSES = 8
_SPIN_PAUSE = 1000
"""After this many windows in a row ran out, this many commands go without polling."""
NOT_ENOUGH_DATA: Any = object()  # what the reader returns when no complete reply is buffered (False is a RESP3 reply)
_PUSH: Any = getattr(hiredis, "PushNotification", NOT_ENOUGH_DATA)
_ERRORS: tuple[tuple[str, type[ResponseError] | type[ConnectionError]], ...] = (
    ("NOSCRIPT", NoScriptError),
    ("READONLY", ReadOnlyError),
    ("LOADING", BusyLoadingError),
    ("NOAUTH", AuthenticationError),
    ("WRONGPASS", AuthenticationError),
)


class ReplyError(Exception):
    """An error reply as hiredis hands it over; turned into redis-py's exception by :func:`error_of`."""


def _counting_errors(count: list[int]) -> Callable[[str], ReplyError]:
    """The ``replyError`` for ``hiredis.Reader``: makes a :class:`ReplyError`, counting them in ``count[0]``."""

    def make(text: str) -> ReplyError:
        count[0] += 1
        return ReplyError(text)

    return make


class _Batch:
    """Collects the replies of a batch of commands written together, for one future."""

    __slots__ = ("future", "n", "replies")

    def __init__(self, future: asyncio.Future[list[Any]], n: int) -> None:
        self.future = future
        self.n = n
        self.replies: list[Any] = []


def error_of(reply: BaseException) -> Exception:
    """The redis-py exception for an error reply (``NOSCRIPT`` -> ``NoScriptError``, ...)."""
    text = str(reply)
    for prefix, cls in _ERRORS:
        if text.startswith(prefix):
            return cls(text)
    return ResponseError(text)


class RespConnection:
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
    ) -> None:
        self.address = address
        self.protocol = protocol
        self._client_name = client_name
        self._username = username
        self._password = password
        self._db = db
        self._connect_timeout = connect_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sock: socket.socket | None = None
        self._errors = [0]
        self._make_error = _counting_errors(self._errors)
        self._reader = hiredis.Reader(replyError=self._make_error, notEnoughData=NOT_ENOUGH_DATA)
        self._waiting: collections.deque[asyncio.Future[Any] | _Batch] = collections.deque()
        self._wbuf: list[bytes] = []
        self._pending_out = b""
        self._flush_scheduled = False
        self._connecting: asyncio.Future[None] | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self.closed = False
        self.spin = spin
        """Poll briefly for the reply of a command sent on an idle connection (see :meth:`_spin`)."""
        self._spin_misses = 0
        self._spin_off = 0
        self.spun = 0
        """Replies taken by polling (for tests and stats)."""
        self.scripts: set[str] = set()
        """SHA1s of the scripts loaded through this connection (cleared when it reconnects)."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop this connection is bound to (None before the first command)."""
        return self._loop

    @property
    def error_replies(self) -> int:
        """How many error replies, top-level or nested, this connection has parsed.

        A reply parsed while this did not change holds no error.
        """
        return self._errors[0]

    @property
    def connected(self) -> bool:
        """Whether a socket is open now."""
        return self._sock is not None

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

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            async with asyncio.timeout(self._connect_timeout):
                sock = await self._open_socket(loop)
        except TimeoutError as exc:
            raise RedisTimeoutError(f"timed out connecting to {self._describe()}") from exc
        except OSError as exc:
            raise ConnectionError(f"error connecting to {self._describe()}: {exc}") from exc
        self._loop = loop
        self._sock = sock
        self.scripts = set()  # the server may have been restarted: its script cache is gone
        self._reader = hiredis.Reader(replyError=self._make_error, notEnoughData=NOT_ENOUGH_DATA)
        self._finalizer = weakref.finalize(self, sock.close)
        loop.add_reader(sock.fileno(), self._on_readable)
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

    def _describe(self) -> str:
        return self.address if isinstance(self.address, str) else f"{self.address[0]}:{self.address[1]}"

    # -- I/O ---------------------------------------------------------------------------------------

    def _send(self, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        """Queue one command; the future gets the raw reply (error replies as ``ReplyError``)."""
        return self._send_packed(hiredis.pack_command(args))

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
        if self._spin_off:
            self._spin_off -= 1
            return
        deadline = time.perf_counter() + SPIN_SECONDS
        while not fut.done():  # a reply may come in pieces: poll until it is whole
            if self._receive():
                self._dispatch()
            elif self._sock is None or time.perf_counter() > deadline:
                self._spin_misses += 1
                if self._spin_misses >= _SPIN_MISSES:
                    self._spin_misses, self._spin_off = 0, _SPIN_PAUSE
                return
        if self._sock is not None:  # answered (not failed) while polling
            self._spin_misses = 0
            self.spun += 1

    def _send_packed(self, data: bytes) -> asyncio.Future[Any]:
        """Queue one command packed by ``hiredis.pack_command``; the future gets the raw reply."""
        loop = self._loop
        assert loop is not None
        fut = loop.create_future()
        if self._waiting or self._pending_out:
            self._wbuf.append(data)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                loop.call_soon(self._flush)
        else:
            self._write(data)
        self._waiting.append(fut)
        return fut

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._wbuf and self._sock is not None:
            data = b"".join(self._wbuf)
            self._wbuf.clear()
            self._write(data)

    def _write(self, data: bytes) -> None:
        sock = self._sock
        if sock is None:
            return
        if self._pending_out:
            self._pending_out += data
            return
        try:
            sent = sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._loop.call_soon(self._fail, ConnectionError(f"error writing to {self._describe()}: {exc}"))  # type: ignore[union-attr]
            return
        if sent < len(data):
            self._pending_out = data[sent:]
            self._loop.add_writer(sock.fileno(), self._on_writable)  # type: ignore[union-attr]

    def _on_writable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            sent = sock.send(self._pending_out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fail(ConnectionError(f"error writing to {self._describe()}: {exc}"))
            return
        self._pending_out = self._pending_out[sent:]
        if not self._pending_out:
            self._loop.remove_writer(sock.fileno())  # type: ignore[union-attr]

    def _receive(self) -> bool:
        """Feed what the socket has to the reader; False when there was nothing (or the connection failed)."""
        sock = self._sock
        if sock is None:
            return False
        try:
            data = sock.recv(_READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            self._fail(ConnectionError(f"error reading from {self._describe()}: {exc}"))
            return False
        if not data:
            self._fail(ConnectionError(f"connection to {self._describe()} closed by the server"))
            return False
        self._reader.feed(data)
        return True

    def _on_readable(self) -> None:
        if self._receive():
            self._dispatch()

    def _dispatch(self) -> None:
        """Hand every complete reply in the reader to its waiter, in order."""
        reader, waiting = self._reader, self._waiting
        try:
            reply = reader.gets()
            while reply is not NOT_ENOUGH_DATA:
                if type(reply) is _PUSH:  # RESP3 out-of-band data (none is asked for): not a reply
                    reply = reader.gets()
                    continue
                head = waiting[0]
                if type(head) is _Batch:
                    head.replies.append(reply)
                    if len(head.replies) == head.n:
                        waiting.popleft()
                        if not head.future.done():
                            head.future.set_result(head.replies)
                else:
                    waiting.popleft()
                    if not head.done():  # type: ignore[union-attr]
                        head.set_result(reply)  # type: ignore[union-attr]
                reply = reader.gets()
        except (hiredis.ProtocolError, IndexError) as exc:
            self._fail(ConnectionError(f"protocol error from {self._describe()}: {exc}"))

    def _fail(self, exc: Exception) -> None:
        """Drop the socket and fail every command in flight; the next command reconnects."""
        sock, self._sock = self._sock, None
        if sock is not None and self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(sock.fileno())
            if self._pending_out:
                self._loop.remove_writer(sock.fileno())
        if self._finalizer is not None:
            self._finalizer()  # closes the socket
            self._finalizer = None
        elif sock is not None:
            sock.close()
        self._pending_out = b""
        self._wbuf.clear()
        waiting, self._waiting = self._waiting, collections.deque()
        for item in waiting:
            fut = item.future if type(item) is _Batch else item
            if not fut.done():  # type: ignore[union-attr]
                fut.set_exception(exc)  # type: ignore[union-attr]
                fut.exception()  # type: ignore[union-attr] # a caller that was cancelled meanwhile must not leave it unretrieved

    def close(self) -> None:
        """Close the socket (commands in flight fail); a closed connection cannot be used again."""
        self.closed = True
        self._fail(ConnectionError("connection closed"))

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
        if self._waiting or self._pending_out:
            self._wbuf.append(data)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                loop.call_soon(self._flush)
        else:
            self._write(data)
        self._waiting.append(_Batch(future, n))
        return await future


class RespClient:
    """Hands out one :class:`RespConnection` per event loop (the last loop used), opened lazily.

    Args:
        address: ``(host, port)`` or a Unix socket path.
        **options: ``username``, ``password``, ``db``, ``connect_timeout`` for :class:`RespConnection`.
    """

    def __init__(self, address: tuple[str, int] | str, **options: Any) -> None:
        self.address = address
        self._options = options
        self._conn: RespConnection | None = None

    @property
    def options(self) -> dict[str, Any]:
        """The connection options (credentials, database, protocol, ...) every connection of this client uses."""
        return dict(self._options)

    def connection(self) -> RespConnection:
        """The connection for the running loop (a new one when the loop changed)."""
        conn = self._conn
        if conn is not None and not conn.closed:
            if conn.loop is None or conn.loop is asyncio.get_running_loop():
                return conn
            self._drop(conn)
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


def fast_path_for(redis: Redis | Any) -> RespClient | None:
    """A :class:`RespClient` to the server a redis-py asyncio client uses, or None when it does not qualify.

    Qualifies: a plain ``ConnectionPool`` of ``Connection`` (TCP) or ``UnixDomainSocketConnection``, RESP2
    (or the protocol left unset), no ``socket_timeout``, no credential provider. Anything else keeps to redis-py.
    """
    found = connection_options(redis)
    if found is None or found[2] not in (None, 2, "2"):
        return None
    return RespClient(found[0], **found[1])


def connection_options(redis: Redis | Any) -> tuple[tuple[str, int] | str, dict[str, Any], Any] | None:
    """(address, :class:`RespConnection` options, redis-py's ``protocol`` setting) of a client's server.

    None unless the client is redis-py's with a plain ``ConnectionPool`` of ``Connection`` (TCP) or
    ``UnixDomainSocketConnection``, no ``socket_timeout`` and no credential provider.
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
    else:
        return None
    return address, options, kwargs.get("protocol")
