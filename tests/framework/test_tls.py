"""``rediss://`` on the lean path: enqueue, processing, handoffs and the blocking connection over TLS.

The server is Debian's ``redis-server`` speaking only TLS, with a CA and certificates made for the test
(:mod:`tests.fixtures.tls`). The lean connection must verify the server as redis-py would (a CA that did not
sign its certificate fails the connection, with nothing sent in plaintext), and carry every command, large
writes included, through its in-memory TLS session.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis as redis_sync
from redis.exceptions import ConnectionError  # noqa: A004

from framework.client.client import Client, TaskCall, TaskInfo
from framework.client.sync import SyncClient
from framework.protocol.keys import Schema
from framework.settings import Settings
from framework.task import TaskDef
from framework.transport.connection import open_redis
from framework.transport.lean.blocking import ThreadConnections
from framework.transport.lean.client import RespClient
from framework.transport.lean.paths import fast_path_for
from framework.transport.lean.subscriber import Subscriber
from framework.worker.worker import Worker
from tests.fixtures.tls import TlsServer, tls_server
from tests.framework.worker_app import wait_until


class P(msgspec.Struct, frozen=True, kw_only=True):
    n: int = 0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    with tls_server(tmp_path_factory.mktemp("tls")) as running:
        yield running


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    """A server that asks every client for a certificate its CA signed."""
    with tls_server(tmp_path_factory.mktemp("mtls"), clients_need_certificates=True) as running:
        yield running


def test_a_blocking_tls_connection_polls_for_its_reply_and_reads_big_ones_whole(
    server: TlsServer, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from framework.transport.lean import blocking
    from framework.transport.lean import connection as lean_connection

    monkeypatch.setattr(blocking, "SPIN_SECONDS", 0.05)  # a window no reply misses on a loaded test machine
    fast = fast_path_for(open_redis(server.url()))
    assert fast is not None
    conn = ThreadConnections(fast.address, **fast.options).get()
    try:
        slow = "for i = 1, 300000 do end return 1"  # a few ms: polled for, not slept on
        for _ in range(5):
            assert conn.execute("EVAL", slow, 0) == 1
        assert conn.spun >= 5
        big = b"y" * 2_000_000  # many TLS records: polled until whole, then read blocking if need be
        conn.execute("SET", f"{namespace}:big", big)
        assert conn.execute("GET", f"{namespace}:big") == big
        for _ in range(lean_connection.SPIN_MISSES):  # replies that take longer than the window
            assert conn.execute("BLPOP", f"{namespace}:never", 0.1) is None
        assert conn._polling.off == lean_connection.SPIN_PAUSE
        assert conn.execute("DEL", f"{namespace}:big") == 1  # the socket is blocking again, and works
    finally:
        conn.close()


def _direct(server: TlsServer) -> Any:
    """redis-py's own blocking client over TLS, to look at what the lean path stored."""
    return redis_sync.Redis.from_url(server.url(client_cert=True))


def _lean(redis: Any) -> RespClient:
    fast = fast_path_for(redis)
    assert fast is not None, "a rediss:// client takes the lean path"
    return fast


async def test_a_rediss_client_enqueues_on_the_lean_path(server: TlsServer, namespace: str, tmp_path: Path) -> None:
    url = server.url()
    schema = Schema(namespace)
    task = TaskDef("tls:enqueue", P, lambda ctx, p: None)
    redis = open_redis(url)
    client = Client(redis, schema=schema, settings=Settings(redis_url=url, namespace=namespace, data_dir=str(tmp_path)))
    try:
        assert client.broker.fast is not None  # the lean path, not redis-py's
        one = await client.enqueue(task, P(n=1))
        many = await client.enqueue_many([TaskCall(task, P(n=i)) for i in range(2, 502)])
        conn = client.broker.fast.connection()
        assert conn.connected and conn._tls is not None  # the commands went through the TLS session
    finally:
        await client.close()
        await redis.aclose()
    with _direct(server) as direct:
        pending = {raw.decode() for raw in direct.lrange(schema.queue("default").pending, 0, -1)}
    assert all(isinstance(info, TaskInfo) for info in many)
    assert pending == {one.id, *(info.id for info in many if isinstance(info, TaskInfo))}


async def test_large_writes_and_replies_keep_their_order(server: TlsServer, namespace: str) -> None:
    redis = open_redis(server.url())
    fast = _lean(redis)
    try:
        big = bytes(range(256)) * 16384  # 4 MiB: more than a socket takes at once, many TLS records
        replies = await asyncio.gather(
            *(fast.execute("SET", f"{namespace}:{i}", big[i:]) for i in range(8)),
            *(fast.execute("STRLEN", f"{namespace}:{i}") for i in range(8)),
        )
        assert replies == [b"OK"] * 8 + [len(big) - i for i in range(8)]
        assert await fast.execute("GET", f"{namespace}:3") == big[3:]
        results = await fast.execute_many([("INCR", f"{namespace}:n")] * 1000)
        assert results == list(range(1, 1001))
    finally:
        fast.close()
        await redis.aclose()


