"""Group aggregation under hostile aggregate functions, bad data and Redis faults.

Each test names a guarantee of :mod:`framework.worker.background.aggregator`: a group's tasks are merged once
(not lost, not twice), one group's trouble does not stop the others, and the worker keeps running.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from framework.broker.broker import RedisBroker
from framework.client.client import Client
from framework.clock import SystemClock
from framework.errors import TaskAggregated
from framework.inspector import Inspector
from framework.protocol.message import encode_message, new_message
from framework.registry import Registry
from framework.worker.background.aggregator import Aggregator, GroupAggregator, GroupedTask
from tests.fixtures.aggregation import ITEM, Batch, Item
from tests.framework.worker_app import wait_until


def to_batch(group: str, tasks: list[GroupedTask]) -> tuple[str, Batch]:
    return "agg:batch", Batch(ns=sorted(t.payload.n for t in tasks), group=group)


async def stage(redis: Any, schema: Any, group: str, ids: list[str], joined: int) -> None:
    """Put tasks into a group as if they joined it at Unix second ``joined`` (their messages are stand-ins)."""
    qk = schema.queue("default")
    async with redis.pipeline(transaction=False) as pipe:
        for task_id in ids:
            pipe.hset(qk.task(task_id), mapping={"msg": b"stand-in", "state": "aggregating", "group": group})
        for start in range(0, len(ids), 1000):
            pipe.zadd(qk.group(group), dict.fromkeys(ids[start : start + 1000], joined))
        pipe.sadd(qk.groups, group)
        await pipe.execute()


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name]


# -- the scripts ------------------------------------------------------------------------------------------------


async def test_a_group_too_large_for_one_lua_unpack_is_staged_and_reclaimed(redis: Any, schema: Any) -> None:
    """Lua's ``unpack`` takes at most ~8000 values: staging or reclaiming a bigger group in one ZADD failed
    with "too many results to unpack", on every pass, so the group was never aggregated."""
    broker = RedisBroker(redis, schema, SystemClock())
    qk = schema.queue("default")
    ids = [f"id{i:05d}" for i in range(6000)]
    await stage(redis, schema, "big", ids, int(time.time()) - 100)
    set_key = await broker.aggregation_check("default", "big", "set-1", max_size=0, max_delay=0, grace_period=1)
    assert set_key == qk.aggregation_set("big", "set-1")
    assert await redis.zcard(set_key) == 6000
    assert not await redis.exists(qk.group("big"))
    await redis.zadd(qk.aggregation_sets, {set_key: int(time.time()) - 1})  # as if its 2 minutes had passed
    assert await broker.reclaim_stale_aggregation_sets("default") == 1
    assert await redis.zcard(qk.group("big")) == 6000
    assert await redis.sismember(qk.groups, "big")


async def test_a_stale_set_whose_aggregate_was_enqueued_is_deleted_not_put_back(
    client: Any, redis: Any, schema: Any
) -> None:
    """A worker died after enqueuing the aggregate (its task id is the set id) and before deleting the set:
    putting the set's tasks back into their group would merge them a second time."""
    broker = RedisBroker(redis, schema, SystemClock())
    qk = schema.queue("default")
    infos = [await client.enqueue(ITEM, Item(n=i), group="crash", unique=300) for i in range(2)]
    set_key = await broker.aggregation_check("default", "crash", "set-1", max_size=0, max_delay=0, grace_period=-2)
    assert set_key is not None
    aggregate = await client.enqueue("agg:batch", Batch(ns=[0, 1]), task_id="set-1")
    await redis.zadd(qk.aggregation_sets, {set_key: int(time.time()) - 1})
    assert await broker.reclaim_stale_aggregation_sets("default") == 1
    assert not await redis.exists(qk.group("crash"), set_key, *(qk.task(i.id) for i in infos))
    assert not await redis.sismember(qk.groups, "crash")
    assert await redis.zcard(qk.aggregation_sets) == 0
    assert not await redis.exists(qk.unique("agg:item", ITEM.encode(Item(n=0))))  # its locks are released
    assert await redis.hget(qk.task(aggregate.id), "state") == b"pending"


