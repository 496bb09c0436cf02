"""Group aggregation under hostile aggregate functions, bad data and Redis faults.

Each test names a guarantee of :mod:`framework.worker.background.aggregator`: a group's tasks are merged once
(not lost, not twice), one group's trouble does not stop the others, and the worker keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
import structlog
from redis.exceptions import RedisError
from structlog.testing import capture_logs

from framework.broker.broker import RedisBroker
from framework.client.client import Client
from framework.clock import SystemClock
from framework.errors import TaskAggregated, TaskFailed
from framework.inspector import Inspector
from framework.protocol.message import encode_message, new_message
from framework.registry import Registry
from framework.worker.background.aggregator import Aggregator, GroupAggregator, GroupedTask
from framework.worker.background.recoverer import Recoverer
from tests.fixtures.aggregation import ITEM, Batch, Item
from tests.framework.worker_app import task_record, wait_until


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
    """Another client deletes a staged task's record (the inspector refuses to), and a new task takes its id: the
    set's id now names a task of another state, which the aggregator must neither hand to ``aggregate`` nor delete
    with the set."""
    broker = RedisBroker(redis, schema, SystemClock())
    qk = schema.queue("default")
    kept = await client.enqueue(ITEM, Item(n=1), group="reuse")
    await client.enqueue(ITEM, Item(n=2), group="reuse", task_id="fixed-id")
    set_key = await broker.aggregation_check("default", "reuse", "set-1", max_size=0, max_delay=0, grace_period=-2)
    assert set_key is not None
    await redis.delete(qk.task("fixed-id"))
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
        await wait_until(lambda: _true(bool(batches)), timeout=30)
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
        await wait_until(lambda: _true(bool(batches)), timeout=30)
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
        time.sleep(3)
        return to_batch(group, tasks)

    info = await client.enqueue(ITEM, Item(n=1), group="slow")
    await redis.zadd(schema.queue("default").group("slow"), {info.id: int(time.time()) - 5})  # ready at once
    batches = await aggregating(Aggregator(group="slow", grace_period=0, aggregate=slow))
    longest = 0.0
    deadline = time.monotonic() + 30
    while not batches and time.monotonic() < deadline:
        before = time.monotonic()
        await asyncio.sleep(0.02)
        longest = max(longest, time.monotonic() - before)
    assert batches == [Batch(ns=[1], group="slow")]
    assert threads and threads[0] is not threading.main_thread()
    assert longest < 2  # the loop turned while aggregate slept 3 s


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

        await wait_until(gone, timeout=30)
        await wait_until(lambda: _zero(redis.zcard(qk.aggregation_sets)), timeout=30)
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
        await wait_until(lambda: _true(bool(events(logs, "group_aggregation_failed"))), timeout=30)
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
    await wait_until(lambda: _true(bool(batches)), timeout=30)
    await wait_until(lambda: _zero(redis.zcard(qk.aggregation_sets)), timeout=30)
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
    waiter = asyncio.ensure_future(client.wait(info, timeout=30))
    await wait_until(lambda: client.redis.exists(client.schema.queue("default").waiting(info.id)), timeout=30)
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
    """Another client deletes a staged task's record (the inspector refuses to), then its set is reclaimed: its
    id went back into the group without a record, as the group's oldest, and an aggregator by task type (which
    reads the type of the oldest task) skipped the group for good."""
    broker = RedisBroker(redis, schema, SystemClock())
    qk = schema.queue("default")
    first = await client.enqueue(ITEM, Item(n=1), group="gap")
    await redis.zadd(qk.group("gap"), {first.id: int(time.time()) - 10})  # the oldest
    await client.enqueue(ITEM, Item(n=2), group="gap")
    set_key = await broker.aggregation_check("default", "gap", "set-1", max_size=0, max_delay=0, grace_period=-2)
    assert set_key is not None
    await redis.delete(qk.task(first.id))
    await redis.zadd(qk.aggregation_sets, {set_key: int(time.time()) - 1})
    assert await broker.reclaim_stale_aggregation_sets("default") == 1
    assert first.id.encode() not in await redis.zrange(qk.group("gap"), 0, -1)
    batches = await aggregating(Aggregator(task_type=ITEM.type, grace_period=0, aggregate=to_batch))
    await wait_until(lambda: _true(bool(batches)), timeout=30)
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
        await wait_until(lambda: _true(bool(batches)), timeout=30)
    assert batches == [Batch(ns=[2], group="rot")]
    assert [e["task_id"] for e in events(logs, "task_message_invalid")] == [bad.id]
    assert not await redis.exists(qk.task(bad.id))


# -- bounded attempts ---------------------------------------------------------------------------------------------

POISON = 13
"""An item ``aggregate`` fails on whenever it is in the batch."""


@contextlib.asynccontextmanager
async def driven(
    redis: Any, schema: Any, settings: Any, *aggregators: Aggregator, clock: Any = None, wrap_broker: Any = None
) -> AsyncIterator[tuple[GroupAggregator, RedisBroker]]:
    """An aggregator to run pass by pass (``check_once``), and a broker on the wall clock to stage and reclaim with.

    ``wrap_broker`` wraps the aggregator's broker and its client's (not the one returned)."""
    registry = Registry([ITEM])
    client = Client(redis, schema=schema, settings=settings, registry=registry, clock=clock, wrap_broker=wrap_broker)
    broker = RedisBroker(redis, schema, SystemClock())
    own = wrap_broker(RedisBroker(redis, schema, SystemClock())) if wrap_broker is not None else broker
    try:
        yield GroupAggregator(own, client, registry, aggregators, ["default"], structlog.get_logger()), broker
    finally:
        await client.waiters.close()
        client.broker.close()


async def make_ready(redis: Any, schema: Any, group: str) -> None:
    """Date every task of a group 5 s back, so a grace period of 0 finds it ready."""
    key = schema.queue("default").group(group)
    members = await redis.zrange(key, 0, -1)
    if members:
        await redis.zadd(key, dict.fromkeys(members, int(time.time()) - 5))


async def reclaim_now(redis: Any, schema: Any, broker: RedisBroker) -> int:
    """As if every staged set's 2 minutes had passed, then the recoverer's pass over them; returns the sets."""
    qk = schema.queue("default")
    for set_key in await redis.zrange(qk.aggregation_sets, 0, -1):
        await redis.zadd(qk.aggregation_sets, {set_key: int(time.time()) - 1})
    return await Recoverer(broker, ["default"], structlog.get_logger()).reclaim_aggregation_sets()


async def attempts_of(redis: Any, schema: Any, task_id: str) -> tuple[bytes | None, bytes | None]:
    """A task's state and the failed aggregation attempts counted on it."""
    state, attempts = await redis.hmget(schema.queue("default").task(task_id), "state", "fw_agg_attempts")
    return state, attempts


