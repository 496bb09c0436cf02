"""Task results from the caller's side: typed results, waiting, apply, cancel, and what waiting costs Redis."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
import pytest

from framework.client.client import Client, TaskCall, TaskInfo
from framework.client.sync import SyncClient
from framework.errors import (
    ResultTypeError,
    RetryAfter,
    SkipRetry,
    TaskCancelled,
    TaskFailed,
    TaskNotFound,
    WaitTimeout,
)
from framework.protocol.keys import Schema
from framework.protocol.message import decode_message, encode_message
from framework.protocol.scripts import SCRIPTS
from framework.task import TaskDef
from tests.framework.worker_app import wait_until


class In(msgspec.Struct, frozen=True, kw_only=True):
    n: int = 0


class Out(msgspec.Struct, frozen=True, kw_only=True):
    doubled: int


async def double(ctx: Any, p: In) -> Out:
    return Out(doubled=2 * p.n)


TYPED = TaskDef("r:typed", In, double, result=Out)
RETAINED = TaskDef("r:retained", In, double, result=Out, retention=60)


async def test_a_typed_result_comes_back_decoded_and_is_stored_as_json(
    start: Any, client: Client, redis: Any, schema: Schema
) -> None:
    await start(TYPED, RETAINED)
    assert await client.apply(TYPED, In(n=21), wait_timeout=10) == Out(doubled=42)
    info = await client.enqueue(RETAINED, In(n=5))
    assert await client.wait(info, timeout=10, taskdef=RETAINED) == Out(doubled=10)
    # kept in asynq's result field, as JSON a Go service reads
    assert await redis.hget(schema.queue("default").task(info.id), "result") == b'{"doubled":10}'


async def test_a_client_decodes_the_results_of_the_task_types_it_enqueued_without_being_told_the_type(
    start: Any, redis_url: str, schema: Schema
) -> None:
    """A client without a registry (``Client.from_url``/``from_settings``) gave back the plain JSON of a result
    whose type it had just enqueued with, so ``wait(info)`` needed ``taskdef=`` repeated."""
    await start(TYPED, RETAINED)
    async with Client.from_url(redis_url, schema=schema) as client, Client.from_url(redis_url, schema=schema) as other:
        fast = await client.enqueue(RETAINED, In(n=1))  # the prepared path
        general = await client.enqueue(RETAINED, In(n=2), max_retry=1)  # the general path
        [bulk] = await client.enqueue_many([TaskCall(RETAINED, In(n=3))])
        assert isinstance(bulk, TaskInfo)
        assert await client.wait(fast, timeout=10) == Out(doubled=2)
        assert await client.wait(general, timeout=10) == Out(doubled=4)
        assert await client.wait(bulk.id, queue=bulk.queue, timeout=10) == Out(doubled=6)  # by id: the stored type
        assert await other.wait(fast, timeout=10) == {"doubled": 2}  # never enqueued the type: plain JSON

    def blocking() -> Any:
        with SyncClient(redis_url, schema=schema) as sync:
            info = sync.enqueue(RETAINED, In(n=4))
            return sync.wait(info, timeout=10)

    assert await asyncio.to_thread(blocking) == Out(doubled=8)


async def anything(ctx: Any, p: In) -> Any:
    return {"n": p.n, "list": [p.n, "x"]} if p.n else [1, None]


async def test_a_result_typed_any_is_stored_whatever_json_it_is(start: Any, client: Client) -> None:
    """``result=Any`` declares a JSON result of any shape: every result used to fail with a ResultTypeError
    (``isinstance(value, Any)`` raises), so such a task could never succeed."""
    task = TaskDef("r:any", In, anything, result=Any)
    await start(task)
    assert await client.apply(task, In(n=3), wait_timeout=10) == {"n": 3, "list": [3, "x"]}
    assert await client.apply(task, In(), wait_timeout=10) == [1, None]


async def test_an_untyped_result_is_stored_when_json_encodable_and_dropped_otherwise(
    start: Any, client: Client
) -> None:
    async def untyped(ctx: Any, p: In) -> Any:
        return {"n": p.n} if p.n else object()

    def sync(ctx: Any, p: In) -> list[int]:
        return [p.n, p.n]

    async def nothing(ctx: Any, p: In) -> None:
        await ctx.write_result(b"\x00raw")

    await start(TaskDef("r:untyped", In, untyped), TaskDef("r:sync", In, sync), TaskDef("r:nothing", In, nothing))
    assert await client.apply("r:untyped", In(n=3), wait_timeout=10) == {"n": 3}
    assert await client.apply("r:untyped", In(n=0), wait_timeout=10) is None  # not encodable: dropped, task succeeds
    assert await client.apply("r:sync", In(n=4), wait_timeout=10) == [4, 4]
    assert await client.apply("r:nothing", In(), wait_timeout=10) == b"\x00raw"  # ctx.write_result, not JSON


async def test_a_wrong_return_type_fails_the_task_and_stores_nothing(
    start: Any, client: Client, redis: Any, schema: Schema
) -> None:
    async def wrong(ctx: Any, p: In) -> Any:
        return {"doubled": "no"}

    task = TaskDef("r:wrong", In, wrong, result=Out, max_retry=0)
    await start(task)
    with pytest.raises(TaskFailed) as caught:
        await client.apply(task, In(), wait_timeout=10)
    assert caught.value.archived
    assert caught.value.error.startswith("ResultTypeError: task 'r:wrong' must return Out, got dict")
    assert await redis.hget(schema.queue("default").task(caught.value.task_id), "result") is None


class Score(msgspec.Struct, frozen=True, kw_only=True):
    value: float


async def test_a_nan_in_a_result_of_the_right_type_fails_the_task_not_its_waiter(
    start: Any, client: Client, redis: Any, schema: Schema
) -> None:
    """JSON carries NaN and infinity as ``null``: a result of the declared type holding one was stored, the task
    succeeded, and every waiter then failed to decode it."""

    async def scored(ctx: Any, p: In) -> Any:
        return float("nan") if p.n else Score(value=float("inf"))

    plain = TaskDef("r:nan", In, scored, result=float, max_retry=0)
    struct = TaskDef("r:nan-struct", In, scored, result=Score, max_retry=0)
    await start(plain, struct)
    for task, n, wanted in ((plain, 1, "float"), (struct, 0, "Score")):
        with pytest.raises(TaskFailed) as caught:
            await client.apply(task, In(n=n), wait_timeout=10)
        assert caught.value.error.startswith(f"ResultTypeError: task {task.type!r} must return {wanted}, got "), (
            caught.value.error
        )
        assert await redis.hget(schema.queue("default").task(caught.value.task_id), "result") is None


async def test_returning_nothing_from_a_handler_with_a_result_type_fails_unless_the_type_allows_none(
    start: Any, client: Client, redis: Any, schema: Schema
) -> None:
    """A handler declared to return ``Out`` that returns nothing used to succeed with no result: the waiter got None,
    and a workflow step taking it as input got None, as if a failure had been handed on."""

    async def nothing(ctx: Any, p: In) -> Any:
        return None

    strict = TaskDef("r:none-strict", In, nothing, result=Out, max_retry=0)
    optional = TaskDef("r:none-optional", In, nothing, result=Out | None, max_retry=0)
    await start(strict, optional)
    with pytest.raises(TaskFailed) as caught:
        await client.apply(strict, In(), wait_timeout=10)
    assert caught.value.error.startswith("ResultTypeError: task 'r:none-strict' must return Out, got NoneType")
    assert await client.apply(optional, In(), wait_timeout=10) is None


async def test_retries_are_not_outcomes_the_waiter_sees_the_final_one(start: Any, client: Client) -> None:
    async def flaky(ctx: Any, p: In) -> int:
        if ctx.retried == 0:
            raise RetryAfter(0, "not yet")
        return ctx.retried

    async def broken(ctx: Any, p: In) -> None:
        if ctx.retried == 0:
            raise RetryAfter(0, "first")
        raise SkipRetry("gave up")

    await start(TaskDef("r:flaky", In, flaky), TaskDef("r:broken", In, broken))
    assert await client.apply("r:flaky", In(), wait_timeout=15) == 1
    with pytest.raises(TaskFailed) as caught:
        await client.apply("r:broken", In(), wait_timeout=15)
    error = caught.value
    assert (error.error, error.retried, error.archived) == ("SkipRetry: gave up", 1, True)
    assert "gave up" in str(error)


async def test_a_timeout_raises_wait_timeout_and_leaves_the_task(client: Client) -> None:
    info = await client.enqueue(TYPED, In())
    started = time.monotonic()
    with pytest.raises(WaitTimeout) as caught:
        await client.wait(info, timeout=0.3)
    assert 0.25 < time.monotonic() - started < 10  # at its timeout, not the test's
    assert caught.value.task_id == info.id
    assert isinstance(caught.value, TimeoutError)
    with pytest.raises(WaitTimeout):
        await client.apply(TYPED, In(), wait_timeout=0.2)


async def test_waiting_after_the_fact_needs_a_retention(start: Any, client: Client, redis_url: str) -> None:
    await start(TYPED, RETAINED)
    kept = await client.enqueue(RETAINED, In(n=1))
    gone = await client.enqueue(TYPED, In(n=1))
    qk = client.schema.queue("default")

    async def finished() -> bool:  # both, before anyone waits: one kept with its result, the other deleted
        kept_state = await client.redis.hget(qk.task(kept.id), "state")
        return kept_state == b"completed" and not await client.redis.exists(qk.task(gone.id))

    await wait_until(finished, timeout=30)
    assert await client.wait(kept, timeout=5, taskdef=RETAINED) == Out(doubled=2)
    assert await client.wait(kept, timeout=0) == Out(doubled=2)  # no wait at all: the look at the task is made
    assert await client.wait(kept.id, queue="default", timeout=5) == Out(doubled=2)  # the type it enqueued with
    async with Client.from_url(redis_url, schema=client.schema) as stranger:  # knows no definition of the type
        assert await stranger.wait(kept.id, queue="default", timeout=5) == {"doubled": 2}  # plain JSON
    with pytest.raises(TaskNotFound):
        await client.wait(gone, timeout=5)


async def go_complete(client: Client, redis: Any, queue: str, result: bytes) -> str:
    """Take and complete one task as a Go worker does: result written, ``mark_complete`` with asynq's arguments only."""
    taken = await client.broker.dequeue(queue, 1)
    task_id, data = taken[0]
    qk = client.schema.queue(queue)
    await redis.hset(qk.task(task_id), "result", result)
    msg = decode_message(data)
    now = int(time.time())
    msg.completed_at = now
    keys = [qk.task(task_id), qk.active, qk.lease, qk.completed, qk.processed, qk.processed_day("2000-01-01"), ""]
    args = [task_id, encode_message(msg), now + 60, now + 3600, 60, ""]
    assert await SCRIPTS["mark_complete"](redis, keys, args) == 1
    return task_id


