"""``SyncClient.enqueue``'s own path: the prepared plain enqueue over a blocking socket of the calling thread.

It writes the bytes the event-loop fast path writes (``test_plain_enqueue.py`` checks those against the
general path), so here: that it is taken, from several threads at once, that its errors are the event-loop
path's, and that a worker runs what it stores.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
import redis as redis_sync
from redis.exceptions import ResponseError

from framework.client import client as client_module
from framework.client.client import Client, TaskInfo
from framework.client.sync import SyncClient
from framework.embedded.process import start_test_server
from framework.errors import EnqueueFailed, PayloadTooLarge, PayloadTypeError, RedisUnavailable, TaskIdConflict
from framework.protocol.keys import Schema
from framework.protocol.message import decode_message
from framework.settings import Settings
from framework.task import TaskDef
from framework.transport.connection import open_redis
from tests.framework.worker_app import wait_until

if TYPE_CHECKING:
    from pathlib import Path


class Item(msgspec.Struct, frozen=True):
    n: int = 0


async def _noop(ctx: Any, payload: Any) -> None:
    return None


ITEM = TaskDef("sync:item", Item, _noop)
THREADS = 8
EACH = 150


def _blocking_used(client: SyncClient) -> int:
    """How many threads' blocking connections the client made."""
    assert client._blocking is not None
    return client._blocking.made


def test_threads_enqueue_at_once(redis_url: str, namespace: str) -> None:
    schema = Schema(namespace)
    results: list[list[TaskInfo]] = [[] for _ in range(THREADS)]
    start = threading.Barrier(THREADS)
    with SyncClient(redis_url, schema=schema) as client:
        ITEM.enqueue_sync(client, Item(n=-1))  # registers the queue: the general way, through the loop
        assert _blocking_used(client) == 0

        def work(k: int) -> None:
            start.wait()
            results[k] = [client.enqueue(ITEM, Item(n=k * EACH + i)) for i in range(EACH)]

        threads = [threading.Thread(target=work, args=(k,)) for k in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert _blocking_used(client) == THREADS
    infos = [info for batch in results for info in batch]
    assert len(infos) == THREADS * EACH
    assert len({info.id for info in infos}) == THREADS * EACH
    conn = redis_sync.Redis.from_url(redis_url)
    try:
        qk = schema.queue("default")
        stored: list[bytes] = conn.lrange(qk.pending, 0, -1)  # type: ignore[assignment]
        pending = {raw.decode() for raw in stored}
        assert {info.id for info in infos} <= pending
        assert len(pending) == THREADS * EACH + 1
        for info in infos[:: EACH // 3]:
            record: dict[bytes, bytes] = conn.hgetall(qk.task(info.id))  # type: ignore[assignment]
            assert record[b"state"] == b"pending"
            msg = decode_message(record[b"msg"])
            assert (msg.id, msg.type, msg.queue) == (info.id, "sync:item", "default")
            assert msgspec.json.decode(msg.payload, type=Item) == msgspec.json.decode(info.payload, type=Item)
            assert info.state == "pending" and info.max_retry == msg.retry and info.timeout == msg.timeout
    finally:
        conn.close()


def test_errors_are_the_event_loop_paths(redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    schema = Schema(namespace)
    settings = Settings(redis_url=redis_url, namespace=namespace, max_payload_size=64)
    conn = redis_sync.Redis.from_url(redis_url)
    with SyncClient(redis_url, schema=schema, settings=settings) as client:
        ITEM.enqueue_sync(client, Item())
        ITEM.enqueue_sync(client, Item())
        assert _blocking_used(client) == 1
        with pytest.raises(PayloadTypeError, match="takes a Item payload"):
            client.enqueue(ITEM, {"n": 1})
        with pytest.raises(PayloadTooLarge):
            client.enqueue(TaskDef("sync:raw", bytes, _noop), b"x" * 65)
        conn.script_flush()  # NOSCRIPT: loaded again, sent again
        info = ITEM.enqueue_sync(client, Item(n=7))
        assert conn.hget(schema.queue("default").task(info.id), "state") == b"pending"
        monkeypatch.setattr(client_module, "new_task_id", lambda: info.id)
        with pytest.raises(TaskIdConflict, match=info.id):
            ITEM.enqueue_sync(client, Item(n=8))
        monkeypatch.undo()
        pending = schema.queue("default").pending
        conn.rename(pending, f"{pending}:aside")
        conn.set(pending, "not a list")
        with pytest.raises(EnqueueFailed) as sync_error:
            ITEM.enqueue_sync(client, Item())
        conn.delete(pending)
        conn.rename(f"{pending}:aside", pending)
        ITEM.enqueue_sync(client, Item())  # the connection is still good after an error reply
    conn.close()

    async def same_on_the_loop() -> None:
        r = redis_sync.Redis.from_url(redis_url)
        r.rename(pending, f"{pending}:aside")
        r.set(pending, "not a list")
        client = Client(open_redis(redis_url), schema=schema)
        try:
            with pytest.raises(EnqueueFailed) as loop_error:
                await ITEM.enqueue(client, Item())
            assert type(loop_error.value.__cause__) is type(sync_error.value.__cause__)
            assert isinstance(loop_error.value.__cause__, ResponseError)
            assert str(loop_error.value.__cause__) == str(sync_error.value.__cause__)
        finally:
            await client.close()
            r.delete(pending)
            r.rename(f"{pending}:aside", pending)
            r.close()

    asyncio.run(same_on_the_loop())


def test_redis_gone_is_redis_unavailable_and_comes_back(tmp_path: Path, namespace: str) -> None:
    server = start_test_server(tmp_path / "valkey")
    url = f"redis://:pw@127.0.0.1:{server.port}/3"
    try:
        redis_sync.Redis(port=server.port).config_set("requirepass", "pw")
        with SyncClient(url, schema=Schema(namespace)) as client:
            ITEM.enqueue_sync(client, Item())
            first = ITEM.enqueue_sync(client, Item())  # authenticated, database 3
            assert redis_sync.Redis(port=server.port, password="pw", db=3).exists(
                Schema(namespace).queue("default").task(first.id)
            )
            port = server.port
            server.stop()
            with pytest.raises(RedisUnavailable, match=f"127.0.0.1:{port}") as err:
                ITEM.enqueue_sync(client, Item())
            assert "pw@" not in str(err.value)
    finally:
        server.stop()


async def test_a_worker_runs_what_it_enqueues(start: Any, settings: Any, schema: Schema) -> None:
    seen: list[int] = []

    async def handle(ctx: Any, p: Item) -> None:
        seen.append(p.n)

    task = TaskDef("sync:run", Item, handle)
    await start(task)
    sync = SyncClient(settings.redis_url, schema=schema, settings=settings)
    try:

        def enqueue_some() -> None:
            for n in range(20):
                task.enqueue_sync(sync, Item(n=n))

        await asyncio.to_thread(enqueue_some)
        assert _blocking_used(sync) == 1

        async def all_ran() -> bool:
            return sorted(seen) == list(range(20))

        await wait_until(all_ran)
    finally:
        await asyncio.to_thread(sync.close)
