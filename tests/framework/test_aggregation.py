"""Group aggregation: grace period, max size, max delay, task-type aggregators, failures, stale sets, Go tasks."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from framework.broker.broker import RedisBroker
from framework.clock import SystemClock
from framework.errors import PluginError
from framework.hookspecs import hookimpl
from framework.plugins.manager import get_plugin_manager
from framework.task import TaskDef
from framework.worker.background.aggregator import Aggregator, GroupedTask
from framework.worker.worker import Worker
from tests.fixtures.aggregation import ITEM, Batch, Item
from tests.framework.worker_app import wait_until

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "asynq-golden.json"


def to_batch(group: str, tasks: list[GroupedTask]) -> tuple[str, Batch]:
    return "agg:batch", Batch(ns=[t.payload.n for t in tasks], group=group)


async def group_empty(redis: Any, schema: Any, group: str) -> bool:
    qk = schema.queue("default")
    return not await redis.exists(qk.group(group)) and not await redis.sismember(qk.groups, group)


async def test_a_group_is_aggregated_after_its_grace_period(
    aggregating: Any, client: Any, redis: Any, schema: Any
) -> None:
    batches = await aggregating(Aggregator(group="g1", grace_period=0.5, aggregate=to_batch))
    infos = [await client.enqueue(ITEM, Item(n=i), group="g1") for i in range(3)]
    last = time.monotonic()

    async def aggregated() -> bool:
        return len(batches) == 1

    await wait_until(aggregated)
    assert 0.5 <= time.monotonic() - last < 10  # at least the grace period (join times are whole seconds)
    # tasks that joined in the same second come in id order: the scores are whole seconds, as in asynq
    assert [sorted(b.ns) for b in batches] == [[0, 1, 2]]
    assert batches[0].group == "g1"
    qk = schema.queue("default")

    async def members_deleted() -> bool:
        # the aggregated task is enqueued before its members are deleted, and may run first (as in asynq)
        return not await redis.exists(*(qk.task(info.id) for info in infos))

    await wait_until(members_deleted, timeout=30)
    assert await group_empty(redis, schema, "g1")
    assert await redis.zcard(qk.aggregation_sets) == 0


async def test_max_size_aggregates_at_once_and_caps_each_batch(
    aggregating: Any, client: Any, redis: Any, schema: Any
) -> None:
    batches = await aggregating(Aggregator(task_type="agg:item", grace_period=60, max_size=3, aggregate=to_batch))
    for i in range(7):
        await client.enqueue(ITEM, Item(n=i), group="sized")

    async def two() -> bool:
        return len(batches) == 2

    await wait_until(two, timeout=30)  # not the 60 s grace period
    assert [len(b.ns) for b in batches] == [3, 3]
    assert len(set(batches[0].ns + batches[1].ns)) == 6
    assert await redis.zcard(schema.queue("default").group("sized")) == 1  # waits for more, or its grace


async def test_max_delay_bounds_the_wait_of_a_busy_group(aggregating: Any, client: Any) -> None:
    batches = await aggregating(Aggregator(group="busy", grace_period=60, max_delay=1, aggregate=to_batch))
    first = time.monotonic()
    n = 0
    while not batches and time.monotonic() - first < 30:
        await client.enqueue(ITEM, Item(n=n), group="busy")  # never quiet for the grace period
        n += 1
        await asyncio.sleep(0.2)
    assert batches
    assert 0.9 <= time.monotonic() - first < 20  # not the 60 s grace period
    assert sorted(batches[0].ns) == list(range(len(batches[0].ns)))


async def test_an_async_aggregate_may_set_options(aggregating: Any, client: Any, redis: Any, schema: Any) -> None:
    async def aggregate(group: str, tasks: list[GroupedTask]) -> tuple[str, Batch, dict[str, Any]]:
        await asyncio.sleep(0)
        return "agg:batch", Batch(ns=[t.payload.n for t in tasks]), {"queue": "low", "retention": 600}

    batches = await aggregating(Aggregator(group="opts", grace_period=0.2, aggregate=aggregate))
    await client.enqueue(ITEM, Item(n=9), group="opts")

    async def ran() -> bool:
        return bool(batches)

    await wait_until(ran)
    assert batches == [Batch(ns=[9])]

    async def completed() -> bool:
        return await redis.zcard(schema.queue("low").completed) == 1

    await wait_until(completed)


async def test_a_failing_aggregate_is_retried_after_the_set_is_reclaimed(
    aggregating: Any, client: Any, redis: Any, schema: Any
) -> None:
    calls = 0

    def flaky(group: str, tasks: list[GroupedTask]) -> tuple[str, Batch]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("downstream not ready")
        return to_batch(group, tasks)

    qk = schema.queue("default")
    with capture_logs() as logs:
        batches = await aggregating(Aggregator(group="retry", grace_period=0.2, aggregate=flaky))
        await client.enqueue(ITEM, Item(n=1), group="retry")

        async def failed_once() -> bool:
            logged = any(e["event"] == "group_aggregation_failed" for e in logs)  # a plain aggregate runs in a thread
            return logged and calls == 1 and await redis.zcard(qk.aggregation_sets) == 1

        await wait_until(failed_once)
    failure = next(e for e in logs if e["event"] == "group_aggregation_failed")
    assert failure["error"] == "ValueError: downstream not ready"
    set_key = (await redis.zrange(qk.aggregation_sets, 0, -1))[0]
    await redis.zadd(qk.aggregation_sets, {set_key: int(time.time()) - 1})  # as if its 2 minutes had passed
    broker = RedisBroker(redis, schema, SystemClock())
    assert await broker.reclaim_stale_aggregation_sets("default") == 1
    assert await redis.sismember(qk.groups, "retry")

    async def aggregated() -> bool:
        return bool(batches)

    await wait_until(aggregated)
    assert batches == [Batch(ns=[1], group="retry")]


async def test_an_aggregate_that_outlives_its_sets_deadline_enqueues_nothing_and_the_group_is_aggregated_once(
    aggregating: Any, client: Any, redis: Any, schema: Any
) -> None:
    """``aggregate`` (user code) runs past the staged set's deadline, and a recoverer puts the tasks back into
    their group meanwhile: the late result is dropped, and the group is aggregated once, from the group."""
    qk = schema.queue("default")
    broker = RedisBroker(redis, schema, SystemClock())
    calls = 0

    async def slow(group: str, tasks: list[GroupedTask]) -> tuple[str, Batch]:
        nonlocal calls
        calls += 1
        if calls == 1:  # as if two minutes passed while it ran, and a recoverer reclaimed the set
            set_key = (await redis.zrange(qk.aggregation_sets, 0, -1))[0]
            await redis.zadd(qk.aggregation_sets, {set_key: int(time.time()) - 1})
            assert await broker.reclaim_stale_aggregation_sets("default") == 1
        return to_batch(group, tasks)

    with capture_logs() as logs:
        batches = await aggregating(Aggregator(group="late", grace_period=0.2, aggregate=slow))
        await client.enqueue(ITEM, Item(n=7), group="late")

        async def aggregated() -> bool:
            return bool(batches) and calls >= 2

        await wait_until(aggregated)
        await asyncio.sleep(0.5)  # a second batch, if the late result had been enqueued, would have run by now
    assert batches == [Batch(ns=[7], group="late")]
    assert [e["event"] for e in logs if e["event"] == "group_aggregation_late"] == ["group_aggregation_late"]


async def test_a_member_whose_message_does_not_decode_is_left_out_and_logged(
    aggregating: Any, client: Any, redis: Any, schema: Any
) -> None:
    qk = schema.queue("default")
    infos = [await client.enqueue(ITEM, Item(n=i), group="g9") for i in range(3)]
    await redis.hset(qk.task(infos[1].id), "msg", b"\xff\x00not a task message")
    with capture_logs() as logs:
        batches = await aggregating(Aggregator(group="g9", grace_period=0.3, aggregate=to_batch))
        await wait_until(lambda: group_empty(redis, schema, "g9"), timeout=10)
        await wait_until(lambda: _async_true(bool(batches)), timeout=10)
    assert [sorted(b.ns) for b in batches] == [[0, 2]]  # members enqueued in the same instant come in id order
    invalid = [e for e in logs if e["event"] == "task_message_invalid"]
    assert [e["task_id"] for e in invalid] == [infos[1].id]


async def _async_true(value: bool) -> bool:
    return value


async def test_stale_sets_are_reclaimed_into_their_group_by_the_script(redis: Any, schema: Any) -> None:
    broker = RedisBroker(redis, schema, SystemClock())
    qk = schema.queue("default")
    group = "a:b"  # group names may hold colons; set ids do not
    stale = qk.aggregation_set(group, "11111111-2222")
    fresh = qk.aggregation_set(group, "33333333-4444")
    await redis.zadd(stale, {"x": 100, "y": 101, "gone": 101})
    await redis.zadd(fresh, {"z": 102})
    for task_id in "xyz":
        await redis.hset(qk.task(task_id), mapping={"msg": b"m", "state": "aggregating", "group": group})
    now = int(time.time())
    await redis.zadd(qk.aggregation_sets, {stale: now - 5, fresh: now + 100})
    assert await broker.reclaim_stale_aggregation_sets("default") == 1
    # a task deleted while staged ("gone": no record) is not put back
    assert await redis.zrange(qk.group(group), 0, -1, withscores=True) == [(b"x", 100.0), (b"y", 101.0)]
    assert await redis.smembers(qk.groups) == {group.encode()}
    assert not await redis.exists(stale)
    assert await redis.zrange(qk.aggregation_sets, 0, -1) == [fresh.encode()]


async def test_deleting_a_set_releases_the_unique_locks_its_members_hold(client: Any, redis: Any, schema: Any) -> None:
    broker = RedisBroker(redis, schema, SystemClock())
    qk = schema.queue("default")
    info = await client.enqueue(ITEM, Item(n=1), group="u", unique=300)
    lock = qk.unique("agg:item", ITEM.encode(Item(n=1)))
    assert await redis.get(lock) == info.id.encode()
    set_key = await broker.aggregation_check("default", "u", "set-1", max_size=1, max_delay=0, grace_period=60)
    assert set_key == qk.aggregation_set("u", "set-1")
    members, deadline = await broker.read_aggregation_set("default", set_key)
    assert [m[0] for m in members] == [info.id]
    assert deadline is not None and deadline > time.time() + 100
    assert await broker.delete_aggregation_set("default", set_key) == 1
    assert not await redis.exists(lock, qk.task(info.id), set_key)
    assert await redis.zcard(qk.aggregation_sets) == 0


async def test_a_go_written_grouped_task_is_aggregated(aggregating: Any, redis: Any, schema: Any) -> None:
    keys = json.loads(GOLDEN.read_text(encoding="utf-8"))["keys"]
    go_msg = bytes.fromhex(keys["asynq:{default}:t:golden-group"]["fields_hex"]["msg"])
    qk = schema.queue("default")
    await redis.hset(qk.task("golden-group"), mapping={"msg": go_msg, "state": "aggregating", "group": "g1"})
    await redis.zadd(qk.group("g1"), {"golden-group": int(time.time()) - 5})
    await redis.sadd(qk.groups, "g1")
    seen: list[GroupedTask] = []

    def aggregate(group: str, tasks: list[GroupedTask]) -> tuple[str, Batch]:
        seen.extend(tasks)
        return "agg:batch", Batch(ns=[len(tasks)], group=group)

    batches = await aggregating(Aggregator(group="g1", grace_period=1, aggregate=aggregate))

    async def aggregated() -> bool:
        return bool(batches)

    await wait_until(aggregated)
    assert [(t.id, t.type, t.payload, t.group) for t in seen] == [("golden-group", "notify:batch", b'{"n":1}', "g1")]
    assert batches == [Batch(ns=[1], group="g1")]


async def test_plugins_register_aggregators(settings: Any, client: Any) -> None:
    batches: list[Batch] = []

    async def handle(ctx: Any, batch: Batch) -> None:
        batches.append(batch)

    class Plugin:
        @hookimpl
        def register_task_types(self, settings: Any) -> list[Any]:
            return [ITEM, TaskDef("agg:batch", Batch, handle)]

        @hookimpl
        def register_aggregators(self, settings: Any) -> list[Any]:
            return [Aggregator(task_type="agg:item", grace_period=0.2, aggregate=to_batch)]

    isolated = settings.replace(load_plugins=[])
    worker = Worker(isolated, plugin_manager=get_plugin_manager(isolated, extra=[("agg", Plugin())]))
    await worker.start()
    try:
        await client.enqueue(ITEM, Item(n=4), group="plugged")

        async def aggregated() -> bool:
            return bool(batches)

        await wait_until(aggregated)
    finally:
        await worker.stop()
    assert batches == [Batch(ns=[4], group="plugged")]


def test_invalid_aggregators_are_refused(settings: Any) -> None:
    class Wrong:
        @hookimpl
        def register_aggregators(self, settings: Any) -> list[Any]:
            return ["not an aggregator"]

    isolated = settings.replace(load_plugins=[])
    with pytest.raises(PluginError, match="plugin 'wrong' contributed 'not an aggregator'"):
        Worker(isolated, plugin_manager=get_plugin_manager(isolated, extra=[("wrong", Wrong())]))
    with pytest.raises(ValueError, match="exactly one of group= or task_type="):
        Aggregator(aggregate=to_batch)
    with pytest.raises(ValueError, match="must not be negative"):
        Aggregator(group="g", grace_period=-1, aggregate=to_batch)
