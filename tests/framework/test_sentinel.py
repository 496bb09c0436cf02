"""A Sentinel-managed primary that fails over in the middle of a run: every replicated task is processed.

The fixture runs a primary, a replica and three sentinels (down-after 1 s). A worker, a scheduler and a
client use the ``redis+sentinel://`` URL. Mid-run the primary is killed (a crash) or switched over
(``SENTINEL FAILOVER``, a planned change); the sentinels promote the replica and every process finds the
new primary on its own.

What is guaranteed (docs/deployment.md): replication is asynchronous, so a write the old primary
acknowledged but had not yet sent to the replica is lost in a crash. So the tasks enqueued before the
crash are confirmed replicated (the replica's offset caught up) before the kill; a lost state change (a dequeue, an
acknowledgement) can only make a task run again, never lose it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.retry import Retry as SyncRetry

from framework.client.client import Client
from framework.errors import RedisUnavailable, TaskIdConflict
from framework.inspector import Inspector
from framework.protocol.keys import Schema
from framework.registry import Registry
from framework.scheduler.scheduler import Scheduler
from framework.settings import Settings
from framework.task import CronEntry, TaskDef
from framework.thirdparty import pool_connections
from framework.transport.connection import describe_redis, open_redis, open_sync_redis, sync_redis_like
from framework.transport.lean.blocking import ThreadConnections
from framework.transport.lean.connection import RespConnection
from framework.transport.lean.paths import fast_path_for
from framework.transport.lean.sentinel import SentinelRespClient
from framework.transport.lean.subscriber import Subscriber
from framework.transport.sentinel import FOLLOW_EVERY, open_sentinel, open_sync_sentinel, sentinel_setup
from framework.worker.worker import Worker
from tests.fixtures.cli import cli_env, run_framework
from tests.fixtures.cluster import replicated
from tests.fixtures.smtp import free_port
from tests.framework.worker_app import wait_until

if TYPE_CHECKING:
    from pathlib import Path

    from redis.asyncio import Redis

    from tests.fixtures.cluster import SentinelInfo

BEFORE = 200
"""Tasks enqueued (and replicated) before the failover."""
DURING = 60
"""Tasks enqueued from the moment of the failover on, each retried until the new primary takes it."""


class P(msgspec.Struct, frozen=True, kw_only=True):
    n: int = 0
    sleep: float = 0.0


@pytest.fixture
def ssettings(valkey_sentinel: SentinelInfo, namespace: str, tmp_path: Path) -> Settings:
    return Settings(
        redis_url=valkey_sentinel.url,
        namespace=namespace,
        data_dir=str(tmp_path / "data"),
        queues={"a": 2, "b": 1},
        heartbeat_interval=0.5,
        forward_interval=0.2,
        recoverer_interval=0.5,
        shutdown_timeout=1.0,
        load_plugins=[],
    )


@pytest.fixture
async def sredis(valkey_sentinel: SentinelInfo) -> AsyncIterator[Redis]:
    redis = open_redis(valkey_sentinel.url)
    try:
        yield redis
    finally:
        await redis.aclose()


class Run:
    """A worker, a scheduler and a client on the Sentinel URL.

    Runs are recorded in memory, not in Redis, whose writes a crash may lose.
    """

    def __init__(self, settings: Settings, redis: Redis) -> None:
        self.runs: Counter[str] = Counter()
        self.cron_runs: list[str] = []
        self.task = TaskDef("sentinel:t", P, self._handle, max_retry=25, retry_delay=lambda retried, error: 0.2)
        self.tick = TaskDef("sentinel:tick", P, self._tick)
        self.settings = settings
        self.client = Client(redis, schema=Schema(settings.namespace), settings=settings, url=settings.redis_url or "")
        self.worker = Worker(settings, tasks=[self.task, self.tick])
        every = CronEntry("every-second", "@every 1s", self.tick, P(), options={"queue": "b"})
        self.scheduler = Scheduler(settings, registry=Registry([self.task, self.tick]), entries=[every])

    async def _handle(self, ctx: Any, p: P) -> None:
        await asyncio.sleep(p.sleep)
        self.runs[ctx.id] += 1

    async def _tick(self, ctx: Any, p: P) -> None:
        self.cron_runs.append(ctx.id)

    async def enqueue_until_accepted(self, n: int) -> str:
        """Enqueue task ``n`` with a fixed id, retrying through the failover (a conflict: it got in)."""
        task_id = f"task-{n}"
        while True:
            try:
                await self.client.enqueue(self.task, P(n=n, sleep=0.02), queue="ab"[n % 2], task_id=task_id)
            except TaskIdConflict:
                return task_id
            except (RedisUnavailable, RedisError, OSError):
                await asyncio.sleep(0.1)
            else:
                return task_id

    async def all_ran(self, ids: list[str]) -> bool:
        return all(i in self.runs for i in ids)


async def _failover_mid_run(
    info: SentinelInfo, settings: Settings, redis: Any, fail_over: Any
) -> tuple[Run, list[str], float, float]:
    run = Run(settings, redis)
    async with run.worker, run.scheduler:
        assert run.worker.processor is not None
        workers_fast = getattr(run.worker.processor.broker, "fast", None)
        assert isinstance(workers_fast, SentinelRespClient)  # the lean path, for the worker and the client
        assert isinstance(run.client.broker.fast, SentinelRespClient)
        ids = [
            (await run.client.enqueue(run.task, P(n=n, sleep=0.05), queue="ab"[n % 2], task_id=f"task-{n}")).id
            for n in range(BEFORE)
        ]
        await asyncio.to_thread(replicated, info.primary_port, info.replica_port)  # the replica has all of them
        await wait_until(lambda: _started(run.runs, 20))  # tasks are in flight when the primary goes
        fail_over()
        failed_at = time.monotonic()
        ids += [await run.enqueue_until_accepted(n) for n in range(BEFORE, BEFORE + DURING)]
        accepted_in = time.monotonic() - failed_at
        await wait_until(lambda: run.all_ran(ids), timeout=40)
        recovered_in = time.monotonic() - failed_at
        ticks = len(run.cron_runs)
        await wait_until(lambda: _started(run.cron_runs, ticks + 2), timeout=10)  # fired on the new primary
        inspector = Inspector(redis, Schema(settings.namespace))
        servers = await inspector.servers()
        assert [s.server.server_id for s in servers] == [run.worker.identity.server_id]  # the heartbeat is back
        # the lean connections moved (a client's connects when used: the cron ticks used the worker's)
        await run.client.enqueue(run.tick, P(), queue="b")
        new_primary = ("127.0.0.1", info.replica_port)
        assert workers_fast.connection().address == run.client.broker.fast.connection().address == new_primary
    assert info.current_primary() == info.replica_port
    return run, ids, accepted_in, recovered_in


async def _started(runs: Counter[str] | list[str], n: int) -> bool:
    return len(runs) >= n


async def test_the_primary_killed_mid_run_every_replicated_task_is_processed(
    valkey_sentinel: SentinelInfo, ssettings: Settings, sredis: Any
) -> None:
    run, ids, accepted_in, recovered_in = await _failover_mid_run(
        valkey_sentinel, ssettings, sredis, valkey_sentinel.procs["primary"].kill
    )
    assert len(ids) == len(set(ids)) == BEFORE + DURING
    assert set(run.runs) >= set(ids)  # none lost; some may have run twice (at-least-once)
    assert sum(run.runs.values()) - len(ids) < 40, run.runs.most_common(5)
    assert accepted_in < 20, accepted_in
    assert recovered_in < 40, recovered_in
    assert len(run.cron_runs) == len(set(run.cron_runs))  # each cron tick once, across the failover


async def test_a_coordinated_switchover_mid_run_loses_nothing(
    valkey_sentinel: SentinelInfo, ssettings: Settings, sredis: Any, tmp_path: Path
) -> None:
    def switch() -> None:
        with _sync(valkey_sentinel.sentinel_ports[0]) as sentinel:
            assert sentinel.execute_command("SENTINEL", "FAILOVER", "mymaster", "COORDINATED")

    run, ids, accepted_in, _ = await _failover_mid_run(valkey_sentinel, ssettings, sredis, switch)
    assert set(run.runs) >= set(ids)
    assert sum(run.runs.values()) - len(ids) < 40
    assert accepted_in < 20, accepted_in
    # a new process (the CLI) finds the new primary too
    env = cli_env(ssettings.redis_url or "", ssettings.namespace, tmp_path / "data")
    result = run_framework(
        env, tmp_path, "jobs", "enqueue", "sentinel:t", "--payload", '{"n": 1}', "-q", "a", "--force"
    )
    assert result.returncode == 0, result.stderr
    with _sync(valkey_sentinel.replica_port) as new_primary:
        assert new_primary.llen(Schema(ssettings.namespace).queue("a").pending) == 1


async def test_pooled_connections_follow_the_sentinels_to_the_new_primary_within_seconds(
    valkey_sentinel: SentinelInfo, sredis: Any, namespace: str
) -> None:
    key = f"{namespace}:probe"
    await sredis.set(key, "before")  # a pooled connection to the first primary
    with _sync(valkey_sentinel.sentinel_ports[0]) as sentinel:
        assert sentinel.execute_command("SENTINEL", "FAILOVER", "mymaster")  # plain: the old primary stays up
    await asyncio.to_thread(_wait_for_switch, valkey_sentinel)
    switched = time.monotonic()
    with _sync(valkey_sentinel.replica_port) as new, _sync(valkey_sentinel.primary_port) as old:
        while new.get(key) != b"after":
            # the pool asks the sentinels every FOLLOW_EVERY s: it moves within that (and room for a loaded
            # machine), long before the old primary is demoted, which would move it too
            assert time.monotonic() - switched < FOLLOW_EVERY + 5, "still writing to the old primary"
            await sredis.set(key, "after")
            await asyncio.sleep(0.1)
        # the sentinels demote the old primary only ~10 s later: until then it would take (and lose) writes
        assert old.execute_command("ROLE")[0] == b"master"
        # the heartbeat thread's blocking clients, from the URL or from this client, go to the new primary too
        for sync in (open_sync_redis(valkey_sentinel.url), sync_redis_like(sredis)):
            try:
                sync.set(key, "sync")
                assert new.get(key) == b"sync"
            finally:
                sync.close()
    assert describe_redis(sredis) == valkey_sentinel.url


def _wait_for_switch(info: SentinelInfo) -> None:
    deadline = time.monotonic() + 15
    while info.current_primary() != info.replica_port:
        assert time.monotonic() < deadline, "the sentinels did not switch"
        time.sleep(0.05)


def _sync(port: int) -> Any:
    import redis as redis_sync

    return redis_sync.Redis(host="127.0.0.1", port=port, socket_timeout=5)


async def test_concurrent_primary_searches_keep_every_sentinel_and_closing_closes_them_all(
    valkey_sentinel: SentinelInfo,
) -> None:
    # the first sentinel listed is down, so every search moves on to the second one: many at once, as
    # connections opening together after a failover do; redis-py's own reordering then wrote one sentinel
    # into two slots and dropped another, whose open connections closing the client no longer reached
    down = free_port()
    hosts = [("127.0.0.1", down)] + [("127.0.0.1", p) for p in valkey_sentinel.sentinel_ports]
    primary = ("127.0.0.1", valkey_sentinel.primary_port)
    # no reconnect attempts to the one that is down: the searches reach the second sentinel together
    timeouts = {"socket_connect_timeout": 2, "socket_timeout": 2, "retry": Retry(NoBackoff(), 0)}

    def ports(manager: Any) -> list[int]:
        return [s.connection_pool.connection_kwargs["port"] for s in manager.sentinels]

    redis = open_sentinel(hosts, "mymaster", timeouts, {})
    manager = redis.connection_pool.sentinel_manager  # type: ignore[attr-defined]
    try:
        found = await asyncio.gather(*(manager.discover_master("mymaster") for _ in range(8)))
        assert set(found) == {primary}
        assert sorted(ports(manager)) == sorted(p for _, p in hosts)  # each sentinel once, none lost
        assert ports(manager)[0] != down
    finally:
        await redis.aclose()
    pools = [s.connection_pool for s in manager.sentinels]
    assert [c for p in pools for c in pool_connections(p) if c.is_connected] == []

    def blocking() -> None:  # threads sharing one blocking client search concurrently too
        sync = open_sync_sentinel(hosts, "mymaster", {**timeouts, "retry": SyncRetry(NoBackoff(), 0)}, {})
        manager = sync.connection_pool.sentinel_manager  # type: ignore[attr-defined]
        try:
            with ThreadPoolExecutor(8) as pool:
                assert set(pool.map(lambda _: manager.discover_master("mymaster"), range(32))) == {primary}
            assert sorted(ports(manager)) == sorted(p for _, p in hosts)
        finally:
            sync.close()

    await asyncio.to_thread(blocking)


async def test_no_sentinel_answering_names_every_sentinel_tried() -> None:
    hosts = [("127.0.0.1", free_port()), ("127.0.0.1", free_port())]
    redis = open_sentinel(hosts, "mymaster", {"socket_connect_timeout": 2, "socket_timeout": 2}, {})
    try:
        with pytest.raises(MasterNotFoundError, match="No master found for 'mymaster'") as info:
            await redis.connection_pool.sentinel_manager.discover_master("mymaster")  # type: ignore[attr-defined]
        for _, port in hosts:
            assert f"port={port}" in str(info.value)
        with pytest.raises(MasterNotFoundError):  # the client's own commands raise the same
            await redis.ping()
    finally:
        await redis.aclose()


async def test_the_blocking_twin_is_built_from_the_options_the_client_was_opened_with(
    valkey_sentinel: SentinelInfo, sredis: Any, namespace: str
) -> None:
    # redis-py 8.2 keeps an asyncio retry policy among its Sentinel options: a blocking client built from
    # those never connected (its connect returned an un-awaited coroutine), so the twin uses our own record
    setup = sentinel_setup(sredis)
    assert setup is not None
    assert setup.service == "mymaster"
    assert setup.hosts == [("127.0.0.1", p) for p in valkey_sentinel.sentinel_ports]
    assert all(isinstance(v, str | int | float | type(None)) for v in setup.sentinel_kwargs.values())
    await sredis.set(f"{namespace}:twin", "async")
    sync = sync_redis_like(sredis)
    try:
        assert sync.get(f"{namespace}:twin") == b"async"
        assert sentinel_setup(sync) == setup
    finally:
        sync.close()
    plain = open_redis(f"redis://127.0.0.1:{valkey_sentinel.primary_port}")
    try:
        assert sentinel_setup(plain) is None
    finally:
        await plain.aclose()


async def test_lean_connections_follow_the_sentinels_to_the_new_primary_within_seconds(
    valkey_sentinel: SentinelInfo, sredis: Any, namespace: str
) -> None:
    # the event-loop connection, a subscriber and a blocking connection each leave the old primary, which
    # after a plain SENTINEL FAILOVER still takes (and later loses) writes for about ten seconds
    fast = fast_path_for(sredis)
    assert isinstance(fast, SentinelRespClient)
    key, channel = f"{namespace}:probe", f"{namespace}:channel"
    heard: list[bytes] = []
    blocking = ThreadConnections(fast.address, **fast.options)
    sub = Subscriber(fast, lambda _, data: heard.append(data))
    try:
        await fast.execute("SET", key, "before")
        await asyncio.to_thread(lambda: blocking.get().execute("SET", key, "before"))
        await sub.subscribe([channel])
        assert fast.connection().address == sub.address == ("127.0.0.1", valkey_sentinel.primary_port)
        with _sync(valkey_sentinel.sentinel_ports[0]) as sentinel:
            assert sentinel.execute_command("SENTINEL", "FAILOVER", "mymaster")
        await asyncio.to_thread(_wait_for_switch, valkey_sentinel)
        switched = time.monotonic()

        async def lean() -> None:
            await fast.execute("SET", key, "after")

        async def blocking_set() -> None:
            await asyncio.to_thread(lambda: blocking.get().execute("SET", key, "blocking"))

        with _sync(valkey_sentinel.replica_port) as new, _sync(valkey_sentinel.primary_port) as old:
            for value, write in ((b"after", lean), (b"blocking", blocking_set)):
                while new.get(key) != value:
                    # each asks the sentinels every FOLLOW_EVERY s: it moves within that (and room for a loaded
                    # machine), long before the old primary is demoted, which would move it too
                    assert time.monotonic() - switched < FOLLOW_EVERY + 5, "still writing to the old primary"
                    with contextlib.suppress(RedisConnectionError):  # what was in flight when it moved
                        await write()
                    await asyncio.sleep(0.1)
            closed = await asyncio.wait_for(sub.wait_closed(), FOLLOW_EVERY + 5)  # it checks as often
            assert isinstance(closed, RedisConnectionError)
            assert old.execute_command("ROLE")[0] == b"master"  # not demoted yet: it would have taken the writes
        again = Subscriber(fast, lambda _, data: heard.append(data))
        try:
            await again.subscribe([channel])
            assert again.address == ("127.0.0.1", valkey_sentinel.replica_port)
            await fast.execute("PUBLISH", channel, "hello")
            await wait_until(lambda: _started([d.decode() for d in heard], 1))
        finally:
            again.close()
    finally:
        sub.close()
        blocking.close()
        fast.close()


async def test_a_readonly_reply_on_a_sentinel_connection_is_a_lost_connection(valkey_sentinel: SentinelInfo) -> None:
    # a server the sentinels named but that is a replica by now (demoted): as redis-py's Sentinel connections do,
    # the command raises ConnectionError and the connection is dropped, to ask the sentinels again next time
    class AtTheReplica:
        service, every = "mymaster", 60.0

        async def locate(self) -> tuple[str, int]:
            return ("127.0.0.1", valkey_sentinel.replica_port)

    conn = RespConnection(("", 0), follow=AtTheReplica())  # type: ignore[arg-type]
    try:
        assert await conn.execute("GET", "k") is None  # reads are fine
        with pytest.raises(RedisConnectionError, match="replica"):
            await conn.execute("SET", "k", "v")
        await asyncio.sleep(0)
        assert not conn.connected
    finally:
        conn.close()
