"""The lean connections on a Redis Cluster: routing by slot, batches across primaries, MOVED, ASK, NOSCRIPT.

Against the three-primary Valkey Cluster of :mod:`tests.fixtures.cluster` (queues ``q0``/``q1``/``q2`` on
primaries 0/1/2). The failover of a primary to its replica is in ``test_cluster.py`` (the worker and the
client ride it on these connections).
"""

from __future__ import annotations

import random
import string
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
import redis as redis_sync
from redis.crc import key_slot
from redis.exceptions import AskError, ClusterDownError, MovedError, ResponseError, TryAgainError

from framework.broker.broker import RedisBroker
from framework.client.client import Client, TaskCall
from framework.client.sync import SyncClient
from framework.clock import SystemClock
from framework.embedded.launch import free_port
from framework.errors import RedisUnavailable
from framework.protocol.keys import Schema
from framework.protocol.scripts import LuaScript
from framework.settings import Settings
from framework.task import TaskDef
from framework.transport.connection import open_redis
from framework.transport.lean.blocking import ClusterThreadConnections
from framework.transport.lean.cluster import ClusterRespClient, slot_of
from framework.transport.lean.errors import ReplyError, error_of
from tests.fixtures.cluster import QUEUE_NODES

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from tests.fixtures.cluster import ClusterInfo

ECHO = LuaScript("cluster_echo", "return {KEYS[1], ARGV[1], redis.call('CLUSTER', 'MYID')}")


class P(msgspec.Struct, frozen=True):
    n: int = 0


@pytest.fixture
async def lean(credis: Redis) -> AsyncIterator[ClusterRespClient]:
    broker = RedisBroker(credis, Schema("lean"), SystemClock())
    assert isinstance(broker.lean, ClusterRespClient)
    try:
        yield broker.lean
    finally:
        broker.close()


def _node_ids(info: ClusterInfo) -> list[bytes]:
    ids = []
    for port in info.ports:
        with redis_sync.Redis(port=port) as r:
            ids.append(r.execute_command("CLUSTER", "MYID"))
    return ids


def test_slots_are_redis_clusters_crc16_of_the_hash_tag() -> None:
    rng = random.Random(7)
    keys = ["", "{}", "{}x", "a{}b", "{q0}", "asynq:{q1}:pending", "x{a}{b}", "{a", "a}", "{{a}}", "k{}{x}"]
    keys += ["".join(rng.choices(string.printable, k=rng.randrange(1, 30))) for _ in range(2000)]
    for key in keys:
        assert slot_of(key) == key_slot(key.encode()), key
        assert slot_of(key.encode()) == key_slot(key.encode()), key


def test_a_clusters_redirections_become_redis_pys_exceptions() -> None:
    moved = error_of(ReplyError("MOVED 3999 127.0.0.1:6381"))
    assert type(moved) is MovedError
    assert (moved.slot_id, moved.node_addr) == (3999, ("127.0.0.1", 6381))
    ask = error_of(ReplyError("ASK 12 10.0.0.2:7000"))
    assert type(ask) is AskError
    assert ask.node_addr == ("10.0.0.2", 7000)
    assert type(error_of(ReplyError("TRYAGAIN Multiple keys request during rehashing of slot"))) is TryAgainError
    assert type(error_of(ReplyError("CLUSTERDOWN The cluster is down"))) is ClusterDownError
    assert type(error_of(ReplyError("ERR MOVED is not a command"))) is ResponseError


async def test_the_broker_of_a_cluster_runs_on_lean_connections_without_handoff(credis: Redis) -> None:
    broker = RedisBroker(credis, Schema("lean"), SystemClock())
    try:
        assert isinstance(broker.lean, ClusterRespClient)
        assert broker.hot is broker.lean
        assert broker.fast is None  # one server's shortcuts (handoff, blocking connections) stay off
        assert not broker.handoff
    finally:
        broker.close()
    off = RedisBroker(credis, Schema("lean"), SystemClock(), fast=False)
    assert off.lean is None
    assert off.hot is off.state.pool


