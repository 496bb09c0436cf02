"""Recovery: SIGKILLed workers, poison pills, slow workers, expired leases, orphans, and a Valkey restart."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import RedisError
from structlog.testing import capture_logs

from framework.broker.base import LEASE_SECONDS
from framework.broker.broker import RedisBroker
from framework.client.client import Client, TaskCall
from framework.clock import SystemClock
from framework.embedded.process import start_test_server
from framework.logging import get_logger
from framework.protocol.keys import Schema
from framework.protocol.message import encode_message, new_message
from framework.settings import Settings
from framework.transport.connection import open_redis
from framework.worker.background.recoverer import LEASE_EXPIRED_ERROR, Recoverer, default_dead_after
from tests.framework.worker_app import JOB, Job, start_supervisor, start_worker, stop_process, task_record, wait_until

FAST = {"heartbeat_interval": 0.5, "recoverer_interval": 0.5}


async def _runs(redis: Any, ns: str, task_id: str) -> int:
    return int(await redis.hget(f"{ns}:test:runs", task_id) or 0)


async def _alive_count(redis: Any, schema: Any) -> int:
    return int(await redis.zcount(schema.alive, time.time() - 2, "+inf"))


async def test_a_sigkilled_workers_task_runs_again_once_on_a_survivor_within_20_s(
    settings: Any, client: Any, redis: Any, schema: Any, tmp_path: Path
) -> None:
    s = settings.replace(**FAST)
    assert default_dead_after(s.heartbeat_interval) == 6.0  # the default rule, not a test override
    procs = [start_worker(s, tmp_path / f"w{i}.log") for i in range(2)]
    try:

        async def both_alive() -> bool:
            return await _alive_count(redis, schema) == 2

        await wait_until(both_alive, timeout=30)
        info = await client.enqueue(JOB, Job(sleep=2))

        async def started() -> bool:
            return await _runs(redis, s.namespace, info.id) == 1

        await wait_until(started)
        victim = int(await redis.hget(f"{s.namespace}:test:pid", info.id))
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()

        async def ran_again() -> bool:
            return await _runs(redis, s.namespace, info.id) == 2

        await wait_until(ran_again, timeout=25)
        recovered_in = time.monotonic() - killed_at
        done_key = f"{s.namespace}:test:done"

        async def completed() -> bool:
            return await redis.llen(done_key) == 1

        await wait_until(completed)
        await asyncio.sleep(0.5)
    finally:
        for proc in procs:
            stop_process(proc)
    assert recovered_in < 20, recovered_in
    assert await _runs(redis, s.namespace, info.id) == 2  # exactly once more
    assert await redis.lrange(done_key, 0, -1) == [info.id.encode()]
    survivor = int(await redis.hget(f"{s.namespace}:test:pid", info.id))
    assert survivor != victim
    qk = schema.queue("default")
    assert not await redis.exists(qk.task(info.id))  # done
    assert await redis.get(qk.failed) is None  # a recovery is not a failure: no retry spent
    logs = "".join((tmp_path / f"w{i}.log").read_text() for i in range(2))
    assert "task_recovered" in logs


async def test_a_poison_pill_is_archived_after_repeated_crashes(
    settings: Any, client: Any, redis: Any, schema: Any, tmp_path: Path
) -> None:
    s = settings.replace(heartbeat_interval=0.25, recoverer_interval=0.25)
    supervisor = start_supervisor(s, 2, tmp_path / "supervisor.log", TEST_DEAD_AFTER=2.5, TEST_MAX_RECOVERIES=2)
    try:

        async def both_alive() -> bool:
            return await _alive_count(redis, schema) >= 2

        await wait_until(both_alive, timeout=30)
        info = await client.enqueue(JOB, Job(crash=True))

        async def archived() -> bool:
            return (await task_record(redis, schema, "default", info.id)).get("state") == "archived"

        await wait_until(archived, timeout=60)
    finally:
        stop_process(supervisor)
    msg = (await task_record(redis, schema, "default", info.id))["msg"]
    assert msg.error_msg.startswith("poison pill: the worker running this task died 3 times")
    assert msg.retried == 0
    assert await _runs(redis, s.namespace, info.id) == 3  # max_recoveries + 1 crashes
    assert "task_poison_pill" in (tmp_path / "supervisor.log").read_text()


INNOCENTS = 20


async def _poison_among_innocents(client: Any) -> tuple[str, list[str]]:
    """One task that kills its worker and 20 ordinary ones, enqueued together so one batch takes them all."""
    innocents = [(await client.enqueue(JOB, Job(sleep=0.3 + (i % 3) * 0.2))).id for i in range(INNOCENTS)]
    poison = (await client.enqueue(JOB, Job(crash=True))).id
    innocents += [(await client.enqueue(JOB, Job(sleep=0.3))).id for _ in range(2)]
    return poison, innocents


async def _only_the_poison_is_archived(redis: Any, schema: Any, ns: str, poison: str, innocents: list[str]) -> None:
    record = await task_record(redis, schema, "default", poison)
    assert record["state"] == "archived"
    assert record["msg"].error_msg.startswith("poison pill: the worker running this task died 3 times")
    assert await _runs(redis, ns, poison) == 4  # died with the others (uncharged), then 3 times alone
    done = [raw.decode() for raw in await redis.lrange(f"{ns}:test:done", 0, -1)]
    assert sorted(done) == sorted(innocents)  # every ordinary task completed, once
    qk = schema.queue("default")
    assert await redis.zcard(qk.archived) == 1
    assert not await redis.exists(qk.suspects)  # each innocent lost its mark when it ran alone


async def test_only_the_task_that_kills_its_worker_is_archived_one_worker_restarted_after_each_death(
    settings: Any, client: Any, redis: Any, schema: Any, tmp_path: Path
) -> None:
    s = settings.replace(heartbeat_interval=0.25, recoverer_interval=0.25)
    poison, innocents = await _poison_among_innocents(client)
    extra = {"TEST_DEAD_AFTER": 2.5, "TEST_MAX_RECOVERIES": 2}
    log = tmp_path / "worker.log"
    proc = start_worker(s, log, **extra)
    deaths = 0
    try:

        async def settled() -> bool:
            nonlocal proc, deaths
            if proc.poll() is not None:  # died: restarted, as a process manager would
                deaths += 1
                proc = start_worker(s, log, **extra)
            archived = (await task_record(redis, schema, "default", poison)).get("state") == "archived"
            return archived and await redis.llen(f"{s.namespace}:test:done") >= len(innocents)

        await wait_until(settled, timeout=150, interval=0.1)
        await asyncio.sleep(0.5)
    finally:
        stop_process(proc)
    assert deaths == 4
    await _only_the_poison_is_archived(redis, schema, s.namespace, poison, innocents)
    logs = log.read_text()
    assert "suspect_running_alone" in logs
    assert "task_poison_pill" in logs


async def test_only_the_task_that_kills_its_worker_is_archived_with_two_processes(
    settings: Any, client: Any, redis: Any, schema: Any, tmp_path: Path
) -> None:
    s = settings.replace(heartbeat_interval=0.25, recoverer_interval=0.25)
    poison, innocents = await _poison_among_innocents(client)
    log = tmp_path / "supervisor.log"
    supervisor = start_supervisor(s, 2, log, TEST_DEAD_AFTER=2.5, TEST_MAX_RECOVERIES=2)
    try:

        async def settled() -> bool:
            archived = (await task_record(redis, schema, "default", poison)).get("state") == "archived"
            return archived and await redis.llen(f"{s.namespace}:test:done") >= len(innocents)

        await wait_until(settled, timeout=150, interval=0.1)
        await asyncio.sleep(0.5)
    finally:
        stop_process(supervisor)
    await _only_the_poison_is_archived(redis, schema, s.namespace, poison, innocents)


async def test_a_slow_worker_is_not_taken_for_a_dead_one(
    settings: Any, client: Any, redis: Any, schema: Any, tmp_path: Path
) -> None:
    """A handler that blocks the event loop longer than dead_after: the heartbeat thread keeps beating."""
    s = settings.replace(**FAST)
    procs = [start_worker(s, tmp_path / f"w{i}.log", TEST_DEAD_AFTER=2.5) for i in range(2)]
    try:

        async def both_alive() -> bool:
            return await _alive_count(redis, schema) == 2

        await wait_until(both_alive, timeout=30)
        info = await client.enqueue(JOB, Job(block=4))
        done_key = f"{s.namespace}:test:done"

        async def completed() -> bool:
            return await redis.llen(done_key) == 1

        await wait_until(completed, timeout=30)
        await asyncio.sleep(1.0)  # a recoverer would have acted by now
    finally:
        for proc in procs:
            stop_process(proc)
    assert await _runs(redis, s.namespace, info.id) == 1
    assert not await redis.exists(schema.queue("default").task(info.id))


@pytest.fixture
async def recoverer(redis: Any, schema: Any) -> AsyncIterator[tuple[Recoverer, RedisBroker]]:
    broker = RedisBroker(redis, schema, SystemClock())
    log = get_logger("test")
    yield Recoverer(broker, ["default"], log, dead_after=6.0, max_recoveries=1), broker


async def _seed_active(redis: Any, schema: Any, task_id: str, lease: float | None, retried: int = 0) -> None:
    qk = schema.queue("default")
    msg = new_message(type="t", payload=b"{}", id=task_id, queue="default", retry=3, timeout=60, deadline=0)
    msg.retried = retried
    await redis.hset(qk.task(task_id), mapping={"msg": encode_message(msg), "state": "active"})
    await redis.lpush(qk.active, task_id)
    if lease is not None:
        await redis.zadd(qk.lease, {task_id: int(lease)})


async def test_dead_worker_fast_path_requeues_without_a_retry_and_spares_fresh_leases(
    recoverer: Any, redis: Any, schema: Any
) -> None:
    rec, _ = recoverer
    now = time.time()
    qk = schema.queue("default")
    await _seed_active(redis, schema, "stale", now - 20 + LEASE_SECONDS)
    await _seed_active(redis, schema, "fresh", now + LEASE_SECONDS)  # re-leased by a live worker since
    await redis.zadd(schema.alive, {"dead-sid": now - 20, "live-sid": now})
    await redis.sadd(qk.inflight("dead-sid"), "stale", "fresh")
    await redis.sadd(qk.inflight("live-sid"), "other")
    assert await rec.recover_dead_workers() == 1
    record = await task_record(redis, schema, "default", "stale")
    # it held two tasks when it died: neither is charged; the one recovered runs alone next (a suspect)
    assert (record["state"], record["msg"].retried, record.get("fw_recoveries")) == ("pending", 0, None)
    assert await redis.smembers(qk.suspects) == {b"stale"}
    assert await redis.lrange(qk.pending, -1, -1) == [b"stale"]  # at the head
    assert (await task_record(redis, schema, "default", "fresh"))["state"] == "active"
    assert await redis.smembers(qk.inflight("dead-sid")) == {b"stale", b"fresh"}  # asked again later
    assert await redis.smembers(qk.inflight("live-sid")) == {b"other"}


async def test_dead_worker_fast_path_archives_a_poison_pill(recoverer: Any, redis: Any, schema: Any) -> None:
    rec, _ = recoverer
    qk = schema.queue("default")
    now = time.time()
    await _seed_active(redis, schema, "pill", now - 20 + LEASE_SECONDS)
    await redis.hset(qk.task("pill"), "fw_recoveries", 1)  # max_recoveries=1 already spent
    await redis.zadd(schema.alive, {"dead-sid": now - 20})
    await redis.sadd(qk.inflight("dead-sid"), "pill")
    await rec.recover_dead_workers()
    record = await task_record(redis, schema, "default", "pill")
    assert record["state"] == "archived"
    assert "poison pill" in record["msg"].error_msg
    assert not await redis.exists(qk.inflight("dead-sid"))


async def test_expired_leases_are_retried_or_archived_as_asynq_does(recoverer: Any, redis: Any, schema: Any) -> None:
    rec, _ = recoverer
    now = time.time()
    await _seed_active(redis, schema, "go-crash", now - LEASE_SECONDS - 5)
    await _seed_active(redis, schema, "go-last", now - LEASE_SECONDS - 5, retried=3)
    await _seed_active(redis, schema, "recent", now - 10)  # within asynq's 30 s grace
    with capture_logs():
        assert await rec.recover_expired_leases() == 2
    retried = await task_record(redis, schema, "default", "go-crash")
    assert (retried["state"], retried["msg"].retried, retried["msg"].error_msg) == ("retry", 1, LEASE_EXPIRED_ERROR)
    archived = await task_record(redis, schema, "default", "go-last")
    assert (archived["state"], archived["msg"].error_msg) == ("archived", LEASE_EXPIRED_ERROR)
    assert (await task_record(redis, schema, "default", "recent"))["state"] == "active"


async def test_active_tasks_without_a_lease_are_repaired(recoverer: Any, redis: Any, schema: Any) -> None:
    rec, _ = recoverer
    await _seed_active(redis, schema, "orphan", None)
    with capture_logs():
        assert await rec.repair() == 1
        assert await rec.recover_expired_leases() == 1
    record = await task_record(redis, schema, "default", "orphan")
    assert (record["state"], record["msg"].error_msg) == ("retry", LEASE_EXPIRED_ERROR)


async def test_a_valkey_restart_mid_run_loses_no_task(tmp_path: Path) -> None:
    server = start_test_server(tmp_path / "valkey", appendonly=True)
    procs = []
    redis = open_redis(server.url)
    try:
        s = Settings(redis_url=server.url, namespace="restart", data_dir=str(tmp_path / "data"), concurrency=4, **FAST)
        client = Client(redis, settings=s, schema=Schema("restart"))
        # dead_after 3 s: in-memory leases last 2 s, so the outage below outlasts them
        procs = [start_worker(s, tmp_path / f"w{i}.log", TEST_DEAD_AFTER=3.0) for i in range(2)]
        schema = client.schema

        async def both_alive() -> bool:
            return await _alive_count(redis, schema) == 2

        await wait_until(both_alive, timeout=30)
        infos = await client.enqueue_many([TaskCall(JOB, Job(sleep=0.2)) for _ in range(80)])
        ids = {i.id for i in infos}  # type: ignore[union-attr]
        done_key = "restart:test:done"

        async def some_done() -> bool:
            return await redis.llen(done_key) >= 15

        await wait_until(some_done, timeout=30)
        await asyncio.to_thread(server.stop)  # SIGTERM: Valkey fsyncs the AOF and exits
        await asyncio.sleep(3.5)  # unreachable for a while
        await asyncio.to_thread(server.start)

        async def all_done() -> bool:
            try:
                return set(await redis.lrange(done_key, 0, -1)) >= {i.encode() for i in ids}
            except RedisError:  # the test's own connection, right after the restart
                return False

        await wait_until(all_done, timeout=60)
        qk = schema.queue("default")
        for key in (qk.pending, qk.active):
            assert await redis.llen(key) == 0
        for key in (qk.retry, qk.archived, qk.lease):
            assert await redis.zcard(key) == 0
        completions = Counter(await redis.lrange(done_key, 0, -1))
        assert set(completions) == {i.encode() for i in ids}
        # at-least-once: only tasks caught by the restart can have run twice
        assert sum(n - 1 for n in completions.values()) <= 16
    finally:
        for proc in procs:
            stop_process(proc)
        await redis.aclose()
        server.stop()
    logs = "".join((tmp_path / f"w{i}.log").read_text() for i in range(2))
    assert "redis_unavailable" in logs
    assert "redis_reconnected" in logs
    # leases lost in the outage: each such task is requeued without a retry, by its own worker
    # (task_given_back) or, when the other worker's recoverer gets there first, by that one
    lost = logs.count("task_lease_lost")
    assert lost > 0
    assert logs.count("task_given_back") + logs.count("task_recovered") >= lost
