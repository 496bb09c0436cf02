"""Waiting on a task that vanishes before it runs: deleted, deleted with its queue, or merged into an aggregate.

A waiter must never take such a task for a success: each of these ends in an error that says what happened.
A record that vanishes without anyone announcing it (Go's tools delete it, or a Go worker finishes it
without retention) cannot be told apart from a success, and still returns None.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from framework.broker.broker import RedisBroker
from framework.client.client import Client, TaskInfo
from framework.clock import SystemClock
from framework.errors import TaskAggregated, TaskCancelled, TaskDeleted, TaskFailed, TaskNotFound
from framework.inspector import Inspector
from framework.protocol.keys import Schema
from framework.task import TaskDef
from framework.worker.background.aggregator import Aggregator, GroupedTask
from framework.worker.worker import Worker


class Item(msgspec.Struct, frozen=True, kw_only=True):
    n: int = 0


class Batch(msgspec.Struct, frozen=True, kw_only=True):
    ns: list[int]


async def nothing(ctx: Any, item: Item) -> None:
    return None


ITEM = TaskDef("wd:item", Item, nothing)


@pytest.fixture
def inspector(redis: Any, schema: Schema) -> Inspector:
    """An inspector on this test's namespace (what the dashboard and the CLI delete with)."""
    return Inspector(redis, schema)


async def waiting(client: Client, info: TaskInfo, timeout: float = 10) -> asyncio.Future[Any]:
    """A waiter on ``info``, started and listening before this returns."""
    waiter = asyncio.ensure_future(client.wait(info, timeout=timeout))
    qk = client.schema.queue(info.queue)
    for _ in range(200):
        if await client.redis.exists(qk.waiting(info.id)) or waiter.done():
            break
        await asyncio.sleep(0.01)
    return waiter


@pytest.fixture
async def unpolled(redis: Any, schema: Schema, settings: Any) -> AsyncIterator[Client]:
    """A client without the slow poll: its waiters learn only what is announced."""
    made = Client(redis, schema=schema, settings=settings, poll_interval=None)
    yield made
    await made.waiters.close()
    made.broker.close()


async def test_deleting_a_waited_task_raises_task_deleted_in_its_waiter(
    unpolled: Client, inspector: Inspector, redis: Any, schema: Schema
) -> None:
    info = await unpolled.enqueue(ITEM, Item(), process_in=3600)
    waiter = await waiting(unpolled, info)
    await inspector.delete_task("default", info.id)
    with pytest.raises(TaskDeleted) as caught:
        await waiter  # announced: this client has no slow poll
    error = caught.value
    assert isinstance(error, TaskCancelled)  # it will not run, as a cancelled task
    assert (error.task_id, error.queue, error.archived, error.queue_removed) == (info.id, "default", False, False)
    assert info.id in str(error)
    assert "deleted" in str(error)
    assert not await redis.exists(schema.queue("default").waiting(info.id))  # the marker went with it


async def test_deleting_every_task_of_a_state_tells_each_waiter(client: Client, inspector: Inspector) -> None:
    pending = [await client.enqueue(ITEM, Item(n=i)) for i in range(3)]
    scheduled = await client.enqueue(ITEM, Item(), process_in=3600)
    waiters = [await waiting(client, info) for info in [*pending, scheduled]]
    assert await inspector.delete_all("default", "pending") == 3
    for waiter in waiters[:3]:
        with pytest.raises(TaskDeleted):
            await waiter
    assert not waiters[3].done()  # another state: untouched, still waited for
    assert await inspector.delete_all("default", "scheduled") == 1
    with pytest.raises(TaskDeleted):
        await waiters[3]