async def test_a_staged_task_deleted_and_its_id_reused_is_neither_merged_nor_deleted(
    client: Any, redis: Any, schema: Any
) -> None:
    """The inspector deletes a staged task, and a new task takes its id: the set's id now names a task of
    another state, which the aggregator must neither hand to ``aggregate`` nor delete with the set."""
    broker = RedisBroker(redis, schema, SystemClock())
    qk = schema.queue("default")
    kept = await client.enqueue(ITEM, Item(n=1), group="reuse")
    await client.enqueue(ITEM, Item(n=2), group="reuse", task_id="fixed-id")
    set_key = await broker.aggregation_check("default", "reuse", "set-1", max_size=0, max_delay=0, grace_period=-2)
    assert set_key is not None
    await Inspector(redis, schema).delete_task("default", "fixed-id")
    await client.enqueue(ITEM, Item(n=3), task_id="fixed-id")  # pending, not grouped
    members, _ = await broker.read_aggregation_set("default", set_key)
    assert [m[0] for m in members] == [kept.id]
    assert await broker.delete_aggregation_set("default", set_key) == 1
    assert await redis.hget(qk.task("fixed-id"), "state") == b"pending"
    assert await redis.lrange(qk.pending, 0, -1) == [b"fixed-id"]


# -- the aggregator -----------------------------------------------------------------------------------------------


async def test_names_and_ids_that_are_not_utf8_do_not_stop_the_worker(
    aggregating: Any, redis: Any, schema: Any
) -> None:
    """Go may write any bytes in a group name or a task id: decoding one failed outside any handler, which
    crashed the aggregator's loop and so stopped the worker."""
    qk = schema.queue("default")
    joined = int(time.time()) - 5
    await redis.zadd(qk.group("bad\udcff").encode("utf-8", "surrogateescape"), {"x": joined})
    await redis.sadd(qk.groups, b"bad\xff")
    odd_id = b"odd\xfe"
    msg = new_message(
        type=ITEM.type, payload=ITEM.encode(Item(n=7)), id="odd", queue="default", retry=0, timeout=0, deadline=0
    )
    await redis.hset(qk.task_prefix.encode() + odd_id, mapping={"msg": encode_message(msg), "state": "aggregating"})
    await redis.zadd(qk.group("ok"), {odd_id: joined})
    await redis.sadd(qk.groups, "ok")
    with capture_logs() as logs:
        batches = await aggregating(Aggregator(group="ok", grace_period=0.2, aggregate=to_batch))
        await wait_until(lambda: _true(bool(batches)), timeout=2.5)
    assert batches == [Batch(ns=[7], group="ok")]
    assert not events(logs, "worker_component_crashed")
    assert len(events(logs, "group_name_invalid")) == 1


async def _true(value: bool) -> bool:
    return value


async def test_an_aggregate_that_raises_an_os_error_is_a_failed_aggregation_not_a_redis_outage(
    aggregating: Any, client: Any
) -> None:
    """``aggregate`` calling a service that refuses the connection raises an ``OSError``: that is the
    function's failure, logged as such, and the next group is aggregated in the same pass; it was taken for
    Redis being down."""

    def refused(group: str, tasks: list[GroupedTask]) -> Any:
        raise ConnectionRefusedError("downstream refused")

    await client.enqueue(ITEM, Item(n=1), group="a-refused")
    await client.enqueue(ITEM, Item(n=2), group="b-fine")
    with capture_logs() as logs:
        batches = await aggregating(
            Aggregator(group="a-refused", grace_period=0.2, aggregate=refused),
            Aggregator(group="b-fine", grace_period=0.2, aggregate=to_batch),
        )
        await wait_until(lambda: _true(bool(batches)), timeout=2.5)
    assert batches == [Batch(ns=[2], group="b-fine")]
    failed = events(logs, "group_aggregation_failed")
    assert [e["error"] for e in failed] == ["ConnectionRefusedError: downstream refused"]
    assert not events(logs, "redis_unavailable")