def fails_on_poison(how: str) -> Any:
    """An ``aggregate`` that fails ``how`` on every batch holding the poison item, and merges any other."""

    def aggregate(group: str, tasks: list[GroupedTask]) -> Any:
        if not any(t.payload.n == POISON for t in tasks):
            return to_batch(group, tasks)
        if how == "raises":
            raise ValueError("item 13 is poison")
        if how == "returns junk":
            return None
        return "agg:batch", Batch(ns=[]), {"no_such_option": True}  # the enqueue refuses it

    return aggregate


@pytest.mark.parametrize(
    ("how", "error"),
    [
        ("raises", "ValueError: item 13 is poison"),
        ("returns junk", "TypeError: aggregate must return (task, payload) or (task, payload, options), got None"),
        ("cannot be enqueued", "InvalidOption: unknown enqueue option(s): no_such_option"),
    ],
)
async def test_a_batch_aggregate_always_fails_on_is_archived_after_max_attempts_and_the_group_goes_on(
    redis: Any, schema: Any, settings: Any, client: Any, how: str, error: str
) -> None:
    """Each failure left the set to its 2-minute deadline, the recoverer put its tasks back into the group,
    they were staged again with the group's newest tasks, and failed again: forever, the group blocked."""
    qk = schema.queue("default")
    poison = await client.enqueue(ITEM, Item(n=POISON), group="poisoned")
    other = await client.enqueue(ITEM, Item(n=2), group="poisoned")
    waiter = asyncio.ensure_future(client.wait(poison, timeout=10))
    await wait_until(lambda: redis.exists(qk.waiting(poison.id)), timeout=30)
    agg = Aggregator(group="poisoned", grace_period=0, max_attempts=3, aggregate=fails_on_poison(how))
    async with driven(redis, schema, settings, agg) as (aggregator, broker):
        with capture_logs() as logs:
            for attempt in (1, 2):
                await make_ready(redis, schema, "poisoned")
                assert await aggregator.check_once() == 0
                for info in (poison, other):
                    assert await attempts_of(redis, schema, info.id) == (b"aggregating", str(attempt).encode())
                assert await reclaim_now(redis, schema, broker) == 1
            await make_ready(redis, schema, "poisoned")
            assert await aggregator.check_once() == 0
        failed = events(logs, "group_aggregation_failed")
        assert [e["attempt"] for e in failed] == [1, 2, 3]
        last = failed[-1]["error"]
        assert last.startswith(error)
        gave_up = events(logs, "group_aggregation_gave_up")
        assert [(e["log_level"], e["queue"], e["group"], e["tasks"], e["attempts"], e["error"]) for e in gave_up] == [
            ("error", "default", "poisoned", 2, 3, last)
        ]
        # archived at once, with the set: not left for the reclaim
        assert await redis.zcard(qk.aggregation_sets) == 0
        assert not await redis.exists(qk.group("poisoned"))
        assert sorted(await redis.zrange(qk.archived, 0, -1)) == sorted([poison.id.encode(), other.id.encode()])
        for info in (poison, other):
            record = await task_record(redis, schema, "default", info.id)
            assert record["state"] == "archived"
            assert record["msg"].error_msg == (
                f"aggregation of group 'poisoned' gave up after 3 failed attempts; the last: {last}"
            )
            assert abs(record["msg"].last_failed_at - time.time()) < 5
        with pytest.raises(TaskFailed) as caught:
            await waiter
        assert caught.value.archived
        assert "gave up after 3 failed attempts" in caught.value.error

        # the group is not blocked: its next tasks are aggregated
        await client.enqueue(ITEM, Item(n=5), group="poisoned")
        await make_ready(redis, schema, "poisoned")
        assert await aggregator.check_once() == 1
        assert [await _payload_of(redis, schema, task_id) for task_id in await redis.lrange(qk.pending, 0, -1)] == [
            Batch(ns=[5], group="poisoned")
        ]


