"""The processor against a real Valkey: every outcome, concurrency, threads, timeouts, leases, faults."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from structlog.testing import capture_logs

from framework.client.sync import SyncClient
from framework.errors import RetryAfter, RevokeTask, SkipRetry
from framework.protocol.message import decode_message, encode_message, new_message
from framework.task import TaskDef
from tests.framework.worker_app import task_record, wait_until


class N(msgspec.Struct, frozen=True, kw_only=True):
    n: int = 0


@pytest.fixture
def run(start: Any) -> Any:
    """Start a worker for some task types; every worker started is stopped at the end of the test."""
    return start


async def state_of(redis: Any, schema: Any, info: Any) -> str | None:
    record = await task_record(redis, schema, info.queue, info.id)
    return record.get("state")


async def test_success_deletes_the_task_and_counts_it(run: Any, client: Any, redis: Any, schema: Any) -> None:
    seen: list[int] = []

    async def handle(ctx: Any, p: N) -> None:
        seen.append(p.n)

    task = TaskDef("p:ok", N, handle)
    await run(task)
    info = await client.enqueue(task, N(n=5))
    await wait_until(lambda: _exists_not(redis, schema.queue("default").task(info.id)))
    assert seen == [5]
    qk = schema.queue("default")
    assert await redis.get(qk.processed) == b"1"
    assert await redis.get(qk.failed) is None
    assert await redis.llen(qk.active) == 0
    assert await redis.zcard(qk.lease) == 0
    minute_keys = [k async for k in redis.scan_iter(match=f"{schema.ext}:{{default}}:processed:m:*")]
    assert len(minute_keys) == 1


async def _exists_not(redis: Any, key: str) -> bool:
    return not await redis.exists(key)


async def test_acknowledged_tasks_leave_the_inflight_set_without_waiting_for_a_heartbeat(
    run: Any, client: Any, redis: Any, schema: Any, settings: Any
) -> None:
    """The set holds what the worker runs now: no heartbeat has to trim thousands of ids in one SREM."""
    release = asyncio.Event()

    async def handle(ctx: Any, p: N) -> None:
        if p.n == 0:
            await release.wait()

    task = TaskDef("p:inflight", N, handle)
    worker = await run(task, settings=settings.replace(heartbeat_interval=14.0))
    inflight = schema.queue("default").inflight(worker.identity.server_id)
    slow = await client.enqueue(task, N(n=0))
    fast = [await client.enqueue(task, N(n=i)) for i in range(1, 41)]
    qk = schema.queue("default")

    async def fast_done() -> bool:
        return int(await redis.get(qk.processed) or 0) == len(fast)

    await wait_until(fast_done)
    assert await redis.smembers(inflight) == {slow.id.encode()}  # only the task still running
    assert worker.processor is not None
    assert worker.processor.ledger.finished == []  # nothing left for the heartbeat to trim
    release.set()

    async def all_out() -> bool:
        return not await redis.exists(inflight)

    await wait_until(all_out)


async def test_sync_handlers_run_in_threads_in_parallel(run: Any, client: Any, settings: Any) -> None:
    threads: list[str] = []
    together: list[str] = []
    barrier = threading.Barrier(4)  # passed only when all four handlers block in it at once
    main = threading.current_thread().name

    def handle(ctx: Any, p: N) -> None:
        threads.append(threading.current_thread().name)
        barrier.wait(timeout=20)
        together.append(threading.current_thread().name)

    task = TaskDef("p:sync", N, handle)
    await run(task, settings=settings.replace(concurrency=4))
    for i in range(4):
        await client.enqueue(task, N(n=i))

    async def all_ran() -> bool:
        return len(together) == 4

    try:
        await wait_until(all_ran, timeout=30)  # one after the other, the first would give up on the others
    finally:
        barrier.abort()  # no thread left blocked if it failed
    assert main not in threads
    assert len(set(threads)) == 4


async def test_concurrency_caps_running_handlers(run: Any, client: Any, settings: Any, redis: Any, schema: Any) -> None:
    running = 0
    peak = 0
    finished = 0

    async def handle(ctx: Any, p: N) -> None:
        nonlocal running, peak, finished
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.1)
        running -= 1
        finished += 1

    task = TaskDef("p:cap", N, handle)
    await run(task, settings=settings.replace(concurrency=3))
    for i in range(12):
        await client.enqueue(task, N(n=i))

    async def all_done() -> bool:
        return finished == 12

    await wait_until(all_done)
    assert peak == 3


async def test_retention_keeps_the_completed_task_with_its_result(
    run: Any, client: Any, redis: Any, schema: Any
) -> None:
    async def handle(ctx: Any, p: N) -> None:
        await ctx.write_result(b'{"total": 42}')

    task = TaskDef("p:keep", N, handle)
    await run(task)
    before = int(time.time())
    info = await client.enqueue(task, N(), retention=3600)

    async def completed() -> bool:
        return await state_of(redis, schema, info) == "completed"

    await wait_until(completed)
    record = await task_record(redis, schema, "default", info.id)
    assert record["result"] == b'{"total": 42}'
    assert before <= record["msg"].completed_at <= int(time.time())
    score = await redis.zscore(schema.queue("default").completed, info.id)
    assert score == record["msg"].completed_at + 3600


async def test_exception_retries_after_the_task_types_delay(run: Any, client: Any, redis: Any, schema: Any) -> None:
    async def handle(ctx: Any, p: N) -> None:
        raise ValueError("boom")

    task = TaskDef("p:fail", N, handle, retry_delay=lambda n, e: 100.0)
    await run(task)
    info = await client.enqueue(task, N())

    async def retrying() -> bool:
        return await state_of(redis, schema, info) == "retry"

    await wait_until(retrying)
    msg = (await task_record(redis, schema, "default", info.id))["msg"]
    assert msg.retried == 1
    assert msg.error_msg == "ValueError: boom"
    assert abs(msg.last_failed_at - time.time()) < 3
    score = await redis.zscore(schema.queue("default").retry, info.id)
    assert 98 <= score - time.time() <= 102
    qk = schema.queue("default")
    assert await redis.get(qk.failed) == b"1"
    assert await redis.get(qk.processed) == b"1"


async def test_global_retry_policy_and_retry_after(run: Any, client: Any, redis: Any, schema: Any) -> None:
    async def handle(ctx: Any, p: N) -> None:
        if p.n:
            raise RetryAfter(40)
        raise ValueError("x")

    task = TaskDef("p:policy", N, handle)
    await run(task, retry_delay=lambda n, e: 300.0)
    plain = await client.enqueue(task, N(n=0))
    after = await client.enqueue(task, N(n=1))
    retry_key = schema.queue("default").retry

    async def both() -> bool:
        return await redis.zcard(retry_key) == 2

    await wait_until(both)
    now = time.time()
    assert 298 <= await redis.zscore(retry_key, plain.id) - now <= 302
    assert 38 <= await redis.zscore(retry_key, after.id) - now <= 42


@pytest.mark.parametrize(
    ("raised", "max_retry", "error"),
    [
        (ValueError("last straw"), 0, "ValueError: last straw"),
        (SkipRetry("bad address"), 10, "SkipRetry: bad address"),
    ],
)
async def test_archived_with_the_error_text(
    run: Any, client: Any, redis: Any, schema: Any, raised: Exception, max_retry: int, error: str
) -> None:
    async def handle(ctx: Any, p: N) -> None:
        raise raised

    task = TaskDef("p:archive", N, handle, max_retry=max_retry)
    await run(task)
    info = await client.enqueue(task, N())

    async def archived() -> bool:
        return await state_of(redis, schema, info) == "archived"

    await wait_until(archived)
    msg = (await task_record(redis, schema, "default", info.id))["msg"]
    assert msg.error_msg == error
    assert msg.retried == 0
    assert await redis.zscore(schema.queue("default").archived, info.id) is not None


async def test_revoke_drops_the_task(run: Any, client: Any, redis: Any, schema: Any) -> None:
    async def handle(ctx: Any, p: N) -> None:
        raise RevokeTask("not wanted")

    task = TaskDef("p:revoke", N, handle)
    await run(task)
    info = await client.enqueue(task, N())
    await wait_until(lambda: _exists_not(redis, schema.queue("default").task(info.id)))
    qk = schema.queue("default")
    assert await redis.zcard(qk.archived) == 0
    assert await redis.zcard(qk.retry) == 0


async def test_undecodable_payload_is_archived_naming_the_field(run: Any, client: Any, redis: Any, schema: Any) -> None:
    ran: list[int] = []

    async def handle(ctx: Any, p: N) -> None:
        ran.append(p.n)

    task = TaskDef("p:typed", N, handle, max_retry=10)
    await run(task)
    with capture_logs() as logs:
        info = await client.enqueue("p:typed", b'{"n": "seven"}')

        async def archived() -> bool:
            return await state_of(redis, schema, info) == "archived"

        await wait_until(archived)
    error = (await task_record(redis, schema, "default", info.id))["msg"].error_msg
    assert error.startswith("PayloadDecodeError: payload of task 'p:typed' does not decode into N")
    assert "$.n" in error
    assert ran == []
    logged = [e for e in logs if e["event"] == "task_payload_invalid"]
    assert logged == [
        {
            "event": "task_payload_invalid",
            "log_level": "error",
            "logger": "framework.worker.worker",
            "task_id": info.id,
            "type": "p:typed",
            "queue": "default",
            "error": error,
            "outcome": "archived",
        }
    ]


def _unknown_type_logs(logs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [e for e in logs if e["event"] == "task_type_unknown"]


async def test_unknown_task_type_is_put_back_without_spending_a_retry(
    run: Any, client: Any, redis: Any, schema: Any
) -> None:
    await run()
    with capture_logs() as logs:
        info = await client.enqueue("p:nobody", b"{}", max_retry=3)

        async def deferred() -> bool:  # the log line comes just after the state: wait for both
            return await state_of(redis, schema, info) == "retry" and bool(_unknown_type_logs(logs))

        await wait_until(deferred)
    record = await task_record(redis, schema, "default", info.id)
    msg = record["msg"]
    assert msg.retried == 0  # no retry spent: no attempt at running it was made
    assert msg.error_msg == (
        "UnknownTaskType: no handler is registered for task type 'p:nobody' in the worker that took it; "
        "put back for a worker that registers it"
    )
    assert abs(msg.last_failed_at - time.time()) < 3
    assert abs(int(record["fw_unknown_since"]) - time.time()) < 3
    qk = schema.queue("default")
    assert 3 <= await redis.zscore(qk.retry, info.id) - time.time() <= 6  # the shortest delay, 5 s
    assert await redis.get(qk.processed) is None  # not a failure: nothing counted
    assert await redis.get(qk.failed) is None
    [entry] = _unknown_type_logs(logs)
    assert entry == {
        "event": "task_type_unknown",
        "log_level": "warning",
        "logger": "framework.worker.worker",
        "task_id": info.id,
        "type": "p:nobody",
        "queue": "default",
        "error": msg.error_msg,
        "outcome": "deferred",
        "retry_in": 5,
    }


async def test_a_deferred_task_is_run_by_a_worker_that_registers_its_type(
    run: Any, client: Any, redis: Any, schema: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("framework.worker.outcomes.UNKNOWN_TYPE_DELAYS", (1, 1))
    seen: list[tuple[int, int]] = []

    async def handle(ctx: Any, p: N) -> None:
        seen.append((p.n, ctx.retried))

    task = TaskDef("p:later", N, handle)
    without = await run()  # a worker of older code, say, that does not know the type yet
    info = await client.enqueue(task, N(n=7))

    async def deferred() -> bool:
        return await state_of(redis, schema, info) == "retry"

    await wait_until(deferred)
    await without.stop()
    await run(task)
    await wait_until(lambda: _exists_not(redis, schema.queue("default").task(info.id)))
    assert seen == [(7, 0)]


async def test_unknown_task_type_is_archived_once_no_worker_took_it_for_the_wait(
    run: Any, client: Any, redis: Any, schema: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from framework.hookspecs import hookimpl
    from framework.plugins.manager import get_plugin_manager

    monkeypatch.setattr("framework.worker.outcomes.UNKNOWN_TYPE_DELAYS", (1, 1))
    archived_errors: list[str] = []

    class Events:
        @hookimpl
        def task_archived(self, ctx: Any, error: BaseException) -> None:
            archived_errors.append(f"{type(error).__name__}: {error}")

    isolated = settings.replace(load_plugins=[], unknown_type_wait=2.0)
    await run(settings=isolated, plugin_manager=get_plugin_manager(isolated, extra=[("events", Events())]))
    with capture_logs() as logs:
        info = await client.enqueue("p:nobody", b"{}")

        async def archived() -> bool:  # the log line comes just after the state: wait for both
            last = _unknown_type_logs(logs)[-1:]
            return await state_of(redis, schema, info) == "archived" and [e["outcome"] for e in last] == ["archived"]

        await wait_until(archived)
    record = await task_record(redis, schema, "default", info.id)
    error = "UnknownTaskType: no worker registers task type 'p:nobody' (none took it within 2 s)"
    assert record["msg"].error_msg == error
    assert record["msg"].retried == 0
    assert "fw_unknown_since" not in record  # run again from the archive, it gets the full wait again
    qk = schema.queue("default")
    assert await redis.get(qk.failed) == b"1"  # the archive counts once, the deferrals not at all
    assert await redis.get(qk.processed) == b"1"
    entries = _unknown_type_logs(logs)
    assert [e["outcome"] for e in entries[:-1]] == ["deferred"] * (len(entries) - 1)
    assert len(entries) >= 2
    assert entries[-1] == {
        "event": "task_type_unknown",
        "log_level": "error",
        "logger": "framework.worker.worker",
        "task_id": info.id,
        "type": "p:nobody",
        "queue": "default",
        "error": error,
        "outcome": "archived",
    }
    assert archived_errors == [error]


async def test_unknown_task_type_with_no_wait_is_archived_at_once(
    run: Any, client: Any, redis: Any, schema: Any, settings: Any
) -> None:
    await run(settings=settings.replace(unknown_type_wait=0))
    with capture_logs() as logs:
        info = await client.enqueue("p:nobody", b"{}")

        async def archived() -> bool:  # the log line comes just after the state: wait for both
            return await state_of(redis, schema, info) == "archived" and bool(_unknown_type_logs(logs))

        await wait_until(archived)
    error = "UnknownTaskType: no worker registers task type 'p:nobody'"
    assert (await task_record(redis, schema, "default", info.id))["msg"].error_msg == error
    assert [(e["outcome"], e["error"]) for e in _unknown_type_logs(logs)] == [("archived", error)]


async def test_timeout_cancels_an_async_handler_and_counts_as_failure(
    run: Any, client: Any, redis: Any, schema: Any
) -> None:
    cancelled = asyncio.Event()

    async def handle(ctx: Any, p: N) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    task = TaskDef("p:slow", N, handle)
    await run(task)
    started = time.monotonic()
    info = await client.enqueue(task, N(), timeout=1)

    async def retrying() -> bool:
        return await state_of(redis, schema, info) == "retry"

    await wait_until(retrying, timeout=30)
    # at its 1 s timeout, not before; the upper bound (room for a loaded machine) keeps it well short of the
    # 30 s the handler would sleep
    assert 0.9 < time.monotonic() - started < 1 + 10
    assert cancelled.is_set()
    msg = (await task_record(redis, schema, "default", info.id))["msg"]
    assert msg.error_msg == "TimeoutError: task timed out after 1s"
    assert msg.retried == 1


async def test_timeout_of_a_sync_handler_counts_as_failure_and_keeps_the_slot_until_the_thread_returns(
    run: Any, client: Any, redis: Any, schema: Any, settings: Any
) -> None:
    """The thread of a timed-out sync handler runs on (Python cannot stop it): the task fails at once, but
    the thread holds its slot until it returns, so ``concurrency`` counts the threads really running."""
    release = threading.Event()
    slow_started = threading.Event()
    quick_done = threading.Event()

    def handle(ctx: Any, p: N) -> None:
        if p.n == 0:
            slow_started.set()
            release.wait(10)
        else:
            quick_done.set()

    task = TaskDef("p:sync-slow", N, handle)
    await run(task, settings=settings.replace(concurrency=1))
    slow = await client.enqueue(task, N(n=0), timeout=1)

    async def slow_running() -> bool:
        return slow_started.is_set()

    await wait_until(slow_running)  # then the next one waits for the only slot
    await client.enqueue(task, N(n=1))

    async def retrying() -> bool:
        return await state_of(redis, schema, slow) == "retry"

    try:
        await wait_until(retrying)
        error = (await task_record(redis, schema, "default", slow.id))["msg"].error_msg
        assert error == "TimeoutError: task timed out after 1s"
        await asyncio.sleep(0.5)
        assert not quick_done.is_set()  # the timed-out thread still sleeps in the only slot
        release.set()

        async def quick() -> bool:
            return quick_done.is_set()

        await wait_until(quick)
    finally:
        release.set()


async def test_deadline_cancels_the_handler(run: Any, client: Any, redis: Any, schema: Any) -> None:
    async def handle(ctx: Any, p: N) -> None:
        await asyncio.sleep(30)

    task = TaskDef("p:deadline", N, handle)
    await run(task)
    info = await client.enqueue(task, N(), deadline=time.time() + 1.5, timeout=0)

    async def retrying() -> bool:
        return await state_of(redis, schema, info) == "retry"

    await wait_until(retrying)
    error = (await task_record(redis, schema, "default", info.id))["msg"].error_msg
    assert error.startswith("TimeoutError: task deadline exceeded")


async def test_a_task_past_its_deadline_fails_without_running(run: Any, redis: Any, schema: Any, settings: Any) -> None:
    ran: list[int] = []

    async def handle(ctx: Any, p: N) -> None:
        ran.append(1)

    task = TaskDef("p:late", N, handle)
    qk = schema.queue("default")
    msg = new_message(
        type="p:late", payload=b"{}", id="late-1", queue="default", retry=3, timeout=0, deadline=int(time.time()) - 5
    )
    await redis.hset(qk.task("late-1"), mapping={"msg": encode_message(msg), "state": "pending"})
    await redis.lpush(qk.pending, "late-1")
    await run(task)

    async def retrying() -> bool:
        return await redis.zscore(qk.retry, "late-1") is not None

    await wait_until(retrying)
    assert ran == []


async def test_a_lapsed_lease_writes_nothing(run: Any, client: Any, redis: Any, schema: Any) -> None:
    release = asyncio.Event()

    async def handle(ctx: Any, p: N) -> None:
        await release.wait()

    task = TaskDef("p:lapse", N, handle)
    worker = await run(task)
    info = await client.enqueue(task, N())

    async def running() -> bool:
        return bool(worker.processor.inflight)

    await wait_until(running)
    inf = next(iter(worker.processor.inflight.values()))
    inf.lease.expires_at = time.time() - 1  # as if the heartbeat had not reached Redis for too long
    with capture_logs() as logs:
        release.set()

        async def released() -> bool:
            return not worker.processor.inflight

        await wait_until(released)
    assert any(e["event"] == "task_lease_lost" for e in logs)
    # still active in Redis: the recoverer owns it now
    assert await state_of(redis, schema, info) == "active"
    assert await redis.lpos(schema.queue("default").active, info.id) is not None


async def test_acks_are_retried_through_redis_faults(run: Any, client: Any, redis: Any, schema: Any) -> None:
    async def handle(ctx: Any, p: N) -> None:
        return None

    task = TaskDef("p:flaky", N, handle)
    worker = await run(task)
    broker = worker.processor.broker
    real_done = broker.done
    failures = 0

    async def flaky_done(queue: str, tasks: Any, inflight: str = "") -> Any:
        nonlocal failures
        if failures < 2:
            failures += 1
            raise RedisConnectionError("simulated outage")
        return await real_done(queue, tasks, inflight)

    broker.done = flaky_done  # type: ignore[method-assign]
    with capture_logs() as logs:
        info = await client.enqueue(task, N())
        await wait_until(lambda: _exists_not(redis, schema.queue("default").task(info.id)))

        async def healthy() -> bool:
            return bool(worker.health.up)

        await wait_until(healthy)
    events = [e["event"] for e in logs if e["event"].startswith("redis_")]
    assert events[0] == "redis_unavailable"
    assert events[-1] == "redis_reconnected"
    assert failures == 2


async def test_event_hook_errors_are_logged_and_never_break_the_worker(
    run: Any, client: Any, redis: Any, schema: Any, settings: Any
) -> None:
    from framework.hookspecs import hookimpl
    from framework.plugins.manager import get_plugin_manager

    class Broken:
        @hookimpl
        def task_succeeded(self, ctx: Any) -> None:
            raise RuntimeError("hook bug")

    async def handle(ctx: Any, p: N) -> None:
        return None

    isolated = settings.replace(load_plugins=[])
    pm = get_plugin_manager(isolated, extra=[("broken", Broken())])
    task = TaskDef("p:hooked", N, handle)
    await run(task, settings=isolated, plugin_manager=pm)
    with capture_logs() as logs:
        first = await client.enqueue(task, N(n=1))
        second = await client.enqueue(task, N(n=2))
        for info in (first, second):
            await wait_until(lambda info=info: _exists_not(redis, schema.queue("default").task(info.id)))
        await asyncio.sleep(0.05)
    failures = [e for e in logs if e["event"] == "plugin_hook_failed"]
    assert len(failures) == 2
    assert failures[0]["plugin"] == "broken"
    assert failures[0]["hook"] == "task_succeeded"


async def test_a_sync_handler_enqueues_follow_ups_with_a_sync_client(run: Any, settings: Any, schema: Any) -> None:
    seen: list[int] = []
    sync = SyncClient(settings.redis_url, schema=schema, settings=settings)

    def handle(ctx: Any, p: N) -> None:
        seen.append(p.n)
        if p.n < 3:
            sync.enqueue(task, N(n=p.n + 1))

    task = TaskDef("p:chain", N, handle)
    try:
        await run(task)
        await asyncio.to_thread(sync.enqueue, task, N(n=0))

        async def chain_done() -> bool:
            return seen == [0, 1, 2, 3]

        await wait_until(chain_done)
    finally:
        await asyncio.to_thread(sync.close)


async def test_backoff_schedule_is_followed_until_the_task_is_archived(
    run: Any, client: Any, redis: Any, schema: Any
) -> None:
    asked: list[int] = []
    observed: list[tuple[int, float]] = []

    def policy(retried: int, error: BaseException) -> float:
        asked.append(retried)
        return 0.3 * (retried + 1)

    async def handle(ctx: Any, p: N) -> None:
        raise ValueError(f"attempt {ctx.attempt}")

    task = TaskDef("p:schedule", N, handle, max_retry=2, retry_delay=policy)
    await run(task)
    info = await client.enqueue(task, N())
    qk = schema.queue("default")

    async def archived() -> bool:
        async with redis.pipeline(transaction=True) as pipe:  # one consistent view of the task
            pipe.hget(qk.task(info.id), "msg")
            pipe.hget(qk.task(info.id), "state")
            pipe.zscore(qk.retry, info.id)
            raw, state, score = await pipe.execute()
        if score is not None and (not observed or observed[-1][1] != score):
            observed.append((decode_message(raw).last_failed_at, score))
        return state == b"archived"

    await wait_until(archived, timeout=10, interval=0.01)
    assert asked == [0, 1]  # the policy sees the retries so far; the third failure is not retried
    assert [score - failed_at for failed_at, score in observed] in ([1, 1], [1, 2], [2, 1], [2, 2])
    msg = (await task_record(redis, schema, "default", info.id))["msg"]
    assert (msg.retried, msg.error_msg) == (2, "ValueError: attempt 3")