class AheadClock:
    """The wall clock plus ``ahead`` seconds."""

    def __init__(self, ahead: float) -> None:
        self.ahead = ahead

    def now(self) -> float:
        return time.time() + self.ahead


async def test_a_hung_aggregate_is_given_up_before_its_sets_deadline_and_the_next_group_is_aggregated(
    redis: Any, schema: Any, settings: Any
) -> None:
    """An ``aggregate`` that never returns held the aggregator forever: no other group was aggregated again.

    The aggregator's clock runs 108.5 s ahead of the one that staged the set, so the set's deadline (2 min,
    less a 10 s margin) is at most 1.5 s away when ``aggregate`` is called."""
    registry = Registry([ITEM])
    client = Client(redis, schema=schema, settings=settings, registry=registry, clock=AheadClock(108.5))
    broker = RedisBroker(redis, schema, SystemClock())
    started = asyncio.Event()

    async def hang(group: str, tasks: list[GroupedTask]) -> Any:
        started.set()
        await asyncio.Event().wait()

    aggregator = GroupAggregator(
        broker,
        client,
        registry,
        [
            Aggregator(group="a-hangs", grace_period=0, aggregate=hang),
            Aggregator(group="b-fine", grace_period=0, aggregate=to_batch),
        ],
        ["default"],
        structlog.get_logger(),
    )
    qk = schema.queue("default")
    try:
        await client.enqueue(ITEM, Item(n=1), group="a-hangs")
        await client.enqueue(ITEM, Item(n=2), group="b-fine")
        for group in ("a-hangs", "b-fine"):  # joined a while ago, by the staging clock
            await redis.zadd(
                qk.group(group), {m: int(time.time()) - 5 for m in await redis.zrange(qk.group(group), 0, -1)}
            )
        with capture_logs() as logs:
            made = await asyncio.wait_for(aggregator.check_once(), 2.5)
        assert started.is_set()
        assert made == 1
        assert await redis.llen(qk.pending) == 1
        assert [e["group"] for e in events(logs, "group_aggregation_timeout")] == ["a-hangs"]
        assert await redis.zcard(qk.aggregation_sets) == 1  # the hung group's set, reclaimed after its deadline
    finally:
        await client.waiters.close()
        client.broker.close()


async def test_a_plain_aggregate_runs_in_a_thread_not_on_the_event_loop(
    aggregating: Any, client: Any, redis: Any, schema: Any
) -> None:
    """A plain-function ``aggregate`` that blocks (I/O, a slow computation) blocked the worker's event loop."""
    threads: list[threading.Thread] = []

    def slow(group: str, tasks: list[GroupedTask]) -> tuple[str, Batch]:
        threads.append(threading.current_thread())
        time.sleep(1.2)
        return to_batch(group, tasks)

    info = await client.enqueue(ITEM, Item(n=1), group="slow")
    await redis.zadd(schema.queue("default").group("slow"), {info.id: int(time.time()) - 5})  # ready at once
    batches = await aggregating(Aggregator(group="slow", grace_period=0, aggregate=slow))
    longest = 0.0
    deadline = time.monotonic() + 2.5
    while not batches and time.monotonic() < deadline:
        before = time.monotonic()
        await asyncio.sleep(0.02)
        longest = max(longest, time.monotonic() - before)
    assert batches == [Batch(ns=[1], group="slow")]
    assert threads and threads[0] is not threading.main_thread()
    assert longest < 0.6  # the loop turned while aggregate slept 1.2 s


