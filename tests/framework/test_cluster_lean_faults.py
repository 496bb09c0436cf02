"""Fault handling of the lean Cluster client (:mod:`framework.transport.lean.cluster`) and of its users.

Nodes that cannot be reached or never answer (as seeds and as primaries), callers cancelled while they share
a slot map load, a failover the enqueue paths must follow, and scripts a migration's target has not loaded.
Each test talks to a real Valkey Cluster. Tests that change the cluster's state (slot migrations, script
caches) run on a private cluster of this module, so the session's shared cluster is left as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hiredis
import msgspec
import pytest
import redis as redis_sync
from redis.exceptions import AskError

from framework.broker.broker import RedisBroker
from framework.client.client import Client, TaskCall
from framework.clock import SystemClock
from framework.embedded.launch import free_port
from framework.errors import RedisUnavailable
from framework.protocol.keys import Schema
from framework.protocol.scripts import LuaScript
from framework.settings import Settings
from framework.task import TaskDef
from framework.transport.connection import open_redis
from framework.transport.lean.cluster import ClusterRespClient, slot_of
from framework.transport.lean.errors import error_of
from tests.fixtures.cluster import SLOT_RANGES, running_cluster

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from tests.fixtures.cluster import ClusterInfo


class P(msgspec.Struct, frozen=True):
    n: int = 0


# -- helpers ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def blackhole() -> Iterator[tuple[str, int]]:
    """An address whose TCP connects time out (a host that is down: SYNs go unanswered).

    A listening socket with a backlog of 0 that never accepts, its queue filled first: the kernel drops
    further SYNs, as a powered-off host or a network partition would.
    """
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    address = server.getsockname()
    fillers = []
    try:
        for _ in range(4):
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(address)
            fillers.append(c)
        yield ("127.0.0.1", address[1])
    finally:
        for c in fillers:
            c.close()
        server.close()


@contextlib.contextmanager
def hung_node() -> Iterator[tuple[str, int]]:
    """An address that accepts TCP connections but never answers (a stopped or wedged server)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    try:
        yield ("127.0.0.1", server.getsockname()[1])
    finally:
        server.close()


def _seeds(info: ClusterInfo) -> list[tuple[str, int]]:
    return [("127.0.0.1", p) for p in info.ports]


def _node_of(slot: int) -> int:
    return next(i for i, (lo, hi) in enumerate(SLOT_RANGES) if lo <= slot <= hi)


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterInfo]:
    """A private three-primary cluster for the tests that migrate slots or flush script caches."""
    with running_cluster(tmp_path_factory.mktemp("lean-faults-cluster")) as info:
        yield info


@contextlib.contextmanager
def migrating(info: ClusterInfo, slot: int) -> Iterator[int]:
    """Slot ``slot`` marked MIGRATING from its primary to the next one (IMPORTING there); yields the target's index."""
    src = _node_of(slot)
    dst = (src + 1) % 3
    with redis_sync.Redis(port=info.ports[src]) as s, redis_sync.Redis(port=info.ports[dst]) as d:
        src_id = s.execute_command("CLUSTER", "MYID")
        dst_id = d.execute_command("CLUSTER", "MYID")
        d.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        try:
            yield dst
        finally:
            s.execute_command("CLUSTER", "SETSLOT", slot, "STABLE")
            d.execute_command("CLUSTER", "SETSLOT", slot, "STABLE")


# -- the slot map -------------------------------------------------------------------------------------


async def test_a_seed_whose_connect_times_out_is_skipped_for_the_next_seed(valkey_cluster: ClusterInfo) -> None:
    """A first seed whose host is down (a connect that times out, redis-py's ``TimeoutError``, which is not the
    builtin one) is passed over: the map comes from the next seed."""
    with blackhole() as dead:
        lean = ClusterRespClient([dead, *_seeds(valkey_cluster)], connect_timeout=0.5)
        try:
            await lean.ready()
            assert lean.reloads == 1
            assert await lean.execute("SET", "faults:{q0}:seed", "1") == b"OK"
            assert await lean.execute("DEL", "faults:{q0}:seed") == 1
        finally:
            lean.close()


async def test_a_seed_that_accepts_but_never_answers_does_not_hang_the_map_load(
    valkey_cluster: ClusterInfo,
) -> None:
    """A seed that accepts connections but never answers ``CLUSTER SLOTS`` (a stopped or wedged node) is given
    up on after the connect timeout and the next seed asked: ``ready()``, and every command sharing its load,
    does not hang."""
    with hung_node() as hung:
        lean = ClusterRespClient([hung, *_seeds(valkey_cluster)], connect_timeout=0.5)
        try:
            async with asyncio.timeout(10):  # generous: a load with a probe timeout takes ~connect_timeout
                await lean.ready()
            assert lean.reloads == 1
        finally:
            lean.close()


