"""The auto-pipelining I/O of a ``RespConnection``: buffering, writing, parsing, matching.

Commands issued while replies are outstanding are buffered and written together at the next loop
iteration, so the concurrent commands of many tasks cost one ``send``; a command issued on an idle
connection is written at once. Replies are parsed with ``hiredis.Reader`` and handed to their callers in
order. A broken connection fails every command in flight with ``ConnectionError``.

Over TLS the same socket carries records: a connection that negotiated a session reads and writes through
:meth:`RespPipe._receive_tls` and :meth:`RespPipe._write_tls`, bound in place of the plain ones when it
connects (:meth:`RespPipe._use_tls`), so plain TCP's path has no step more.

:class:`RespPipe` is the base of :class:`~framework.transport.lean.connection.RespConnection`, which
connects, polls and runs the commands.
"""

from __future__ import annotations

import collections
import ssl
from typing import TYPE_CHECKING, Any

import hiredis
from redis.exceptions import ConnectionError  # noqa: A004

from framework.transport.lean.errors import counting_errors

if TYPE_CHECKING:
    import asyncio
    import socket
    import weakref

    from framework.transport.lean.tls import TlsChannel

__all__ = ("NOT_ENOUGH_DATA", "Batch", "RespPipe")

_READ_SIZE = 256 * 1024
NOT_ENOUGH_DATA: Any = object()  # what the reader returns when no complete reply is buffered (False is a RESP3 reply)
_PUSH: Any = getattr(hiredis, "PushNotification", NOT_ENOUGH_DATA)


class Batch:
    """Collects the replies of a batch of commands written together, for one future."""

    __slots__ = ("future", "n", "replies")

    def __init__(self, future: asyncio.Future[list[Any]], n: int) -> None:
        self.future = future
        self.n = n
        self.replies: list[Any] = []


