"""Everything on a three-primary Valkey Cluster: client, worker, retries, schedules, cron, inspector, admin, CLI.

The queues ``q0``, ``q1`` and ``q2`` hash to slots on primaries 0, 1 and 2 (see
:data:`tests.fixtures.cluster.QUEUE_NODES`), so every test spreads its work over the whole cluster: each
Lua script runs on its queue's primary, and anything that spans queues (stats, server records, recovery)
is done queue by queue.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
import redis as redis_sync
from litestar.testing import AsyncTestClient
from redis.exceptions import RedisError

from framework.broker.broker import RedisBroker
from framework.client.client import Client, TaskCall
from framework.clock import SystemClock
from framework.errors import ConfigError, DuplicateTask, RedisUnavailable, TaskIdConflict
from framework.hookspecs import hookimpl
from framework.inspector import Inspector
from framework.limits import Limit
from framework.plugins.manager import get_plugin_manager
from framework.protocol.keys import Schema
from framework.scheduler.scheduler import Scheduler
from framework.settings import Settings
from framework.task import CronEntry, TaskDef
from framework.transport.connection import describe_redis, open_redis, open_sync_redis, sync_redis_like
from framework.web.app import create_app
from framework.worker import processor as processor_module
from framework.worker.worker import Worker
from tests.fixtures.cli import cli_env
from tests.fixtures.cluster import QUEUE_NODES, replicated
from tests.framework.worker_app import JOB, start_worker, stop_process, wait_until
from tests.framework.worker_app import Job as AppJob

if TYPE_CHECKING:
    from pathlib import Path

    from redis.asyncio import Redis

    from tests.fixtures.cluster import ClusterInfo

QUEUES = {"q0": 3, "q1": 2, "q2": 1}
TOKEN = "cluster-admin-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class P(msgspec.Struct, frozen=True, kw_only=True):
    n: int = 0
    t0: float = 0.0
    fail: int = 0
    sleep: float = 0.0


@pytest.fixture
def csettings(valkey_cluster: ClusterInfo, namespace: str, tmp_path: Path) -> Settings:
    return Settings(
        redis_url=valkey_cluster.url,
        namespace=namespace,
        data_dir=str(tmp_path / "data"),
        queues=QUEUES,
        heartbeat_interval=0.5,
        forward_interval=0.2,
        recoverer_interval=0.5,
        shutdown_timeout=1.0,
        load_plugins=[],
    )


@pytest.fixture
def cclient(credis: Redis, csettings: Settings) -> Client:
    return Client(credis, schema=Schema(csettings.namespace), settings=csettings, url=csettings.redis_url or "")


async def test_each_queue_lives_in_one_slot_and_the_queues_span_all_three_primaries(
    valkey_cluster: ClusterInfo, credis: Any, schema: Schema
) -> None:
    await credis.initialize()  # load the slot map
    owners = {}
    for queue, node in QUEUE_NODES.items():
        qk = schema.queue(queue)
        keys = [qk.pending, qk.active, qk.lease, qk.scheduled, qk.retry, qk.archived, qk.completed, qk.paused]
        keys += [qk.processed, qk.failed, qk.groups, qk.aggregation_sets, qk.task("x"), qk.processed_day("2024-01-01")]
        keys += [qk.unique("t", b"p"), qk.group("g"), qk.minute_stats("processed", 1), qk.inflight("s")]
        keys += [qk.cron_claim("e", 1)]
        assert {credis.keyslot(k) for k in keys} == {credis.keyslot(queue)}, queue
        owners[queue] = credis.get_node_from_key(qk.pending).port
        assert owners[queue] == valkey_cluster.ports[node], queue
    assert {owners[q] for q in QUEUES} == set(valkey_cluster.ports)


async def test_clients_built_from_the_url_or_from_an_asyncio_client_reach_every_primary(
    valkey_cluster: ClusterInfo, credis: Any, schema: Schema
) -> None:
    await credis.ping()
    assert describe_redis(credis).startswith("redis+cluster://127.0.0.1:")
    keys = [schema.queue(q).inflight("x") for q in QUEUES]  # one key on each primary
    for sync in (open_sync_redis(valkey_cluster.url), sync_redis_like(credis)):  # the heartbeat thread's clients
        try:
            with sync.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.sadd(key, "a")
                    pipe.delete(key)
                assert pipe.execute() == [1, 1] * 3
        finally:
            sync.close()


async def test_a_batch_dequeue_reads_its_messages_with_one_sort_on_each_primary(
    valkey_cluster: ClusterInfo, credis: Any, schema: Schema
) -> None:
    """SORT's GET pattern carries the queue's hash tag, so a Cluster node accepts it (no HGET per task)."""
    broker = RedisBroker(credis, schema, SystemClock())
    for queue, node in QUEUE_NODES.items():
        for i in range(5):
            await broker.enqueue(queue, f"{queue}-{i}", b"m%d" % i)
        direct = redis_sync.Redis(port=valkey_cluster.ports[node])
        try:
            before = direct.info("commandstats")
            taken = await broker.dequeue(queue, 5)
            after = direct.info("commandstats")
        finally:
            direct.close()
        assert taken == [(f"{queue}-{i}", b"m%d" % i) for i in range(5)], queue
        delta = {
            c: after.get(f"cmdstat_{c}", {}).get("calls", 0) - before.get(f"cmdstat_{c}", {}).get("calls", 0)
            for c in ("sort", "hget")
        }
        assert delta == {"sort": 1, "hget": 0}, (queue, delta)


async def test_enqueue_process_retry_schedule_unique_and_cancel_across_the_cluster(
    csettings: Settings, cclient: Client, credis: Any, schema: Schema, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs: Counter[int] = Counter()
    latencies: list[float] = []
    cancelled: list[int] = []

    async def handle(ctx: Any, p: P) -> None:
        runs[p.n] += 1
        if p.t0:
            latencies.append(time.time() - p.t0)
        if p.sleep:
            try:
                await asyncio.sleep(p.sleep)
            except asyncio.CancelledError:
                cancelled.append(p.n)
                raise
        if runs[p.n] <= p.fail:
            raise RuntimeError(f"fail {p.n}")

    task = TaskDef("cluster:t", P, handle, max_retry=2, retry_delay=lambda retried, error: 0.2)
    idle_check = processor_module.IDLE_CHECK
    monkeypatch.setattr(processor_module, "IDLE_CHECK", 60.0)  # the idle worker's own look is a minute away
    async with Worker(csettings, tasks=[task]) as worker:
        await asyncio.sleep(1.3)  # idle: its first fetch found nothing
        for n, queue in enumerate(["q0", "q1", "q2"] * 2):
            await cclient.enqueue(task, P(n=100 + n, t0=time.time()), queue=queue)
            # well before that look: wake-ups published on every primary reach the listener
            await wait_until(functools.partial(_ran, runs, 100 + n), timeout=30)
        monkeypatch.setattr(processor_module, "IDLE_CHECK", idle_check)
        await credis.script_flush()  # every primary answers NOSCRIPT: scripts are loaded again on all of them
        # one round trip for tasks of all three primaries
        results = await cclient.enqueue_many(
            [TaskCall(task, P(n=n, fail=1 if n % 4 == 0 else 0), {"queue": f"q{n % 3}"}) for n in range(30)]
        )
        assert not [r for r in results if isinstance(r, Exception)]
        for n, queue in enumerate(QUEUES):
            await cclient.enqueue(task, P(n=200 + n), queue=queue, process_in=0.5)
            await cclient.enqueue(task, P(n=300 + n), queue=queue, unique=60, retention=600)
            with pytest.raises(DuplicateTask):
                await cclient.enqueue(task, P(n=300 + n), queue=queue, unique=60, retention=600)
            await cclient.enqueue(task, P(n=400 + n, fail=9), queue=queue)  # archived after 2 retries
        expected = {*range(100, 106), *range(30), 200, 201, 202, 300, 301, 302, 400, 401, 402}
        await wait_until(lambda: _all_settled(runs, expected), timeout=20)
        long = await cclient.enqueue(task, P(n=500, sleep=30), queue="q2", max_retry=0)
        await wait_until(lambda: _ran(runs, 500))
        inspector = Inspector(credis, schema)
        assert await inspector.cancel(long.id) == 1  # one worker, subscribed on one of the three nodes
        await wait_until(lambda: _ran(cancelled, 500))

        async def written() -> bool:  # the outcome is written a moment after the handler ended
            return await credis.hget(schema.queue("q2").task(long.id), "state") == b"archived"

        await wait_until(written, timeout=20)
        servers = await inspector.servers()
        assert [s.server.server_id for s in servers] == [worker.identity.server_id]
        assert servers[0].server.queues == QUEUES
        infos = {i.queue: i for i in await inspector.all_queue_info()}
    assert len(latencies) == 6, latencies
    assert all(runs[n] == 2 for n in range(0, 30, 4))
    assert all(runs[n] == 3 for n in (400, 401, 402))
    assert set(infos) == set(QUEUES)
    for queue, info in infos.items():
        retried = {"q0": 3, "q1": 3, "q2": 2}[queue]  # n % 4 == 0 of the enqueue_many batch failed once
        failures = retried + 3 + (queue == "q2")  # + three runs of the archived task, + the cancelled one
        done = 2 + 10 + 1 + 1  # latency, enqueue_many, scheduled, unique/retained
        assert (info.pending, info.active, info.retry, info.scheduled) == (0, 0, 0, 0), info
        assert info.completed == 1, info
        assert info.archived == 1 + (queue == "q2"), info
        assert (info.processed_total, info.failed_total) == (done + failures, failures), info
        assert info.memory_usage > 0


async def _ran(seen: Any, n: int) -> bool:
    return n in seen


async def _all_settled(runs: Counter[int], expected: set[int]) -> bool:
    return (
        expected <= set(runs) and all(runs[n] == 2 for n in range(0, 30, 4)) and runs[400] + runs[401] + runs[402] == 9
    )


async def test_inspector_actions_admin_api_and_cli_across_the_cluster(
    csettings: Settings, cclient: Client, credis: Any, schema: Schema, tmp_path: Path
) -> None:
    inspector = Inspector(credis, schema)
    for n, queue in enumerate(QUEUES):
        await cclient.enqueue("cluster:x", {"n": n}, queue=queue, task_id=f"p-{queue}")
        await cclient.enqueue("cluster:x", {"n": n}, queue=queue, task_id=f"s-{queue}", process_in=3600)
        await cclient.enqueue("cluster:x", {"n": n}, queue=queue, task_id=f"a-{queue}")
        await cclient.enqueue("cluster:x", {"n": n}, queue=queue, task_id=f"g-{queue}", group="batch")
        await inspector.archive_task(queue, f"a-{queue}")
    assert await inspector.queues() == sorted(QUEUES)
    for queue in QUEUES:
        page = await inspector.list_tasks(queue, "pending")
        assert [t.id for t in page.tasks] == [f"p-{queue}"]
        assert (await inspector.get_task(queue, f"s-{queue}")).state == "scheduled"
        assert [g.group for g in await inspector.list_groups(queue)] == ["batch"]
        assert len(await inspector.history(queue, days=3)) == 3
        assert len(await inspector.minute_stats(queue)) == 60
    assert await inspector.pause("q1")
    info = await inspector.queue_info("q1")
    assert (info.paused, info.pending, info.scheduled, info.archived, info.aggregating) == (True, 1, 1, 1, 1)
    assert await inspector.unpause("q1")

    app = create_app(
        csettings.replace(admin_token=TOKEN, load_plugins=["admin"]),
        plugin_manager=get_plugin_manager(csettings.replace(load_plugins=["admin"])),
    )
    async with AsyncTestClient(app) as tc:
        response = await tc.get("/api/admin/jobs/stats", headers=AUTH)
        assert response.status_code == 200, response.text
        stats = response.json()
        assert {q["queue"] for q in stats["queues"]} == set(QUEUES)
        totals = stats["totals"]
        assert (totals["pending"], totals["scheduled"], totals["archived"], totals["aggregating"]) == (3, 3, 3, 3)
        response = await tc.post("/api/admin/queues/q2/scheduled/run-all", headers=AUTH)
        assert response.status_code == 200, response.text

    env = cli_env(csettings.redis_url or "", csettings.namespace, tmp_path / "data")
    stats_cli = _cli(env, tmp_path, "jobs", "stats", "--json")
    rows = {row["queue"]: row for row in json.loads(stats_cli.stdout)}
    assert {q: (r["pending"], r["scheduled"]) for q, r in rows.items()} == {"q0": (1, 1), "q1": (1, 1), "q2": (2, 0)}
    doctor = _cli(env, tmp_path, "doctor")
    assert "redis+cluster://" in doctor.stdout, doctor.stdout

    for queue in QUEUES:
        assert await inspector.archive_all(queue, "pending") >= 1
        assert await inspector.run_all(queue, "archived") >= 2
        assert await inspector.delete_all(queue, "pending") >= 2
        await inspector.delete_queue(queue, force=True)
    assert await inspector.queues() == []


def _cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "framework", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    return result


class _CronTasks:
    def __init__(self, task: TaskDef[Any]) -> None:
        self.task = task

    @hookimpl
    def register_task_types(self, settings: Settings) -> list[TaskDef[Any]]:
        return [self.task]

    @hookimpl
    def register_cron_entries(self, settings: Settings) -> list[CronEntry]:
        return [CronEntry("every-second", "@every 1s", self.task, P(n=1), options={"queue": "q1"})]


async def test_web_app_with_worker_and_two_schedulers_fires_each_tick_once_across_the_cluster(
    csettings: Settings, credis: Any, schema: Schema
) -> None:
    ticks: list[str] = []

    async def handle(ctx: Any, p: P) -> None:
        ticks.append(ctx.id)

    task = TaskDef("cluster:tick", P, handle)
    settings = csettings.replace(admin_token=TOKEN, load_plugins=["admin"])
    pm = get_plugin_manager(settings, extra=[("cluster_cron", _CronTasks(task))])
    app = create_app(settings, plugin_manager=pm, run_worker=True, run_scheduler=True)
    async with AsyncTestClient(app) as tc, Scheduler(settings, plugin_manager=pm) as other:
        await wait_until(lambda: _count(ticks, 3), timeout=10)
        entries = (await tc.get("/api/admin/cron", headers=AUTH)).json()
        servers = (await tc.get("/api/admin/servers", headers=AUTH)).json()
        assert len(await Inspector(credis, schema).scheduler_entries()) == 2  # both schedulers announce it
        assert other.scheduler_id
    await asyncio.sleep(0.3)
    assert {e["task_type"] for e in entries} == {"cluster:tick"}
    assert len(servers) == 1
    assert len(ticks) == len(set(ticks)) >= 3  # every tick once, whichever scheduler claimed it
    entry_id = ticks[0].split(":")[1]
    fired = [e.task_id for e in await Inspector(credis, schema).scheduler_history(entry_id, size=100)]
    assert len(fired) == len(set(fired))  # each tick recorded by the one scheduler that won it
    assert set(ticks) <= set(fired)


async def _count(seen: list[str], n: int) -> bool:
    return len(seen) >= n


async def test_a_killed_workers_task_runs_again_on_another_worker_across_the_cluster(
    csettings: Settings, cclient: Client, credis: Any, tmp_path: Path
) -> None:
    s = csettings.replace(heartbeat_interval=0.5)
    ns = s.namespace
    procs = [start_worker(s, tmp_path / f"w{i}.log", TEST_DEAD_AFTER=3.0) for i in range(2)]
    try:

        async def both_alive() -> bool:
            return int(await credis.zcount(Schema(ns).alive, time.time() - 2, "+inf")) == 2

        await wait_until(both_alive, timeout=30)
        infos = [await cclient.enqueue(JOB, AppJob(sleep=1.5), queue=q) for q in QUEUES]

        async def runs(task_id: str) -> int:
            return int(await credis.hget(f"{ns}:test:runs", task_id) or 0)

        async def all_started() -> bool:
            return all([await runs(i.id) >= 1 for i in infos])

        await wait_until(all_started)
        victim = int(await credis.hget(f"{ns}:test:pid", infos[2].id))
        os.kill(victim, signal.SIGKILL)

        async def all_done() -> bool:
            return int(await credis.llen(f"{ns}:test:done")) >= 3

        await wait_until(all_done, timeout=30)
        done = [d.decode() for d in await credis.lrange(f"{ns}:test:done", 0, -1)]
        again = [i.id for i in infos if await runs(i.id) == 2]
    finally:
        for proc in procs:
            stop_process(proc)
    assert sorted(done) == sorted(i.id for i in infos)  # each completed once
    assert infos[2].id in again  # the victim's tasks ran again, on the survivor
    logs = "".join((tmp_path / f"w{i}.log").read_text() for i in range(2))
    assert "task_recovered" in logs


async def test_primary_2_killed_mid_run_its_replica_takes_over_and_every_replicated_task_is_processed(
    valkey_cluster_with_replica: ClusterInfo, namespace: str, tmp_path: Path
) -> None:
    info = valkey_cluster_with_replica
    assert info.replica_port is not None
    settings = Settings(
        redis_url=info.url,
        namespace=namespace,
        data_dir=str(tmp_path / "data"),
        queues=QUEUES,
        heartbeat_interval=0.5,
        forward_interval=0.2,
        recoverer_interval=0.5,
        shutdown_timeout=1.0,
    )
    runs: Counter[str] = Counter()

    async def handle(ctx: Any, p: P) -> None:
        await asyncio.sleep(p.sleep)
        runs[ctx.id] += 1

    task = TaskDef("cluster:failover", P, handle, max_retry=25, retry_delay=lambda retried, error: 0.2)
    redis: Any = open_redis(info.url)
    client = Client(redis, schema=Schema(namespace), settings=settings)
    try:
        async with Worker(settings, tasks=[task]):
            ids = [
                (await client.enqueue(task, P(n=n, sleep=0.05), queue=f"q{n % 3}", task_id=f"t-{n}")).id
                for n in range(150)
            ]
            await asyncio.to_thread(replicated, info.ports[2], info.replica_port)
            await wait_until(lambda: _started(runs, 20))  # tasks are in flight when primary 2 dies
            info.procs[2].kill()
            killed = time.monotonic()
            ids += [await _enqueue_until_accepted(client, task, n) for n in range(150, 210)]
            await wait_until(lambda: _all_in(runs, ids), timeout=40)
            recovered_in = time.monotonic() - killed
            # a client of its own: the client's commands went over the lean connections, so redis-py's slot
            # map in ``redis`` never saw the failover
            fresh: Any = open_redis(info.url)
            try:
                await fresh.initialize()
                owner = fresh.get_node_from_key(Schema(namespace).queue("q2").pending)
                servers = await Inspector(fresh, Schema(namespace)).servers()
            finally:
                await fresh.aclose()
    finally:
        await redis.aclose()
    assert owner.port == info.replica_port  # the replica took over primary 2's slots
    assert len(servers) == 1  # the heartbeat (a blocking Cluster client) found the new primary too
    assert set(runs) >= set(ids)  # none lost; some may have run twice (at-least-once)
    assert sum(runs.values()) - len(ids) < 40, runs.most_common(5)
    assert recovered_in < 40


async def _started(runs: Counter[str], n: int) -> bool:
    return len(runs) >= n


async def _all_in(runs: Counter[str], ids: list[str]) -> bool:
    return all(i in runs for i in ids)


async def _enqueue_until_accepted(client: Client, task: TaskDef[P], n: int) -> str:
    """Enqueue task ``n`` with a fixed id, retrying while its primary fails over (a conflict: it got in)."""
    while True:
        try:
            await client.enqueue(task, P(n=n, sleep=0.01), queue=f"q{n % 3}", task_id=f"t-{n}")
        except TaskIdConflict:
            return f"t-{n}"
        except (RedisUnavailable, RedisError, OSError):
            await asyncio.sleep(0.1)
        else:
            return f"t-{n}"


async def test_a_worker_with_limited_task_types_refuses_to_start_on_a_cluster(csettings: Settings) -> None:
    """Limits need one server: on a Cluster every limited task failed with CROSSSLOT and was archived in the end."""

    async def work(ctx: Any, p: P) -> None:
        pass

    capped = TaskDef("cluster:capped", P, work, limit=Limit(concurrency=2))
    free = TaskDef("cluster:free", P, work)
    worker = Worker(csettings, tasks=[free, capped])
    with pytest.raises(ConfigError, match=r"task types cluster:capped declare limits, which need one Redis server"):
        await worker.start()
    assert worker.processor is None  # nothing left running
    async with Worker(csettings, tasks=[free]):  # without limits it starts
        pass
