"""A blocking RESP connection for synchronous callers: one command at a time, no event loop.

:class:`~framework.client.client.SyncClient` runs its commonest call, the prepared plain enqueue, over one
of these instead of handing it to its background event loop: a blocking ``send`` and ``recv`` on a socket
of the calling thread's own, with the reply parsed by ``hiredis``. A hop to another thread and back costs
more than the loopback round trip itself. The thread polls for the reply briefly before it sleeps in
``recv`` (:meth:`BlockingConnection._poll`), as the event-loop connection does.

Same server, credentials, database and TLS (the socket wrapped by ``ssl``, the handshake within the connect
timeout) as the :class:`~framework.transport.lean.client.RespClient` it is made from, RESP2, no socket timeout
once connected (as the event-loop connection). Error replies come back as
:class:`~framework.transport.lean.errors.ReplyError`, as on that connection; a broken connection raises
redis-py's ``ConnectionError`` and is closed, so the next command reconnects.

Nothing watches an idle socket, so a server that closed it (a restart, its idle ``timeout``, a proxy) is
only found out when a command is sent; before sending, the socket is polled
(:meth:`BlockingConnection._closed_by_server`), and one the server closed is replaced then, while nothing
was sent and reconnecting cannot run a command twice. A command interrupted while it waits for its reply
(``KeyboardInterrupt``, any exception a signal handler raises) closes the connection: the reply would
otherwise be read as the next command's.

Not thread-safe: a connection belongs to one thread (:class:`ThreadConnections` hands out one per thread;
:class:`ClusterThreadConnections` one per thread and Cluster primary).
"""

from __future__ import annotations

import os
import select
import socket
import ssl
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

import hiredis
from redis.exceptions import AuthenticationError, ConnectionError, RedisError  # noqa: A004
from redis.exceptions import TimeoutError as RedisTimeoutError

from framework.transport.lean.connection import SPIN_SECONDS, Polling
from framework.transport.lean.errors import ReplyError, error_of
from framework.transport.lean.pipe import NOT_ENOUGH_DATA

if TYPE_CHECKING:
    from framework.transport.lean.cluster import ClusterRespClient
    from framework.transport.lean.sentinel import Follow
    from framework.transport.lean.tls import TlsSetup

__all__ = ("BlockingConnection", "ClusterThreadConnections", "Forks", "ThreadConnections")

_READ_SIZE = 64 * 1024
_OPTIONS = frozenset({"username", "password", "db", "connect_timeout", "follow", "tls"})


class Forks:
    """Which process this is along its line of forks: 0 in the first, one more in each forked child.

    What a forked child must not share with its parent (a socket, a thread) remembers the count it was made
    under and is made again when the count differs. Read on every call of the hot path, where
    ``os.getpid()`` would be a system call.

    Attributes:
        count: forks along the line so far.
        lock: for a child's threads to rebuild what it inherited once; made anew in each child, since a lock
            inherited through ``fork`` stays held if another thread of the parent held it then.
    """

    count = 0
    lock = threading.Lock()

    @classmethod
    def forked(cls) -> None:
        """Run in a forked child, by ``os.register_at_fork``, before any other of its code."""
        cls.count += 1
        cls.lock = threading.Lock()


os.register_at_fork(after_in_child=Forks.forked)


