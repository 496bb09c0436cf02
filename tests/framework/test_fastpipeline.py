"""FastRedis pipelines and transactions: redis-py's results and errors, in one write on the shared connection."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError, WatchError

from framework.transport.lean.fastredis import FastRedis
from framework.transport.lean.pipeline import FastPipeline
from tests.framework.test_resp import _comparable, _count_writes


def _stack(pipe: Any, ns: str, *, transaction: bool) -> None:
    """A spread of commands with their reply callbacks, nested and top-level errors, and an empty response."""
    k, n, f, h, z, s = (f"{ns}:{name}" for name in ("k", "n", "f", "h", "z", "s"))
    pipe.set(k, "v").set(k, "w", get=True).set(k, "x", nx=True).get(k)
    pipe.incr(n).incrby(n, 10).incrbyfloat(f, 0.1)
    pipe.hset(h, mapping={"a": 1, "b": "2"}).hgetall(h).hget(h, "a")
    pipe.zadd(z, {"a": 1.5, "b": 2}).zrange(z, 0, -1, withscores=True).zscore(z, "a")
    pipe.sadd(s, "a", "b").smembers(s).exists(k, h, f"{ns}:missing").ttl(f"{ns}:missing").type(h)
    pipe.mget([k, f"{ns}:missing"]).config_get("maxmemory-policy").echo("é")
    pipe.eval("return {1, redis.error_reply('boom'), redis.status_reply('FINE')}", 0)
    pipe.lpush(k, "x")  # WRONGTYPE when it runs
    pipe.incr(k)  # not an integer
    if not transaction:
        pipe.mget([])  # an error reply redis-py turns into []
    pipe.expire(k, 50).delete(k, n)


async def _run(r: Redis, ns: str, *, transaction: bool, raise_on_error: bool) -> Any:
    await r.delete(*[f"{ns}:{name}" for name in ("k", "n", "f", "h", "z", "s")])
    async with r.pipeline(transaction=transaction) as pipe:
        _stack(pipe, ns, transaction=transaction)
        try:
            return _comparable(await pipe.execute(raise_on_error=raise_on_error))
        except Exception as exc:
            return (type(exc), str(exc))


@pytest.mark.parametrize("transaction", [True, False])
@pytest.mark.parametrize("raise_on_error", [True, False])
async def test_results_and_errors_equal_redis_pys(
    redis_url: str, namespace: str, transaction: bool, raise_on_error: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain, fast = Redis.from_url(redis_url), FastRedis.from_url(redis_url)
    checkouts: list[Any] = []

    async def checkout(*args: Any, **kwargs: Any) -> Any:
        checkouts.append(args)
        return await take(*args, **kwargs)

    take = fast.connection_pool.get_connection
    monkeypatch.setattr(fast.connection_pool, "get_connection", checkout)
    try:
        expected = await _run(plain, namespace, transaction=transaction, raise_on_error=raise_on_error)
        assert isinstance(fast.pipeline(transaction=transaction), FastPipeline)
        got = await _run(fast, namespace, transaction=transaction, raise_on_error=raise_on_error)
        assert checkouts == []  # never touched the pool
    finally:
        await plain.aclose()
        await fast.aclose()
    assert got == expected
    if raise_on_error:
        assert got[0] is ResponseError and "WRONGTYPE" in got[1] and "of pipeline caused error" in got[1]
    else:
        assert got[1] == b"v" and got[8] == {b"a": b"1", b"b": b"2"} and got[11] == [(b"a", 1.5), (b"b", 2.0)]
        assert got[21][1][0] is ResponseError and got[21][2] == b"FINE" and got[20] == "é".encode()


async def test_a_transaction_the_server_refuses_raises_as_redis_py_does(redis_url: str, namespace: str) -> None:
    results = []
    for client in (Redis.from_url(redis_url), FastRedis.from_url(redis_url)):
        try:
            async with client.pipeline(transaction=True) as pipe:
                pipe.set(f"{namespace}:a", "1").execute_command("NOSUCHCOMMAND", "x").set(f"{namespace}:b", "2")
                with pytest.raises(ResponseError) as err:
                    await pipe.execute()
                results.append((type(err.value), str(err.value), await client.exists(f"{namespace}:a")))
        finally:
            await client.aclose()
    assert results[0] == results[1]
    assert results[1][2] == 0  # nothing of the refused transaction ran


async def test_concurrent_transactions_stay_atomic_and_share_writes(redis_url: str, namespace: str) -> None:
    fast = FastRedis.from_url(redis_url)
    key = f"{namespace}:counter"
    try:
        assert fast.resp_client is not None
        await fast.ping()
        writes = _count_writes(fast.resp_client.connection())

        async def one() -> list[Any]:
            async with fast.pipeline(transaction=True) as pipe:
                pipe.incr(key).get(key).incr(key).get(key)
                return await pipe.execute()

        async def plain_incr() -> int:
            return await fast.incr(key)

        results = await asyncio.gather(*(one() if i % 2 else plain_incr() for i in range(400)))
        assert len(writes) <= 3
        txs = [r for r in results if isinstance(r, list)]
        for first, seen, second, seen_again in txs:
            assert int(seen) == first and second == first + 1 and int(seen_again) == second  # nothing between
        assert int(await fast.get(key)) == 200 * 2 + 200
    finally:
        await fast.aclose()


async def test_watch_uses_the_pool_as_redis_py_does(redis_url: str, namespace: str) -> None:
    fast, other = FastRedis.from_url(redis_url), Redis.from_url(redis_url)
    key = f"{namespace}:watched"
    try:
        await fast.set(key, 1)
        async with fast.pipeline() as pipe:
            await pipe.watch(key)
            value = int(await pipe.get(key))
            pipe.multi()
            pipe.set(key, value + 1)
            assert await pipe.execute() == [True]
        assert await fast.get(key) == b"2"
        async with fast.pipeline() as pipe:
            await pipe.watch(key)
            await other.set(key, 10)
            pipe.multi()
            pipe.set(key, 3)
            with pytest.raises(WatchError):
                await pipe.execute()
        assert await fast.get(key) == b"10"

        async def add(p: Any) -> None:
            current = int(await p.get(key))
            p.multi()
            p.set(key, current + 5)

        await fast.transaction(add, key)
        assert await fast.get(key) == b"15"
    finally:
        await fast.aclose()
        await other.aclose()


async def test_a_pipeline_in_flight_on_a_killed_connection_is_sent_again_through_the_pool(
    redis_url: str, namespace: str
) -> None:
    fast, killer = FastRedis.from_url(redis_url), Redis.from_url(redis_url)
    key = f"{namespace}:n"
    try:
        assert fast.resp_client is not None
        client_id = await fast.resp_client.execute("CLIENT", "ID")
        blocked = asyncio.ensure_future(fast.resp_client.execute("BLPOP", f"{namespace}:never", 5))
        await asyncio.sleep(0.05)

        async def pipelined() -> list[Any]:
            async with fast.pipeline(transaction=True) as pipe:
                pipe.incr(key).incr(key)
                return await pipe.execute()

        pending = asyncio.ensure_future(pipelined())  # queued behind the BLPOP on the shared connection
        await asyncio.sleep(0.05)
        await killer.execute_command("CLIENT", "KILL", "ID", client_id)
        with pytest.raises(RedisConnectionError):
            await blocked
        assert await pending == [1, 2]
        assert await pipelined() == [3, 4]  # the shared connection again, reopened
    finally:
        await fast.aclose()
        await killer.aclose()