async def test_removing_a_queue_with_its_tasks_tells_their_waiters(client: Client, inspector: Inspector) -> None:
    info = await client.enqueue(ITEM, Item(), queue="doomed")
    later = await client.enqueue(ITEM, Item(), queue="doomed", process_in=3600)
    waiters = [await waiting(client, info), await waiting(client, later)]
    await inspector.delete_queue("doomed", force=True)
    for waiter, task in zip(waiters, (info, later), strict=True):
        with pytest.raises(TaskDeleted) as caught:
            await waiter
        assert caught.value.queue_removed
        assert (caught.value.task_id, caught.value.queue) == (task.id, "doomed")
        assert "queue 'doomed'" in str(caught.value)


async def test_a_task_enqueued_and_deleted_while_apply_waits_raises_task_deleted(
    client: Client, inspector: Inspector
) -> None:
    applying = asyncio.ensure_future(client.apply(ITEM, Item(), task_id="wd-apply", process_in=3600, wait_timeout=10))
    qk = client.schema.queue("default")
    for _ in range(200):
        if await client.redis.exists(qk.task("wd-apply")):
            break
        await asyncio.sleep(0.01)
    await inspector.delete_task("default", "wd-apply")
    with pytest.raises(TaskDeleted):
        await applying


async def test_a_grouped_task_merged_into_an_aggregate_raises_task_aggregated_naming_it(
    client: Client, settings: Any
) -> None:
    ran: list[Batch] = []

    async def handle(ctx: Any, batch: Batch) -> int:
        ran.append(batch)
        return sum(batch.ns)

    batch_task = TaskDef("wd:batch", Batch, handle, result=int, retention=60)

    def merge(group: str, tasks: list[GroupedTask]) -> tuple[TaskDef[Batch], Batch]:
        return batch_task, Batch(ns=[t.payload.n for t in tasks])

    infos = [await client.enqueue(ITEM, Item(n=n), group="g") for n in (1, 2)]
    waiters = [await waiting(client, info) for info in infos]
    worker = Worker(
        settings, tasks=[ITEM, batch_task], aggregators=[Aggregator(group="g", grace_period=0.3, aggregate=merge)]
    )
    await worker.start()
    try:
        errors = []
        for waiter, info in zip(waiters, infos, strict=True):
            with pytest.raises(TaskAggregated) as caught:
                await waiter
            errors.append(caught.value)
            assert (caught.value.task_id, caught.value.queue) == (info.id, "default")
            assert caught.value.aggregate_id in str(caught.value)
        assert errors[0].aggregate_id == errors[1].aggregate_id
        assert isinstance(errors[0], TaskNotFound)  # it is no longer a task of its own
        # the id named is the aggregate's: its outcome can be waited for
        assert await client.wait(errors[0].aggregate_id, timeout=10, taskdef=batch_task) == 3
    finally:
        await worker.stop()
    assert [sorted(b.ns) for b in ran] == [[1, 2]]  # tasks of the same second come in id order


async def test_a_task_deleted_unannounced_as_go_does_is_taken_for_done(client: Client, redis: Any) -> None:
    """Go's ``asynq task delete`` announces nothing: the record vanishing reads as a Go worker's done."""
    info = await client.enqueue(ITEM, Item())
    waiter = await waiting(client, info)
    qk = client.schema.queue("default")
    async with redis.pipeline(transaction=True) as pipe:  # asynq's deleteTaskCmd on a pending task
        pipe.lrem(qk.pending, 0, info.id)
        pipe.delete(qk.task(info.id))
        await pipe.execute()
    assert await waiter is None  # found by the slow poll, as a task done without retention


async def test_waiting_on_a_task_deleted_before_the_wait_began_finds_no_task(
    client: Client, inspector: Inspector
) -> None:
    info = await client.enqueue(ITEM, Item())
    await inspector.delete_task("default", info.id)
    with pytest.raises(TaskNotFound) as caught:
        await client.wait(info, timeout=5)
    assert not isinstance(caught.value, TaskAggregated)