async def test_each_call_runs_on_its_slots_primary_and_a_batch_keeps_the_callers_order(
    valkey_cluster: ClusterInfo, lean: ClusterRespClient
) -> None:
    ids = _node_ids(valkey_cluster)
    queues = ["q0", "q1", "q2"] * 5
    random.Random(3).shuffle(queues)
    calls = [(ECHO, [f"lean:{{{q}}}:k"], [str(i)]) for i, q in enumerate(queues)]
    replies = await lean.evalsha_many(calls)
    for i, (q, reply) in enumerate(zip(queues, replies, strict=True)):
        assert reply == [f"lean:{{{q}}}:k".encode(), str(i).encode(), ids[QUEUE_NODES[q]]]
    assert sorted(lean.primaries) == sorted(("127.0.0.1", p) for p in valkey_cluster.ports)
    # one call alone takes the same route
    assert (await lean.evalsha(ECHO, ["lean:{q2}:k"], ["x"]))[2] == ids[2]
    # plain commands go by their first argument; error replies stay in place
    commands: list[tuple[Any, ...]] = []
    for q in queues:
        commands += [("SET", f"lean:{{{q}}}:s", q), ("INCR", f"lean:{{{q}}}:s"), ("GET", f"lean:{{{q}}}:s")]
    got = await lean.execute_many(commands)
    for i, q in enumerate(queues):
        ok, incr, value = got[3 * i : 3 * i + 3]
        assert ok == b"OK"
        assert isinstance(incr, ResponseError)
        assert value == q.encode()
    await lean.execute_many([("DEL", f"lean:{{{q}}}:s") for q in ("q0", "q1", "q2")])


async def test_a_stale_slot_map_is_reloaded_on_moved_and_the_command_runs_once_on_the_right_primary(
    valkey_cluster: ClusterInfo, lean: ClusterRespClient
) -> None:
    ids = _node_ids(valkey_cluster)
    await lean.ready()
    reloads = lean.reloads
    wrong = ("127.0.0.1", valkey_cluster.ports[0])
    slot = slot_of("{q2}")
    lean._owner[slot] = wrong  # as after a resharding this client has not seen
    counter = "lean:{q2}:moved"
    await lean.execute_many([("DEL", counter)])
    lean._owner[slot] = wrong
    replies = await lean.evalsha_many([(ECHO, [counter], ["a"]), (ECHO, ["lean:{q1}:k"], ["b"])])
    assert [r[2] for r in replies] == [ids[2], ids[1]]
    assert lean.reloads == reloads + 2
    lean._owner[slot] = wrong
    assert (await lean.execute_many([("INCR", counter)])) == [1]  # sent again after MOVED, run once
    lean._owner[slot] = wrong
    assert (await lean.evalsha(ECHO, [counter], ["c"]))[2] == ids[2]
    with redis_sync.Redis(port=valkey_cluster.ports[2]) as direct:
        assert direct.get(counter) == b"1"
        direct.delete(counter)


async def test_a_slot_being_migrated_is_followed_with_asking(
    valkey_cluster: ClusterInfo, lean: ClusterRespClient
) -> None:
    """A key the source no longer holds is answered ASK; the command goes to the target after ASKING."""
    ids = _node_ids(valkey_cluster)
    tag = "lean-ask"
    slot = slot_of("{%s}" % tag)  # noqa: UP031
    src = next(i for i, (lo, hi) in enumerate(((0, 5460), (5461, 10922), (10923, 16383))) if lo <= slot <= hi)
    dst = (src + 1) % 3
    key = f"{{{tag}}}:k"
    with redis_sync.Redis(port=valkey_cluster.ports[src]) as s, redis_sync.Redis(port=valkey_cluster.ports[dst]) as d:
        d.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[src])
        s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[dst])
        try:
            assert await lean.execute_many([("SET", key, "v"), ("GET", key)]) == [b"OK", b"v"]
            assert (await lean.evalsha(ECHO, [key], ["x"]))[2] == ids[dst]
            pipe = d.pipeline(transaction=False)
            pipe.execute_command("ASKING")
            pipe.get(key)
            assert pipe.execute()[1] == b"v"  # stored on the target
        finally:
            pipe = d.pipeline(transaction=False)
            pipe.execute_command("ASKING")
            pipe.delete(key)
            pipe.execute()
            s.execute_command("CLUSTER", "SETSLOT", slot, "STABLE")
            d.execute_command("CLUSTER", "SETSLOT", slot, "STABLE")


