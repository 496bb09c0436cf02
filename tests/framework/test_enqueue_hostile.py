"""Enqueue under hostile input and faults: options asynq cannot carry, and calls Redis refuses.

Against real servers: the session's Valkey, and a private one for a server out of memory. Every path is
run where they differ: the prepared fast path (a ``TaskDef`` with its defaults), the general one (any
option, or a type string), the bulk path of ``enqueue_many`` and the ``SyncClient``'s blocking one.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from framework.client.client import Client, TaskCall, TaskInfo
from framework.client.sync import SyncClient
from framework.clock import SimulatedClock
from framework.embedded.process import start_test_server
from framework.errors import EnqueueFailed, InvalidOption
from framework.protocol.message import decode_message
from framework.task import TaskDef
from framework.transport.connection import open_redis

if TYPE_CHECKING:
    from pathlib import Path

    from redis.asyncio import Redis

    from framework.protocol.keys import Schema


class Item(msgspec.Struct, frozen=True):
    n: int = 0


async def _noop(ctx: Any, payload: Any) -> None:
    return None


ITEM = TaskDef("hostile:item", Item, _noop)
GO_LONGEST = (2**63 - 1) // 10**9
"""Go's longest ``time.Duration`` in whole seconds: asynq reads timeout and retention as such durations."""


async def _task_keys(redis: Redis, schema: Schema) -> list[bytes]:
    return [k async for k in redis.scan_iter(match=f"{schema.ns}:*:t:*")]


async def _stored(redis: Redis, schema: Schema, info: TaskInfo) -> Any:
    return decode_message(await redis.hget(schema.queue(info.queue).task(info.id), "msg"))


async def test_a_deadline_after_the_year_9999_is_refused_and_nothing_is_stored(
    client: Client, redis: Redis, schema: Schema
) -> None:
    """A deadline past 9999-12-31 was stored, and the inspector could not read the task back (no datetime)."""
    for deadline in (2**61, 253_402_300_800):
        with pytest.raises(InvalidOption, match="after the year 9999"):
            await client.enqueue("hostile:raw", b"x", deadline=deadline)
    assert await _task_keys(redis, schema) == []
    for last in (253_402_300_799, datetime(9999, 12, 31, 23, 59, 59, 500_000, UTC)):
        info = await client.enqueue("hostile:raw", b"x", deadline=last)
        assert (await _stored(redis, schema, info)).deadline == 253_402_300_799


async def test_a_deadline_within_the_second_is_refused_as_past(redis: Redis, schema: Schema) -> None:
    """asynq stores the deadline in whole seconds, rounded down: one less than a second away was stored in the past.

    Every worker then fails the task at once, on every try, and the check that refuses a past deadline said
    nothing.
    """
    clock = SimulatedClock(1_800_000_000.25)
    client = Client(redis, schema=schema, clock=clock)
    try:
        with pytest.raises(InvalidOption, match="in the past"):
            await client.enqueue("hostile:raw", b"x", deadline=1_800_000_000.75)
        assert await _task_keys(redis, schema) == []
        info = await client.enqueue("hostile:raw", b"x", deadline=1_800_000_001.5)
        assert info.deadline == 1_800_000_001 > clock.now()
        assert (await _stored(redis, schema, info)).deadline == 1_800_000_001
    finally:
        await client.waiters.close()
        client.broker.close()


async def test_a_timeout_or_retention_go_cannot_hold_is_stored_as_the_longest_it_can(
    client: Client, redis: Redis, schema: Schema
) -> None:
    """A timeout or retention past Go's longest duration (about 292 years) is stored as that longest one.

    asynq computes ``time.Duration(timeout) * time.Second``: 10**10 s overflows to a negative duration, so a
    Go worker gave the task a deadline in the past and failed it at once on every try; 2**62 s wrapped to 0.
    A retention that large made the completed set's score ``now + retention`` one Redis writes in exponent
    notation (``4.6e+18``), which asynq's inspector cannot parse as the integer it expects.
    """
    huge = TaskDef("hostile:huge", Item, _noop, timeout=2**62, retention=10**12)
    infos = [
        await client.enqueue("hostile:raw", b"x", timeout=10**10, retention=2**62),
        await client.enqueue(ITEM, Item(), timeout=2**62, retention=1e16),
        await client.enqueue(huge, Item()),  # the task type's defaults, on the fast path
    ]
    batch = await client.enqueue_many([TaskCall(ITEM, Item(), {"timeout": 10**11, "retention": 10**11})])
    assert all(isinstance(i, TaskInfo) for i in batch)
    infos += [i for i in batch if isinstance(i, TaskInfo)]
    for info in infos:
        msg = await _stored(redis, schema, info)
        assert (msg.timeout, msg.retention) == (GO_LONGEST, GO_LONGEST) == (info.timeout, info.retention)
        assert msg.timeout * 10**9 <= 2**63 - 1
    kept = await client.enqueue("hostile:raw", b"x", timeout=GO_LONGEST - 1, retention=3600.5)
    assert ((await _stored(redis, schema, kept)).timeout, kept.retention) == (GO_LONGEST - 1, 3601)