async def test_a_task_finished_without_an_announcement_is_seen_by_the_slow_poll(client: Client, redis: Any) -> None:
    info = await client.enqueue(RETAINED, In(n=1))
    waiter = asyncio.ensure_future(client.wait(info, timeout=10, taskdef=RETAINED))
    await wait_until(lambda: _ready(client))  # waiting already: only a poll can see what comes next
    await go_complete(client, redis, "default", b'{"doubled":7}')
    started = time.monotonic()
    assert await waiter == Out(doubled=7)
    assert time.monotonic() - started < 8  # the first poll saw it (the backed-off ones are seconds apart)

    # a record that vanishes unannounced (done without retention elsewhere): no result
    info = await client.enqueue(TYPED, In())
    waiter = asyncio.ensure_future(client.wait(info, timeout=10))
    await wait_until(lambda: _ready(client))
    await redis.delete(client.schema.queue("default").task(info.id))
    assert await waiter is None


async def test_raw_bytes_come_back_as_they_are_when_the_waiter_knows_the_task_has_no_result_type(
    start: Any, client: Client, redis: Any
) -> None:
    """A waiter that passed (or had registered) a task definition without a result type got a ResultTypeError for
    the raw bytes a handler wrote with ``ctx.write_result`` or a Go worker stored, which one that knew nothing of
    the task type got back as they are."""

    async def raw(ctx: Any, p: In) -> None:
        await ctx.write_result(b"\x89PNG\r\n")

    untyped = TaskDef("r:raw", In, raw)
    await start(untyped)
    assert await client.apply(untyped, In(), wait_timeout=10) == b"\x89PNG\r\n"
    assert await client.apply("r:raw", In(), wait_timeout=10) == b"\x89PNG\r\n"

    go_raw = TaskDef("r:go-raw", In, raw, retention=60)  # run by a Go worker here, which writes the bytes
    info = await client.enqueue(go_raw, In(), queue="go")
    waiter = asyncio.ensure_future(client.wait(info, timeout=10, taskdef=go_raw))
    await go_complete(client, redis, "go", b"\x00\xffraw")
    assert await waiter == b"\x00\xffraw"
    # a result type the bytes do not fit is an error naming it
    info = await client.enqueue(RETAINED, In(), queue="go")
    await go_complete(client, redis, "go", b"\x00\xffraw")
    with pytest.raises(ResultTypeError, match="the result of task 'r:retained' does not decode into Out"):
        await client.wait(info, timeout=10, taskdef=RETAINED)


