"""The lean hot-path connection: which clients get one, pipelining, errors, reconnection, the batch enqueue,
and FastRedis, the redis-py client whose ordinary commands run on it."""

from __future__ import annotations

import asyncio
import gc
import warnings
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import Connection
from redis.exceptions import AuthenticationError, DataError, NoScriptError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError

from framework.broker.broker import RedisBroker
from framework.broker.enqueue import ENQUEUE_BATCH
from framework.clock import SystemClock
from framework.embedded.process import start_test_server
from framework.protocol.message import encode_message, new_message
from framework.protocol.scripts import SCRIPTS
from framework.transport.connection import open_redis
from framework.transport.lean.client import RespClient
from framework.transport.lean.connection import RespConnection
from framework.transport.lean.fastredis import FastRedis
from framework.transport.lean.paths import fast_path_for
from tests.framework.worker_app import require_password


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


def _count_writes(conn: RespConnection) -> list[int]:
    """The sizes of the socket writes ``conn`` makes from now on."""
    writes: list[int] = []
    real_write = conn._write

    def counting(data: bytes) -> None:
        writes.append(len(data))
        real_write(data)

    conn._write = counting  # type: ignore[method-assign]
    return writes


async def test_concurrent_commands_share_one_write(redis_url: str, namespace: str) -> None:
    conn = RespConnection(_address(redis_url))
    writes = _count_writes(conn)
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


# -- FastRedis --------------------------------------------------------------------------------------


async def _spread(r: Redis, ns: str) -> list[Any]:
    """A representative spread of redis-py calls; each result, or the (type, message) of its exception."""
    k, n, h, z, s, lst, x = (f"{ns}:{name}" for name in ("k", "n", "h", "z", "s", "l", "x"))
    script = r.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    calls: list[Any] = [
        lambda: r.set(k, "v"),
        lambda: r.set(k, "w", get=True),
        lambda: r.set(k, "x", nx=True),
        lambda: r.get(k),
        lambda: r.set(f"{ns}:ex", 1, ex=100),
        lambda: r.incr(n),
        lambda: r.incrby(n, 10),
        lambda: r.incrbyfloat(f"{ns}:f", 0.1),
        lambda: r.hset(h, mapping={"a": 1, "b": "2", "c": 1.5}),
        lambda: r.hgetall(h),
        lambda: r.hget(h, "a"),
        lambda: r.zadd(z, {"a": 1.5, "b": 2, "c": 1 / 3}),
        lambda: r.zrange(z, 0, -1, withscores=True),
        lambda: r.zscore(z, "a"),
        lambda: r.sadd(s, "a", "b", b"c"),
        lambda: r.smembers(s),
        lambda: r.rpush(lst, "a", "b", "c", "b"),
        lambda: r.lpos(lst, "b"),
        lambda: r.lrange(lst, 0, -1),
        lambda: r.xadd(x, {"f": "v"}, id="1-0"),
        lambda: r.xrange(x),
        lambda: r.exists(k, h, f"{ns}:missing"),
        lambda: r.ttl(f"{ns}:ex"),
        lambda: r.ttl(f"{ns}:missing"),
        lambda: r.expire(k, 50),
        lambda: _sorted(r.keys(f"{ns}:*")),
        lambda: r.type(h),
        lambda: r.mget([]),  # EMPTY_RESPONSE: no keys is an error reply, redis-py returns []
        lambda: r.mget([k, f"{ns}:missing"]),
        lambda: r.config_get("maxmemory-policy"),
        lambda: r.execute_command("CONFIG GET", "maxmemory-policy"),
        lambda: r.execute_command(b"PING"),
        r.ping,
        lambda: r.echo("é"),
        lambda: r.eval("return {1, 'a', redis.call('GET', KEYS[1])}", 1, k),
        lambda: r.eval("return {1, redis.error_reply('boom'), {2, redis.error_reply('NOSCRIPT deep')}}", 0),
        lambda: r.eval("return redis.status_reply('FINE')", 0),
        lambda: script(keys=[n], args=[5]),
        lambda: r.evalsha("0" * 40, 0),
        lambda: r.lpush(k, "x"),  # WRONGTYPE
        lambda: r.execute_command("NOSUCHCOMMAND", "a"),
        lambda: r.incr(k),  # not an integer
        lambda: r.set(k, True),  # type: ignore[arg-type]
        lambda: r.set(k, None),  # type: ignore[arg-type]
        lambda: r.set(k, bytearray(b"ba")),
        lambda: r.get(k),
        lambda: r.delete(k, n),
    ]
    out: list[Any] = []
    for call in calls:
        try:
            out.append(await call())
        except Exception as exc:
            out.append((type(exc), str(exc)))
    return out