@pytest.mark.parametrize("group", [" ", "\t\n", "\u3000"])
async def test_a_blank_group_is_refused_as_asynq_refuses_it(
    client: Client, redis: Redis, schema: Schema, group: str
) -> None:
    """A group of blanks was stored as a group of that name (asynq's ``Group`` refuses it); ``""`` means none."""
    with pytest.raises(InvalidOption, match="must not be blank"):
        await client.enqueue("hostile:raw", b"x", group=group)
    assert await _task_keys(redis, schema) == []
    assert (await client.enqueue("hostile:raw", b"x", group="")).state == "pending"


async def test_a_call_redis_refuses_is_enqueue_failed_on_every_path(
    client: Client, redis: Redis, schema: Schema, redis_url: str
) -> None:
    """An error reply to one enqueue (here a pending list that is a string) was a bare redis-py ``ResponseError``.

    ``enqueue_many`` already reported it as the task's :class:`EnqueueFailed`; ``enqueue`` raised the redis-py
    error on the fast, general and blocking paths alike, which a caller catching ``FrameworkError`` missed.
    """
    await client.enqueue(ITEM, Item())  # the queue is registered, the fast path prepared
    pending = schema.queue("default").pending
    await redis.delete(pending)
    await redis.set(pending, "not a list")
    for call in (
        lambda: client.enqueue(ITEM, Item()),
        lambda: client.enqueue("hostile:raw", b"x"),
        lambda: client.enqueue("hostile:raw", b"x", unique=60),
    ):
        with pytest.raises(EnqueueFailed, match="WRONGTYPE") as err:
            await call()
        assert "enqueue of task" in str(err.value)
    with SyncClient(redis_url, schema=schema) as sync:
        for sync_call in (lambda: sync.enqueue(ITEM, Item()), lambda: sync.enqueue("hostile:raw", b"x")):
            with pytest.raises(EnqueueFailed, match="WRONGTYPE"):
                sync_call()
    assert await redis.get(pending) == b"not a list"


async def test_a_refused_enqueue_leaves_no_task_and_no_lock_behind(
    client: Client, redis: Redis, schema: Schema
) -> None:
    """A refused enqueue is not stored: no task hash, no uniqueness lock, and its id can be used again.

    The scripts wrote the task hash before the push Redis refused (scripts are not rolled back), so the task
    reported as failed was left as a hash in no list: a hidden task, whose id then read as taken
    (``TaskIdConflict``) and whose uniqueness lock refused its own retry as a duplicate for the lock's TTL.
    """
    qk = schema.queue("default")
    await redis.set(qk.pending, "not a list")
    await redis.set(qk.scheduled, "not a zset")
    calls: list[tuple[str, dict[str, Any]]] = [
        ("a", {}),
        ("b", {"unique": 600}),
        ("c", {"process_in": 600}),
        ("d", {"process_in": 600, "unique": 600}),
    ]
    for task_id, options in calls:
        with pytest.raises(EnqueueFailed):
            await client.enqueue("hostile:raw", task_id.encode(), task_id=task_id, **options)
    many = await client.enqueue_many([TaskCall("hostile:raw", b"m", {"task_id": f"m{k}"}) for k in range(3)])
    bulk = await client.enqueue_many([TaskCall(ITEM, Item(n=k)) for k in range(3)])
    assert all(isinstance(r, EnqueueFailed) for r in [*many, *bulk])
    assert await _task_keys(redis, schema) == []
    assert [k async for k in redis.scan_iter(match=f"{schema.ns}:*:unique:*")] == []

    await redis.delete(qk.pending, qk.scheduled)
    for task_id, options in calls:
        info = await client.enqueue("hostile:raw", task_id.encode(), task_id=task_id, **options)
        assert info.id == task_id
    again = await client.enqueue_many([TaskCall("hostile:raw", b"m", {"task_id": f"m{k}"}) for k in range(3)])
    assert [i.id for i in again if isinstance(i, TaskInfo)] == ["m0", "m1", "m2"]


