"""The lean hot-path connection: which clients get one, pipelining, errors, reconnection, and the batch enqueue."""

from __future__ import annotations

import asyncio
import gc
import warnings
from typing import Any

import pytest
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from framework.broker import ENQUEUE_BATCH, RedisBroker
from framework.clock import SystemClock
from framework.message import encode_message, new_message
from framework.resp import RespClient, RespConnection, fast_path_for
from framework.scripts import SCRIPTS


def test_which_clients_get_a_fast_path(redis_url: str) -> None:
    plain = Redis.from_url(redis_url)
    assert isinstance(fast_path_for(plain), RespClient)
    unix = Redis.from_url("unix:///tmp/redis.sock?db=2")
    fast = fast_path_for(unix)
    assert fast is not None and fast.address == "/tmp/redis.sock"

    class Custom(Connection):
        pass

    assert fast_path_for(Redis(connection_pool=ConnectionPool.from_url(redis_url, connection_class=Custom))) is None
    assert fast_path_for(Redis.from_url(redis_url, socket_timeout=1.0)) is None
    assert fast_path_for(Redis.from_url(redis_url, protocol=3)) is None
    assert fast_path_for(object()) is None


async def test_commands_errors_and_batches(redis_url: str, redis: Redis, namespace: str) -> None:
    client = fast_path_for(Redis.from_url(redis_url))
    assert client is not None
    try:
        key = f"{namespace}:k"
        assert await client.execute("SET", key, b"v") == b"OK"
        assert await client.execute("GET", key) == b"v"
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await client.execute("LPUSH", key, "x")
        with pytest.raises(NoScriptError):
            await client.execute("EVALSHA", "0" * 40, 0)
        replies = await client.execute_many(
            [("INCR", f"{namespace}:n"), ("LPUSH", key, "x"), ("INCR", f"{namespace}:n")]
        )
        assert replies[0] == 1 and replies[2] == 2
        assert isinstance(replies[1], ResponseError)
        assert await client.execute_many([]) == []
    finally:
        client.close()


async def test_concurrent_commands_share_one_write(redis_url: str, namespace: str) -> None:
    conn = RespConnection(_address(redis_url))
    writes: list[int] = []
    real_write = conn._write

    def counting(data: bytes) -> None:
        writes.append(len(data))
        real_write(data)

    conn._write = counting  # type: ignore[method-assign]
    try:
        await conn.execute("PING")
        writes.clear()
        results = await asyncio.gather(*(conn.execute("INCR", f"{namespace}:c") for _ in range(100)))
        assert sorted(results) == list(range(1, 101))
        assert len(writes) == 2  # the first at once (idle connection), the other 99 together
    finally:
        conn.close()


async def test_a_dropped_connection_fails_what_is_in_flight_and_reconnects(redis_url: str, redis: Redis) -> None:
    conn = RespConnection(_address(redis_url))
    try:
        client_id = await conn.execute("CLIENT", "ID")
        blocked = asyncio.ensure_future(conn.execute("BLPOP", "resp-test:never", 30))
        await asyncio.sleep(0.05)
        await redis.execute_command("CLIENT", "KILL", "ID", client_id)
        with pytest.raises(RedisConnectionError):
            await blocked
        assert await conn.execute("PING") == b"PONG"  # a new connection
    finally:
        conn.close()
    with pytest.raises(RedisConnectionError):
        await conn.execute("PING")  # closed for good


async def test_database_and_password_handshake(redis_url: str, namespace: str) -> None:
    host, port = _address(redis_url)
    base = f"redis://{host}:{port}"
    client = fast_path_for(Redis.from_url(f"{base}/3"))
    assert client is not None
    try:
        await client.execute("SET", f"{namespace}:db", "3")
        other = Redis.from_url(f"{base}/3")
        try:
            assert await other.get(f"{namespace}:db") == b"3"
        finally:
            await other.aclose()
    finally:
        client.close()
    wrong = RespClient(_address(redis_url), password="not-set-on-this-server")
    with pytest.raises(RedisConnectionError):
        await wrong.execute("PING")


def test_an_unclosed_connection_warns_about_nothing(redis_url: str) -> None:
    async def use() -> RespClient:
        client = RespClient(_address(redis_url))
        await client.execute("PING")
        return client

    loop = asyncio.new_event_loop()
    client: Any = loop.run_until_complete(use())
    loop.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        del client
        gc.collect()


async def test_batch_enqueue_stores_what_enqueue_stores(redis: Redis, schema: Any) -> None:
    broker = RedisBroker(redis, schema, SystemClock())
    single = RedisBroker(redis, schema, SystemClock(), fast=False)
    qk = schema.queue("default")
    n = ENQUEUE_BATCH * 2 + 3
    ids = [f"b{i}" for i in range(n)]
    data = [
        encode_message(new_message(type="t", payload=b"", id=i, queue="default", retry=1, timeout=5, deadline=0))
        for i in ids
    ]
    await single.enqueue("default", "one", data[0])
    calls = [broker.prepare_enqueue("default", i, d) for i, d in zip(ids, data, strict=True)]
    calls.append(broker.prepare_enqueue("default", "one", data[0]))  # id conflict
    calls.append(broker.prepare_enqueue("default", "b0", data[0]))  # conflict within the batch
    results = await broker.enqueue_many(calls, ["default"])
    assert results == [1] * n + [0, 0]
    assert [x.decode() for x in await redis.lrange(qk.pending, 0, -1)] == [*reversed(ids), "one"]
    one, first = await redis.hgetall(qk.task("one")), await redis.hgetall(qk.task("b0"))
    assert set(one) == set(first) == {b"msg", b"state", b"pending_since"}
    assert first[b"msg"] == data[0] and first[b"state"] == b"pending"
    broker.close()


async def test_batch_enqueue_runs_unique_tasks_one_by_one(redis: Redis, schema: Any) -> None:
    broker = RedisBroker(redis, schema, SystemClock())
    qk = schema.queue("default")
    msg = encode_message(new_message(type="u", payload=b"", id="u1", queue="default", retry=1, timeout=5, deadline=0))
    calls = [
        broker.prepare_enqueue("default", "p1", msg),
        broker.prepare_enqueue("default", "u1", msg, unique_key=qk.unique("u", b""), unique_ttl=60),
        broker.prepare_enqueue("default", "u2", msg, unique_key=qk.unique("u", b""), unique_ttl=60),
        broker.prepare_enqueue("default", "p2", msg),
    ]
    assert calls[1][0] is SCRIPTS["enqueue_unique"]
    assert await broker.enqueue_many(calls, ["default"]) == [1, 1, -1, 1]
    assert [x.decode() for x in await redis.lrange(qk.pending, 0, -1)] == ["p2", "u1", "p1"]
    broker.close()


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("redis://").split("/")[0].rsplit(":", 1)
    return host, int(port)
