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
from framework.worker.worker import Worker
from tests.framework.worker_app import (
    JOB,
    Job,
    start_supervisor,
    start_worker,
    stop_process,
    task_record,
    wait_until,
)

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


INNOCENTS = 20


async def _poison_among_innocents(client: Any) -> tuple[str, list[str]]:
    """One task that kills its worker and 20 ordinary ones, enqueued together so one batch takes them all."""
    innocents = [(await client.enqueue(JOB, Job(sleep=0.3 + (i % 3) * 0.2))).id for i in range(INNOCENTS)]
    poison = (await client.enqueue(JOB, Job(crash=True))).id
    innocents += [(await client.enqueue(JOB, Job(sleep=0.3))).id for _ in range(2)]
    return poison, innocents


def _poison_history(log: Path, poison: str) -> str:
    """The log lines telling the poison's story: its recoveries (charged or not), each worker's start and death."""
    keep = ("worker_started", "worker_process_died", "task_poison_pill", "Traceback", "Error")
    lines = log.read_text().splitlines()
    return "\n".join(line[:300] for line in lines if poison in line or any(k in line for k in keep))


async def _only_the_poison_is_archived(redis: Any, schema: Any, ns: str, poison: str, innocents: list[str]) -> None:
    record = await task_record(redis, schema, "default", poison)
    assert record["state"] == "archived"
    assert record["msg"].error_msg.startswith("poison pill: the worker running this task died 3 times")
    assert record["msg"].retried == 0  # deaths are not failures: no retry spent
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
    statuses: list[int] = []  # exit status of each death
    try:

        async def settled() -> bool:
            nonlocal proc
            if (status := proc.poll()) is not None:  # died: restarted, as a process manager would
                statuses.append(status)
                proc = start_worker(s, log, **extra)
            archived = (await task_record(redis, schema, "default", poison)).get("state") == "archived"
            return archived and await redis.llen(f"{s.namespace}:test:done") >= len(innocents)

        try:
            await wait_until(settled, timeout=150, interval=0.1)
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}; deaths {statuses}; poison {poison}:\n{_poison_history(log, poison)}"
            ) from None
        await asyncio.sleep(0.5)
    finally:
        stop_process(proc)
    # The count is exact, under any load: the first death (the poison beside 22 others) charges nobody, and
    # from then on the poison is a suspect and runs alone, so each of its deaths is charged, the third
    # archives it (TEST_MAX_RECOVERIES=2), and no other task ever shares a worker with it. Every death is
    # the poison's own os._exit(3) (a worker that died for any other reason, e.g. failing to start, is
    # reported as such), and the poison started once per death.
    why = f"deaths {statuses}; poison {poison}:\n{_poison_history(log, poison)}"
    assert statuses == [3] * len(statuses), why
    assert len(statuses) == 4, why
    assert await _runs(redis, s.namespace, poison) == len(statuses), why
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

        try:
            await wait_until(settled, timeout=150, interval=0.1)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; poison {poison}:\n{_poison_history(log, poison)}") from None
        await asyncio.sleep(0.5)
    finally:
        stop_process(supervisor)
    await _only_the_poison_is_archived(redis, schema, s.namespace, poison, innocents)
    # every worker death is the poison's os._exit(3): it ran (and killed its worker) 4 times, so 4 processes died
    deaths = [line for line in log.read_text().splitlines() if "worker_process_died" in line]
    assert len(deaths) == 4 and all("status=3" in line for line in deaths), _poison_history(log, poison)


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
    # the requeued one left the dead worker's set in the same step; the fresh one is asked again later
    assert await redis.smembers(qk.inflight("dead-sid")) == {b"fresh"}
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


class _PassCutShort:
    """The broker, as seen by a recoverer whose process dies before it drops a dead worker's in-flight set."""

    def __init__(self, broker: RedisBroker) -> None:
        self._broker = broker

    def __getattr__(self, name: str) -> Any:
        return getattr(self._broker, name)

    async def drop_inflight(self, queue: str, server_id: str) -> None:
        raise SystemExit(3)  # the task just requeued ran in this process, and took it down