async def test_a_callers_cancellation_does_not_fail_another_caller_sharing_the_map_load(
    valkey_cluster: ClusterInfo,
) -> None:
    """Concurrent callers share one slot map load; the caller that started it being cancelled (a timeout around
    its own command, a task cancelled at shutdown) does not fail the others, whose commands run."""
    lean = ClusterRespClient(_seeds(valkey_cluster))
    try:
        first = asyncio.create_task(lean.reload())
        await asyncio.sleep(0)  # the first caller has started the load and waits on the probe
        second = asyncio.create_task(lean.execute("GET", "faults:{q1}:nothing"))
        await asyncio.sleep(0)  # the second caller waits on the first caller's load
        assert lean._loading is not None and not lean._loading.done()
        first.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first
        assert await second is None
    finally:
        lean.close()


async def test_concurrent_redirected_commands_share_slot_map_loads_and_all_run_once(
    valkey_cluster: ClusterInfo,
) -> None:
    """Many coroutines answered MOVED at once reload the map (sharing loads) and each INCR runs once."""
    lean = ClusterRespClient(_seeds(valkey_cluster))
    key = f"faults:{{q2}}:{uuid.uuid4().hex}"
    try:
        await lean.ready()
        lean._owner[slot_of(key)] = ("127.0.0.1", valkey_cluster.ports[0])  # stale: primary 0 answers MOVED
        replies = await asyncio.gather(*(lean.execute("INCR", key) for _ in range(50)))
        assert sorted(replies) == list(range(1, 51))
        assert lean.reloads < 1 + 50  # loads shared, not one per command
        with redis_sync.Redis(port=valkey_cluster.ports[2]) as direct:
            assert direct.get(key) == b"50"
            direct.delete(key)
    finally:
        lean.close()


# -- a node that dies ---------------------------------------------------------------------------------


async def test_a_primary_whose_connect_times_out_makes_the_next_command_reload_the_map(
    valkey_cluster: ClusterInfo,
) -> None:
    """A connect to a primary that times out (its host is down) forgets the slot map as a refused connection
    does: the next command reloads the map and reaches the slot's primary, not the dead address again."""
    with blackhole() as dead:
        lean = ClusterRespClient(_seeds(valkey_cluster), connect_timeout=0.5)
        key = "faults:{q1}:timeout"
        try:
            await lean.ready()
            lean._owner[slot_of(key)] = dead  # the map names a primary whose host went down
            with pytest.raises(Exception):  # noqa: B017 - what matters is the next command
                await lean.execute("SET", key, "v")
            assert await lean.execute("SET", key, "v") == b"OK"
            assert await lean.execute("DEL", key) == 1
        finally:
            lean.close()


async def test_a_refused_primary_makes_the_next_command_reload_the_map(valkey_cluster: ClusterInfo) -> None:
    """A connection refused (a primary died) is a ConnectionError and the next command reloads the map."""
    lean = ClusterRespClient(_seeds(valkey_cluster))
    key = "faults:{q1}:refused"
    try:
        await lean.ready()
        lean._owner[slot_of(key)] = ("127.0.0.1", free_port())
        with pytest.raises(redis_sync.ConnectionError):
            await lean.execute_many([("SET", key, "v"), ("SET", "faults:{q0}:other", "v")])
        assert await lean.execute_many([("SET", key, "v"), ("DEL", key)]) == [b"OK", 1]
    finally:
        lean.close()


@pytest.fixture
async def client(valkey_cluster: ClusterInfo, credis: Redis, namespace: str, tmp_path: Path) -> AsyncIterator[Client]:
    settings = Settings(redis_url=valkey_cluster.url, namespace=namespace, data_dir=str(tmp_path), load_plugins=[])
    c = Client(credis, schema=Schema(namespace), settings=settings, url=valkey_cluster.url)
    assert isinstance(c.broker.lean, ClusterRespClient)
    try:
        yield c
    finally:
        await c.close()


async def test_the_prepared_enqueue_recovers_once_the_primary_it_knew_is_gone(
    valkey_cluster: ClusterInfo, client: Client
) -> None:
    """The prepared enqueue, whose failed connection the Cluster client does not see, has it forget the slot
    map: after at most one RedisUnavailable the next enqueue reloads the map and reaches the new primary (a
    client process that only enqueues plain tasks follows a failover)."""
    lean = client.broker.lean
    assert isinstance(lean, ClusterRespClient)
    task = TaskDef("faults:plain", P, lambda ctx, p: None, queue="q2")
    await client.enqueue(task, P(0))  # the prepared path, the map loaded
    assert client._plain[task] is not None
    # primary 2 died and its replica took over: the loaded map still names the dead primary's address
    lean._owner[slot_of(client.schema.queue("q2").pending)] = ("127.0.0.1", free_port())
    errors = 0
    for n in range(1, 4):
        try:
            await client.enqueue(task, P(n))
        except RedisUnavailable:
            errors += 1
    assert errors <= 1  # the first may fail; the next ones reload the map and reach the new primary


