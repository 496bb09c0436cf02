"""The worker as a whole: wake-up latency, due times, idle cost, asynq records, cancel, Go messages, processes."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from framework.embedded.process import start_test_server
from framework.errors import RetryAfter
from framework.protocol.keys import Schema
from framework.protocol.message import decode_message, decode_server_info, decode_worker_info, encode_message
from framework.settings import CronEntrySettings, Settings
from framework.task import TaskDef
from framework.transport.connection import open_redis
from framework.worker import processor as processor_module
from framework.worker.heartbeat import WORKER_PAYLOAD_MAX
from framework.worker.worker import Worker
from tests.framework.worker_app import JOB, Job, start_supervisor, stop_process, task_record, wait_until

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "asynq-golden.json"


class T(msgspec.Struct, frozen=True, kw_only=True):
    t0: float = 0.0
    n: int = 0


async def test_a_task_enqueued_to_an_idle_worker_starts_within_milliseconds(
    start: Any, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the wake-up starts it: the idle worker's own check of the pending lists is a minute away."""
    latencies: list[float] = []

    async def handle(ctx: Any, p: T) -> None:
        latencies.append(time.time() - p.t0)

    monkeypatch.setattr(processor_module, "IDLE_CHECK", 60.0)
    task = TaskDef("w:latency", T, handle)
    await start(task)
    await asyncio.sleep(1.2)  # idle: its first fetch found nothing
    for _ in range(10):
        await client.enqueue(task, T(t0=time.time()))

        async def ran(n: int = len(latencies) + 1) -> bool:
            return len(latencies) >= n

        await wait_until(ran, timeout=30, interval=0.005)  # well before the idle check: the wake-up started it
        await asyncio.sleep(0.05)
    assert len(latencies) == 10, latencies


async def test_scheduled_and_retry_tasks_start_within_a_second_of_their_due_time(
    start: Any, client: Any, redis: Any, schema: Any
) -> None:
    starts: dict[int, list[float]] = {}

    async def handle(ctx: Any, p: T) -> None:
        starts.setdefault(p.n, []).append(time.time())
        if p.n == 2 and ctx.retried == 0:
            raise RetryAfter(1)

    task = TaskDef("w:due", T, handle)
    await start(task)
    due = math.ceil(time.time()) + 2
    await client.enqueue(task, T(n=1), process_at=due)
    info = await client.enqueue(task, T(n=2))

    async def retry_scheduled() -> bool:
        return await redis.zscore(schema.queue("default").retry, info.id) is not None

    await wait_until(retry_scheduled)
    retry_at = await redis.zscore(schema.queue("default").retry, info.id)

    async def both_ran() -> bool:
        return 1 in starts and len(starts.get(2, [])) == 2

    await wait_until(both_ran, timeout=10)
    assert 0 <= starts[1][0] - due < 1.0, starts[1][0] - due
    assert 0 <= starts[2][1] - retry_at < 1.0, starts[2][1] - retry_at


async def test_a_retry_the_worker_schedules_is_not_held_back_by_a_long_forward_interval(
    start: Any, client: Any, redis: Any, schema: Any, settings: Settings
) -> None:
    starts: list[float] = []

    async def handle(ctx: Any, p: T) -> None:
        starts.append(time.time())
        if ctx.retried == 0:
            raise RetryAfter(1)

    task = TaskDef("w:quick-retry", T, handle)
    await start(task, settings=settings.replace(forward_interval=10.0))
    await asyncio.sleep(0.3)  # the forwarder's first pass found nothing: its next one is 10 s away
    info = await client.enqueue(task, T())

    async def retry_scheduled() -> bool:
        return await redis.zscore(schema.queue("default").retry, info.id) is not None

    await wait_until(retry_scheduled)
    retry_at = await redis.zscore(schema.queue("default").retry, info.id)

    async def retried() -> bool:
        return len(starts) == 2

    await wait_until(retried, timeout=5)
    assert 0 <= starts[1] - retry_at < 0.5, starts[1] - retry_at