async def test_a_set_none_of_whose_tasks_decodes_is_deleted_without_calling_aggregate(
    aggregating: Any, client: Any, redis: Any, schema: Any
) -> None:
    """``aggregate`` was called with no tasks; one that reads ``tasks[0]`` then failed on every reclaim."""
    qk = schema.queue("default")
    calls: list[list[GroupedTask]] = []

    def record(group: str, tasks: list[GroupedTask]) -> tuple[str, Batch]:
        calls.append(tasks)
        return to_batch(group, tasks)

    infos = [await client.enqueue(ITEM, Item(n=i), group="junk") for i in range(2)]
    for info in infos:
        await redis.hset(qk.task(info.id), "msg", b"\xff\x00not a task message")
    with capture_logs() as logs:
        await aggregating(Aggregator(group="junk", grace_period=0.2, aggregate=record))

        async def gone() -> bool:
            return not await redis.exists(qk.group("junk"), *(qk.task(i.id) for i in infos))

        await wait_until(gone, timeout=2.5)
        await wait_until(lambda: _zero(redis.zcard(qk.aggregation_sets)), timeout=2.5)
    assert calls == []
    assert sorted(e["task_id"] for e in events(logs, "task_message_invalid")) == sorted(i.id for i in infos)


async def _zero(value: Any) -> bool:
    return await value == 0


async def test_an_aggregate_id_already_taken_keeps_the_groups_tasks(
    aggregating: Any, client: Any, redis: Any, schema: Any
) -> None:
    """``aggregate`` picks its own task id, and a task (an earlier batch, kept for its retention) holds it:
    the conflict was taken for an earlier attempt of this set, and the group's tasks were deleted unmerged."""
    qk = schema.queue("default")

    def daily(group: str, tasks: list[GroupedTask]) -> tuple[str, Batch, dict[str, Any]]:
        task, payload = to_batch(group, tasks)
        return task, payload, {"task_id": f"batch-{group}"}

    earlier = await client.enqueue("hostile:other", Batch(ns=[0]), task_id="batch-daily", process_in=3600)
    infos = [await client.enqueue(ITEM, Item(n=i), group="daily") for i in range(2)]
    with capture_logs() as logs:
        await aggregating(Aggregator(group="daily", grace_period=0.2, aggregate=daily))
        await wait_until(lambda: _true(bool(events(logs, "group_aggregation_failed"))), timeout=2.5)
    assert "TaskIdConflict" in events(logs, "group_aggregation_failed")[0]["error"]
    assert not events(logs, "group_aggregated")
    assert all([await redis.hget(qk.task(i.id), "state") == b"aggregating" for i in infos])
    assert await redis.zcard(qk.aggregation_sets) == 1  # staged: put back into the group after its deadline
    assert await redis.hget(qk.task(earlier.id), "state") == b"scheduled"


async def test_a_set_delete_lost_after_the_enqueue_is_retried_so_the_group_is_merged_once(
    aggregating: Any, client: Any, redis: Any, schema: Any, faults: Any
) -> None:
    """Redis went away after the aggregate was enqueued and before its set was deleted: the set stayed
    staged, was put back into the group after its deadline, and the group was merged a second time."""
    qk = schema.queue("default")
    faults.fail("delete_aggregation_set", times=1)
    await client.enqueue(ITEM, Item(n=5), group="blip")
    batches = await aggregating(Aggregator(group="blip", grace_period=0.2, aggregate=to_batch), wrap_broker=faults.wrap)
    await wait_until(lambda: _true(bool(batches)), timeout=2.5)
    await wait_until(lambda: _zero(redis.zcard(qk.aggregation_sets)), timeout=2.5)
    assert faults.injected["delete_aggregation_set"] == 1
    broker = RedisBroker(redis, schema, SystemClock())
    assert await broker.reclaim_stale_aggregation_sets("default") == 0
    assert batches == [Batch(ns=[5], group="blip")]


