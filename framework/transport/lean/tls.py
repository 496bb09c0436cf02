"""TLS for the lean connections: redis-py's context for a ``rediss://`` client, and TLS over a raw socket.

:func:`tls_setup` builds the ``ssl.SSLContext`` from a redis-py ``SSLConnection``'s options with redis-py's own
:class:`~redis.asyncio.connection.RedisSSLContext` and ``SSLConnection``'s defaults (certificate required,
host name checked), so a lean connection verifies what redis-py's would: the same CA file or data, client
certificate and key, verify mode, host name check, minimum version and ciphers. The server's name for SNI and
the host name check is the host the client connects to, as asyncio's ``open_connection`` gives redis-py.

The event-loop connection keeps its raw non-blocking socket and encrypts in memory: a :class:`TlsChannel` is an
``ssl.SSLObject`` between two ``ssl.MemoryBIO``; what the connection writes goes through :meth:`TlsChannel.encrypt`
and what it reads through :meth:`TlsChannel.decrypt`, and the socket carries the records as before.
:meth:`TlsChannel.handshake` runs the handshake on the event loop; a failed one (an unknown CA, a wrong host
name) raises ``ssl.SSLError`` there and then: nothing falls back to plaintext. The blocking connection wraps
its socket with :meth:`TlsSetup.wrap` instead.
"""

from __future__ import annotations

import inspect
import ssl
from typing import TYPE_CHECKING, Any

from redis.asyncio.connection import RedisSSLContext, SSLConnection
from redis.exceptions import RedisError

if TYPE_CHECKING:
    import asyncio
    import socket
    from collections.abc import Callable

__all__ = ("TlsChannel", "TlsSetup", "tls_setup")

_READ_SIZE = 256 * 1024


class TlsSetup:
    """What a TLS connection to one server needs: the context, and the server's name to check.

    Args:
        context: makes the client context (verification, client certificate, ...) when a connection first
            needs it, as redis-py does: a missing CA or certificate file fails the connection, not the client
            (the maker may cache what it made).
        server_hostname: the name sent for SNI and checked against the certificate when the context checks
            host names (None: neither).
    """

    __slots__ = ("_context", "server_hostname")

    def __init__(self, context: Callable[[], ssl.SSLContext], server_hostname: str | None) -> None:
        self._context = context
        self.server_hostname = server_hostname

    @property
    def context(self) -> ssl.SSLContext:
        """The client context (made on first use)."""
        return self._context()

    def wrap(self, sock: socket.socket) -> ssl.SSLSocket:
        """``sock`` (blocking, connected) wrapped, the handshake done within the socket's timeout."""
        return self.context.wrap_socket(sock, server_hostname=self.server_hostname)


class TlsChannel:
    """One TLS session over memory buffers: plaintext in and out, records to and from the socket.

    Args:
        setup: the context and server name.
    """

    __slots__ = ("_incoming", "_outgoing", "_read", "_write", "ssl")

    def __init__(self, setup: TlsSetup) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self.ssl = setup.context.wrap_bio(self._incoming, self._outgoing, server_hostname=setup.server_hostname)
        self._read = self.ssl.read
        self._write = self.ssl.write

    async def handshake(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        """Run the client handshake over the connected non-blocking ``sock``; the session is then ready for data.

        Raises:
            ssl.SSLError: the handshake failed (``ssl.SSLCertVerificationError``: the server's certificate did
                not verify).
            ConnectionResetError: the server closed the connection during the handshake.
        """
        session, incoming, outgoing = self.ssl, self._incoming, self._outgoing
        while True:
            try:
                session.do_handshake()
                break
            except ssl.SSLWantReadError:
                if outgoing.pending:
                    await loop.sock_sendall(sock, outgoing.read())
                data = await loop.sock_recv(sock, _READ_SIZE)
                if not data:
                    raise ConnectionResetError("the server closed the connection during the TLS handshake") from None
                incoming.write(data)
        if outgoing.pending:  # the client's Finished
            await loop.sock_sendall(sock, outgoing.read())

    def encrypt(self, data: bytes) -> bytes:
        """The records that carry ``data`` (and any the session had to send before)."""
        self._write(data)
        return self._outgoing.read()

    def decrypt(self, data: bytes) -> tuple[bytes, bool]:
        """The plaintext of the records in ``data`` (and those buffered before), and whether the server closed.

        The closing is the server's ``close_notify``. A reply may share a read with the ``close_notify`` that
        follows it (Redis answers ``QUIT`` so): its plaintext is returned with the closing, to be read before
        the connection is failed. A record that is not whole yet stays buffered for the next call. Raises
        ``ssl.SSLError`` on a bad record or an alert from the server.
        """
        incoming, read = self._incoming, self._read
        incoming.write(data)
        chunks: list[bytes] = []
        closed = False
        while True:
            try:
                chunk = read(_READ_SIZE)
            except ssl.SSLWantReadError:
                break
            if not chunk:  # the server's close_notify
                closed = True
                break
            chunks.append(chunk)
            if not incoming.pending and not self.ssl.pending():
                break
        return (chunks[0] if len(chunks) == 1 else b"".join(chunks)), closed

    def outgoing(self) -> bytes:
        """Records the session produced on its own (a reply to a key update, ...) and not yet sent."""
        return self._outgoing.read() if self._outgoing.pending else b""


def tls_setup(kwargs: dict[str, Any]) -> TlsSetup | None:
    """The :class:`TlsSetup` of a redis-py ``SSLConnection`` made with ``kwargs``; None for options it does not know.

    Options redis-py rejects (an unknown ``ssl_cert_reqs``) give None too: its connections report them. What
    fails only when the context is made (a CA file that does not exist) fails each connection, as in redis-py.
    """
    params = {
        name[len("ssl_") :]: kwargs.get(name, param.default)
        for name, param in inspect.signature(SSLConnection.__init__).parameters.items()
        if name.startswith("ssl_")
    }
    if any(name.startswith("ssl_") and name[len("ssl_") :] not in params for name in kwargs):
        return None  # an option this redis-py version takes elsewhere: keep to its own connections
    try:
        context = RedisSSLContext(**params)
    except (TypeError, RedisError):
        return None  # options its context does not take, or rejects: redis-py's connections report that
    return TlsSetup(context.get, kwargs.get("host", "localhost"))
