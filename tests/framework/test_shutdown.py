"""Graceful shutdown of real worker processes: SIGTERM requeues at the head without spending a retry."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

from framework.client.client import TaskCall
from framework.task import TaskDef
from framework.worker.worker import Worker
from tests.framework.worker_app import JOB, SYNC_JOB, Job, start_worker, stop_process, task_record, wait_until


async def _runs(redis: Any, settings: Any, task_id: str) -> int:
    return int(await redis.hget(f"{settings.namespace}:test:runs", task_id) or 0)


async def _wait_running(redis: Any, settings: Any, task_id: str) -> None:
    async def running() -> bool:
        return await _runs(redis, settings, task_id) == 1

    await wait_until(running, timeout=30)


async def test_sigterm_requeues_a_running_task_at_the_head_without_spending_a_retry(
    settings: Any, client: Any, redis: Any, schema: Any, tmp_path: Path
) -> None:
    s = settings.replace(concurrency=1, shutdown_timeout=1.0)
    proc = start_worker(s, tmp_path / "worker.log")
    try:
        long = await client.enqueue(JOB, Job(sleep=60))
        await _wait_running(redis, s, long.id)
        later = [await client.enqueue(JOB, Job()) for _ in range(2)]  # wait behind it (concurrency 1)
        stopped_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        status = await asyncio.to_thread(proc.wait, 20)
        assert status == 0
        # within shutdown_timeout + cancel_grace (with room for a loaded machine), not after the 60 s task
        assert time.monotonic() - stopped_at < s.shutdown_timeout + s.cancel_grace + 10
    finally:
        stop_process(proc)
    qk = schema.queue("default")
    # RPUSH: the requeued task is the next one a worker takes (consumers pop from the right)
    assert await redis.lrange(qk.pending, 0, -1) == [later[1].id.encode(), later[0].id.encode(), long.id.encode()]
    record = await task_record(redis, schema, "default", long.id)
    assert record["state"] == "pending"
    assert record["msg"].retried == 0
    assert record["msg"].error_msg == ""
    assert await redis.get(qk.failed) is None
    assert await redis.llen(qk.active) == 0
    assert await redis.zcard(qk.lease) == 0
    log = (tmp_path / "worker.log").read_text()
    assert "task_requeued" in log
    assert "worker_stopped" in log


async def test_a_second_signal_exits_at_once(
    settings: Any, client: Any, redis: Any, schema: Any, tmp_path: Path
) -> None:
    s = settings.replace(shutdown_timeout=60.0)
    proc = start_worker(s, tmp_path / "worker.log")
    try:
        info = await client.enqueue(JOB, Job(sleep=60))
        await _wait_running(redis, s, info.id)
        proc.send_signal(signal.SIGTERM)

        async def stopping() -> bool:
            return "worker_stopping" in (tmp_path / "worker.log").read_text()

        await wait_until(stopping)
        proc.send_signal(signal.SIGTERM)
        status = await asyncio.to_thread(proc.wait, 20)  # well before the 60 s task or shutdown timeout
        assert status == 130
    finally:
        stop_process(proc)
    # left as it was: the recoverer brings it back once this worker's heartbeat is stale
    assert (await task_record(redis, schema, "default", info.id))["state"] == "active"


async def test_a_stuck_sync_handler_does_not_hold_up_the_exit(
    settings: Any, client: Any, redis: Any, schema: Any, tmp_path: Path
) -> None:
    s = settings.replace(shutdown_timeout=0.5)
    proc = start_worker(s, tmp_path / "worker.log")
    try:
        info = await client.enqueue(SYNC_JOB, Job(sleep=60))
        await _wait_running(redis, s, info.id)
        stopped_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 20) == 0
        # within shutdown_timeout + cancel_grace (with room for a loaded machine), not after the 60 s thread
        assert time.monotonic() - stopped_at < s.shutdown_timeout + s.cancel_grace + 10
    finally:
        stop_process(proc)
    record = await task_record(redis, schema, "default", info.id)
    assert (record["state"], record["msg"].retried) == ("pending", 0)


async def test_stop_lets_short_tasks_finish_and_requeues_the_rest(
    settings: Any, client: Any, redis: Any, schema: Any
) -> None:
    finished: list[int] = []

    async def handle(ctx: Any, job: Job) -> None:
        await asyncio.sleep(job.sleep)
        finished.append(int(job.sleep))

    task = TaskDef("sd:mixed", Job, handle)
    worker = Worker(settings.replace(shutdown_timeout=0.5), tasks=[task])
    await worker.start()
    short, long = await client.enqueue_many([TaskCall(task, Job(sleep=0.2)), TaskCall(task, Job(sleep=30))])

    async def both_running() -> bool:
        return worker.processor is not None and len(worker.processor.inflight) == 2

    await wait_until(both_running)
    await worker.stop()
    assert finished == [0]
    assert not await redis.exists(schema.queue("default").task(short.id))
    record = await task_record(redis, schema, "default", long.id)
    assert (record["state"], record["msg"].retried) == ("pending", 0)