class BlockingConnection:
    """One blocking socket to one server; see the module docstring.

    Args:
        address: ``(host, port)`` or a Unix socket path.
        username: ACL user name (None = default user).
        password: password (None = no AUTH).
        db: database number (SELECT when not 0).
        connect_timeout: seconds to wait for the connection and the handshake.
        follow: where a Sentinel-managed primary is: asked when connecting (``address`` is then only a
            placeholder), and again before a command once ``follow.every`` seconds passed since; when the
            primary moved, or the server answers ``READONLY``, the connection is closed (the latter raising
            ``ConnectionError``) and the next command connects to the new primary.
        tls: TLS to negotiate once connected; see :mod:`framework.transport.lean.tls`.
    """

    def __init__(
        self,
        address: tuple[str, int] | str,
        *,
        username: str | None = None,
        password: str | None = None,
        db: int = 0,
        connect_timeout: float | None = 5.0,
        follow: Follow | None = None,
        tls: TlsSetup | None = None,
    ) -> None:
        self.address = address
        self._tls = tls
        self._follow = follow
        self._checked = 0.0
        self._username = username
        self._password = password
        self._db = db
        self._connect_timeout = connect_timeout
        self._sock: socket.socket | None = None  # an ssl.SSLSocket over TLS
        self._idle = select.poll()  # the open socket's, for :meth:`_closed_by_server`
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._reader = hiredis.Reader(replyError=ReplyError, notEnoughData=NOT_ENOUGH_DATA)
        self._forks = Forks.count
        self._polling = Polling()

    @property
    def connected(self) -> bool:
        """Whether a socket is open now."""
        return self._sock is not None

    def _describe(self) -> str:
        return self.address if isinstance(self.address, str) else f"{self.address[0]}:{self.address[1]}"

    def _connect(self) -> socket.socket:
        """A socket connected to the server (TLS negotiated when configured), with the connect timeout."""
        if isinstance(self.address, str):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self._connect_timeout)
            try:
                sock.connect(self.address)
            except BaseException:
                sock.close()
                raise
            return sock
        sock = socket.create_connection(self.address, timeout=self._connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if self._tls is not None:
                sock = self._tls.wrap(sock)
        except BaseException:
            sock.close()
            raise
        return sock

    def open(self) -> None:
        """Connect and authenticate unless connected."""
        if self._sock is not None:
            return
        if self._follow is not None:
            self.address = self._follow.locate_blocking()
            self._checked = time.monotonic()
        try:
            sock = self._connect()
        except TimeoutError as exc:
            raise RedisTimeoutError(f"timed out connecting to {self._describe()}") from exc
        except ssl.SSLError as exc:
            raise ConnectionError(f"TLS handshake with {self._describe()} failed: {exc}") from exc
        except OSError as exc:
            raise ConnectionError(f"error connecting to {self._describe()}: {exc}") from exc
        self._sock = sock
        self._finalizer = weakref.finalize(self, sock.close)  # the thread that owned it ended
        self._idle = select.poll()
        self._idle.register(sock.fileno(), select.POLLIN)
        self._reader = hiredis.Reader(replyError=ReplyError, notEnoughData=NOT_ENOUGH_DATA)
        handshake: list[tuple[Any, ...]] = []
        if self._password is not None:
            handshake.append(("AUTH", self._username, self._password) if self._username else ("AUTH", self._password))
        if self._db:
            handshake.append(("SELECT", self._db))
        try:
            for command in handshake:
                reply = self._exchange(hiredis.pack_command(command))
                if isinstance(reply, ReplyError):
                    err = error_of(reply)
                    raise err if isinstance(err, AuthenticationError) else ConnectionError(str(reply))
        except BaseException:
            self.close()
            raise
        sock.settimeout(None)

    def execute(self, *args: Any) -> Any:
        """Run one command; error replies raise redis-py's exceptions."""
        reply = self.execute_raw(hiredis.pack_command(args))
        if isinstance(reply, ReplyError):
            raise error_of(reply)
        return reply

    def execute_raw(self, data: bytes) -> Any:
        """Send one packed command and return its reply as hiredis parsed it (error replies as ``ReplyError``)."""
        if self._follow is not None:
            return self._execute_following(data)
        self._ready()
        return self._exchange(data)

    def _ready(self) -> None:
        """Have an open socket to send on: one the server closed is replaced first (nothing was sent on it)."""
        sock = self._sock
        if sock is not None and self._closed_by_server(sock):
            self.close()
        if self._sock is None:
            self.open()

    def _closed_by_server(self, sock: socket.socket) -> bool:
        """Whether an idle socket can no longer carry a command: the server closed it, or sent what was not asked for.

        One ``poll`` with no wait (half a microsecond; a non-blocking ``MSG_PEEK`` costs three times that, the
        most of it in the exception an idle socket raises): an idle connection has nothing to read, so any
        event (an EOF, a reset, a byte such as a TLS ``close_notify`` or a stray reply) means the socket is
        not worth sending on. A TLS socket may hold decrypted bytes of its own (``pending``); those count too.
        """
        if self._tls is not None and isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True
        return bool(self._idle.poll(0))

    def _exchange(self, data: bytes) -> Any:
        """Send one packed command on the open socket and read its reply (polled for first: :meth:`_poll`)."""
        sock = self._sock
        assert sock is not None
        reader = self._reader
        try:
            sock.sendall(data)
            reply = reader.gets()
            if reply is NOT_ENOUGH_DATA:
                reply = self._poll(sock, reader)
            while reply is NOT_ENOUGH_DATA:
                chunk = sock.recv(_READ_SIZE)
                if not chunk:
                    raise ConnectionError(f"connection to {self._describe()} closed by the server")
                reader.feed(chunk)
                reply = reader.gets()
        except ConnectionError:
            self.close()
            raise
        except TimeoutError as exc:  # the handshake's
            self.close()
            raise RedisTimeoutError(f"timed out talking to {self._describe()}") from exc
        except OSError as exc:
            self.close()
            raise ConnectionError(f"error talking to {self._describe()}: {exc}") from exc
        except hiredis.ProtocolError as exc:
            self.close()
            raise ConnectionError(f"protocol error from {self._describe()}: {exc}") from exc
        except BaseException:
            self.close()  # interrupted: its reply, still to come, must not be read as the next command's
            raise
        return reply

    def _poll(self, sock: socket.socket, reader: Any) -> Any:
        """Poll the socket for the reply for up to :data:`SPIN_SECONDS` before the thread sleeps in ``recv``.

        As the event-loop connection does (:meth:`RespConnection._spin`, the same window and the same rule
        for windows that keep running out): on a virtual machine whose CPUs halt when idle, a thread put to
        sleep waits longer to be woken than the round trip takes (measured on one: 14,000 PINGs a second
        sleeping in ``recv``, 40,000-47,000 polling). A plain socket is read with ``MSG_DONTWAIT``; a TLS
        socket (which takes no flags) is made non-blocking for the window, and its timeout is put back
        after: the handshake's commands run under the connect timeout, which must still bound the wait
        for their replies. Returns the reply, or :data:`NOT_ENOUGH_DATA` when the window ran out.
        """
        polling = self._polling
        if not polling.allowed():
            return NOT_ENOUGH_DATA
        tls = self._tls is not None
        flags = 0 if tls else socket.MSG_DONTWAIT
        timeout = sock.gettimeout() if tls else None
        if tls:
            sock.setblocking(False)
        try:
            deadline = time.perf_counter() + SPIN_SECONDS
            while True:
                try:
                    chunk = sock.recv(_READ_SIZE, flags)
                except (BlockingIOError, ssl.SSLWantReadError):
                    if time.perf_counter() > deadline:
                        polling.missed()
                        return NOT_ENOUGH_DATA
                    continue
                if not chunk:
                    raise ConnectionError(f"connection to {self._describe()} closed by the server")
                reader.feed(chunk)
                reply = reader.gets()
                if reply is not NOT_ENOUGH_DATA:
                    polling.hit()
                    return reply
        finally:
            if tls:
                sock.settimeout(timeout)

    @property
    def spun(self) -> int:
        """Replies taken by polling (for tests and stats)."""
        return self._polling.spun

    def _execute_following(self, data: bytes) -> Any:
        """:meth:`execute_raw` on a connection that follows a Sentinel-managed primary."""
        follow = self._follow
        assert follow is not None
        if self._sock is not None and time.monotonic() - self._checked >= follow.every:
            self._checked = time.monotonic()
            try:
                moved = follow.locate_blocking() != self.address
            except (RedisError, OSError):  # away, or answering errors: keep the primary, as the event loop's watcher
                moved = False
            if moved:
                self.close()
        self._ready()
        reply = self._exchange(data)
        if isinstance(reply, ReplyError) and str(reply).startswith("READONLY"):
            self.close()
            raise ConnectionError(f"{self._describe()} is a replica now: {reply}")
        return reply

    def close(self) -> None:
        """Close the socket (the next command reconnects)."""
        self._sock = None
        finalizer, self._finalizer = self._finalizer, None
        if finalizer is not None:
            finalizer()  # closes the socket (in a forked child, its copy only: the parent's stays open)


class ThreadConnections:
    """One :class:`BlockingConnection` per thread (and per process: a forked child makes its own).

    Args:
        address: the server's address.
        **options: :class:`BlockingConnection`'s options (others, such as the event-loop connection's, are left out).
    """

    def __init__(self, address: tuple[str, int] | str, **options: Any) -> None:
        self.address = address
        self._options = {k: v for k, v in options.items() if k in _OPTIONS}
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: weakref.WeakSet[BlockingConnection] = weakref.WeakSet()  # a thread's goes with the thread
        self.closed = False
        self.made = 0
        """How many connections were made (for tests and stats)."""

    def get(self) -> BlockingConnection:
        """The calling thread's connection (made on first use, not yet connected)."""
        if self.closed:
            raise ConnectionError("connection closed")
        conn: BlockingConnection | None = getattr(self._local, "conn", None)
        if conn is None or conn._forks != Forks.count:
            conn = self._local.conn = BlockingConnection(self.address, **self._options)
            with self._lock:
                self._all.add(conn)
                self.made += 1
        return conn

    def get_for(self, key: str | bytes) -> BlockingConnection:
        """The calling thread's connection for a command on ``key``: :meth:`get`."""
        return self.get()

    def forget(self) -> None:
        """Nothing to forget: one server (a Cluster's connections forget their slot map)."""

    def failed(self, conn: BlockingConnection) -> None:
        """Nothing to drop: ``conn`` closed itself, and the one server is still the one to reconnect to."""

    def close(self) -> None:
        """Close every thread's connection; later calls raise ``ConnectionError``."""
        self.closed = True
        with self._lock:
            conns = list(self._all)
        for conn in conns:
            conn.close()


class ClusterThreadConnections:
    """One :class:`BlockingConnection` per thread and Cluster primary, found by the event loop's slot map.

    The map is the :class:`~framework.transport.lean.cluster.ClusterRespClient`'s, which its event loop loads
    and reloads; :meth:`get_for` answers None until it is loaded (the caller then goes through the loop).
    A caller whose command is redirected (MOVED, ASK: it did not run) calls :meth:`forget` and sends it
    through the loop, which reloads the map.

    Primaries come and go (a failover replaces a dead one): a node's connections are dropped when one of
    them fails (:meth:`failed`), so every thread's sockets to dead primaries do not pile up until
    :meth:`close`. A dropped node's connections are closed as they are let go (a thread in the middle of a
    command on one keeps it until the command ends), never under another thread's feet.

    Args:
        cluster: the event loop's Cluster client.
    """

    def __init__(self, cluster: ClusterRespClient) -> None:
        self._cluster = cluster
        self._by_node: dict[tuple[str, int], ThreadConnections] = {}
        self._lock = threading.Lock()
        self.closed = False

    def get_for(self, key: str | bytes) -> BlockingConnection | None:
        """The calling thread's connection to the primary serving ``key``, or None before the map is loaded."""
        address = self._cluster.owner(key)
        if address is None or self.closed:
            return None
        conns = self._by_node.get(address)
        if conns is None:
            with self._lock:
                conns = self._by_node.setdefault(address, ThreadConnections(address, **self._cluster.options))
        return conns.get()

    def failed(self, conn: BlockingConnection) -> None:
        """``conn``'s command failed (the connection broke or timed out): drop its node's connections.

        The node may be gone for good (a failed primary is replaced by another); if it still serves its
        slots, the next command on it connects again.
        """
        address = conn.address
        if isinstance(address, tuple):
            with self._lock:
                self._by_node.pop(address, None)

    def forget(self) -> None:
        """The slot map may be out of date: the loop loads it again with its next command."""
        self._cluster.forget()

    def close(self) -> None:
        """Close every thread's connection to every primary; later calls answer None."""
        self.closed = True
        with self._lock:
            nodes = list(self._by_node.values())
        for conns in nodes:
            conns.close()