async def test_an_idle_worker_costs_next_to_no_redis_traffic_or_cpu(tmp_path: Path) -> None:
    server = start_test_server(tmp_path / "valkey")
    try:
        settings = Settings(redis_url=server.url, namespace="idle", data_dir=str(tmp_path / "data"))
        redis = open_redis(server.url)
        worker = Worker(settings, tasks=[JOB])
        await worker.start()
        try:
            await asyncio.sleep(1.5)
            await redis.config_resetstat()
            cpu, began = time.process_time(), time.monotonic()
            await asyncio.sleep(4.0)
            cpu = time.process_time() - cpu
            stats = await redis.info("commandstats")
            window = time.monotonic() - began  # four seconds, or more on a loaded machine
        finally:
            await worker.stop()
            await redis.aclose()
    finally:
        server.stop()
    calls = {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()}
    calls.pop("config|resetstat", None)
    calls.pop("info", None)
    per_second = sum(calls.values()) / window
    # three queues: a pending check and a due-time check per second, a heartbeat every 2 s, the rest rarer
    print(f"idle: {per_second:.1f} commands/s, cpu {cpu / window:.3f} s/s, {calls}")
    assert per_second < 15, calls
    assert cpu / window < 0.1, (cpu, window)


async def test_heartbeat_writes_asynq_server_and_worker_records(
    start: Any, client: Any, redis: Any, schema: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("framework.worker.heartbeat.SERVER_INFO_EVERY", 0.1)
    release = asyncio.Event()

    async def handle(ctx: Any, p: T) -> None:
        await release.wait()

    task = TaskDef("w:hb", T, handle)
    worker = await start(task, settings=settings.replace(heartbeat_interval=0.2, concurrency=7))
    info = await client.enqueue(task, T(n=3))
    ident = worker.identity
    workers_key = schema.worker_set(ident.host, ident.pid, ident.server_id)

    async def recorded() -> bool:
        return await redis.hexists(workers_key, info.id)

    await wait_until(recorded)
    server_key = schema.server(ident.host, ident.pid, ident.server_id)
    assert await redis.zscore(schema.servers, server_key) > time.time()
    assert await redis.ttl(server_key) > 0
    server = decode_server_info(await redis.get(server_key))
    assert (server.host, server.pid, server.server_id) == (ident.host, os.getpid(), ident.server_id)
    assert server.concurrency == 7
    assert server.queues == settings.queues
    assert server.status == "active"
    assert server.active_worker_count == 1
    running = decode_worker_info(await redis.hget(workers_key, info.id))
    assert (running.task_id, running.task_type, running.queue) == (info.id, "w:hb", "default")
    assert msgspec.json.decode(running.task_payload) == {"t0": 0.0, "n": 3}
    assert await redis.zscore(schema.alive, ident.server_id) is not None
    inflight = schema.queue("default").inflight(ident.server_id)
    assert await redis.smembers(inflight) == {info.id.encode()}
    release.set()

    async def trimmed() -> bool:
        return not await redis.smembers(inflight)

    await wait_until(trimmed)
    await worker.stop()
    assert await redis.zcard(schema.servers) == 0
    assert await redis.zcard(schema.workers) == 0
    assert await redis.zscore(schema.alive, ident.server_id) is None
    assert not await redis.exists(server_key, workers_key)


async def test_worker_records_carry_a_bounded_payload_that_still_decodes(
    start: Any, client: Any, redis: Any, schema: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Five 3 MB payloads in flight: the record rewritten on every write stays a few KiB, not 15 MB."""
    monkeypatch.setattr("framework.worker.heartbeat.SERVER_INFO_EVERY", 0.1)
    release = asyncio.Event()

    async def handle(ctx: Any, p: bytes) -> None:
        await release.wait()

    task = TaskDef("w:big", bytes, handle)
    worker = await start(task, settings=settings.replace(heartbeat_interval=0.2))
    payloads = [bytes([65 + i]) * 16 + os.urandom(3_000_000) for i in range(5)]
    infos = [await task.enqueue(client, payload) for payload in payloads]
    ident = worker.identity
    workers_key = schema.worker_set(ident.host, ident.pid, ident.server_id)

    async def all_recorded() -> bool:
        return int(await redis.hlen(workers_key)) == len(infos)

    await wait_until(all_recorded)
    assert await redis.memory_usage(workers_key) < 16 * 1024
    records = await redis.hgetall(workers_key)
    for info, payload in zip(infos, payloads, strict=True):
        raw = records[info.id.encode()]
        assert len(raw) < WORKER_PAYLOAD_MAX + 256
        running = decode_worker_info(raw)
        assert (running.task_id, running.task_type, running.queue) == (info.id, "w:big", "default")
        assert running.task_payload == payload[:WORKER_PAYLOAD_MAX]
        assert running.start_time is not None and running.deadline is not None
        stored = await task_record(redis, schema, "default", info.id)
        assert stored["msg"].payload == payload  # only the record is cut short, never the task
    release.set()


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_cancel_through_the_asynq_cancel_channel(
    start: Any, client: Any, redis: Any, schema: Any, kind: str
) -> None:
    started = asyncio.Event()

    async def handle_async(ctx: Any, p: T) -> None:
        started.set()
        await asyncio.sleep(30)

    def handle_sync(ctx: Any, p: T) -> None:
        started.set()
        time.sleep(0.5)

    task = TaskDef(f"w:cancel-{kind}", T, handle_async if kind == "async" else handle_sync)
    await start(task)
    info = await client.enqueue(task, T())
    await asyncio.wait_for(started.wait(), 10)
    await redis.publish(schema.cancel_channel, info.id)

    async def retrying() -> bool:
        return (await task_record(redis, schema, "default", info.id)).get("state") == "retry"

    await wait_until(retrying, timeout=5)
    msg = (await task_record(redis, schema, "default", info.id))["msg"]
    assert msg.error_msg == "TaskCancelled: task cancelled through the asynq:cancel channel"
    assert msg.retried == 1


def _golden_msg(task_id: str) -> bytes:
    keys = json.loads(GOLDEN.read_text(encoding="utf-8"))["keys"]
    record = next(v for k, v in keys.items() if k.endswith(f":t:{task_id}"))
    return bytes.fromhex(record["fields_hex"]["msg"])


class Report(msgspec.Struct, frozen=True, kw_only=True):
    user_id: int
    type: str


async def test_a_go_written_message_is_processed_and_re_encoded_without_loss(
    start: Any, redis: Any, schema: Any
) -> None:
    go_bytes = _golden_msg("golden-options")
    # a field a future asynq might add (99, varint) and one of unknown wire length (100, bytes)
    unknown = bytes([0x98, 0x06, 0x01, 0xA2, 0x06, 0x03]) + b"new"
    # (Go writes header entries in random map order and we sort them, so compare decoded, not bytes)
    qk = schema.queue("critical")
    await redis.hset(qk.task("golden-options"), mapping={"msg": go_bytes + unknown, "state": "pending"})
    await redis.lpush(qk.pending, "golden-options")
    runs: list[tuple[Report, dict[str, str], int]] = []

    async def handle(ctx: Any, p: Report) -> None:
        runs.append((p, dict(ctx.headers), ctx.retried))
        if ctx.retried == 0:
            raise RuntimeError("try again")

    task = TaskDef("report:generate", Report, handle, retry_delay=lambda n, e: 100.0)
    worker = await start(task)

    async def retrying() -> bool:
        return (await task_record(redis, schema, "critical", "golden-options")).get("state") == "retry"

    await wait_until(retrying)
    stored = await redis.hget(qk.task("golden-options"), "msg")
    assert stored.endswith(unknown)  # written back after the known fields, as Go would
    after = decode_message(stored)
    before = decode_message(go_bytes)
    assert (after.retried, after.error_msg) == (1, "RuntimeError: try again")
    assert abs(after.last_failed_at - time.time()) < 3
    before.retried, before.error_msg, before.last_failed_at = 1, after.error_msg, after.last_failed_at
    assert stored == encode_message(before) + unknown  # nothing else changed, byte for byte
    assert runs[0] == (Report(user_id=7, type="monthly"), {"trace": "abc", "empty": "", "ünï": "cödé"}, 0)

    await redis.zadd(qk.retry, {"golden-options": int(time.time())})  # due now
    worker.processor.wake()

    async def done() -> bool:
        return not await redis.exists(qk.task("golden-options"))

    await wait_until(done, timeout=5)
    assert [r[2] for r in runs] == [0, 1]


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, exited but not yet reaped by its new parent, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs: take the signal's word
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def _server_pids(redis: Any, schema: Schema) -> set[int]:
    now = time.time()
    members = await redis.zrangebyscore(schema.servers, now, "+inf")
    return {int(m.decode().rsplit("{", 1)[1].split(":")[1]) for m in members}


@pytest.mark.parametrize("start", ["fork", "spawn"])
async def test_multi_process_mode_supervises_restarts_and_stops_together(
    settings: Any, client: Any, redis: Any, schema: Any, tmp_path: Path, start: str
) -> None:
    fast = settings.replace(
        concurrency=2,
        heartbeat_interval=0.5,
        recoverer_interval=0.5,
        shutdown_timeout=2.0,
        cron=[CronEntrySettings(name="tick", spec="@every 1s", task="test:job")],
    )
    supervisor = start_supervisor(fast, 2, tmp_path / "supervisor.log", scheduler=True, FRAMEWORK_PROCESS_START=start)
    try:

        async def two_up() -> bool:
            return len(await _server_pids(redis, schema)) == 2

        await wait_until(two_up, timeout=30)
        infos = [await client.enqueue(JOB, Job(sleep=0.3)) for _ in range(12)]
        done_key = f"{settings.namespace}:test:done"
        ours = {i.id.encode() for i in infos}

        async def all_done() -> bool:
            done = set(await redis.lrange(done_key, 0, -1))
            return done >= ours and len(done - ours) >= 2  # and the scheduler's ticks ran too

        await wait_until(all_done, timeout=30)
        pids = {int(p) for p in await redis.hvals(f"{settings.namespace}:test:pid")}
        assert len(pids) == 2, "both processes took tasks"

        victim = min(await _server_pids(redis, schema))
        os.kill(victim, signal.SIGKILL)

        async def live_pids() -> set[int]:
            return {pid for pid in await _server_pids(redis, schema) if _pid_alive(pid)}

        async def replaced() -> bool:
            live = await live_pids()
            return victim not in live and len(live) == 2

        await wait_until(replaced, timeout=30)
        children = await live_pids()
        assert supervisor.poll() is None
        supervisor.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(supervisor.wait, 30) == 0
        assert not any(_pid_alive(pid) for pid in children)
        assert not await _server_pids(redis, schema) & children  # records removed on the way out
    finally:
        stop_process(supervisor)
    log = (tmp_path / "supervisor.log").read_text()
    assert "worker_process_died" in log
    assert "supervisor_stopped" in log
    assert f"start={start}" in log or f'"start": "{start}"' in log


@pytest.mark.parametrize("start", ["fork", "spawn"])
async def test_a_sigkilled_supervisor_takes_its_workers_down_gracefully(
    settings: Any, client: Any, redis: Any, schema: Any, tmp_path: Path, start: str
) -> None:
    """The children get SIGTERM when the supervisor dies (no orphans) and leave no server records behind."""
    fast = settings.replace(concurrency=2, heartbeat_interval=0.5, shutdown_timeout=1.0)
    supervisor = start_supervisor(fast, 2, tmp_path / "supervisor.log", FRAMEWORK_PROCESS_START=start)
    try:

        async def two_up() -> bool:
            return len(await _server_pids(redis, schema)) == 2

        await wait_until(two_up, timeout=30)
        children = await _server_pids(redis, schema)
        supervisor.kill()
        supervisor.wait(10)

        async def all_gone() -> bool:
            return not any(_pid_alive(pid) for pid in children) and not await _server_pids(redis, schema)

        await wait_until(all_gone, timeout=20)
    finally:
        stop_process(supervisor)