async def _payload_of(redis: Any, schema: Any, task_id: bytes) -> Batch:
    record = await task_record(redis, schema, "default", task_id.decode())
    return msgspec.json.decode(record["msg"].payload, type=Batch)


async def test_an_aggregate_that_fails_twice_then_works_aggregates_every_task_once(
    redis: Any, schema: Any, settings: Any, client: Any
) -> None:
    """Counting attempts must not cost the tasks of a passing failure: below ``max_attempts`` the set goes back
    into its group and is aggregated again, with the tasks that joined meanwhile."""
    qk = schema.queue("default")
    calls = 0

    def flaky(group: str, tasks: list[GroupedTask]) -> tuple[str, Batch]:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise ConnectionRefusedError("downstream restarting")
        return to_batch(group, tasks)

    infos = [await client.enqueue(ITEM, Item(n=1), group="flaky")]
    agg = Aggregator(group="flaky", grace_period=0, max_attempts=3, aggregate=flaky)
    async with driven(redis, schema, settings, agg) as (aggregator, broker):
        with capture_logs() as logs:
            for n in (2, 3):
                await make_ready(redis, schema, "flaky")
                assert await aggregator.check_once() == 0
                assert await reclaim_now(redis, schema, broker) == 1
                infos.append(await client.enqueue(ITEM, Item(n=n), group="flaky"))  # joins before the next attempt
            await make_ready(redis, schema, "flaky")
            assert await aggregator.check_once() == 1
    assert calls == 3
    assert not events(logs, "group_aggregation_gave_up")
    assert [e["attempt"] for e in events(logs, "group_aggregation_failed")] == [1, 2]
    pending = await redis.lrange(qk.pending, 0, -1)
    assert [await _payload_of(redis, schema, task_id) for task_id in pending] == [Batch(ns=[1, 2, 3], group="flaky")]
    assert await redis.zcard(qk.archived) == 0
    assert not await redis.exists(*(qk.task(i.id) for i in infos))
    assert await redis.zcard(qk.aggregation_sets) == 0