async def test_a_death_alone_is_charged_even_after_a_recoverer_pass_was_cut_short(
    recoverer: Any, redis: Any, schema: Any
) -> None:
    """What made the poison-pill process tests flaky under load, made deterministic.

    Worker A died holding the pill and another task: neither charged. The recoverer pass that requeued them
    ran in a worker B that took the pill at once and died of it before the pass ended, so A's in-flight set
    was never dropped. B held the pill alone: its death must be charged. Dead workers are visited oldest
    first, and A's set still names the pill, so the pill must not be requeued again under A's name
    (uncharged, a suspect) before B's entry is reached. In the process tests that happened whenever the
    recovering process was the one to run the pill: 6 to 10 deaths instead of 4, or (two processes) a pill
    that killed 13 workers in 150 s and was never archived.
    """
    rec, broker = recoverer  # dead_after=6, max_recoveries=1
    qk = schema.queue("default")
    now = time.time()
    await _seed_active(redis, schema, "pill", now - 60 + LEASE_SECONDS)
    await _seed_active(redis, schema, "other", now - 60 + LEASE_SECONDS)
    await redis.hset(qk.task("pill"), "fw_recoveries", 1)  # one charged death already: the next archives it
    await redis.zadd(schema.alive, {"worker-a": now - 60})
    await redis.sadd(qk.inflight("worker-a"), "pill", "other")
    rec.broker = _PassCutShort(broker)
    with capture_logs(), pytest.raises(SystemExit):
        await rec.recover_dead_workers()  # A's tasks requeued, uncharged suspects; A's set not dropped
    rec.broker = broker
    assert (await task_record(redis, schema, "default", "pill"))["state"] == "pending"
    # B takes the pill alone (it is a suspect) and dies of it; its lease is as stale as a dead worker's
    taken = await broker.dequeue("default", 64, qk.inflight("worker-b"), alone=True)
    if [task_id for task_id, _ in taken] != ["pill"]:  # the other suspect was at the head: run it, then the pill
        await broker.done("default", [(task_id, "") for task_id, _ in taken], qk.inflight("worker-b"))
        taken = await broker.dequeue("default", 64, qk.inflight("worker-b"), alone=True)
    assert [task_id for task_id, _ in taken] == ["pill"]
    await redis.zadd(qk.lease, {"pill": int(now - 20 + LEASE_SECONDS)})
    await redis.zadd(schema.alive, {"worker-b": now - 20})
    with capture_logs():
        await rec.recover_dead_workers()
    record = await task_record(redis, schema, "default", "pill")
    assert record["state"] == "archived", record.get("fw_recoveries")
    assert "poison pill" in record["msg"].error_msg


@pytest.mark.parametrize("path", ["dead worker", "lost reply", "lost lease"])
async def test_a_running_task_its_caller_cancelled_is_archived_not_run_again_when_its_worker_is_gone(
    recoverer: Any, redis: Any, schema: Any, client: Any, path: str
) -> None:
    """``Client.cancel`` of a running task answers "cancelling": the worker is to stop it and archive it. When that
    worker died (or never received the task) before it could, the recovered task used to run again in full."""
    rec, _ = recoverer
    qk = schema.queue("default")
    now = time.time()
    await _seed_active(redis, schema, "t", now - 20 + LEASE_SECONDS)
    assert await client.cancel("t", queue="default") == "cancelling"
    if path == "dead worker":
        await redis.zadd(schema.alive, {"dead-sid": now - 20})
        await redis.sadd(qk.inflight("dead-sid"), "t")
        run = rec.recover_dead_workers
    elif path == "lost reply":
        rec.server_id, rec.held = "own-sid", set()
        await redis.sadd(qk.inflight("own-sid"), "t")
        run = rec.reclaim_unheld
    else:
        rec.lost.append(("default", "t", now - 5))
        run = rec.give_back_lost
    with capture_logs() as logs:
        await run()
    record = await task_record(redis, schema, "default", "t")
    assert record["state"] == "archived", record
    assert record["msg"].error_msg == "TaskCancelled: task cancelled by its caller (Client.cancel)"
    assert record["msg"].retried == 0
    assert not await redis.lpos(qk.pending, "t")
    assert any(e["event"] == "task_cancelled_recovered" for e in logs), logs


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


async def test_a_dequeue_whose_reply_never_came_runs_again_on_its_own_worker_without_a_retry(
    settings: Any, client: Any, redis: Any, schema: Any
) -> None:
    """A dequeue that ran in Redis but whose reply never reached the worker (the link reset, a failover, a
    timeout) leaves its task active, leased and on the worker's own in-flight set, while the worker holds
    nothing. The worker is alive, so no dead-worker recovery comes; it used to wait for asynq's lease expiry
    (60 s after the dequeue) and be retried as a failure. Its worker's recoverer gives it back as soon as its
    lease is as stale as a dead worker's would be, spending no retry. (A hand-off whose message was lost leaves
    the same state.)
    """
    s = settings.replace(**FAST)
    worker = Worker(s, tasks=[JOB], dead_after=2.0)
    info = await client.enqueue(JOB, Job(), retention=60)
    broker = RedisBroker(redis, schema, SystemClock())
    qk = schema.queue(info.queue)
    taken = await broker.dequeue(info.queue, 1, qk.inflight(worker.identity.server_id))
    assert [task_id for task_id, _ in taken] == [info.id]  # it ran in Redis; its reply is lost here
    with capture_logs() as logs:
        async with worker:
            dequeued_at = time.monotonic()

            async def completed() -> bool:
                return (await task_record(redis, schema, info.queue, info.id)).get("state") == "completed"

            await wait_until(completed, timeout=25)
            ran_in = time.monotonic() - dequeued_at
    record = await task_record(redis, schema, info.queue, info.id)
    assert (record["msg"].retried, record["msg"].error_msg) == (0, "")  # no retry spent, no failure recorded
    assert await _runs(redis, s.namespace, info.id) == 1
    assert ran_in < 15, ran_in  # after dead_after (2 s here), not asynq's 60 s
    assert any(e["event"] == "task_given_back" and e["task_id"] == info.id for e in logs)
    assert not await redis.sismember(qk.inflight(worker.identity.server_id), info.id)


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

        qk = schema.queue("default")

        async def all_done() -> bool:  # every task ran, and the copies run again after the outage ended too
            try:
                ran = set(await redis.lrange(done_key, 0, -1)) >= {i.encode() for i in ids}
                return ran and await redis.llen(qk.pending) == 0 and await redis.llen(qk.active) == 0
            except RedisError:  # the test's own connection, right after the restart
                return False

        await wait_until(all_done, timeout=60)
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