async def test_the_clients_fast_paths_write_to_each_queues_primary_and_follow_moved(
    valkey_cluster: ClusterInfo, credis: Redis, namespace: str, tmp_path: Any
) -> None:
    settings = Settings(
        redis_url=valkey_cluster.url, namespace=namespace, data_dir=str(tmp_path), queues={"q0": 1}, load_plugins=[]
    )
    schema = Schema(namespace)
    client = Client(credis, schema=schema, settings=settings, url=valkey_cluster.url)
    lean = client.broker.lean
    assert isinstance(lean, ClusterRespClient)
    tasks = {q: TaskDef(f"lean:{q}", P, lambda ctx, p: None, queue=q) for q in ("q0", "q1", "q2")}
    try:
        for task in tasks.values():
            for n in range(3):
                await client.enqueue(task, P(n))
            assert client._plain[task] is not None  # the prepared path took them
        # a stale map: q2's slot points at primary 0, which answers MOVED; the enqueue lands on primary 2 once
        lean._owner[slot_of(schema.queue("q2").pending)] = ("127.0.0.1", valkey_cluster.ports[0])
        await client.enqueue(tasks["q2"], P(9))
        # the bulk path too: runs of one queue on its primary's connection, a MOVED run sent again
        calls = [TaskCall(tasks[q], P(n)) for n in range(10) for q in ("q0", "q1", "q2")]
        assert client._bulk.plan(calls) is not None
        lean._owner[slot_of(schema.queue("q1").pending)] = ("127.0.0.1", valkey_cluster.ports[2])
        results = await client.enqueue_many(calls)
        assert not [r for r in results if isinstance(r, Exception)]
        assert len({r.id for r in results if not isinstance(r, Exception)}) == 30
    finally:
        await client.close()
    for q, node in (("q0", 0), ("q1", 1), ("q2", 2)):
        with redis_sync.Redis(port=valkey_cluster.ports[node]) as direct:
            assert direct.llen(schema.queue(q).pending) == (14 if q == "q2" else 13), q


def test_sync_clients_threads_write_to_each_queues_primary_and_a_redirect_goes_through_the_loop(
    valkey_cluster: ClusterInfo, namespace: str, tmp_path: Any
) -> None:
    settings = Settings(redis_url=valkey_cluster.url, namespace=namespace, data_dir=str(tmp_path), load_plugins=[])
    schema = Schema(namespace)
    tasks = {q: TaskDef(f"lean:{q}", P, lambda ctx, p: None, queue=q) for q in ("q0", "q1", "q2")}
    with SyncClient(valkey_cluster.url, schema=schema, settings=settings) as client:
        blocking = client._blocking
        assert isinstance(blocking, ClusterThreadConnections)
        for task in tasks.values():
            client.enqueue(task, P(0))  # through the loop: registers the queue, loads the slot map

        def burst(task: TaskDef[P]) -> list[str]:
            return [client.enqueue(task, P(n)).id for n in range(20)]

        with ThreadPoolExecutor(3) as pool:
            ids = [i for got in pool.map(burst, [*tasks.values(), *tasks.values()]) for i in got]
        assert len(set(ids)) == 120
        made = {address: conns.made for address, conns in blocking._by_node.items()}
        assert sorted(made) == sorted(("127.0.0.1", port) for port in valkey_cluster.ports)
        assert all(1 <= n <= 3 for n in made.values())  # one per thread that wrote to that primary
        lean = client._client.broker.lean
        assert isinstance(lean, ClusterRespClient)
        lean._owner[slot_of(schema.queue("q1").pending)] = ("127.0.0.1", valkey_cluster.ports[2])  # stale
        moved = client.enqueue(tasks["q1"], P(99))  # MOVED on the blocking socket: sent again through the loop
        assert client.enqueue(tasks["q1"], P(100)).queue == "q1"  # the loop reloaded the map
    for q, node in (("q0", 0), ("q1", 1), ("q2", 2)):
        with redis_sync.Redis(port=valkey_cluster.ports[node]) as direct:
            assert direct.llen(schema.queue(q).pending) == 41 + 2 * (q == "q1"), q
            if q == "q1":
                assert direct.exists(schema.queue(q).task(moved.id)) == 1


@pytest.mark.parametrize("lean_path", [True, False], ids=["lean", "redis-py"])
async def test_an_enqueue_to_a_cluster_that_cannot_be_reached_is_redis_unavailable_naming_the_url(
    namespace: str, tmp_path: Any, lean_path: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not lean_path:
        monkeypatch.setattr("framework.broker.base.fast_path_for", lambda redis: None)

    url = f"redis+cluster://127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    settings = Settings(redis_url=url, namespace=namespace, data_dir=str(tmp_path), load_plugins=[])
    redis = open_redis(url)
    client = Client(redis, schema=Schema(namespace), settings=settings, url=url)
    task = TaskDef("lean:down", P, lambda ctx, p: None)
    try:
        assert isinstance(client.broker.lean, ClusterRespClient) == lean_path
        for attempt in range(2):  # the first call and a later one alike
            with pytest.raises(RedisUnavailable) as err:
                await client.enqueue(task, P(attempt))
            assert "cannot reach Redis at redis+cluster://127.0.0.1:" in str(err.value)
        with pytest.raises(RedisUnavailable):
            await client.enqueue_many([TaskCall(task, P(n)) for n in range(3)])
        lean = client.broker.lean
        if isinstance(lean, ClusterRespClient):
            with pytest.raises(redis_sync.ConnectionError, match="no Redis Cluster node gave a slot map"):
                await lean.evalsha(ECHO, ["{q0}"], ["x"])
    finally:
        await client.close()
        await redis.aclose()