class RespPipe:
    """The socket of one connection and the commands in flight on it, bound to the event loop that opened it.

    It writes, reads and matches replies; connecting is :class:`~framework.transport.lean.connection.RespConnection`'s.

    Args:
        address: ``(host, port)`` or a Unix socket path.
    """

    def __init__(self, address: tuple[str, int] | str) -> None:
        self.address = address
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sock: socket.socket | None = None
        self._errors = [0]
        self._make_error = counting_errors(self._errors)
        self._reader = hiredis.Reader(replyError=self._make_error, notEnoughData=NOT_ENOUGH_DATA)
        self._waiting: collections.deque[asyncio.Future[Any] | Batch] = collections.deque()
        self._wbuf: list[bytes] = []
        self._pending_out = bytearray()  # what the socket did not take yet; appended to, trimmed from the front
        self._flush_scheduled = False
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._tls: TlsChannel | None = None
        self.closed = False

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

    def _describe(self) -> str:
        return self.address if isinstance(self.address, str) else f"{self.address[0]}:{self.address[1]}"

    # -- I/O ---------------------------------------------------------------------------------------

    def _send(self, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        """Queue one command; the future gets the raw reply (error replies as ``ReplyError``)."""
        return self._send_packed(hiredis.pack_command(args))

    def _send_packed(self, data: bytes) -> asyncio.Future[Any]:
        """Queue one command packed by ``hiredis.pack_command``; the future gets the raw reply."""
        loop = self._loop
        assert loop is not None
        fut = loop.create_future()
        self._out(loop, data)
        self._waiting.append(fut)
        return fut

    def _out(self, loop: asyncio.AbstractEventLoop, data: bytes) -> None:
        """Write ``data`` now on a quiet connection, else after what is queued (one write per loop iteration).

        Raises:
            ConnectionError: the connection is not open. It broke between the caller's connect and now (the
                server closed it as it was made, while the caller waited for another's connect to finish):
                nothing was sent, so nothing may wait for a reply. A caller queued for a reply that never comes
                would wait for ever, and take the next connection's first reply, every later caller then getting
                the reply of the one before.
        """
        if self._sock is None:
            raise ConnectionError(f"not connected to {self._describe()}")
        if self._waiting or self._pending_out:
            self._wbuf.append(data)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                loop.call_soon(self._flush)
        else:
            self._write(data)

    def send_now(self, data: bytes, n: int) -> asyncio.Future[list[Any]]:
        """Write ``n`` packed commands now, behind whatever is queued, rather than at the next loop iteration.

        For a caller that writes a long run of commands in pieces and has work to do between them: the
        server starts on the first piece while the next is built. The future gets the ``n`` replies as
        hiredis parsed them (error replies as :class:`~framework.transport.lean.errors.ReplyError`).

        Raises:
            ConnectionError: the connection is not open.
        """
        loop = self._loop
        if self._sock is None or loop is None:
            raise ConnectionError(f"not connected to {self._describe()}")
        future: asyncio.Future[list[Any]] = loop.create_future()
        if self._wbuf:  # what others queued goes first: the order of writes is the order of replies
            data = b"".join((*self._wbuf, data))
            self._wbuf.clear()
        self._write(data)
        self._waiting.append(Batch(future, n))
        return future

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
            self._pending_out += memoryview(data)[sent:]
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
        del self._pending_out[:sent]  # a bytearray drops its head without copying the rest: no quadratic cost
        if not self._pending_out:
            self._loop.remove_writer(sock.fileno())  # type: ignore[union-attr]

    def _receive(self) -> bool:
        """Feed what the socket has to the reader; False when there was nothing (or the connection failed)."""
        data = self._recv()
        if data is None:
            return False
        self._reader.feed(data)
        return True

    def _recv(self) -> bytes | None:
        """What the socket has (TLS records on a TLS connection), or None when nothing (or the connection failed)."""
        sock = self._sock
        if sock is None:
            return None
        try:
            data = sock.recv(_READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            self._fail(ConnectionError(f"error reading from {self._describe()}: {exc}"))
            return None
        if not data:
            self._fail(ConnectionError(f"connection to {self._describe()} closed by the server"))
            return None
        return data

    def _use_tls(self, channel: TlsChannel) -> None:
        """Read and write through ``channel`` from now on (until the connection fails)."""
        self._tls = channel
        self._receive = self._receive_tls  # type: ignore[method-assign]
        self._write = self._write_tls  # type: ignore[method-assign]

    def _drop_tls(self) -> None:
        """Back to the plain read and write (the bound methods no longer tie the connection to itself)."""
        self._tls = None
        vars(self).pop("_receive", None)
        vars(self).pop("_write", None)

    def _write_tls(self, data: bytes) -> None:
        """:meth:`_write` over TLS: the records that carry ``data`` go out as plain data would."""
        tls = self._tls
        if tls is None or self._sock is None:
            return
        try:
            records = tls.encrypt(data)
        except ssl.SSLError as exc:
            self._loop.call_soon(self._fail, ConnectionError(f"TLS error writing to {self._describe()}: {exc}"))  # type: ignore[union-attr]
            return
        RespPipe._write(self, records)

    def _receive_tls(self) -> bool:
        """:meth:`_receive` over TLS: the plaintext of the records the socket has goes to the reader."""
        data = self._recv()
        tls = self._tls
        if data is None or tls is None:
            return False
        try:
            plain, closed = tls.decrypt(data)
        except ssl.SSLError as exc:
            self._fail(ConnectionError(f"TLS error reading from {self._describe()}: {exc}"))
            return False
        if closed:  # the replies sent before the close go to their callers first, as over plain TCP
            if plain:
                self._reader.feed(plain)
                self._dispatch()
            self._fail(ConnectionError(f"TLS session with {self._describe()} closed by the server"))
            return False
        records = tls.outgoing()
        if records:
            RespPipe._write(self, records)
        if plain:  # else only records of the session itself (a session ticket, ...)
            self._reader.feed(plain)
        return bool(plain)

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
                if type(head) is Batch:
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
        self._pending_out.clear()
        self._wbuf.clear()
        if self._tls is not None:
            self._drop_tls()
        waiting, self._waiting = self._waiting, collections.deque()
        for item in waiting:
            fut = item.future if type(item) is Batch else item
            if not fut.done():  # type: ignore[union-attr]
                fut.set_exception(exc)  # type: ignore[union-attr]
                fut.exception()  # type: ignore[union-attr] # a caller that was cancelled meanwhile must not leave it unretrieved

    def close(self) -> None:
        """Close the socket (commands in flight fail); a closed connection cannot be used again."""
        self.closed = True
        self._fail(ConnectionError("connection closed"))