async def test_the_bulk_enqueue_recovers_once_the_primary_it_knew_is_gone(
    valkey_cluster: ClusterInfo, client: Client
) -> None:
    """The bulk enqueue has the Cluster client forget the slot map when a connection fails: after at most one
    RedisUnavailable the next ``enqueue_many`` reloads the map and reaches the new primary."""
    lean = client.broker.lean
    assert isinstance(lean, ClusterRespClient)
    task = TaskDef("faults:bulk", P, lambda ctx, p: None, queue="q2")
    calls = [TaskCall(task, P(n)) for n in range(5)]
    assert client._bulk.plan(calls) is not None
    await client.enqueue_many(calls)
    lean._owner[slot_of(client.schema.queue("q2").pending)] = ("127.0.0.1", free_port())  # a dead primary
    errors = 0
    for _ in range(3):
        try:
            results = await client.enqueue_many(calls)
            assert not [r for r in results if isinstance(r, Exception)]
        except RedisUnavailable:
            errors += 1
    assert errors <= 1


# -- slots being migrated (ASK) -----------------------------------------------------------------------


async def test_a_script_never_loaded_on_the_ask_target_runs_there(own_cluster: ClusterInfo) -> None:
    """A script call an ASK sends to the migration's target, which has not loaded the script (typical when
    slots move to a node just added to the cluster), has the script loaded on the target, not on the slot's
    primary, and runs there."""
    token = uuid.uuid4().hex
    script = LuaScript(f"faults_{token}", f"return {{KEYS[1], '{token}', redis.call('CLUSTER', 'MYID')}}")
    tag = "faults-ask"
    key = f"{{{tag}}}:k"
    slot = slot_of(key)
    lean = ClusterRespClient(_seeds(own_cluster))
    try:
        with migrating(own_cluster, slot) as dst:
            with redis_sync.Redis(port=own_cluster.ports[dst]) as d:
                dst_id = d.execute_command("CLUSTER", "MYID")
            got = await lean.evalsha_many([(script, [key], [])])
            assert not isinstance(got[0], Exception), repr(got[0])
            assert got[0][2] == dst_id
            assert (await lean.evalsha(script, [key], []))[2] == dst_id
    finally:
        lean.close()


async def test_the_prepared_path_loads_a_script_on_the_node_an_ask_named_and_runs_it_there(
    own_cluster: ClusterInfo, tmp_path: Path
) -> None:
    """``PlainEnqueue.after_error`` on an ASK whose target has not loaded the script: the script is loaded on
    the target (not on the slot's primary, which would only answer ASK again) and the command runs there."""
    namespace = f"faults{uuid.uuid4().hex[:8]}"
    redis = open_redis(own_cluster.url)
    settings = Settings(redis_url=own_cluster.url, namespace=namespace, data_dir=str(tmp_path), load_plugins=[])
    client = Client(redis, schema=Schema(namespace), settings=settings, url=own_cluster.url)
    try:
        plain = client._plain_for(TaskDef("faults:ask", P, lambda ctx, p: None, queue="faults-ask"))
        assert plain is not None
        conn = await plain.open()
        token = uuid.uuid4().hex
        script = LuaScript(f"faults_{token}", f"return {{KEYS[1], '{token}', redis.call('CLUSTER', 'MYID')}}")
        command = hiredis.pack_command(("EVALSHA", script.sha, 1, f"{plain.route}:{token}"))
        with migrating(own_cluster, slot_of(plain.route)) as dst:
            with redis_sync.Redis(port=own_cluster.ports[dst]) as d:
                dst_id = d.execute_command("CLUSTER", "MYID")
            reply = await conn.execute_raw(command)
            assert isinstance(error_of(reply), AskError)  # the key is not on the source: sent on to the target
            got = await plain.after_error(conn, reply, command, script)
            assert got[1] == token.encode()
            assert got[2] == dst_id
    finally:
        await client.close()
        await redis.aclose()


# -- a broker on the lean Cluster client --------------------------------------------------------------


async def test_a_brokers_batch_across_primaries_keeps_order_with_errors_in_place(credis: Redis) -> None:
    """One batch over three primaries with error replies interleaved comes back in the caller's order."""
    broker = RedisBroker(credis, Schema("faults"), SystemClock())
    lean = broker.lean
    assert isinstance(lean, ClusterRespClient)
    try:
        queues = ["q0", "q1", "q2", "q2", "q0", "q1", "q1", "q0", "q2"]
        commands: list[tuple[Any, ...]] = []
        for i, q in enumerate(queues):
            key = f"faults:{{{q}}}:order:{i}"
            commands += [("SET", key, str(i)), ("LPUSH", key, "x"), ("GET", key), ("DEL", key)]
        got = await lean.execute_many(commands)
        for i in range(len(queues)):
            ok, wrong, value, deleted = got[4 * i : 4 * i + 4]
            assert ok == b"OK"
            assert isinstance(wrong, redis_sync.ResponseError)
            assert value == str(i).encode()
            assert deleted == 1
    finally:
        broker.close()
