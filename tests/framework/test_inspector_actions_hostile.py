"""The inspector's actions while workers, producers and waiters run, and on bad data (stale entries, odd names)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest
import redis as sync_redis

from framework.broker.broker import RedisBroker
from framework.broker.transitions import ARCHIVE_MAX_SIZE
from framework.client.client import Client
from framework.clock import SimulatedClock
from framework.errors import TaskDeleted, TaskFailed
from framework.inspector import Inspector, InvalidTaskState
from framework.protocol.message import encode_message, new_message

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from framework.protocol.keys import Schema

NOW = 1_800_000_000


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock(NOW)


@pytest.fixture
def inspector(redis: Redis, schema: Schema, clock: SimulatedClock) -> Inspector:
    return Inspector(redis, schema, clock=clock)


@pytest.fixture
def broker(redis: Redis, schema: Schema, clock: SimulatedClock) -> RedisBroker:
    return RedisBroker(redis, schema, clock, wakeup=False)


def _msg(queue: str, task_id: str) -> bytes:
    return encode_message(
        new_message(type="test:task", payload=b"{}", id=task_id, queue=queue, retry=25, timeout=1800, deadline=0)
    )


async def _enqueue(broker: RedisBroker, queue: str, task_id: str, **kw: Any) -> None:
    assert await broker.enqueue(queue, task_id, _msg(queue, task_id), **kw) == 1


async def _marked(redis: Redis, schema: Schema, queue: str, task_id: str) -> None:
    """Return once a waiter of ``task_id`` has set its waiting marker."""
    for _ in range(200):
        if await redis.exists(schema.queue(queue).waiting(task_id)):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the waiter never set its marker")


# -- waiters are told of an archive ---------------------------------------------------------------


async def test_archive_task_tells_its_waiters(
    inspector: Inspector, broker: RedisBroker, redis: Redis, schema: Schema
) -> None:
    await _enqueue(broker, "q", "a1")
    client = Client(redis, schema=schema, poll_interval=None)  # nothing but announcements
    try:
        waiter = asyncio.ensure_future(client.wait("a1", queue="q", timeout=2))
        await _marked(redis, schema, "q", "a1")
        await inspector.archive_task("q", "a1")
        with pytest.raises(TaskFailed) as failed:
            await waiter
        assert failed.value.archived is True
    finally:
        await client.waiters.close()


async def test_archive_past_the_cap_does_not_pass_for_success(
    inspector: Inspector, broker: RedisBroker, redis: Redis, schema: Schema, client: Client
) -> None:
    """A task the archive's caps drop as it is archived is gone at once: its waiters learn it will not run.

    The archive is full of tasks archived in the same second with greater ids, so the tasks archived now are
    the first the caps drop.
    """
    qk = schema.queue("q")
    for task_id in ("a1", "b1", "b2", "k1"):
        await _enqueue(broker, "q", task_id)
    await redis.zadd(qk.archived, {f"x{i:05d}": NOW for i in range(ARCHIVE_MAX_SIZE - 1)})
    await redis.zadd(qk.archived, {"a0": NOW - 1})
    waiters = {t: asyncio.ensure_future(client.wait(t, queue="q", timeout=2)) for t in ("a1", "b1", "b2", "k1")}
    for task_id in waiters:
        await _marked(redis, schema, "q", task_id)
    await inspector.archive_task("q", "k1")  # the archive is full: the oldest entry, a0, is dropped
    await inspector.archive_task("q", "a1")  # dropped at once: same second, the lowest id
    assert await inspector.archive_all("q", "pending") == 2  # both dropped at once
    assert await redis.zcard(qk.archived) == ARCHIVE_MAX_SIZE
    assert await redis.zscore(qk.archived, "k1") == NOW
    with pytest.raises(TaskFailed):
        await waiters["k1"]
    for task_id in ("a1", "b1", "b2"):
        assert not await redis.exists(qk.task(task_id))
        with pytest.raises(TaskDeleted):
            await waiters[task_id]


# -- index entries that disagree with the task record ----------------------------------------------


async def _active_with_stale_entries(broker: RedisBroker, redis: Redis, schema: Schema) -> None:
    """Task "a1" is active (a worker runs it), and also listed, wrongly, as scheduled, retry and completed."""
    qk = schema.queue("q")
    await _enqueue(broker, "q", "a1")
    assert len(await broker.dequeue("q", 1)) == 1
    for key in (qk.scheduled, qk.retry, qk.completed):
        await redis.zadd(key, {"a1": NOW - 5})
    await _enqueue(broker, "q", "s1", process_at=NOW + 60)


async def test_run_all_does_not_run_an_active_task_again(
    inspector: Inspector, broker: RedisBroker, redis: Redis, schema: Schema
) -> None:
    qk = schema.queue("q")
    await _active_with_stale_entries(broker, redis, schema)
    assert await inspector.run_all("q", "scheduled") == 1
    assert await inspector.run_all("q", "retry") == 0
    assert await redis.lrange(qk.pending, 0, -1) == [b"s1"]
    assert await redis.hget(qk.task("a1"), "state") == b"active"
    assert await redis.zcard(qk.scheduled) == 0  # the stale entries are dropped
    assert await redis.zcard(qk.retry) == 0


async def test_archive_all_and_delete_all_leave_an_active_task_alone(
    inspector: Inspector, broker: RedisBroker, redis: Redis, schema: Schema
) -> None:
    qk = schema.queue("q")
    await _active_with_stale_entries(broker, redis, schema)
    assert await inspector.archive_all("q", "scheduled") == 1
    assert await inspector.delete_all("q", "retry") == 0
    assert await inspector.delete_all("q", "archived") == 1
    assert await redis.hget(qk.task("a1"), "state") == b"active"
    assert await redis.lrange(qk.active, 0, -1) == [b"a1"]
    assert await redis.zcard(qk.archived) == 0


async def test_expired_completed_entry_of_a_live_task_keeps_the_task(
    broker: RedisBroker, redis: Redis, schema: Schema
) -> None:
    qk = schema.queue("q")
    await _active_with_stale_entries(broker, redis, schema)
    assert await broker.delete_expired_completed("q") == 1
    assert await redis.zcard(qk.completed) == 0
    assert await redis.hget(qk.task("a1"), "state") == b"active"


# -- tasks that arrive while a bulk action runs ----------------------------------------------------


@pytest.mark.parametrize("action", ["delete", "archive"])
async def test_bulk_pending_spares_tasks_enqueued_after_the_count(
    inspector: Inspector, broker: RedisBroker, redis: Redis, schema: Schema, redis_url: str, action: str
) -> None:
    """Workers take the oldest pending tasks while producers add new ones: the action stops at the tasks it counted.

    After each batch (the progress callback), a worker takes 1,000 of the oldest tasks and a producer adds
    1,000 new ones; the count said 2,500.
    """
    qk = schema.queue("q")
    calls = [broker.prepare_enqueue("q", f"old{i:04d}", _msg("q", f"old{i:04d}")) for i in range(2500)]
    assert set(await broker.enqueue_many(calls, ["q"])) == {1}
    side = sync_redis.Redis.from_url(redis_url)
    added = 0

    def meanwhile(done: int, total: int) -> None:
        nonlocal added
        if done == 0:
            return
        with side.pipeline(transaction=False) as pipe:
            for _ in range(1000):
                pipe.rpoplpush(qk.pending, qk.active)  # what a dequeue takes: the oldest
            taken = [t for t in pipe.execute() if t]
            for task_id in taken:
                pipe.hset(qk.task(task_id.decode()), "state", "active")
            for i in range(added, added + 1000):
                pipe.hset(qk.task(f"new{i:04d}"), mapping={"msg": _msg("q", f"new{i:04d}"), "state": "pending"})
                pipe.lpush(qk.pending, f"new{i:04d}")
            pipe.execute()
        added += 1000

    try:
        bulk = inspector.delete_all if action == "delete" else inspector.archive_all
        assert await bulk("q", "pending", progress=meanwhile) == 1500  # 1,000 old ones ran meanwhile
    finally:
        side.close()
    left = [t.decode() for t in await redis.lrange(qk.pending, 0, -1)]
    assert left and all(t.startswith("new") for t in left)
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(added):
            pipe.hget(qk.task(f"new{i:04d}"), "state")
        states = set(await pipe.execute())
    assert states == {b"pending", b"active"}  # every task added after the count is pending, or a worker took it


# -- a task being merged into an aggregate task ---------------------------------------------------


async def test_run_archive_or_delete_of_a_task_being_aggregated_says_so(
    inspector: Inspector, broker: RedisBroker, redis: Redis, schema: Schema
) -> None:
    """A task staged for its group's aggregate is not in its group any more: it was reported as not existing.

    Deleting it deleted its record while the aggregator may have read its payload already: its waiter was told it
    would not run, and it ran in the aggregate. It is refused, as running and archiving it are.
    """
    for task_id in ("g1", "g2"):
        await _enqueue(broker, "q", task_id, group="g")
    assert await broker.aggregation_check("q", "g", "set1", max_size=2, max_delay=0, grace_period=0) is not None
    for action in (inspector.run_task, inspector.archive_task, inspector.delete_task):
        with pytest.raises(InvalidTaskState, match="being merged into an aggregate task"):
            await action("q", "g1")
    assert await redis.hget(schema.queue("q").task("g1"), "state") == b"aggregating"
    await _enqueue(broker, "q", "g3", group="g")  # a task of the group not staged yet is deleted as before
    await inspector.delete_task("q", "g3")
    assert not await redis.exists(schema.queue("q").task("g3"))


# -- uniqueness locks --------------------------------------------------------------------------------


async def test_a_task_the_archive_caps_drop_releases_its_unique_lock(
    inspector: Inspector, broker: RedisBroker, redis: Redis, schema: Schema
) -> None:
    """A unique task keeps its lock while archived; once the caps delete its record, the lock held nothing."""
    qk = schema.queue("q")
    locks = {t: qk.unique(f"test:{t}", b"{}") for t in ("u1", "u2", "u3")}
    for task_id, lock in locks.items():
        await _enqueue(broker, "q", task_id, unique_key=lock, unique_ttl=3600)
    await redis.zadd(qk.archived, {f"x{i:05d}": NOW for i in range(ARCHIVE_MAX_SIZE - 1)})
    await inspector.archive_task("q", "u3")  # kept: the archive was not full yet
    await inspector.archive_task("q", "u1")  # dropped at once: same second, the lowest id
    assert await inspector.archive_all("q", "pending") == 1  # u2, dropped at once too
    assert await redis.get(locks["u3"]) == b"u3"
    assert not await redis.exists(locks["u1"], locks["u2"])


async def test_a_failed_task_the_worker_archives_past_the_cap_leaves_no_record_and_no_lock(
    broker: RedisBroker, redis: Redis, schema: Schema, client: Client
) -> None:
    """The worker's own archive wrote the task's record after trimming the archive: a task the caps dropped at
    once stayed as an archived record in no set (listed nowhere, never expiring), with its lock, and its waiter
    was told "archived"."""
    qk = schema.queue("q")
    lock = qk.unique("test:w1", b"{}")
    await _enqueue(broker, "q", "w1", unique_key=lock, unique_ttl=3600)
    await redis.zadd(qk.archived, {f"x{i:05d}": NOW for i in range(ARCHIVE_MAX_SIZE)})
    waiter = asyncio.ensure_future(client.wait("w1", queue="q", timeout=2))
    await _marked(redis, schema, "q", "w1")
    assert [t for t, _ in await broker.dequeue("q", 1)] == ["w1"]
    assert await broker.archive("q", "w1", _msg("q", "w1")) == 1  # retries exhausted: dropped at once
    assert not await redis.exists(qk.task("w1"))
    assert not await redis.exists(lock)
    with pytest.raises(TaskDeleted):
        await waiter


# -- names that are not UTF-8 ----------------------------------------------------------------------


async def test_bulk_actions_reach_a_group_whose_name_is_not_utf8(
    inspector: Inspector, broker: RedisBroker, redis: Redis, schema: Schema
) -> None:
    """Go may write any bytes in a group name: the group's key was rebuilt from the decoded name, and missed."""
    qk = schema.queue("q")
    await _enqueue(broker, "q", "ok1", group="ok")
    group_key = qk.group_prefix().encode() + b"bad\xff"
    for task_id in ("b1", "b2"):
        await redis.hset(qk.task(task_id), mapping={"msg": _msg("q", task_id), "state": "aggregating"})
        await redis.zadd(group_key, {task_id: NOW - 5})
    await redis.sadd(qk.groups, b"bad\xff")
    assert await inspector.run_all("q", "aggregating") == 3
    assert sorted(await redis.lrange(qk.pending, 0, -1)) == [b"b1", b"b2", b"ok1"]
    assert not await redis.exists(group_key)
    assert await redis.smembers(qk.groups) == set()


async def test_a_pending_id_that_is_not_utf8_bounds_the_bulk_action_as_stored(
    inspector: Inspector, broker: RedisBroker, redis: Redis, schema: Schema
) -> None:
    qk = schema.queue("q")
    await _enqueue(broker, "q", "p1")
    odd = b"odd\xfe"
    await redis.hset(qk.task_prefix.encode() + odd, mapping={"msg": _msg("q", "odd"), "state": "pending"})
    await redis.lpush(qk.pending, odd)  # the newest
    assert await inspector.delete_all("q", "pending") == 2
    assert await redis.llen(qk.pending) == 0