@pytest.mark.parametrize("unique", [0, 600])
async def test_a_refused_group_enqueue_leaves_no_task_and_no_lock_behind(
    client: Client, redis: Redis, schema: Schema, unique: int
) -> None:
    """The same for a grouped task: the task hash and the group's entry were written before the groups set
    Redis refused, so a task was left aggregating in a group no aggregator lists."""
    qk = schema.queue("default")
    await redis.set(qk.groups, "not a set")
    with pytest.raises(EnqueueFailed):
        await client.enqueue("hostile:raw", b"g", task_id="g1", group="daily", unique=unique)
    assert await _task_keys(redis, schema) == []
    assert not await redis.exists(qk.group("daily"))
    assert [k async for k in redis.scan_iter(match=f"{schema.ns}:*:unique:*")] == []
    await redis.delete(qk.groups)
    info = await client.enqueue("hostile:raw", b"g", task_id="g1", group="daily", unique=unique)
    assert info.id == "g1"
    assert await redis.smembers(qk.groups) == {b"daily"}


async def test_a_server_out_of_memory_fails_each_task_and_raises_no_redis_error(tmp_path: Path, schema: Schema) -> None:
    """Out of memory, Redis refuses registering the queue: each path reports :class:`EnqueueFailed`.

    The refusal came before any script ran (``SADD`` of the queue), and every path let redis-py's
    ``OutOfMemoryError`` out, ``enqueue_many`` too, whose refused tasks are each an ``EnqueueFailed``.
    """
    server = start_test_server(tmp_path / "oom")
    admin = open_redis(server.url)
    client = Client.from_url(server.url, schema=schema)
    try:
        await admin.config_set("maxmemory", "1")
        await admin.config_set("maxmemory-policy", "noeviction")
        for call in (lambda: client.enqueue(ITEM, Item()), lambda: client.enqueue("hostile:raw", b"x")):
            with pytest.raises(EnqueueFailed, match="maxmemory"):
                await call()
        for batch in ([TaskCall(ITEM, Item(n=k)) for k in range(3)], [TaskCall("hostile:raw", b"x")] * 3):
            results = await client.enqueue_many(batch)
            assert len(results) == 3
            assert all(isinstance(r, EnqueueFailed) and "maxmemory" in str(r) for r in results), results
        await admin.config_set("maxmemory", "0")
        assert isinstance(await client.enqueue(ITEM, Item()), TaskInfo)
    finally:
        await client.close()
        await admin.aclose()
        await asyncio.to_thread(server.stop)


async def test_a_zero_timedelta_means_not_unique_as_zero_seconds_does(
    client: Client, redis: Redis, schema: Schema
) -> None:
    """``unique=timedelta(0)`` was refused ("at least 1 second"), while ``unique=0`` means not unique."""
    for _ in range(2):  # not unique: the same task twice is stored twice
        await client.enqueue("hostile:raw", b"x", unique=timedelta(0))
    assert await redis.llen(schema.queue("default").pending) == 2
    assert [k async for k in redis.scan_iter(match=f"{schema.ns}:*:unique:*")] == []
    with pytest.raises(InvalidOption, match="must not be negative"):
        await client.enqueue("hostile:raw", b"x", unique=timedelta(microseconds=-1))


async def test_the_lock_of_a_scheduled_unique_task_lasts_until_it_is_ready_and_then_its_ttl(
    redis: Redis, schema: Schema
) -> None:
    """The wait before a scheduled task was rounded down: its lock expired up to a second before ready + TTL."""
    client = Client(redis, schema=schema, clock=SimulatedClock(1_800_000_000.5))
    try:
        await client.enqueue("hostile:raw", b"x", unique=60, process_at=1_800_000_010)
        lock = schema.queue("default").unique("hostile:raw", b"x")
        assert await redis.pttl(lock) > 69_500  # ready in 9.5 s, then held 60 s
    finally:
        await client.waiters.close()
        client.broker.close()