async def test_a_worker_processes_and_takes_handoffs_over_tls(
    server: TlsServer, namespace: str, tmp_path: Path
) -> None:
    url = server.url()
    settings = Settings(redis_url=url, namespace=namespace, data_dir=str(tmp_path / "data"))
    schema = Schema(namespace)
    ran: list[int] = []

    async def handle(ctx: Any, p: P) -> None:
        ran.append(p.n)

    task = TaskDef("tls:run", P, handle)
    redis = open_redis(url)
    client = Client(redis, schema=schema, settings=settings)
    worker = Worker(settings, tasks=[task])
    await worker.start()
    try:
        assert worker.processor is not None and getattr(worker.processor.broker, "fast", None) is not None
        waiters = schema.queue("default").waiters

        async def registered() -> bool:
            return worker.identity.server_id.encode() in await redis.lrange(waiters, 0, -1)

        for i in range(3):  # an idle worker: each task is handed to it over its TLS subscriber
            await wait_until(registered)
            await client.enqueue(task, P(n=i))

            async def ran_it(n: int = i + 1) -> bool:
                return len(ran) == n

            await wait_until(ran_it)
        assert worker.processor.handed_off == 3
        await client.enqueue_many([TaskCall(task, P(n=i)) for i in range(3, 303)])

        async def all_ran() -> bool:
            return len(ran) == 303

        await wait_until(all_ran)
        assert sorted(ran) == list(range(303))
    finally:
        await worker.stop()
        await client.close()
        await redis.aclose()


async def test_the_subscriber_hears_messages_and_a_lost_connection_over_tls(server: TlsServer) -> None:
    redis = open_redis(server.url())
    fast = _lean(redis)
    got: list[tuple[bytes, bytes]] = []
    sub = Subscriber(fast, lambda channel, data: got.append((channel, data)))
    try:
        await sub.subscribe(["tls:one", b"tls:two"])
        assert sub._tls is not None
        assert await fast.execute("PUBLISH", "tls:two", b"\x00bytes") == 1
        await fast.execute("PUBLISH", "tls:one", b"x" * 100_000)

        async def both() -> bool:
            return len(got) == 2

        await wait_until(both, timeout=5)
        assert got == [(b"tls:two", b"\x00bytes"), (b"tls:one", b"x" * 100_000)]
        await fast.execute("CLIENT", "KILL", "TYPE", "pubsub")
        reason = await asyncio.wait_for(sub.wait_closed(), 5)
        assert isinstance(reason, ConnectionError)
    finally:
        sub.close()
        fast.close()
        await redis.aclose()


def test_sync_client_enqueues_over_tls_from_threads(server: TlsServer, namespace: str) -> None:
    schema = Schema(namespace)
    task = TaskDef("tls:sync", P, lambda ctx, p: None)
    ids: list[str] = []
    lock = threading.Lock()
    with SyncClient(server.url(), schema=schema) as client:
        task.enqueue_sync(client, P(n=-1))  # registers the queue: the general way, through the loop
        assert client._blocking is not None

        def work(k: int) -> None:
            infos = [client.enqueue(task, P(n=k * 50 + i)) for i in range(50)]
            with lock:
                ids.extend(info.id for info in infos)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert client._blocking.made == 4  # the threads' own blocking TLS connections
    with _direct(server) as direct:
        pending = {raw.decode() for raw in direct.lrange(schema.queue("default").pending, 0, -1)}
    assert len(ids) == 200 and set(ids) <= pending


async def test_a_server_signed_by_another_ca_fails_the_connection(server: TlsServer) -> None:
    url = server.url(ca=server.certs.other_ca)
    redis = open_redis(url)
    fast = _lean(redis)
    try:
        with pytest.raises(
            ConnectionError, match=r"TLS handshake with 127\.0\.0\.1:\d+ failed: .*CERTIFICATE_VERIFY_FAILED"
        ):
            await fast.execute("PING")
        assert not fast.connection().connected
    finally:
        fast.close()
        await redis.aclose()
    blocking = ThreadConnections(fast.address, **fast.options).get()
    with pytest.raises(ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        blocking.execute("PING")
    assert not blocking.connected


async def test_a_missing_ca_file_fails_each_connection_not_the_client(server: TlsServer, tmp_path: Path) -> None:
    redis = open_redis(server.url(ca=tmp_path / "nowhere.crt"))
    fast = _lean(redis)  # made as redis-py's client is: the file is read when a connection needs it
    try:
        for _ in range(2):
            with pytest.raises(ConnectionError, match=r"error connecting to 127\.0\.0\.1:\d+: .*No such file"):
                await fast.execute("PING")
    finally:
        fast.close()
        await redis.aclose()


async def test_the_host_name_is_checked_as_redis_py_checks_it(server: TlsServer) -> None:
    # the certificate names localhost and 127.0.0.1; the server also listens on 127.0.0.2
    for url, ok in (
        (server.url(host="localhost"), True),
        (server.url(host="127.0.0.2"), False),
        (server.url(host="127.0.0.2") + "&ssl_check_hostname=false", True),
        (server.url(host="127.0.0.2", ca=server.certs.other_ca) + "&ssl_cert_reqs=none", True),  # as asked
    ):
        redis = open_redis(url)
        fast = _lean(redis)
        try:
            if ok:
                assert await fast.execute("PING") == b"PONG", url
            else:
                with pytest.raises(ConnectionError, match=r"failed: .*IP address mismatch"):
                    await fast.execute("PING")
        finally:
            fast.close()
            await redis.aclose()


async def test_client_certificates_are_sent_when_given(strict_server: TlsServer, namespace: str) -> None:
    redis = open_redis(strict_server.url(client_cert=True))
    fast = _lean(redis)
    try:
        assert await fast.execute("SET", f"{namespace}:k", "v") == b"OK"
        blocking = ThreadConnections(fast.address, **fast.options).get()
        assert blocking.execute("GET", f"{namespace}:k") == b"v"
        blocking.close()
    finally:
        fast.close()
        await redis.aclose()
    anonymous = open_redis(strict_server.url())
    fast = _lean(anonymous)
    try:
        with pytest.raises(ConnectionError):  # refused by the server: at the handshake or the first reply
            await asyncio.wait_for(fast.execute("PING"), 10)
    finally:
        fast.close()
        await anonymous.aclose()