async def test_an_announced_deletion_wins_over_the_slow_poll_finding_the_record_gone(
    redis: Any, schema: Schema, settings: Any, inspector: Inspector
) -> None:
    """The listener may still be reading older messages when the poll finds the record gone: it waits for them."""
    client = Client(redis, schema=schema, settings=settings, poll_interval=0.01)
    try:
        noisy = await client.enqueue(ITEM, Item(), process_in=3600)
        info = await client.enqueue(ITEM, Item(), process_in=3600)
        waiters = [await waiting(client, noisy), await waiting(client, info)]
        qk = schema.queue("default")
        backlog = "for i = 1, tonumber(ARGV[2]) do redis.call('PUBLISH', ARGV[1], 'done') end"
        await redis.eval(backlog, 0, qk.outcome_channel(noisy.id), 50_000)  # the listener has much to read
        await inspector.delete_task("default", info.id)  # announced behind that backlog
        assert await waiters[0] is None
        with pytest.raises(TaskDeleted):
            await waiters[1]
    finally:
        await client.waiters.close()
        client.broker.close()


async def test_deleting_an_aggregation_set_tells_only_its_waited_members(redis: Any) -> None:
    """In asynq's own namespace (our keys under ``framework:{q}:``), the broker's delete of an aggregated set
    tells the member that has a waiter, and no other."""
    qk = Schema().queue(f"wd-{uuid.uuid4().hex}")
    assert qk.xprefix == f"framework:{{{qk.name}}}:"
    set_key = qk.aggregation_set("g", "the-set")
    keys = [set_key, qk.aggregation_sets, qk.task("a"), qk.task("b"), qk.waiting("a"), qk.waited()]
    try:
        await redis.zadd(set_key, {"a": 1, "b": 1})
        await redis.zadd(qk.aggregation_sets, {set_key: 1})
        await redis.hset(qk.task("a"), "msg", b"x")
        await redis.hset(qk.task("b"), "msg", b"x")
        await redis.set(qk.waiting("a"), 1, ex=60)
        await redis.set(qk.waited(), 1, ex=60)
        pubsub = redis.pubsub()
        await pubsub.subscribe(qk.outcome_channel("a"), qk.outcome_channel("b"))
        try:
            broker = RedisBroker(redis, Schema(), SystemClock(), wakeup=False)
            assert await broker.delete_aggregation_set(qk.name, set_key) == 2
            heard = []
            for _ in range(50):
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
                if message is not None:
                    heard.append((message["channel"], message["data"]))
                elif heard:
                    break
        finally:
            await pubsub.aclose()
        assert heard == [(qk.outcome_channel("a").encode(), b"aggregated\nthe-set")]  # b has no waiter: nothing
        assert not await redis.exists(qk.waiting("a"))
    finally:
        await redis.delete(*keys)


async def test_a_task_archived_then_deleted_before_its_waiter_looks_is_still_a_failure(
    redis: Any, schema: Schema, unpolled: Client, inspector: Inspector
) -> None:
    """The "archived" announcement sends the waiter to the record for the error; deleted by then (by a person, or the
    archive's caps), the record is gone, which read as a success without a result: it is the failure announced."""
    noisy = await unpolled.enqueue(ITEM, Item(), process_in=3600)
    info = await unpolled.enqueue(ITEM, Item(), process_in=3600)
    waiters = [await waiting(unpolled, noisy), await waiting(unpolled, info)]
    qk = schema.queue("default")
    backlog = "for i = 1, tonumber(ARGV[2]) do redis.call('PUBLISH', ARGV[1], 'done') end"
    await redis.eval(backlog, 0, qk.outcome_channel(noisy.id), 50_000)  # the listener has much to read first
    await inspector.archive_task("default", info.id)  # announced behind that backlog
    await inspector.delete_task("default", info.id)  # gone before the listener gets to the announcement
    assert await waiters[0] is None
    with pytest.raises(TaskFailed, match="was archived: its record was deleted before its error could be read") as e:
        await waiters[1]
    assert e.value.archived