async def test_cancel_a_pending_task_deletes_it_and_tells_its_waiter(client: Client, redis: Any) -> None:
    info = await client.enqueue(TYPED, In())
    waiter = asyncio.ensure_future(client.wait(info, timeout=10))
    await asyncio.sleep(0.2)
    assert await client.cancel(info) == "deleted"
    with pytest.raises(TaskCancelled) as caught:
        await waiter
    assert not caught.value.archived
    assert not await redis.exists(client.schema.queue("default").task(info.id))
    with pytest.raises(TaskNotFound):
        await client.cancel(info)


async def test_cancel_a_running_task_archives_it_and_tells_its_waiter(start: Any, client: Client) -> None:
    running = asyncio.Event()

    async def slow(ctx: Any, p: In) -> None:
        running.set()
        await asyncio.sleep(30)

    task = TaskDef("r:slow", In, slow, max_retry=5)
    await start(task)
    info = await client.enqueue(task, In())
    waiter = asyncio.ensure_future(client.wait(info, timeout=15))
    await asyncio.wait_for(running.wait(), 10)
    assert await client.cancel(info) == "cancelling"
    with pytest.raises(TaskCancelled) as caught:
        await waiter
    assert caught.value.archived  # not retried, though retries were left
    assert caught.value.error.startswith("TaskCancelled: task cancelled by its caller")