async def test_an_aggregate_that_does_not_return_in_time_is_a_counted_attempt(
    redis: Any, schema: Any, settings: Any, client: Any
) -> None:
    """A hung ``aggregate`` is abandoned before the set's deadline; the set came back for good all the same.

    The aggregator's clock runs 108.5 s ahead of the one that staged the set, so ``aggregate`` has at most
    1.5 s before its set's deadline (2 min, less a 10 s margin)."""
    started = 0

    async def hang(group: str, tasks: list[GroupedTask]) -> Any:
        nonlocal started
        started += 1
        await asyncio.Event().wait()

    info = await client.enqueue(ITEM, Item(n=1), group="hung")
    agg = Aggregator(group="hung", grace_period=0, max_attempts=2, aggregate=hang)
    async with driven(redis, schema, settings, agg, clock=AheadClock(108.5)) as (aggregator, broker):
        with capture_logs() as logs:
            await make_ready(redis, schema, "hung")
            assert await asyncio.wait_for(aggregator.check_once(), 2.5) == 0
            assert await attempts_of(redis, schema, info.id) == (b"aggregating", b"1")
            assert await reclaim_now(redis, schema, broker) == 1
            await make_ready(redis, schema, "hung")
            assert await asyncio.wait_for(aggregator.check_once(), 2.5) == 0
    assert started == 2
    assert [e["attempt"] for e in events(logs, "group_aggregation_timeout")] == [1, 2]
    record = await task_record(redis, schema, "default", info.id)
    assert record["state"] == "archived"
    assert record["msg"].error_msg.startswith(
        "aggregation of group 'hung' gave up after 2 failed attempts; the last: TimeoutError: aggregate did not "
        "return within "
    )
    assert await redis.zcard(schema.queue("default").aggregation_sets) == 0


async def test_a_redis_fault_while_the_aggregate_task_is_enqueued_is_not_a_counted_attempt(
    redis: Any, schema: Any, settings: Any, client: Any, faults: Any
) -> None:
    """Redis going away is the infrastructure's failure, not the batch's: counting it would archive tasks
    whose ``aggregate`` works, after an outage of a few minutes."""
    qk = schema.queue("default")
    info = await client.enqueue(ITEM, Item(n=4), group="outage")
    agg = Aggregator(group="outage", grace_period=0, max_attempts=1, aggregate=to_batch)
    async with driven(redis, schema, settings, agg, wrap_broker=faults.wrap) as (aggregator, broker):
        faults.fail("enqueue", times=1)
        await make_ready(redis, schema, "outage")
        with pytest.raises(ConnectionError):  # the worker's periodic runner reports it as Redis unavailable
            await aggregator.check_once()
        assert faults.injected["enqueue"] == 1
        assert await attempts_of(redis, schema, info.id) == (b"aggregating", None)
        assert await redis.zcard(qk.aggregation_sets) == 1
        assert await redis.zcard(qk.archived) == 0
        assert await reclaim_now(redis, schema, broker) == 1
        await make_ready(redis, schema, "outage")
        assert await aggregator.check_once() == 1
    pending = await redis.lrange(qk.pending, 0, -1)
    assert [await _payload_of(redis, schema, task_id) for task_id in pending] == [Batch(ns=[4], group="outage")]


