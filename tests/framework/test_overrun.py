"""Hostile handlers: ones that ignore their timeout or the shutdown, sync ones that overrun, ones that block the loop.

Each is charged like any other failure, never runs twice at once in one process, never holds up a shutdown
for more than a few seconds, and a blocked loop is reported without charging the tasks it held up. The
first tests run a real worker in this process; the rest run real worker processes
(:mod:`tests.framework.worker_app`) and signal them.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from structlog.testing import capture_logs

from framework.client.client import TaskCall
from framework.task import TaskDef
from framework.worker.worker import Worker
from tests.framework.worker_app import (
    JOB,
    ROOT,
    SYNC_JOB,
    Job,
    env_for,
    start_supervisor,
    start_worker,
    stop_process,
    task_record,
    wait_until,
)


class N(msgspec.Struct, frozen=True, kw_only=True):
    n: int = 0


def _never(retried: int, error: BaseException) -> float:
    return 600.0


def _at_once(retried: int, error: BaseException) -> float:
    return 0.0


def _events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name]


async def _deaf(release: asyncio.Event) -> None:
    """Wait for ``release``, swallowing every cancellation (what a handler must not do)."""
    while not release.is_set():
        try:
            await release.wait()
        except asyncio.CancelledError:
            continue


@pytest.fixture
def run(start: Any, settings: Any) -> Any:
    """Start workers in this process (fast grace); each is stopped at the end of the test."""

    async def go(*tasks: TaskDef[Any], **changes: Any) -> Worker:
        worker: Worker = await start(*tasks, settings=settings.replace(cancel_grace=0.5, **changes))
        return worker

    return go


# -- in this process ---------------------------------------------------------------------------------


async def test_a_handler_that_swallows_its_timeout_is_failed_after_the_grace_and_keeps_its_slot(
    run: Any, client: Any, redis: Any, schema: Any
) -> None:
    release = asyncio.Event()
    started: list[int] = []

    async def handle(ctx: Any, p: N) -> None:
        started.append(p.n)
        if p.n == 0:
            await _deaf(release)

    task = TaskDef("o:deaf", N, handle, retry_delay=_never)
    worker = await run(task, concurrency=1)
    p = worker.processor
    try:
        with capture_logs() as logs:
            began = time.monotonic()
            deaf = await client.enqueue(task, N(n=0), timeout=1)

            async def deaf_started() -> bool:
                return started == [0]

            await wait_until(deaf_started)  # then the next one waits for its slot
            later = await client.enqueue(task, N(n=1))

            async def retrying() -> bool:
                return (await task_record(redis, schema, "default", deaf.id)).get("state") == "retry"

            await wait_until(retrying, timeout=30)
            # failed once its 1 s timeout and 0.5 s of grace were over, not before (a tenth of leeway); the
            # handler itself never ends until released: the upper bound only leaves room for a loaded machine
            assert 1 + 0.5 - 0.1 < time.monotonic() - began < 1 + 0.5 + 10
            msg = (await task_record(redis, schema, "default", deaf.id))["msg"]
            assert (msg.retried, msg.error_msg) == (1, "TimeoutError: task timed out after 1s")
            assert ("default", deaf.id) in p.overrun
            assert ("default", deaf.id) not in p.inflight  # its lease is no longer extended
            await asyncio.sleep(0.5)
            assert started == [0]  # concurrency 1: the slot stays taken while the handler runs on
            assert p.running == 1

            release.set()

            async def later_done() -> bool:
                return not await redis.exists(schema.queue("default").task(later.id))

            await wait_until(later_done)
    finally:
        release.set()
    assert started == [0, 1]
    assert not p.overrun
    assert p.running == 0
    [overrun] = _events(logs, "task_overrun")
    assert overrun["task_id"] == deaf.id
    assert overrun["type"] == "o:deaf"
    assert overrun["queue"] == "default"
    assert (overrun["timeout"], overrun["reason"], overrun["outcome"]) == (1, "timeout", "failed")
    assert overrun["log_level"] == "error"
    [ended] = _events(logs, "task_overrun_ended")
    assert ended["task_id"] == deaf.id
    assert ended["duration"] > 1.5
    record = await task_record(redis, schema, "default", deaf.id)  # its late return wrote nothing
    assert (record["state"], record["msg"].retried) == ("retry", 1)


async def test_a_retry_taken_while_its_previous_run_still_runs_is_put_back_without_spending_a_retry(
    run: Any, client: Any, redis: Any, schema: Any
) -> None:
    release = asyncio.Event()
    runs = live = overlaps = 0

    async def handle(ctx: Any, p: N) -> None:
        nonlocal runs, live, overlaps
        runs += 1
        live += 1
        overlaps += live > 1
        try:
            if runs == 1:
                await _deaf(release)
        finally:
            live -= 1

    task = TaskDef("o:again", N, handle, retry_delay=_at_once)
    await run(task)
    try:
        with capture_logs() as logs:
            info = await client.enqueue(task, N(), timeout=1)

            async def deferred() -> bool:  # logged just before it is put back: wait for both
                if not _events(logs, "task_deferred"):
                    return False
                return (await task_record(redis, schema, "default", info.id)).get("state") == "retry"

            await wait_until(deferred, timeout=30)
            record = await task_record(redis, schema, "default", info.id)
            assert (record["state"], record["msg"].retried) == ("retry", 1)  # the put-back spent nothing
            assert runs == 1
            release.set()

            async def finished() -> bool:
                return not await redis.exists(schema.queue("default").task(info.id))

            await wait_until(finished, timeout=20)
    finally:
        release.set()
    assert (runs, overlaps) == (2, 0)
    [put_back] = _events(logs, "task_deferred")[:1]
    assert put_back["task_id"] == info.id
    assert put_back["retry_in"] == 5


async def test_a_handler_that_ignores_the_cancel_channel_is_failed_after_the_grace(
    run: Any, client: Any, redis: Any, schema: Any
) -> None:
    release = asyncio.Event()

    async def handle(ctx: Any, p: N) -> None:
        await _deaf(release)

    task = TaskDef("o:cancel", N, handle, retry_delay=_never)
    worker = await run(task)
    try:
        info = await client.enqueue(task, N())

        async def running() -> bool:
            return ("default", info.id) in worker.processor.inflight

        await wait_until(running)
        assert worker.processor.cancel(info.id)

        async def retrying() -> bool:
            return (await task_record(redis, schema, "default", info.id)).get("state") == "retry"

        await wait_until(retrying, timeout=5)
        msg = (await task_record(redis, schema, "default", info.id))["msg"]
        assert msg.error_msg == "TaskCancelled: task cancelled through the asynq:cancel channel"
        assert msg.retried == 1
    finally:
        release.set()


async def test_stop_returns_within_the_grace_when_a_handler_ignores_the_shutdown(
    settings: Any, client: Any, redis: Any, schema: Any
) -> None:
    release = asyncio.Event()

    async def handle(ctx: Any, p: N) -> None:
        await _deaf(release)

    task = TaskDef("o:stay", N, handle)
    worker = Worker(settings.replace(shutdown_timeout=0.5, cancel_grace=0.5), tasks=[task])
    await worker.start()
    try:
        info = await client.enqueue(task, N())

        async def running() -> bool:
            return worker.processor is not None and ("default", info.id) in worker.processor.inflight

        await wait_until(running)
        began = time.monotonic()
        with capture_logs() as logs:
            await worker.stop()
        # the handler never ends on its own: stop() gave up on it after shutdown_timeout + cancel_grace
        # (1 s here); the margin is for a loaded machine
        assert time.monotonic() - began < 0.5 + 0.5 + 10
        assert worker.abandoned == [f"o:stay:{info.id}"]
        record = await task_record(redis, schema, "default", info.id)
        assert (record["state"], record["msg"].retried, record["msg"].error_msg) == ("pending", 0, "")
        [overrun] = _events(logs, "task_overrun")
        assert (overrun["reason"], overrun["outcome"]) == ("shutdown", "requeued")
        assert _events(logs, "worker_stopped")[0]["abandoned"] == 1
    finally:
        release.set()

    async def ended() -> bool:
        return not worker.abandoned

    await wait_until(ended)


async def test_a_blocked_loop_is_reported_and_the_tasks_it_held_up_are_not_charged(
    run: Any, client: Any, redis: Any, schema: Any
) -> None:
    done: list[int] = []

    async def handle(ctx: Any, p: N) -> None:
        if p.n:
            time.sleep(p.n)  # blocks the event loop
        await asyncio.sleep(0.2)
        done.append(p.n)

    task = TaskDef("o:block", N, handle, retry_delay=_never)
    # enqueued before the worker starts, so one dequeue takes them all and the blocker runs first
    blocker, *others = await client.enqueue_many(
        [TaskCall(task, N(n=3), {"timeout": 1})] + [TaskCall(task, N(), {"timeout": 1}) for _ in range(3)]
    )
    with capture_logs() as logs:
        await run(task, loop_block_threshold=0.5)

        async def settled() -> bool:
            if len(done) < 3:
                return False
            return (await task_record(redis, schema, "default", blocker.id)).get("state") == "retry"

        await wait_until(settled)
    qk = schema.queue("default")
    for info in others:  # held up for 3 s with a 1 s timeout, but they did not cause it
        assert not await redis.exists(qk.task(info.id))
    assert done.count(0) == 3
    msg = (await task_record(redis, schema, "default", blocker.id))["msg"]
    assert (msg.retried, msg.error_msg) == (1, "TimeoutError: task timed out after 1s")  # the culprit is charged
    [blocked] = _events(logs, "event_loop_blocked")
    assert blocked["log_level"] == "warning"
    assert (blocked["task_id"], blocked["type"]) == (blocker.id, "o:block")
    assert f"o:block:{blocker.id}" in blocked["running"]
    assert blocked["where"].endswith(" in handle")
    assert __file__ in blocked["where"]
    [unblocked] = _events(logs, "event_loop_unblocked")
    assert unblocked["blocked_for"] >= 2.5
    moved = _events(logs, "task_deadline_extended")
    assert sum(e["count"] for e in moved) == 3
    assert all(f"o:block:{blocker.id}" not in e["tasks"] for e in moved)


async def test_the_watchdog_is_off_with_a_zero_threshold(run: Any) -> None:
    worker = await run(loop_block_threshold=0)
    assert worker.watchdog is None
    assert worker.processor.execution.deadlines.watchdog is None


# -- real worker processes -----------------------------------------------------------------------------


async def _hget(redis: Any, ns: str, name: str, task_id: str) -> int:
    return int(await redis.hget(f"{ns}:test:{name}", task_id) or 0)


async def _charged_then_done(redis: Any, schema: Any, ns: str, task_id: str) -> None:
    """The overrunning first run is charged a timeout; then it ends (writing nothing) and its retry completes."""

    async def charged() -> bool:
        record = await task_record(redis, schema, "default", task_id)
        return "msg" in record and record["msg"].retried == 1

    await wait_until(charged, timeout=30)
    msg = (await task_record(redis, schema, "default", task_id))["msg"]
    assert msg.error_msg == "TimeoutError: task timed out after 1s"
    assert await _hget(redis, ns, "runs", task_id) == 1  # still running: no second copy

    async def done() -> bool:
        return await redis.llen(f"{ns}:test:done") == 2

    await wait_until(done, timeout=30)


async def _ran_twice_never_at_once(redis: Any, schema: Any, ns: str, task_id: str, log: Path) -> str:
    assert await _hget(redis, ns, "runs", task_id) == 2
    assert await _hget(redis, ns, "overlap", task_id) == 0
    assert not await redis.exists(schema.queue("default").task(task_id))
    text = log.read_text()
    assert "task_overrun" in text
    assert "task_deferred" in text  # its retry came due while the first run still ran
    assert "task_overrun_ended" in text
    return text


async def test_a_worker_process_charges_a_handler_that_swallows_its_timeout_and_never_runs_it_twice_at_once(
    settings: Any, client: Any, redis: Any, schema: Any, tmp_path: Path
) -> None:
    s = settings.replace(cancel_grace=1.0)
    log = tmp_path / "worker.log"
    proc = start_worker(s, log)
    try:
        info = await client.enqueue(JOB, Job(linger=6, slow_runs=1), timeout=1)
        await _charged_then_done(redis, schema, s.namespace, info.id)
    finally:
        stop_process(proc)
    text = await _ran_twice_never_at_once(redis, schema, s.namespace, info.id, log)
    assert "task_lease_lost" not in text


async def test_sigterm_ends_a_worker_process_whose_handler_ignores_cancellation_within_seconds(
    settings: Any, client: Any, redis: Any, schema: Any, tmp_path: Path
) -> None:
    s = settings.replace(concurrency=1, shutdown_timeout=1.0)  # the default grace: 2 s
    log = tmp_path / "worker.log"
    proc = start_worker(s, log)
    try:
        info = await client.enqueue(JOB, Job(linger=120))

        async def running() -> bool:
            return await _hget(redis, s.namespace, "runs", info.id) == 1

        await wait_until(running, timeout=30)
        stopped_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        status = await asyncio.to_thread(proc.wait, 30)
        took = time.monotonic() - stopped_at
    finally:
        stop_process(proc)
    assert status == 0
    # shutdown_timeout + cancel_grace, and room for a loaded machine: not the 120 s the handler runs on
    assert took < 1.0 + 2.0 + 10.0, took
    record = await task_record(redis, schema, "default", info.id)
    assert (record["state"], record["msg"].retried, record["msg"].error_msg) == ("pending", 0, "")
    qk = schema.queue("default")
    assert await redis.lrange(qk.pending, 0, -1) == [info.id.encode()]
    assert await redis.llen(qk.active) == 0
    text = log.read_text()
    assert "task_overrun" in text
    assert "task_requeued" in text
    assert "worker_exit_abandoned" in text


async def test_sigterm_ends_the_framework_worker_command_and_a_supervised_child_likewise(
    settings: Any, client: Any, redis: Any, schema: Any, tmp_path: Path
) -> None:
    """The production entry points, one after the other: ``framework worker``, then a ``--processes`` child."""
    s = settings.replace(shutdown_timeout=0.5, cancel_grace=0.5)
    cli_log = tmp_path / "cli.log"
    with cli_log.open("ab") as out:
        cli = subprocess.Popen(
            [sys.executable, "-m", "framework", "worker"],
            cwd=ROOT,
            env=env_for(s, FRAMEWORK_APP="tests.framework.worker_app"),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    supervisor = None
    try:
        for name in ("cli", "supervisor"):
            if name == "supervisor":
                supervisor = start_supervisor(s, 1, tmp_path / "supervisor.log")
            proc = cli if supervisor is None else supervisor
            info = await client.enqueue(JOB, Job(linger=120))

            async def running(task_id: str = info.id) -> bool:
                return await _hget(redis, s.namespace, "runs", task_id) == 1

            await wait_until(running, timeout=30)
            stopped_at = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            status = await asyncio.to_thread(proc.wait, 30)
            took = time.monotonic() - stopped_at
            assert status == 0, name
            # shutdown_timeout + cancel_grace, and room for a loaded machine: not the 120 s the handler runs on
            assert took < 0.5 + 0.5 + 10.0, (name, took)
            record = await task_record(redis, schema, "default", info.id)
            assert (record["state"], record["msg"].retried) == ("pending", 0), name
            await redis.delete(schema.queue("default").pending)  # not for the next worker
    finally:
        stop_process(cli)
        if supervisor is not None:
            stop_process(supervisor)
    assert "worker_exit_abandoned" in cli_log.read_text()
    assert "worker_exit_abandoned" in (tmp_path / "supervisor.log").read_text()


async def test_a_sync_handler_past_its_timeout_does_not_overlap_its_retry_in_a_worker_process(
    settings: Any, client: Any, redis: Any, schema: Any, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    proc = start_worker(settings, log)
    try:
        info = await client.enqueue(SYNC_JOB, Job(sleep=5, slow_runs=1), timeout=1)
        await _charged_then_done(redis, schema, settings.namespace, info.id)
    finally:
        stop_process(proc)
    await _ran_twice_never_at_once(redis, schema, settings.namespace, info.id, log)


async def test_a_blocking_handler_is_reported_and_the_rest_of_its_batch_is_not_charged(
    settings: Any, client: Any, redis: Any, schema: Any, tmp_path: Path
) -> None:
    """Under the supervisor, so on uvloop (the in-process test above runs on asyncio's loop)."""
    log = tmp_path / "supervisor.log"
    # enqueued before the worker starts, so one dequeue takes the whole batch
    blocker = await client.enqueue(JOB, Job(block=4))
    others = [await client.enqueue(JOB, Job(sleep=0.5), timeout=2) for _ in range(3)]
    proc = start_supervisor(settings, 1, log)
    try:

        async def all_done() -> bool:
            return await redis.llen(f"{settings.namespace}:test:done") == 4

        await wait_until(all_done, timeout=30)
    finally:
        stop_process(proc)
    for info in [blocker, *others]:
        assert await _hget(redis, settings.namespace, "runs", info.id) == 1  # none ran again: none was charged
        assert not await redis.exists(schema.queue("default").task(info.id))
    text = log.read_text()
    blocked = [line for line in text.splitlines() if "event_loop_blocked" in line]
    assert len(blocked) == 1
    assert blocker.id in blocked[0]
    assert "worker_app.py" in blocked[0]
    assert "event_loop_unblocked" in text
    assert "task_deadline_extended" in text


async def test_a_worker_process_whose_handler_holds_the_loop_past_its_deadline_ends_and_the_task_runs_again(
    settings: Any, client: Any, redis: Any, schema: Any, tmp_path: Path
) -> None:
    """A handler that blocks the event loop for good (``time.sleep`` of an hour): nothing on the loop runs, not
    its cancellation, not SIGTERM's handler, while the heartbeat thread keeps the worker alive and its tasks
    leased, so the worker was stuck for ever. Past the task's deadline and ``cancel_grace`` the process ends
    (status 70, ``event_loop_stuck`` naming the task), and another worker recovers the task."""
    s = settings.replace(cancel_grace=0.5, heartbeat_interval=0.5, recoverer_interval=0.5)
    info = await client.enqueue(JOB, Job(block=3600, slow_runs=1), timeout=1)
    log = tmp_path / "stuck.log"
    stuck = start_worker(s, log, TEST_DEAD_AFTER=3)
    survivor = None
    try:

        async def running() -> bool:  # recorded just before the handler blocks the loop
            return await _hget(redis, s.namespace, "runs", info.id) == 1

        await wait_until(running, timeout=30)
        started = time.monotonic()
        status = await asyncio.to_thread(stuck.wait, 30)
        ended_in = time.monotonic() - started
        survivor = start_worker(s, tmp_path / "survivor.log", TEST_DEAD_AFTER=3)

        async def done() -> bool:
            return await redis.llen(f"{s.namespace}:test:done") == 1

        await wait_until(done, timeout=30)
    finally:
        stop_process(stuck)
        if survivor is not None:
            stop_process(survivor)
    assert status == 70, log.read_text()[-2000:]
    # its 1 s timeout and 0.5 s of grace after the handler began, and room for a loaded machine: not for ever
    assert ended_in < 1 + 0.5 + 10, ended_in
    [line] = [line for line in log.read_text().splitlines() if "event_loop_stuck" in line]
    assert info.id in line and "test:job" in line
    assert await _hget(redis, s.namespace, "runs", info.id) == 2  # recovered, then run to the end