async def test_sync_client_waits_and_applies(start: Any, redis_url: str, schema: Schema, client: Client) -> None:
    await start(TYPED, RETAINED)
    info = await client.enqueue(RETAINED, In(n=2))

    def blocking() -> tuple[Any, Any]:
        with SyncClient(redis_url, schema=schema) as sync:
            return sync.apply(TYPED, In(n=4), wait_timeout=10), sync.wait(info, timeout=10, taskdef=RETAINED)

    assert await asyncio.to_thread(blocking) == (Out(doubled=8), Out(doubled=4))


async def command_count(redis: Any) -> int:
    """Commands the server ran so far, INFO itself left out."""
    stats = await redis.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")


async def test_a_thousand_waiters_cost_redis_nothing_per_waiter_while_they_wait(
    start: Any, client: Client, redis: Any
) -> None:
    n = 1000
    infos = await client.enqueue_many([TaskCall(TYPED, In(n=i)) for i in range(n)])
    assert all(isinstance(i, TaskInfo) for i in infos)
    waiters = [asyncio.ensure_future(client.wait(i, timeout=60, taskdef=TYPED)) for i in infos]  # type: ignore[arg-type]

    async def all_waiting() -> bool:
        watches = client.waiters._watches
        return len(watches) == n and all(w.ready for w in watches.values())

    await wait_until(all_waiting)
    before = await command_count(redis)
    began = time.monotonic()
    await asyncio.sleep(3.0)
    spent = await command_count(redis) - before
    took = time.monotonic() - began  # three seconds, or more on a loaded machine
    # the shared slow poll: three commands a second for the queue, not per waiter
    assert spent <= 3 * (took + 1), (spent, took)

    await start(TYPED)
    results = await asyncio.gather(*waiters)
    assert results == [Out(doubled=2 * i) for i in range(n)]
    assert not client.waiters._watches


async def test_without_the_slow_poll_waiting_costs_no_command_at_all(redis: Any, schema: Schema, start: Any) -> None:
    quiet = Client(redis, schema=schema, poll_interval=None)
    info = await quiet.enqueue(TYPED, In(n=1))
    waiter = asyncio.ensure_future(quiet.wait(info, timeout=30, taskdef=TYPED))
    await wait_until(lambda: _ready(quiet))
    before = await command_count(redis)
    await asyncio.sleep(1.5)
    assert await command_count(redis) - before == 0
    await start(TYPED)
    assert await waiter == Out(doubled=2)
    await quiet.waiters.close()


async def _ready(client: Client) -> bool:
    return any(w.ready for w in client.waiters._watches.values())