async def test_a_failed_attempt_that_redis_fails_to_count_is_logged_and_retried_uncounted(
    redis: Any, schema: Any, settings: Any, client: Any, faults: Any
) -> None:
    """Counting is a Redis call like any other: when it fails, the failure is still logged, the pass reports
    Redis unavailable, and the set goes back into its group at its deadline as before."""
    qk = schema.queue("default")
    info = await client.enqueue(ITEM, Item(n=POISON), group="uncounted")
    agg = Aggregator(group="uncounted", grace_period=0, max_attempts=1, aggregate=fails_on_poison("raises"))
    async with driven(redis, schema, settings, agg, wrap_broker=faults.wrap) as (aggregator, broker):
        faults.fail("aggregation_failed", times=1)
        await make_ready(redis, schema, "uncounted")
        with capture_logs() as logs, pytest.raises(RedisError):
            await aggregator.check_once()
        assert [(e["error"], e["note"]) for e in events(logs, "group_aggregation_failed")] == [
            ("ValueError: item 13 is poison", "retried when the set is reclaimed (2 min); Redis failed: not counted")
        ]
        assert await attempts_of(redis, schema, info.id) == (b"aggregating", None)
        assert await reclaim_now(redis, schema, broker) == 1
        await make_ready(redis, schema, "uncounted")
        assert await aggregator.check_once() == 0  # counted this time: at max_attempts=1, archived
    assert await attempts_of(redis, schema, info.id) == (b"archived", None)
    assert await redis.zcard(qk.aggregation_sets) == 0


async def test_a_failed_attempt_on_a_set_already_reclaimed_is_not_counted(redis: Any, schema: Any, client: Any) -> None:
    """Another worker's recoverer put the set back into its group (and another aggregation may have staged its
    tasks since): counting or archiving them now would act on tasks this attempt no longer holds."""
    broker = RedisBroker(redis, schema, SystemClock())
    qk = schema.queue("default")
    info = await client.enqueue(ITEM, Item(n=1), group="raced")
    set_key = await broker.aggregation_check("default", "raced", "set-1", max_size=0, max_delay=0, grace_period=-2)
    assert set_key is not None
    assert await reclaim_now(redis, schema, broker) == 1
    outcome = await broker.aggregation_failed("default", set_key, 1)
    assert not outcome.counted
    assert not outcome.due
    assert await attempts_of(redis, schema, info.id) == (b"aggregating", None)
    assert await redis.zrange(qk.group("raced"), 0, -1) == [info.id.encode()]
    assert await redis.zcard(qk.archived) == 0


async def test_giving_up_archives_only_the_tasks_at_max_attempts_and_keeps_the_rest_staged(
    redis: Any, schema: Any, client: Any
) -> None:
    """A task that joined the group after the poison batch has had fewer attempts: it stays staged, goes back
    into its group at the set's deadline, and gets its own attempts. A member whose message does not decode is
    deleted (as aggregating the set would delete it), releasing its uniqueness lock."""
    broker = RedisBroker(redis, schema, SystemClock())
    qk = schema.queue("default")
    old = await client.enqueue(ITEM, Item(n=1), group="mixed")
    junk = await client.enqueue(ITEM, Item(n=2), group="mixed", unique=300)
    new = await client.enqueue(ITEM, Item(n=3), group="mixed")
    await redis.hset(qk.task(junk.id), "msg", b"\xff\x00not a task message")
    for task_id in (old.id, junk.id):
        await redis.hset(qk.task(task_id), "fw_agg_attempts", 2)
    set_key = await broker.aggregation_check("default", "mixed", "set-1", max_size=0, max_delay=0, grace_period=-2)
    assert set_key is not None
    outcome = await broker.aggregation_failed("default", set_key, 3)  # no messages given: nothing written
    assert not outcome.counted
    assert sorted((task_id, n) for task_id, n, _ in outcome.due) == sorted(
        [(old.id.encode(), 3), (junk.id.encode(), 3)]
    )
    assert await attempts_of(redis, schema, new.id) == (b"aggregating", None)
    archived_msg = b"archived message of " + old.id.encode()
    outcome = await broker.aggregation_failed(
        "default", set_key, 3, [(old.id.encode(), archived_msg), (junk.id.encode(), b"")]
    )
    assert (outcome.counted, outcome.attempts, outcome.archived, outcome.deleted, outcome.left) == (True, 3, 1, 1, 1)
    assert await redis.hmget(qk.task(old.id), "state", "msg", "fw_agg_attempts") == [b"archived", archived_msg, None]
    assert await redis.zrange(qk.archived, 0, -1) == [old.id.encode()]
    assert not await redis.exists(qk.task(junk.id), qk.unique("agg:item", ITEM.encode(Item(n=2))))
    assert await attempts_of(redis, schema, new.id) == (b"aggregating", b"1")
    assert await redis.zrange(set_key, 0, -1) == [new.id.encode()]
    assert await reclaim_now(redis, schema, broker) == 1
    assert await redis.zrange(qk.group("mixed"), 0, -1) == [new.id.encode()]