async def test_waiters_are_told_the_aggregate_id_the_aggregate_function_chose(aggregating: Any, client: Any) -> None:
    """The announcement named the set id even when ``aggregate`` gave the aggregate task an id of its own:
    waiting on the named id then found no task."""

    def named(group: str, tasks: list[GroupedTask]) -> tuple[str, Batch, dict[str, Any]]:
        task, payload = to_batch(group, tasks)
        return task, payload, {"task_id": "chosen-id", "retention": 60}

    info = await client.enqueue(ITEM, Item(n=3), group="named")
    waiter = asyncio.ensure_future(client.wait(info, timeout=2.5))
    await wait_until(lambda: client.redis.exists(client.schema.queue("default").waiting(info.id)), timeout=1)
    await aggregating(Aggregator(group="named", grace_period=0.2, aggregate=named))
    with pytest.raises(TaskAggregated) as caught:
        await waiter
    assert caught.value.aggregate_id == "chosen-id"


def test_limits_that_are_nan_or_not_whole_are_refused() -> None:
    """A NaN passed the "not negative" check and the group was never ready by it; a fractional max_size made
    every staging script fail (ZRANGE needs an integer), on every pass."""
    for bad in ({"grace_period": math.nan}, {"max_delay": math.nan}):
        with pytest.raises(ValueError, match="must be a number"):
            Aggregator(group="g", aggregate=to_batch, **bad)
    with pytest.raises(ValueError, match="max_size must be a whole number"):
        Aggregator(group="g", max_size=2.5, aggregate=to_batch)  # type: ignore[arg-type]
    Aggregator(group="g", grace_period=0, max_delay=0, max_size=0, aggregate=to_batch)


async def test_a_task_deleted_while_staged_does_not_come_back_with_its_set(
    aggregating: Any, client: Any, redis: Any, schema: Any
) -> None:
    """The inspector deletes a staged task, then its set is reclaimed: its id went back into the group
    without a record, as the group's oldest, and an aggregator by task type (which reads the type of the
    oldest task) skipped the group for good."""
    broker = RedisBroker(redis, schema, SystemClock())
    qk = schema.queue("default")
    first = await client.enqueue(ITEM, Item(n=1), group="gap")
    await redis.zadd(qk.group("gap"), {first.id: int(time.time()) - 10})  # the oldest
    await client.enqueue(ITEM, Item(n=2), group="gap")
    set_key = await broker.aggregation_check("default", "gap", "set-1", max_size=0, max_delay=0, grace_period=-2)
    assert set_key is not None
    await Inspector(redis, schema).delete_task("default", first.id)
    await redis.zadd(qk.aggregation_sets, {set_key: int(time.time()) - 1})
    assert await broker.reclaim_stale_aggregation_sets("default") == 1
    assert first.id.encode() not in await redis.zrange(qk.group("gap"), 0, -1)
    batches = await aggregating(Aggregator(task_type=ITEM.type, grace_period=0, aggregate=to_batch))
    await wait_until(lambda: _true(bool(batches)), timeout=2.5)
    assert batches == [Batch(ns=[2], group="gap")]


async def test_a_task_type_group_whose_oldest_message_is_corrupt_is_still_aggregated(
    aggregating: Any, client: Any, redis: Any, schema: Any
) -> None:
    """An aggregator by task type reads the type of the group's oldest task: when that message did not
    decode, the group was never aggregated (and a warning was logged on every pass)."""
    qk = schema.queue("default")
    bad = await client.enqueue(ITEM, Item(n=1), group="rot")
    await redis.zadd(qk.group("rot"), {bad.id: int(time.time()) - 10})  # the oldest
    await redis.hset(qk.task(bad.id), "msg", b"\xff\x00not a task message")
    await client.enqueue(ITEM, Item(n=2), group="rot")
    with capture_logs() as logs:
        batches = await aggregating(Aggregator(task_type=ITEM.type, grace_period=0, aggregate=to_batch))
        await wait_until(lambda: _true(bool(batches)), timeout=2.5)
    assert batches == [Batch(ns=[2], group="rot")]
    assert [e["task_id"] for e in events(logs, "task_message_invalid")] == [bad.id]
    assert not await redis.exists(qk.task(bad.id))
