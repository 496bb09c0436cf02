"""``SyncClient`` under faults: a server restart, an interrupted call, a fork, a silent handshake, a lost primary.

The plain enqueue runs over a blocking socket of the calling thread's own, which nothing watches between
calls; the rest goes through a background event loop's thread. Against real servers.
"""

from __future__ import annotations

import os
import signal
import threading
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
import redis as redis_sync
from redis.exceptions import TimeoutError as RedisTimeoutError

from framework.client.sync import SyncClient
from framework.embedded.launch import free_port
from framework.embedded.process import start_test_server
from framework.errors import RedisUnavailable
from framework.protocol.keys import Schema
from framework.settings import Settings
from framework.task import TaskDef
from framework.transport.connection import open_redis
from framework.transport.lean.blocking import BlockingConnection, ClusterThreadConnections
from framework.transport.lean.cluster import ClusterRespClient, slot_of
from framework.transport.lean.paths import fast_path_for
from tests.fixtures.tls import TlsServer, tls_server

if TYPE_CHECKING:
    from pathlib import Path

    from tests.fixtures.cluster import ClusterInfo


class Item(msgspec.Struct, frozen=True):
    n: int = 0


async def _noop(ctx: Any, payload: Any) -> None:
    return None


ITEM = TaskDef("sync-faults:item", Item, _noop)


def test_an_enqueue_after_the_server_restarted_reconnects_and_stores_its_task(tmp_path: Path, namespace: str) -> None:
    """The server restarted (it is up again): the next enqueue stores its task, it does not raise RedisUnavailable.

    The thread's blocking socket holds the old server's close, which nothing read: the socket is checked
    before the command is sent (while reconnecting cannot run it twice), as redis-py's pool does.
    """
    server = start_test_server(tmp_path / "valkey", appendonly=True)
    schema = Schema(namespace)
    try:
        with SyncClient(server.url, schema=schema) as client:
            ITEM.enqueue_sync(client, Item())  # registers the queue, through the loop
            ITEM.enqueue_sync(client, Item())  # the blocking socket
            assert client._blocking is not None and client._blocking.made == 1
            server.restart()
            info = ITEM.enqueue_sync(client, Item(n=3))
            direct = redis_sync.Redis(port=server.port)
            try:
                assert direct.hget(schema.queue("default").task(info.id), "state") == b"pending"
            finally:
                direct.close()
    finally:
        server.stop()


def test_an_enqueue_after_an_interrupted_one_reads_its_own_reply(redis_url: str, namespace: str) -> None:
    """Ctrl-C while a thread waits for its reply: the calls after it read their own replies, not that one.

    The script cache is flushed and the server paused, so the interrupted EVALSHA's reply (NOSCRIPT) comes later;
    left on the socket, the next enqueue would read it, send SCRIPT LOAD and read its own NOSCRIPT as the load's
    reply, and so on. The interrupted call's connection is closed instead.
    """
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are handled by the main thread")
    schema = Schema(namespace)
    direct = redis_sync.Redis.from_url(redis_url)

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        with SyncClient(redis_url, schema=schema) as client:
            ITEM.enqueue_sync(client, Item())
            ITEM.enqueue_sync(client, Item())
            direct.script_flush()
            direct.client_pause(1500)  # ALL: the next command waits 1.5 s for its reply
            signal.setitimer(signal.ITIMER_REAL, 0.3)
            with pytest.raises(KeyboardInterrupt):
                ITEM.enqueue_sync(client, Item(n=1))
            signal.setitimer(signal.ITIMER_REAL, 0)
            second = ITEM.enqueue_sync(client, Item(n=2))
            third = ITEM.enqueue_sync(client, Item(n=3))
            qk = schema.queue("default")
            assert direct.hget(qk.task(second.id), "state") == b"pending"
            assert direct.hget(qk.task(third.id), "state") == b"pending"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        direct.close()