def test_max_attempts_must_be_a_whole_number_of_at_least_one() -> None:
    """0 attempts would archive a group's tasks before ``aggregate`` ever ran on them."""
    for bad in (0, -1):
        with pytest.raises(ValueError, match=f"max_attempts must be at least 1, not {bad}"):
            Aggregator(group="g", max_attempts=bad, aggregate=to_batch)
    for odd in (2.5, True, "3"):
        with pytest.raises(ValueError, match="max_attempts must be a whole number of attempts"):
            Aggregator(group="g", max_attempts=odd, aggregate=to_batch)  # type: ignore[arg-type]
    assert Aggregator(group="g", aggregate=to_batch).max_attempts == 5
    assert Aggregator(group="g", max_attempts=1, aggregate=to_batch).max_attempts == 1


@pytest.mark.parametrize("archived_by", ["giving up", "the inspector"])
async def test_a_task_run_again_from_the_archive_gets_its_full_attempts_when_it_is_grouped_again(
    redis: Any, schema: Any, settings: Any, client: Any, archived_by: str
) -> None:
    """Run from the archive (the dashboard, ``asynq task run``), a grouped task is taken by a worker without a
    handler for its type, put back, and forwarded into its group again, to be aggregated once the cause is
    fixed. It kept the attempts counted before it was archived: the next failure, a passing one, archived it
    again at once (or with fewer attempts than ``max_attempts``)."""
    qk = schema.queue("default")
    info = await client.enqueue(ITEM, Item(n=POISON), group="rerun")
    agg = Aggregator(group="rerun", grace_period=0, max_attempts=2, aggregate=fails_on_poison("raises"))
    async with driven(redis, schema, settings, agg) as (aggregator, broker):
        await make_ready(redis, schema, "rerun")
        assert await aggregator.check_once() == 0
        assert await reclaim_now(redis, schema, broker) == 1
        if archived_by == "giving up":
            await make_ready(redis, schema, "rerun")
            assert await aggregator.check_once() == 0
        else:
            assert await attempts_of(redis, schema, info.id) == (b"aggregating", b"1")
            await Inspector(redis, schema).archive_task("default", info.id)
        assert (await task_record(redis, schema, "default", info.id))["state"] == "archived"

        await Inspector(redis, schema).run_task("default", info.id)
        taken = await broker.dequeue("default", 1)
        assert [task_id for task_id, _ in taken] == [info.id]
        now = int(time.time()) - 60  # deferred a minute ago: due again now
        assert await broker.defer("default", info.id, taken[0][1], now=now, wait=3600, delays=(5, 300)) > 0
        assert (await broker.forward("default"))[0] == 1
        assert await redis.zrange(qk.group("rerun"), 0, -1) == [info.id.encode()]

        await make_ready(redis, schema, "rerun")
        with capture_logs() as logs:
            assert await aggregator.check_once() == 0
    assert [e["attempt"] for e in events(logs, "group_aggregation_failed")] == [1]
    assert not events(logs, "group_aggregation_gave_up")
    assert await attempts_of(redis, schema, info.id) == (b"aggregating", b"1")