async def _sorted(keys: Any) -> list[bytes]:
    return sorted(await keys)


def _comparable(value: Any) -> Any:
    if isinstance(value, Exception):
        return (type(value), str(value))
    if isinstance(value, list | tuple):
        return type(value)([_comparable(v) for v in value])
    return value


async def test_fast_redis_replies_equal_redis_pys(
    redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain, fast = Redis.from_url(redis_url), FastRedis.from_url(redis_url)
    try:
        assert fast.resp_client is not None
        expected = await _spread(plain, namespace)
        expected_info = await plain.info()
        expected_scan = sorted(await _scan(plain, namespace))
        await plain.delete(*await plain.keys(f"{namespace}:*"))

        pool_commands: list[Any] = []
        real = Redis.execute_command

        async def counting(self: Redis, *args: Any, **options: Any) -> Any:
            pool_commands.append(args[0])
            return await real(self, *args, **options)

        monkeypatch.setattr(Redis, "execute_command", counting)
        got = await _spread(fast, namespace)
        info = await fast.info()
        scan = sorted(await _scan(fast, namespace))
        cursor, keys = await fast.scan(0, match=f"{namespace}:*", count=10)
        monkeypatch.undo()
    finally:
        await plain.aclose()
        await fast.aclose()
    # redis-py encodes or rejects the argument types hiredis does not take; "SET k True" never got packed
    assert pool_commands == ["SET", "SET", "SET"]
    assert [_comparable(v) for v in got] == [_comparable(v) for v in expected]
    assert got[1] == b"v" and got[2] is None and got[3] == b"w"
    assert got[9] == {b"a": b"1", b"b": b"2", b"c": b"1.5"} and got[15] == {b"a", b"b", b"c"}
    assert got[12] == [(b"c", 1 / 3), (b"a", 1.5), (b"b", 2.0)] and got[17] == 1
    assert got[27] == [] and isinstance(got[29], dict) and len(got[29]) == 1
    assert type(got[35][1]) is ResponseError and type(got[35][2][1]) is NoScriptError
    assert got[38][0] is NoScriptError and got[39][0] is ResponseError and "WRONGTYPE" in got[39][1]
    assert got[42][0] is DataError and got[45] == b"ba"
    assert isinstance(info, dict) and info.keys() == expected_info.keys()
    assert scan == expected_scan and len(scan) > 5
    assert isinstance(cursor, int) and isinstance(keys, list)


async def _scan(r: Redis, ns: str) -> list[bytes]:
    return [key async for key in r.scan_iter(match=f"{ns}:*", count=1000)]


async def test_fast_redis_coalesces_concurrent_commands_and_keeps_blocking_ones_off(
    redis_url: str, namespace: str
) -> None:
    fast = FastRedis.from_url(redis_url)
    try:
        assert fast.resp_client is not None
        await fast.ping()
        conn = fast.resp_client.connection()
        writes = _count_writes(conn)
        results = await asyncio.gather(*(fast.incr(f"{namespace}:c") for _ in range(100)))
        assert sorted(results) == list(range(1, 101))
        assert len(writes) == 2  # the first at once (idle connection), the other 99 together

        blocked = asyncio.ensure_future(fast.blpop([f"{namespace}:list"], timeout=60))
        await asyncio.sleep(0.05)
        writes.clear()
        await asyncio.gather(*(fast.incr(f"{namespace}:c") for _ in range(50)))
        assert not blocked.done()  # the increments did not wait behind it (for its timeout)
        assert writes  # on the shared connection, while BLPOP waits on a pooled one
        await fast.rpush(f"{namespace}:list", "x")
        assert await blocked == (f"{namespace}:list".encode(), b"x")
    finally:
        await fast.aclose()


async def test_fast_redis_falls_back_to_redis_py_where_it_must(redis_url: str, namespace: str) -> None:
    decoding = FastRedis.from_url(redis_url, decode_responses=True)
    assert decoding.resp_client is None
    try:
        assert await decoding.set(f"{namespace}:d", "é") is True
        assert await decoding.get(f"{namespace}:d") == "é"
        assert await decoding.hgetall(f"{namespace}:missing") == {}
    finally:
        await decoding.aclose()
    assert FastRedis.from_url(redis_url, socket_timeout=1.0).resp_client is None
    assert FastRedis.from_url(redis_url.replace("redis://", "rediss://")).resp_client is None
    resp2 = FastRedis.from_url(redis_url, protocol=2)
    try:
        assert resp2.resp_client is not None
        await resp2.hset(f"{namespace}:h", "a", "1")
        assert await resp2.hgetall(f"{namespace}:h") == {b"a": b"1"}  # RESP2 replies, RESP2 callbacks
        assert resp2.resp_client.connection().protocol == 2
    finally:
        await resp2.aclose()

    fast = FastRedis.from_url(redis_url)
    try:
        assert fast.client().resp_client is None  # a client pinned to one connection
        async with fast.pipeline(transaction=True) as pipe:
            pipe.set(f"{namespace}:p", "1").incr(f"{namespace}:p").get(f"{namespace}:p")
            assert await pipe.execute() == [True, 2, b"2"]
        async with fast.pipeline(transaction=False) as pipe:
            pipe.incr(f"{namespace}:p").lpush(f"{namespace}:p", "x")
            replies = await pipe.execute(raise_on_error=False)
            assert replies[0] == 3 and isinstance(replies[1], ResponseError)

        pubsub = fast.pubsub()
        try:
            await pubsub.subscribe(f"{namespace}:chan")
            assert (await pubsub.get_message(timeout=1.0))["type"] == "subscribe"  # type: ignore[index]
            assert await fast.publish(f"{namespace}:chan", "hi") == 1
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            assert message is not None and message["data"] == b"hi"
        finally:
            await pubsub.aclose()

        async with fast.lock(f"{namespace}:lock", timeout=5):
            assert await fast.exists(f"{namespace}:lock") == 1
        assert await fast.exists(f"{namespace}:lock") == 0
    finally:
        await fast.aclose()


async def test_fast_redis_survives_a_killed_connection(redis_url: str, namespace: str) -> None:
    fast, killer = FastRedis.from_url(redis_url), Redis.from_url(redis_url)
    key = f"{namespace}:n"
    try:
        assert fast.resp_client is not None
        assert await fast.incr(key) == 1
        client_id = await fast.resp_client.execute("CLIENT", "ID")
        await killer.execute_command("CLIENT", "KILL", "ID", client_id)
        assert await fast.incr(key) == 2  # reconnects (or retries on the pool)

        # a command in flight when the connection dies is retried on the pool
        client_id = await fast.resp_client.execute("CLIENT", "ID")
        blocked = asyncio.ensure_future(fast.resp_client.execute("BLPOP", f"{namespace}:never", 5))
        await asyncio.sleep(0.05)
        pending = asyncio.ensure_future(fast.incr(key))  # queued behind the BLPOP on the shared connection
        await asyncio.sleep(0.05)
        await killer.execute_command("CLIENT", "KILL", "ID", client_id)
        with pytest.raises(RedisConnectionError):
            await blocked
        assert await pending == 3
        assert await fast.get(key) == b"3"
    finally:
        await fast.aclose()
        await killer.aclose()


async def test_fast_redis_survives_a_server_restart(tmp_path: Path) -> None:
    server = start_test_server(tmp_path / "valkey")
    try:
        fast = open_redis(server.url)
        assert isinstance(fast, FastRedis)
        try:
            assert await fast.incr("n") == 1
            server.restart()
            assert await fast.incr("n") == 1  # no persistence: a fresh server
            assert await fast.incr("n") == 2
        finally:
            await fast.aclose()
    finally:
        server.stop()


async def test_fast_redis_authenticates_and_selects_its_database(tmp_path: Path) -> None:
    server = start_test_server(tmp_path / "valkey")
    try:
        base = await require_password(server.url, "pw")
        fast, plain = FastRedis.from_url(f"{base}/2"), Redis.from_url(f"{base}/2")
        try:
            assert fast.resp_client is not None
            assert await fast.set("k", "v") is True
            assert fast.resp_client.connection().connected  # HELLO 3 AUTH ..., SELECT 2 on the fast path
            assert await plain.get("k") == b"v"
            assert await plain.dbsize() == 1
        finally:
            await fast.aclose()
            await plain.aclose()
        for cls in (Redis, FastRedis):
            wrong = cls.from_url(f"redis://:nope@127.0.0.1:{server.port}")
            with pytest.raises(AuthenticationError):
                await wrong.ping()
            await wrong.aclose()
    finally:
        server.stop()


async def test_fast_redis_closes_its_connection(redis_url: str, schema: Any) -> None:
    fast = FastRedis.from_url(redis_url)
    assert fast.resp_client is not None
    broker = RedisBroker(fast, schema, SystemClock())
    assert isinstance(broker.hot, RespClient) and broker.hot is not fast.resp_client  # RESP2, raw replies
    await fast.ping()
    await broker.enqueue("default", "one", b"msg")
    conn = fast.resp_client.connection()
    assert conn.protocol == 3 and conn.connected  # as redis-py's own connections
    broker.close()
    sock = conn._sock
    assert sock is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        await fast.aclose()
        assert not conn.connected and sock.fileno() == -1
        del fast, conn, sock, broker
        gc.collect()


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("redis://").split("/")[0].rsplit(":", 1)
    return host, int(port)


async def test_a_reply_on_an_idle_connection_is_polled_for_and_slow_replies_turn_polling_off(
    redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from framework import resp

    monkeypatch.setattr(resp, "SPIN_SECONDS", 0.05)  # a window no reply misses on a loaded test machine
    conn = RespConnection(_address(redis_url))
    try:
        await conn.execute("PING")
        # a reply that takes a few ms comes after the one loop iteration the command yields first, and is
        # polled for; on a loaded machine that iteration itself can take as long, so not every one is
        slow = "for i = 1, 300000 do end return 1"
        spun = conn.spun
        for _ in range(5):
            assert await conn.execute("EVAL", slow, 0) == 1
        assert conn.spun > spun
        spun = conn.spun
        await asyncio.gather(*(conn.execute("EVAL", slow, 0) for _ in range(10)))
        assert conn.spun <= spun + 1  # concurrent commands pipeline: the loop is busy, nothing else polls
        before = conn.spun
        for _ in range(resp.SPIN_MISSES):  # replies that take longer than the window
            assert await conn.execute("BLPOP", f"{namespace}:never", 0.1) is None
        assert conn._polling.off == resp.SPIN_PAUSE  # polling paused: a distant server costs nothing more
        assert await conn.execute("GET", f"{namespace}:spin") is None
        assert conn.spun == before
        assert conn._polling.off == resp.SPIN_PAUSE - 1
    finally:
        conn.close()
    quiet = RespConnection(_address(redis_url), spin=False)
    try:
        for _ in range(5):
            await quiet.execute("PING")
        assert quiet.spun == 0
    finally:
        quiet.close()


def test_a_blocking_connection_polls_for_its_reply_and_slow_replies_turn_polling_off(
    redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from framework.transport.lean import blocking
    from framework.transport.lean import connection as lean_connection

    monkeypatch.setattr(blocking, "SPIN_SECONDS", 0.05)  # a window no reply misses on a loaded test machine
    conn = blocking.BlockingConnection(_address(redis_url))
    try:
        assert conn.execute("PING") == b"PONG"
        slow = "for i = 1, 300000 do end return 1"  # a few ms: polled for, not slept on
        for _ in range(5):
            assert conn.execute("EVAL", slow, 0) == 1
        assert conn.spun >= 5
        big = b"x" * 3_000_000  # a reply in many pieces: polled until whole
        conn.execute("SET", f"{namespace}:big", big)
        assert conn.execute("GET", f"{namespace}:big") == big
        assert conn.execute("SET", f"{namespace}:big", "small", "GET") == big
        before = conn.spun
        for _ in range(lean_connection.SPIN_MISSES):  # replies that take longer than the window
            assert conn.execute("BLPOP", f"{namespace}:never", 0.1) is None
        assert conn._polling.off == lean_connection.SPIN_PAUSE  # polling paused: a distant server costs nothing more
        assert conn.execute("GET", f"{namespace}:big") == b"small"
        assert conn.spun == before
        assert conn._polling.off == lean_connection.SPIN_PAUSE - 1
    finally:
        conn.close()