def test_a_client_made_before_a_fork_works_in_the_child_on_both_paths(redis_url: str, namespace: str) -> None:
    """A SyncClient made before a fork (a preloading web server): in the child, both the plain enqueue and the calls
    through the loop work.

    The background loop's thread does not exist in the child: the child makes a loop thread, a client and
    connections of its own, or every call that goes through the loop (options, enqueue_many, wait, close) would
    wait forever.
    """
    schema = Schema(namespace)
    with SyncClient(redis_url, schema=schema) as client:
        ITEM.enqueue_sync(client, Item())  # registers the queue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork() of a multi-threaded process
            pid = os.fork()
        if pid == 0:  # the child: report by exit code, never return into pytest
            code = 2
            try:
                done: list[str] = []

                def work() -> None:
                    ITEM.enqueue_sync(client, Item(n=1))  # the blocking path
                    done.append("plain")
                    client.enqueue(ITEM, Item(n=2), queue="other")  # through the loop
                    done.append("loop")

                t = threading.Thread(target=work, daemon=True)
                t.start()
                t.join(10)
                code = 0 if done == ["plain", "loop"] else (3 if done == ["plain"] else 4)
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        assert code != 3, "in the forked child, the enqueue through the background loop hung (no loop thread there)"
        assert code == 0


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    with tls_server(tmp_path_factory.mktemp("tls")) as running:
        yield running


def test_a_blocking_tls_handshake_keeps_its_timeout(tls: TlsServer) -> None:
    """A server that does not answer the handshake's SELECT: ``open`` times out after ``connect_timeout``.

    The reply is polled for with the TLS socket made non-blocking for a moment; the socket's timeout must be put
    back after, or the SELECT's reply is waited for without limit (here until the pause ends, 3 s later, when it
    succeeds; a hung server: forever).
    """
    fast = fast_path_for(open_redis(tls.url()))
    assert fast is not None
    options = {k: v for k, v in fast.options.items() if k in ("username", "password", "tls")}
    conn = BlockingConnection(fast.address, db=1, connect_timeout=0.5, **options)
    direct = redis_sync.Redis.from_url(tls.url())
    try:
        direct.client_pause(3000)  # ALL: SELECT waits 3 s
        with pytest.raises(RedisTimeoutError):
            conn.open()
    finally:
        conn.close()
        direct.close()


def test_a_cluster_primary_whose_blocking_connection_fails_is_dropped(
    valkey_cluster: ClusterInfo, namespace: str, tmp_path: Path
) -> None:
    """A primary that cannot be reached (it died): the threads' blocking connections to it are dropped.

    Primaries come and go over a long-lived client's life; connections kept to dead ones would pile up in
    every thread until ``close``. The slot map is pointed at a port where nothing listens.
    """
    settings = Settings(redis_url=valkey_cluster.url, namespace=namespace, data_dir=str(tmp_path), load_plugins=[])
    schema = Schema(namespace)
    task = TaskDef("sync-faults:q1", Item, _noop, queue="q1")
    with SyncClient(valkey_cluster.url, schema=schema, settings=settings) as client:
        blocking = client._blocking
        lean = client._client.broker.lean
        assert isinstance(blocking, ClusterThreadConnections) and isinstance(lean, ClusterRespClient)
        client.enqueue(task, Item())  # through the loop: registers the queue, loads the slot map
        client.enqueue(task, Item(n=1))  # the blocking socket to q1's primary
        live = ("127.0.0.1", valkey_cluster.ports[1])
        assert live in blocking._by_node
        dead = ("127.0.0.1", free_port())
        lean._owner[slot_of(schema.queue("q1").pending)] = dead
        with pytest.raises(RedisUnavailable):
            client.enqueue(task, Item(n=2))
        assert dead not in blocking._by_node
        stored = client.enqueue(task, Item(n=3))  # the map is loaded again through the loop
        assert blocking.get_for(schema.queue("q1").pending) is not None
        assert sorted(blocking._by_node) == [live]
    with redis_sync.Redis(port=valkey_cluster.ports[1]) as direct:
        assert direct.hget(schema.queue("q1").task(stored.id), "state") == b"pending"
