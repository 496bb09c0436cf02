"""The lean TLS connection when the server closes the session right after a reply: the reply still arrives."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from collections.abc import Iterator

import pytest

from framework.transport.lean.connection import RespConnection
from framework.transport.lean.tls import tls_setup
from tests.fixtures.tls import Certificates, TlsServer, make_certificates, tls_server


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls-close-certs"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    with tls_server(tmp_path_factory.mktemp("tls-close")) as running:
        yield running


def _one_shot_tls_server(certs: Certificates, reply: bytes) -> tuple[int, threading.Thread]:
    """A TLS peer that answers the first command with ``reply`` and its close_notify in ONE TCP write."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(certs.server_cert), str(certs.server_key))
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    port = lsock.getsockname()[1]

    def serve() -> None:
        conn, _ = lsock.accept()
        lsock.close()
        conn.settimeout(10)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        session = ctx.wrap_bio(incoming, outgoing, server_side=True)
        try:
            while True:
                try:
                    session.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    if outgoing.pending:
                        conn.sendall(outgoing.read())
                    incoming.write(conn.recv(65536))
            if outgoing.pending:
                conn.sendall(outgoing.read())
            while True:  # the command
                try:
                    if session.read(65536):
                        break
                except ssl.SSLWantReadError:
                    incoming.write(conn.recv(65536))
            session.write(reply)
            with contextlib.suppress(ssl.SSLWantReadError):
                session.unwrap()  # writes close_notify into outgoing
            conn.sendall(outgoing.read())  # reply record + close_notify, one segment
            conn.recv(1)  # until the client closes
        except OSError:
            pass
        finally:
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return port, thread


async def test_a_reply_followed_by_close_notify_in_the_same_read_is_delivered(certs: Certificates) -> None:
    """A reply and the close_notify after it in one read (one TCP write of the peer): the reply is delivered
    before the connection is failed, as plain TCP delivers a reply that came just before the server closed."""
    port, thread = _one_shot_tls_server(certs, b"+PONG\r\n")
    setup = tls_setup({"host": "127.0.0.1", "ssl_ca_certs": str(certs.ca)})
    conn = RespConnection(("127.0.0.1", port), tls=setup, spin=False)
    try:
        assert await asyncio.wait_for(conn.execute("PING"), 10) == b"PONG"
    finally:
        conn.close()
        thread.join(10)


async def test_quit_over_tls_gets_its_ok_like_plain_tcp(server: TlsServer) -> None:
    """Redis answers QUIT with +OK, then closes the TLS session (close_notify): the batch must get both replies."""
    setup = tls_setup({"host": "127.0.0.1", "ssl_ca_certs": str(server.certs.ca)})
    failures = 0
    for _ in range(20):
        conn = RespConnection(("127.0.0.1", server.port), tls=setup, spin=False)
        try:
            await conn.execute("PING")
            replies = await asyncio.wait_for(conn.execute_many([("PING",), ("QUIT",)]), 10)
            assert replies == [b"PONG", b"OK"]
        except ConnectionError:
            failures += 1
        except Exception as exc:  # redis-py's ConnectionError
            if type(exc).__name__ != "ConnectionError":
                raise
            failures += 1
        finally:
            conn.close()
    assert failures == 0, f"{failures}/20 QUIT batches lost their replies to the close_notify"


async def test_control_quit_over_plain_tcp_gets_its_ok(redis_url: str) -> None:
    """The same batch over plain TCP gets both replies before the connection is lost (what TLS must match)."""
    from urllib.parse import urlparse

    url = urlparse(redis_url)
    for _ in range(5):
        conn = RespConnection((url.hostname or "127.0.0.1", url.port or 6379), spin=False)
        try:
            await conn.execute("PING")
            assert await asyncio.wait_for(conn.execute_many([("PING",), ("QUIT",)]), 10) == [b"PONG", b"OK"]
        finally:
            conn.close()
