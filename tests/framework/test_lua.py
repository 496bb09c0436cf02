"""Every state transition is one Lua script: seed exact Redis state, act, assert the exact result.

Each case writes the keys a transition reads (through :mod:`framework.protocol.keys`), calls the broker method
(or the script itself through :data:`framework.protocol.scripts.SCRIPTS` where small caps make a case cheap),
and compares a snapshot of the **whole** test namespace with the expected keys, types and values, so
a script that writes anything else fails too. The expectations are those of the wire contract
(asynq-wire.md §1 and §3).
"""

from __future__ import annotations

import random
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import framework
from framework.broker.base import LEASE_SECONDS
from framework.broker.broker import RedisBroker
from framework.broker.transitions import ARCHIVE_MAX_AGE, ARCHIVE_MAX_SIZE, MINUTE_TTL
from framework.clock import SimulatedClock
from framework.protocol import scripts as scripts_module
from framework.protocol.keys import day_stamp
from framework.protocol.scripts import SCRIPTS

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from framework.protocol.keys import QueueKeys, Schema

Q = "q"
DAY = 24 * 3600
MAX_INT64 = 9_223_372_036_854_775_807

Snapshot = dict[str, Any]


# --- helpers ----------------------------------------------------------------------------------------------


async def snapshot(redis: Redis, ns: str) -> Snapshot:
    """Every key of the namespace: str -> bytes, list -> [str], set -> {str}, zset -> [(str, score)], hash."""
    out: Snapshot = {}
    async for raw in redis.scan_iter(match=f"{ns}:*", count=1000):
        key = raw.decode()
        kind = (await redis.type(raw)).decode()
        if kind == "string":
            out[key] = await redis.get(raw)
        elif kind == "list":
            out[key] = [v.decode() for v in await redis.lrange(raw, 0, -1)]
        elif kind == "set":
            out[key] = {v.decode() for v in await redis.smembers(raw)}
        elif kind == "zset":
            out[key] = [(m.decode(), s) for m, s in await redis.zrange(raw, 0, -1, withscores=True)]
        elif kind == "hash":
            out[key] = {f.decode(): v for f, v in (await redis.hgetall(raw)).items()}
        else:  # pragma: no cover - no script writes other types
            raise AssertionError(f"unexpected {kind} key {key}")
    return out


def msg(task_id: str) -> bytes:
    """An opaque stand-in for an encoded TaskMessage: the scripts never look inside ``msg``."""
    return f"msg-{task_id}\x00\xff".encode("latin-1")


async def seed_task(redis: Redis, qk: QueueKeys, task_id: str, state: str, **fields: str | bytes) -> None:
    await redis.hset(qk.task(task_id), mapping={"msg": msg(task_id), "state": state, **fields})


async def seed_active(redis: Redis, qk: QueueKeys, task_id: str, lease: int, **fields: str | bytes) -> None:
    await seed_task(redis, qk, task_id, "active", **fields)
    await redis.lpush(qk.active, task_id)
    await redis.zadd(qk.lease, {task_id: lease})


def stat_keys(qk: QueueKeys, now: int, kind: str, value: int) -> Snapshot:
    """The three counters one stats(kind) bump writes: all-time total, UTC day, our per-minute counter."""
    total = qk.processed if kind == "processed" else qk.failed
    day = qk.processed_day(day_stamp(now)) if kind == "processed" else qk.failed_day(day_stamp(now))
    return {total: str(value).encode(), day: str(value).encode(), qk.minute_stats(kind, now // 60): str(value).encode()}


async def assert_stat_expiry(redis: Redis, qk: QueueKeys, now: int, kind: str) -> None:
    """The daily counter expires at now + 90 d (EXPIREAT); the per-minute one after MINUTE_TTL; totals never."""
    total = qk.processed if kind == "processed" else qk.failed
    day = qk.processed_day(day_stamp(now)) if kind == "processed" else qk.failed_day(day_stamp(now))
    assert await redis.expiretime(day) == now + 90 * DAY
    assert MINUTE_TTL - 2 <= await redis.ttl(qk.minute_stats(kind, now // 60)) <= MINUTE_TTL
    assert await redis.ttl(total) == -1


@pytest.fixture
def clock() -> SimulatedClock:
    # whole seconds near the real time: daily counters use EXPIREAT, which Redis reads against its clock
    return SimulatedClock(float(int(time.time())))


@pytest.fixture
def now(clock: SimulatedClock) -> int:
    return int(clock.now())


@pytest.fixture
def broker(redis: Redis, schema: Schema, clock: SimulatedClock) -> RedisBroker:
    return RedisBroker(redis, schema, clock)


@pytest.fixture
def qk(schema: Schema) -> QueueKeys:
    return schema.queue(Q)


# --- enqueue / enqueue_unique ----------------------------------------------------------------------------


async def test_enqueue(broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys, now: int) -> None:
    assert await broker.enqueue(Q, "t1", msg("t1")) == 1
    assert await broker.enqueue(Q, "t2", msg("t2")) == 1
    now_ns = str(now * 1_000_000_000).encode()
    assert await snapshot(redis, schema.ns) == {
        schema.all_queues: {Q},
        qk.pending: ["t2", "t1"],  # LPUSH: the oldest is on the right, where consumers pop
        qk.task("t1"): {"msg": msg("t1"), "state": b"pending", "pending_since": now_ns},
        qk.task("t2"): {"msg": msg("t2"), "state": b"pending", "pending_since": now_ns},
    }


async def test_enqueue_id_conflict_changes_nothing(
    broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys
) -> None:
    await seed_task(redis, qk, "t1", "scheduled")
    await redis.zadd(qk.scheduled, {"t1": 5})
    before = await snapshot(redis, schema.ns)
    assert await broker.enqueue(Q, "t1", b"other") == 0
    after = await snapshot(redis, schema.ns)
    assert after.pop(schema.all_queues) == {Q}
    assert after == before


async def test_enqueue_publishes_a_wakeup_only_when_the_queue_was_empty(broker: RedisBroker, redis: Redis) -> None:
    pubsub = redis.pubsub()
    await pubsub.subscribe(broker.schema.wakeup_channel)
    try:
        assert (await pubsub.get_message(timeout=1))["type"] == "subscribe"  # type: ignore[index]
        await broker.enqueue(Q, "t1", msg("t1"))
        await broker.enqueue(Q, "t2", msg("t2"))
        first = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
        assert first is not None
        assert first["data"] == Q.encode()
        assert await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2) is None
    finally:
        await pubsub.aclose()


async def test_enqueue_unique(broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys, now: int) -> None:
    lock = qk.unique("email:send", b"p")
    assert await broker.enqueue(Q, "t1", msg("t1"), unique_key=lock, unique_ttl=60) == 1
    assert await snapshot(redis, schema.ns) == {
        schema.all_queues: {Q},
        qk.pending: ["t1"],
        lock: b"t1",
        qk.task("t1"): {
            "msg": msg("t1"),
            "state": b"pending",
            "pending_since": str(now * 1_000_000_000).encode(),
            "unique_key": lock.encode(),
        },
    }
    assert 58 <= await redis.ttl(lock) <= 60


async def test_enqueue_unique_duplicate_changes_nothing(
    broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys
) -> None:
    lock = qk.unique("email:send", b"p")
    await broker.enqueue(Q, "t1", msg("t1"), unique_key=lock, unique_ttl=60)
    before = await snapshot(redis, schema.ns)
    assert await broker.enqueue(Q, "t2", msg("t2"), unique_key=lock, unique_ttl=60) == -1
    assert await snapshot(redis, schema.ns) == before


async def test_enqueue_unique_id_conflict_does_not_take_the_lock(
    broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys
) -> None:
    await seed_task(redis, qk, "t1", "pending")
    lock = qk.unique("email:send", b"p")
    assert await broker.enqueue(Q, "t1", msg("new"), unique_key=lock, unique_ttl=60) == 0
    assert await snapshot(redis, schema.ns) == {
        schema.all_queues: {Q},
        qk.task("t1"): {"msg": msg("t1"), "state": b"pending"},
    }


# --- schedule / schedule_unique -----------------------------------------------------------------------


async def test_schedule(broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys, now: int) -> None:
    assert await broker.enqueue(Q, "t1", msg("t1"), process_at=now + 100) == 1
    assert await snapshot(redis, schema.ns) == {
        schema.all_queues: {Q},
        qk.scheduled: [("t1", now + 100)],
        qk.task("t1"): {"msg": msg("t1"), "state": b"scheduled"},  # no pending_since
    }
    assert await broker.enqueue(Q, "t1", msg("again"), process_at=now + 5) == 0
    assert (await snapshot(redis, schema.ns))[qk.scheduled] == [("t1", now + 100)]


async def test_schedule_unique(broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys, now: int) -> None:
    lock = qk.unique("report", b"x")
    assert await broker.enqueue(Q, "t1", msg("t1"), process_at=now + 100, unique_key=lock, unique_ttl=160) == 1
    expected = {
        schema.all_queues: {Q},
        qk.scheduled: [("t1", now + 100)],
        lock: b"t1",
        qk.task("t1"): {"msg": msg("t1"), "state": b"scheduled", "unique_key": lock.encode()},
    }
    assert await snapshot(redis, schema.ns) == expected
    assert 158 <= await redis.ttl(lock) <= 160
    # a duplicate changes nothing
    assert await broker.enqueue(Q, "t2", msg("t2"), process_at=now + 1, unique_key=lock, unique_ttl=9) == -1
    assert await snapshot(redis, schema.ns) == expected
    # an id conflict leaves no lock behind
    await redis.delete(lock)
    assert await broker.enqueue(Q, "t1", msg("t1"), process_at=now + 1, unique_key=lock, unique_ttl=9) == 0
    del expected[lock]
    assert await snapshot(redis, schema.ns) == expected


async def test_schedule_in_a_group_joins_the_group_when_due(
    broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys, clock: SimulatedClock, now: int
) -> None:
    assert await broker.enqueue(Q, "t1", msg("t1"), process_at=now + 10, group="g1") == 1
    assert await snapshot(redis, schema.ns) == {
        schema.all_queues: {Q},
        qk.scheduled: [("t1", now + 10)],
        qk.task("t1"): {"msg": msg("t1"), "state": b"scheduled", "group": b"g1"},
    }
    clock.advance(10)
    assert await broker.forward(Q) == (1, None)
    assert await snapshot(redis, schema.ns) == {
        schema.all_queues: {Q},
        qk.group("g1"): [("t1", now + 10)],
        qk.groups: {"g1"},
        qk.task("t1"): {"msg": msg("t1"), "state": b"aggregating", "group": b"g1"},
    }


# --- add_to_group / add_to_group_unique ----------------------------------------------------------------


async def test_add_to_group(broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys, now: int) -> None:
    assert await broker.enqueue(Q, "t1", msg("t1"), group="g1") == 1
    expected = {
        schema.all_queues: {Q},
        qk.group("g1"): [("t1", now)],
        qk.groups: {"g1"},
        qk.task("t1"): {"msg": msg("t1"), "state": b"aggregating", "group": b"g1"},
    }
    assert await snapshot(redis, schema.ns) == expected
    assert await broker.enqueue(Q, "t1", msg("again"), group="g2") == 0
    assert await snapshot(redis, schema.ns) == expected


async def test_add_to_group_unique(broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys, now: int) -> None:
    lock = qk.unique("notify", b"n")
    assert await broker.enqueue(Q, "t1", msg("t1"), group="g1", unique_key=lock, unique_ttl=30) == 1
    expected = {
        schema.all_queues: {Q},
        qk.group("g1"): [("t1", now)],
        qk.groups: {"g1"},
        lock: b"t1",
        qk.task("t1"): {"msg": msg("t1"), "state": b"aggregating", "group": b"g1", "unique_key": lock.encode()},
    }
    assert await snapshot(redis, schema.ns) == expected
    assert 28 <= await redis.ttl(lock) <= 30
    assert await broker.enqueue(Q, "t2", msg("t2"), group="g1", unique_key=lock, unique_ttl=30) == -1
    assert await snapshot(redis, schema.ns) == expected
    await redis.delete(lock)
    assert await broker.enqueue(Q, "t1", msg("t1"), group="g1", unique_key=lock, unique_ttl=30) == 0
    del expected[lock]
    assert await snapshot(redis, schema.ns) == expected


# --- dequeue --------------------------------------------------------------------------------------------


async def test_dequeue_batch_is_fifo_and_leases(
    broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys, now: int
) -> None:
    for task_id in ("a", "b", "c"):
        await broker.enqueue(Q, task_id, msg(task_id))
    taken = await broker.dequeue(Q, 2)
    assert taken == [("a", msg("a")), ("b", msg("b"))]
    assert await snapshot(redis, schema.ns) == {
        schema.all_queues: {Q},
        qk.pending: ["c"],
        qk.active: ["b", "a"],
        qk.lease: [("a", now + LEASE_SECONDS), ("b", now + LEASE_SECONDS)],
        qk.task("a"): {"msg": msg("a"), "state": b"active"},  # pending_since removed
        qk.task("b"): {"msg": msg("b"), "state": b"active"},
        qk.task("c"): {"msg": msg("c"), "state": b"pending", "pending_since": str(now * 10**9).encode()},
    }
    assert await broker.dequeue(Q, 5) == [("c", msg("c"))]
    assert await broker.dequeue(Q, 5) == []
    assert not await redis.exists(qk.pending)


async def test_dequeue_paused_queue_takes_nothing(
    broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys, now: int
) -> None:
    await broker.enqueue(Q, "a", msg("a"))
    await redis.set(qk.paused, now)
    before = await snapshot(redis, schema.ns)
    assert await broker.dequeue(Q, 10) == []
    assert await snapshot(redis, schema.ns) == before


async def test_dequeue_empty_queue_creates_nothing(broker: RedisBroker, redis: Redis, schema: Schema) -> None:
    assert await broker.dequeue(Q, 10) == []
    assert await snapshot(redis, schema.ns) == {}


async def test_dequeue_drops_a_dangling_id(
    broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys, now: int
) -> None:
    await redis.lpush(qk.pending, "ghost")  # oldest: an id without a task record
    await seed_task(redis, qk, "a", "pending")
    await redis.lpush(qk.pending, "a")
    assert await broker.dequeue(Q, 2) == [("a", msg("a"))]
    assert await snapshot(redis, schema.ns) == {
        qk.active: ["a"],
        qk.lease: [("a", now + LEASE_SECONDS)],
        qk.task("a"): {"msg": msg("a"), "state": b"active"},
    }


async def calls(redis: Redis, *commands: str) -> dict[str, int]:
    stats = await redis.info("commandstats")
    return {c: stats.get(f"cmdstat_{c}", {}).get("calls", 0) for c in commands}


async def test_dequeue_reads_the_batch_with_one_sort(
    broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys, now: int
) -> None:
    """The messages of a batch come from one SORT ... GET, not one HGET per task, in dequeue order."""
    await seed_active_list(redis, qk, ["old"], now + 5)
    for task_id in ("a", "b", "c", "d"):
        await broker.enqueue(Q, task_id, msg(task_id))
    before = await calls(redis, "sort", "hget")
    assert await broker.dequeue(Q, 3) == [(t, msg(t)) for t in ("a", "b", "c")]
    after = await calls(redis, "sort", "hget")
    assert (after["sort"] - before["sort"], after["hget"] - before["hget"]) == (1, 0)
    snap = await snapshot(redis, schema.ns)
    assert snap[qk.active] == ["c", "b", "a", "old"]  # as N times RPOPLPUSH would leave it
    assert snap[qk.pending] == ["d"]


async def test_dequeue_of_a_queue_named_with_a_star(
    broker: RedisBroker, redis: Redis, schema: Schema, now: int
) -> None:
    """A ``*`` in the queue name would be substituted by SORT's pattern: those messages are read one by one."""
    qk = schema.queue("jobs*1")
    await redis.lpush(qk.pending, "ghost")
    for task_id in ("a", "b"):
        await broker.enqueue("jobs*1", task_id, msg(task_id))
    assert await broker.dequeue("jobs*1", 5) == [("a", msg("a")), ("b", msg("b"))]
    snap = await snapshot(redis, schema.ns)
    assert snap[qk.active] == ["b", "a"]
    assert snap[qk.lease] == [("a", now + LEASE_SECONDS), ("b", now + LEASE_SECONDS)]
    assert snap[qk.task("a")] == {"msg": msg("a"), "state": b"active"}


async def test_dequeue_records_the_inflight_set(
    broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys
) -> None:
    await broker.enqueue(Q, "a", msg("a"))
    inflight = qk.inflight("server-1")
    assert await broker.dequeue(Q, 1, inflight) == [("a", msg("a"))]
    assert (await snapshot(redis, schema.ns))[inflight] == {"a"}
    assert await redis.ttl(inflight) > 0


# --- done -------------------------------------------------------------------------------------------------


async def test_done_batch(broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys, now: int) -> None:
    lock_a, lock_b = qk.unique("t", b"a"), qk.unique("t", b"b")
    await seed_active(redis, qk, "a", now + 30, unique_key=lock_a)
    await seed_active(redis, qk, "b", now + 30, unique_key=lock_b)
    await seed_active(redis, qk, "c", now + 30)
    await redis.set(lock_a, "a", ex=100)  # held by a: released
    await redis.set(lock_b, "someone-else", ex=100)  # held by another task: kept
    await seed_task(redis, qk, "gone", "retry")  # not active: not found, untouched
    assert await broker.done(Q, [("a", lock_a), ("b", lock_b), ("c", ""), ("gone", "")]) == [1, 1, 1, 0]
    assert await snapshot(redis, schema.ns) == {
        lock_b: b"someone-else",
        qk.task("gone"): {"msg": msg("gone"), "state": b"retry"},
        **stat_keys(qk, now, "processed", 3),
    }
    await assert_stat_expiry(redis, qk, now, "processed")


async def test_done_takes_the_batch_out_of_the_workers_inflight_set(
    broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys, now: int
) -> None:
    """Found or not, every acknowledged id leaves the in-flight set; the tasks still running stay in it."""
    inflight = qk.inflight("server-1")
    for task_id in ("a", "b", "running"):
        await seed_active(redis, qk, task_id, now + 30)
    await redis.sadd(inflight, "a", "b", "running", "gone")
    assert await broker.done(Q, [("a", ""), ("b", ""), ("gone", "")], inflight) == [1, 1, 0]
    snap = await snapshot(redis, schema.ns)
    assert snap[inflight] == {"running"}
    assert snap[qk.active] == ["running"]
    assert await broker.done(Q, [("running", "")], inflight) == [1]
    assert not await redis.exists(inflight)


async def test_done_not_found_changes_nothing(
    broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys, now: int
) -> None:
    await seed_active(redis, qk, "a", now + 30)
    before = await snapshot(redis, schema.ns)
    assert await broker.done(Q, [("not-active", "")]) == [0]
    assert await snapshot(redis, schema.ns) == before  # no counters either


async def test_done_keeps_the_daily_counter_expiry_set_at_creation(
    broker: RedisBroker, redis: Redis, qk: QueueKeys, now: int
) -> None:
    day = qk.processed_day(day_stamp(now))
    await redis.set(day, 5)
    await redis.expireat(day, now + 1000)
    await seed_active(redis, qk, "a", now + 30)
    await broker.done(Q, [("a", "")])
    assert await redis.get(day) == b"6"
    assert await redis.expiretime(day) == now + 1000


@pytest.mark.parametrize(("n", "expected"), [(1, b"1"), (3, b"3")])
async def test_total_counter_restarts_instead_of_overflowing(
    broker: RedisBroker, redis: Redis, qk: QueueKeys, now: int, n: int, expected: bytes
) -> None:
    await redis.set(qk.processed, MAX_INT64)
    ids = [f"t{i}" for i in range(n)]
    for task_id in ids:
        await seed_active(redis, qk, task_id, now + 30)
    assert await broker.done(Q, [(task_id, "") for task_id in ids]) == [1] * n
    assert await redis.get(qk.processed) == expected
    await seed_active(redis, qk, "next", now + 30)
    await broker.done(Q, [("next", "")])
    assert await redis.get(qk.processed) == str(n + 1).encode()


async def test_failed_counter_restarts_instead_of_overflowing(
    broker: RedisBroker, redis: Redis, qk: QueueKeys, now: int
) -> None:
    await redis.set(qk.failed, MAX_INT64)
    await redis.set(qk.processed, MAX_INT64 - 1)
    await seed_active(redis, qk, "a", now + 30)
    assert await broker.retry(Q, "a", msg("a2"), now + 60, failure=True) == 1
    assert await redis.get(qk.failed) == b"1"
    assert await redis.get(qk.processed) == str(MAX_INT64).encode()


# --- done: the active list rewritten in one pass ------------------------------------------------------------


def done_constant(name: str) -> int:
    """A tuning constant of done.lua (``local NAME = 123``), so these cases follow the script's bounds."""
    found = re.search(rf"^local {name} = (\d+)$", SCRIPTS["done"].source, re.MULTILINE)
    assert found, f"done.lua has no {name}"
    return int(found.group(1))


REWRITE_MIN = done_constant("REWRITE_MIN")
REWRITE_PER_ID = done_constant("REWRITE_PER_ID")


def lrem_model(active: list[str], batch: list[str]) -> tuple[list[int], list[str]]:
    """What one ``LREM active 0 id`` per task, in order, answers and leaves: the reference for done.lua."""
    left = list(active)
    replies = []
    for task_id in batch:
        if task_id in left:
            left = [x for x in left if x != task_id]
            replies.append(1)
        else:
            replies.append(0)
    return replies, left


async def seed_active_list(redis: Redis, qk: QueueKeys, active: list[str], lease: int) -> None:
    """An active list in exactly this order (head first), each id with an active record and a lease."""
    async with redis.pipeline(transaction=False) as pipe:
        for first in range(0, len(active), 1000):
            pipe.rpush(qk.active, *active[first : first + 1000])
        for task_id in dict.fromkeys(active):
            pipe.hset(qk.task(task_id), mapping={"msg": msg(task_id), "state": "active"})
            pipe.zadd(qk.lease, {task_id: lease})
        await pipe.execute()


async def done_as_lrem_would(
    broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys, now: int, batch: list[tuple[str, str]]
) -> list[int]:
    """Run done on the seeded state and assert it answers and leaves exactly what per-task LREM does."""
    before = await snapshot(redis, schema.ns)
    active = before.get(qk.active, [])
    replies, left = lrem_model(active, [task_id for task_id, _ in batch])
    finished = {task_id for (task_id, _), n in zip(batch, replies, strict=True) if n}
    expected = {k: v for k, v in before.items() if k not in {qk.active, qk.lease}}
    for task_id in finished:
        del expected[qk.task(task_id)]
    for (task_id, lock), n in zip(batch, replies, strict=True):
        if n and lock and before.get(lock) == task_id.encode():
            del expected[lock]
    if left:
        expected[qk.active] = left
    lease = [(m, s) for m, s in before.get(qk.lease, []) if m not in finished]
    if lease:
        expected[qk.lease] = lease
    if finished:
        for key in stat_keys(qk, now, "processed", 0):
            expected[key] = str(int(before.get(key, 0)) + len(finished)).encode()

    assert await broker.done(Q, batch) == replies
    assert await snapshot(redis, schema.ns) == expected
    return replies


async def command_calls(redis: Redis) -> dict[str, int]:
    """Calls per command since the last CONFIG RESETSTAT (commands run by scripts included)."""
    stats = await redis.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


async def test_done_rewrite_keeps_other_ids_in_order_and_drops_every_occurrence(
    broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys, now: int
) -> None:
    batch = [f"b{i}" for i in range(32)]
    others = [f"o{i}" for i in range(68)]  # other workers' tasks
    active = []
    for i, other in enumerate(others):
        active.append(other)
        if i % 2 == 0 and i // 2 < len(batch):
            active.append(batch[i // 2])
    active[10:10] = ["b3"]  # present twice: both go
    active.append("b17")
    await seed_active_list(redis, qk, active, now + 30)
    assert len(active) == 102
    assert await done_as_lrem_would(broker, redis, schema, qk, now, [(b, "") for b in batch]) == [1] * 32
    assert await redis.lrange(qk.active, 0, -1) == [o.encode() for o in others]
    assert await redis.zrange(qk.lease, 0, -1) == sorted(o.encode() for o in others)


@pytest.mark.parametrize("where", ["head", "tail", "both-ends", "middle", "spread"])
async def test_done_rewrite_matches_per_task_lrem_wherever_the_batch_sits(
    broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys, now: int, where: str
) -> None:
    k = REWRITE_MIN * 2
    others = [f"o{i}" for i in range(4 * k)]
    batch = [f"b{i}" for i in range(k)]
    if where == "head":
        active = batch + others
    elif where == "tail":
        active = others + batch
    elif where == "both-ends":
        active = batch[: k // 2] + others + batch[k // 2 :]
    elif where == "middle":
        active = others[: 2 * k] + batch + others[2 * k :]
    else:
        active = [x for pair in zip(others[::4], batch, strict=True) for x in pair] + [
            o for i, o in enumerate(others) if i % 4
        ]
    await seed_active_list(redis, qk, active, now + 30)
    replies = await done_as_lrem_would(broker, redis, schema, qk, now, [(b, "") for b in reversed(batch)])
    assert replies == [1] * k


async def test_done_rewrite_mixes_found_and_not_found(
    broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys, now: int
) -> None:
    active = [f"a{i}" for i in range(30 + REWRITE_MIN)]
    await seed_active_list(redis, qk, active, now + 30)
    own_lock, taken_lock, gone_lock = qk.unique("t", b"own"), qk.unique("t", b"taken"), qk.unique("t", b"gone")
    await redis.set(own_lock, "a5", ex=100)  # held by a5: released
    await redis.set(taken_lock, "someone-else", ex=100)  # a6 no longer holds it: kept
    await redis.set(gone_lock, "gone", ex=100)  # its task is not active: not found, the lock is kept
    await seed_task(redis, qk, "gone", "retry", unique_key=gone_lock)
    await redis.zadd(qk.retry, {"gone": now + 60})
    batch = [
        ("a5", own_lock),
        ("gone", gone_lock),
        ("a6", taken_lock),
        ("a0", ""),
        ("a5", own_lock),  # the same id again: already done, not found
        ("never-seen", ""),
        *((f"a{i}", "") for i in range(20, 20 + REWRITE_MIN)),
    ]
    await redis.config_resetstat()
    replies = await done_as_lrem_would(broker, redis, schema, qk, now, batch)
    assert (await command_calls(redis)).get("lrem", 0) == 0
    assert replies == [1, 0, 1, 1, 0, 0] + [1] * REWRITE_MIN
    after = await snapshot(redis, schema.ns)
    assert own_lock not in after
    assert after[taken_lock] == b"someone-else"
    assert after[gone_lock] == b"gone"
    assert after[qk.task("gone")] == {"msg": msg("gone"), "state": b"retry", "unique_key": gone_lock.encode()}
    assert after[qk.processed] == str(3 + REWRITE_MIN).encode()


async def test_done_rewrite_with_nothing_found_writes_nothing(
    broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys, now: int
) -> None:
    await seed_active_list(redis, qk, ["a", "b", "a"], now + 30)
    before = await snapshot(redis, schema.ns)
    assert await broker.done(Q, [(f"x{i}", "") for i in range(REWRITE_MIN)]) == [0] * REWRITE_MIN
    assert await snapshot(redis, schema.ns) == before  # no counters either
    await redis.delete(qk.active)
    assert await broker.done(Q, [("a", ""), ("b", "")] * REWRITE_MIN) == [0] * (2 * REWRITE_MIN)


async def test_done_single_id_removes_every_occurrence(
    broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys, now: int
) -> None:
    await seed_active_list(redis, qk, ["x", "a", "y", "a", "z"], now + 30)
    assert await done_as_lrem_would(broker, redis, schema, qk, now, [("a", "")]) == [1]
    assert await redis.lrange(qk.active, 0, -1) == [b"x", b"y", b"z"]
    assert await done_as_lrem_would(broker, redis, schema, qk, now, [("a", "")]) == [0]


@pytest.mark.parametrize("seed", range(6))
async def test_done_matches_per_task_lrem_on_random_lists(
    broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys, now: int, seed: int
) -> None:
    # small and large batches (both paths), repeated ids in the list and in the batch, unknown ids
    rng = random.Random(seed)
    pool = [f"t{i}" for i in range(rng.choice([10, 60, 300]))]
    active = [rng.choice(pool) for _ in range(rng.randint(1, len(pool) * 2))]
    await seed_active_list(redis, qk, active, now + 30)
    for _ in range(4):
        batch = [(rng.choice([*pool, "unknown"]), "") for _ in range(rng.choice([1, 3, REWRITE_MIN, 40]))]
        await done_as_lrem_would(broker, redis, schema, qk, now, batch)


async def test_done_rewrite_pushes_a_long_list_back_in_chunks(broker: RedisBroker, redis: Redis, now: int) -> None:
    # most of a 9000-id list is pushed again (the batch is spread over it): more than one unpack can take
    active = [f"t{i}" for i in range(9000)]
    batch = active[5::60]
    assert len(batch) >= REWRITE_MIN
    assert len(active) <= REWRITE_PER_ID * len(batch)
    for first in range(0, len(active), 1000):
        await redis.rpush(broker.schema.queue(Q).active, *active[first : first + 1000])
    await redis.config_resetstat()
    assert await broker.done(Q, [(b, "") for b in batch]) == [1] * len(batch)
    assert (await command_calls(redis)).get("lrem", 0) == 0
    left = await redis.lrange(broker.schema.queue(Q).active, 0, -1)
    assert [x.decode() for x in left] == lrem_model(active, batch)[1]


async def test_done_batch_of_32_rewrites_the_list_without_lrem(
    broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys, now: int
) -> None:
    assert REWRITE_MIN <= 32
    batch = [f"b{i}" for i in range(32)]
    active = [x for i in range(32) for x in (f"o{2 * i}", batch[i], f"o{2 * i + 1}")] + ["o64", "o65", "o66", "o67"]
    await seed_active_list(redis, qk, active, now + 30)
    await redis.config_resetstat()
    assert await broker.done(Q, [(b, "") for b in batch]) == [1] * 32
    calls = await command_calls(redis)
    assert calls.get("lrem", 0) == 0
    assert calls.get("lrange", 0) >= 1
    assert await redis.lrange(qk.active, 0, -1) == [f"o{i}".encode() for i in range(68)]


async def test_done_keeps_per_task_lrem_for_small_batches_and_long_lists(
    broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys, now: int
) -> None:
    k = REWRITE_MIN
    active = [f"t{i}" for i in range(REWRITE_PER_ID * k + 1)]  # one past the bound
    await seed_active_list(redis, qk, active, now + 30)
    await redis.config_resetstat()
    assert await done_as_lrem_would(broker, redis, schema, qk, now, [(f"t{i}", "") for i in range(0, 10 * k, 10)])
    assert (await command_calls(redis)).get("lrem", 0) >= k
    await redis.config_resetstat()
    small = [(f"t{i}", "") for i in range(1, 10 * (k - 1), 10)]  # one id short of a rewrite
    assert await done_as_lrem_would(broker, redis, schema, qk, now, small) == [1] * (k - 1)
    assert (await command_calls(redis)).get("lrem", 0) >= k - 1


# --- mark_complete -------------------------------------------------------------------------------------------


async def test_mark_complete(broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys, now: int) -> None:
    lock = qk.unique("t", b"a")
    await seed_active(redis, qk, "a", now + 30, unique_key=lock, result=b"done!")
    await redis.set(lock, "a", ex=100)
    assert await broker.mark_complete(Q, "a", b"completed-msg", now + 3600, lock) == 1
    assert await snapshot(redis, schema.ns) == {
        qk.completed: [("a", now + 3600)],
        qk.task("a"): {"msg": b"completed-msg", "state": b"completed", "unique_key": lock.encode(), "result": b"done!"},
        **stat_keys(qk, now, "processed", 1),
    }
    await assert_stat_expiry(redis, qk, now, "processed")


async def test_mark_complete_keeps_a_lock_held_by_another_task(
    broker: RedisBroker, redis: Redis, qk: QueueKeys, now: int
) -> None:
    lock = qk.unique("t", b"a")
    await seed_active(redis, qk, "a", now + 30)
    await redis.set(lock, "other")
    assert await broker.mark_complete(Q, "a", b"m", now + 10, lock) == 1
    assert await redis.get(lock) == b"other"


async def test_mark_complete_not_found(broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys) -> None:
    await seed_task(redis, qk, "a", "pending")
    before = await snapshot(redis, schema.ns)
    assert await broker.mark_complete(Q, "a", b"m", 10, "") == 0
    assert await snapshot(redis, schema.ns) == before


# --- requeue ------------------------------------------------------------------------------------------------


async def test_requeue_puts_the_task_at_the_head(
    broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys, now: int
) -> None:
    await seed_task(redis, qk, "p1", "pending")
    await redis.lpush(qk.pending, "p1")
    await seed_active(redis, qk, "a", now + 30)
    assert await broker.requeue(Q, "a") == 1
    assert await snapshot(redis, schema.ns) == {
        qk.pending: ["p1", "a"],  # RPUSH: next to be taken
        qk.task("p1"): {"msg": msg("p1"), "state": b"pending"},
        qk.task("a"): {"msg": msg("a"), "state": b"pending"},  # no pending_since on requeue
    }
    assert await broker.dequeue(Q, 1) == [("a", msg("a"))]


async def test_requeue_not_found(broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys) -> None:
    await seed_task(redis, qk, "a", "retry")
    before = await snapshot(redis, schema.ns)
    assert await broker.requeue(Q, "a") == 0
    assert await snapshot(redis, schema.ns) == before


# --- retry ----------------------------------------------------------------------------------------------------


async def test_retry_failure_counts_processed_and_failed(
    broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys, now: int
) -> None:
    lock = qk.unique("t", b"a")
    await seed_active(redis, qk, "a", now + 30, unique_key=lock)
    await redis.set(lock, "a")
    assert await broker.retry(Q, "a", b"retried-msg", now + 60, failure=True) == 1
    assert await snapshot(redis, schema.ns) == {
        qk.retry: [("a", now + 60)],
        qk.task("a"): {"msg": b"retried-msg", "state": b"retry", "unique_key": lock.encode()},
        lock: b"a",  # the lock survives retries
        **stat_keys(qk, now, "processed", 1),
        **stat_keys(qk, now, "failed", 1),
    }
    await assert_stat_expiry(redis, qk, now, "processed")
    await assert_stat_expiry(redis, qk, now, "failed")


async def test_retry_non_failure_counts_nothing(
    broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys, now: int
) -> None:
    await seed_active(redis, qk, "a", now + 30)
    assert await broker.retry(Q, "a", b"m", now + 60, failure=False) == 1
    assert await snapshot(redis, schema.ns) == {
        qk.retry: [("a", now + 60)],
        qk.task("a"): {"msg": b"m", "state": b"retry"},
    }


async def test_retry_not_found(broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys, now: int) -> None:
    await seed_task(redis, qk, "a", "pending")
    before = await snapshot(redis, schema.ns)
    assert await broker.retry(Q, "a", b"m", now + 60, failure=True) == 0
    assert await snapshot(redis, schema.ns) == before


# --- defer (a task whose type has no handler in the worker that took it) ----------------------------------------


async def test_defer_puts_the_task_back_spending_nothing_and_notes_when(
    broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys, now: int
) -> None:
    lock = qk.unique("t", b"a")
    await seed_active(redis, qk, "a", now + 30, unique_key=lock)
    await redis.set(lock, "a")
    assert await broker.defer(Q, "a", b"deferred-msg", now=now, wait=3600, delays=(5, 300)) == now + 5
    assert await snapshot(redis, schema.ns) == {
        qk.retry: [("a", now + 5)],
        qk.task("a"): {
            "msg": b"deferred-msg",
            "state": b"retry",
            "unique_key": lock.encode(),
            "fw_unknown_since": str(now).encode(),
        },
        lock: b"a",  # kept, as on a retry
    }


async def test_defer_delay_is_the_time_since_the_first_deferral_within_bounds(
    broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys, now: int
) -> None:
    await seed_active(redis, qk, "a", now + 30, fw_unknown_since=str(now - 40))
    await seed_active(redis, qk, "b", now + 30, fw_unknown_since=str(now - 2000))
    assert await broker.defer(Q, "a", b"m", now=now, wait=3600, delays=(5, 300)) == now + 40
    assert await broker.defer(Q, "b", b"m", now=now, wait=3600, delays=(5, 300)) == now + 300
    snap = await snapshot(redis, schema.ns)
    assert snap[qk.retry] == [("a", now + 40), ("b", now + 300)]
    assert snap[qk.task("a")]["fw_unknown_since"] == str(now - 40).encode()  # the first deferral's time stays


@pytest.mark.parametrize(("wait", "since"), [(3600, -3600), (0, None)], ids=["waited", "no-wait"])
async def test_defer_after_the_wait_leaves_the_task_active_for_the_caller_to_archive(
    broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys, now: int, wait: int, since: int | None
) -> None:
    fields = {} if since is None else {"fw_unknown_since": str(now + since)}
    await seed_active(redis, qk, "a", now + 30, **fields)
    before = await snapshot(redis, schema.ns)
    assert await broker.defer(Q, "a", b"m", now=now, wait=wait, delays=(5, 300)) == -1
    before[qk.task("a")].pop("fw_unknown_since", None)  # cleared: run again from the archive, it waits afresh
    assert await snapshot(redis, schema.ns) == before


async def test_defer_not_found(broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys, now: int) -> None:
    await seed_task(redis, qk, "a", "pending")
    before = await snapshot(redis, schema.ns)
    assert await broker.defer(Q, "a", b"m", now=now, wait=3600, delays=(5, 300)) == 0
    assert await snapshot(redis, schema.ns) == before


# --- archive ---------------------------------------------------------------------------------------------------


async def test_archive_trims_by_age(broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys, now: int) -> None:
    cutoff = now - 90 * DAY
    assert cutoff == now - ARCHIVE_MAX_AGE
    for task_id, score in (("old", cutoff - 1), ("edge", cutoff), ("recent", cutoff + 1)):
        await seed_task(redis, qk, task_id, "archived")
        await redis.zadd(qk.archived, {task_id: score})
    await seed_active(redis, qk, "a", now + 30)
    assert await broker.archive(Q, "a", b"archived-msg") == 1
    assert await snapshot(redis, schema.ns) == {
        qk.archived: [("recent", cutoff + 1), ("a", now)],
        qk.task("recent"): {"msg": msg("recent"), "state": b"archived"},
        qk.task("a"): {"msg": b"archived-msg", "state": b"archived"},
        **stat_keys(qk, now, "processed", 1),
        **stat_keys(qk, now, "failed", 1),
    }
    await assert_stat_expiry(redis, qk, now, "failed")


async def test_archive_trims_by_size_small_cap(redis: Redis, schema: Schema, qk: QueueKeys, now: int) -> None:
    for i in range(4):
        await seed_task(redis, qk, f"x{i}", "archived")
        await redis.zadd(qk.archived, {f"x{i}": now - 40 + 10 * i})
    await seed_active(redis, qk, "a", now + 30)
    day = day_stamp(now)
    keys = [
        *(qk.task("a"), qk.active, qk.lease, qk.archived),
        *(qk.processed, qk.processed_day(day), ""),  # "": no per-minute counter
        *(qk.failed, qk.failed_day(day), ""),
    ]
    cap = 3  # ARGV[5]: the most archived tasks kept
    args = ["a", b"m", now, now - 90 * DAY, cap, qk.task_prefix, now + 90 * DAY, MINUTE_TTL]
    assert await SCRIPTS["archive"](redis, keys, args) == 1
    snap = await snapshot(redis, schema.ns)
    assert snap[qk.archived] == [("x2", now - 20), ("x3", now - 10), ("a", now)]
    assert {k for k in snap if k.startswith(qk.task_prefix)} == {qk.task("x2"), qk.task("x3"), qk.task("a")}
    assert set(snap) == {
        qk.archived,
        qk.task("x2"),
        qk.task("x3"),
        qk.task("a"),
        qk.processed,
        qk.processed_day(day),
        qk.failed,
        qk.failed_day(day),
    }


async def test_archive_keeps_at_most_10000(broker: RedisBroker, redis: Redis, qk: QueueKeys, now: int) -> None:
    assert ARCHIVE_MAX_SIZE == 10_000
    await redis.zadd(qk.archived, {f"x{i}": now - 10_000 + i for i in range(ARCHIVE_MAX_SIZE)})
    await seed_task(redis, qk, "x0", "archived")
    await seed_task(redis, qk, "x1", "archived")
    await seed_active(redis, qk, "a", now + 30)
    assert await broker.archive(Q, "a", b"m") == 1
    assert await redis.zcard(qk.archived) == ARCHIVE_MAX_SIZE
    assert await redis.zscore(qk.archived, "x0") is None  # the oldest went, with its record
    assert not await redis.exists(qk.task("x0"))
    assert await redis.exists(qk.task("x1"))
    assert await redis.zscore(qk.archived, "a") == now


async def test_archive_not_found(broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys) -> None:
    await seed_task(redis, qk, "a", "pending")
    before = await snapshot(redis, schema.ns)
    assert await broker.archive(Q, "a", b"m") == 0
    assert await snapshot(redis, schema.ns) == before


# --- forward -----------------------------------------------------------------------------------------------


async def test_forward_scheduled_and_retry(
    broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys, now: int
) -> None:
    for task_id, score in (("s1", now - 10), ("s2", now), ("s3", now + 50)):
        await seed_task(redis, qk, task_id, "scheduled")
        await redis.zadd(qk.scheduled, {task_id: score})
    await seed_task(redis, qk, "r1", "retry", group="g1")  # a grouped task goes back to its group
    await seed_task(redis, qk, "r2", "retry")
    await redis.zadd(qk.retry, {"r1": now - 5, "r2": now + 20})
    assert await broker.forward(Q) == (3, now + 20)  # earliest left in either set
    now_ns = str(now * 10**9).encode()
    assert await snapshot(redis, schema.ns) == {
        qk.scheduled: [("s3", now + 50)],
        qk.retry: [("r2", now + 20)],
        qk.pending: ["s2", "s1"],
        qk.task("s1"): {"msg": msg("s1"), "state": b"pending", "pending_since": now_ns},
        qk.task("s2"): {"msg": msg("s2"), "state": b"pending", "pending_since": now_ns},
        qk.task("s3"): {"msg": msg("s3"), "state": b"scheduled"},
        qk.group("g1"): [("r1", now)],
        qk.groups: {"g1"},
        qk.task("r1"): {"msg": msg("r1"), "state": b"aggregating", "group": b"g1"},
        qk.task("r2"): {"msg": msg("r2"), "state": b"retry"},
    }


async def test_forward_nothing_due(broker: RedisBroker, redis: Redis, schema: Schema) -> None:
    assert await broker.forward(Q) == (0, None)
    assert await snapshot(redis, schema.ns) == {}


async def test_forward_loops_over_batches_of_100(broker: RedisBroker, redis: Redis, qk: QueueKeys, now: int) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(250):
            pipe.hset(qk.task(f"t{i}"), mapping={"msg": msg(f"t{i}"), "state": "scheduled"})
        pipe.zadd(qk.scheduled, {f"t{i}": now - 1 for i in range(250)})
        await pipe.execute()
    args = [now, qk.task_prefix, now * 10**9, qk.prefix + "g:", "", Q]
    assert await SCRIPTS["forward"](redis, [qk.scheduled, qk.pending, qk.groups], args) == [100, now - 1]
    assert await broker.forward(Q) == (150, None)
    assert await redis.llen(qk.pending) == 250
    assert not await redis.exists(qk.scheduled)


async def test_forward_drops_a_dangling_id(
    broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys, now: int
) -> None:
    await redis.zadd(qk.scheduled, {"ghost": now - 1})
    assert await broker.forward(Q) == (1, None)
    assert await snapshot(redis, schema.ns) == {}  # no record without a msg, no id in pending


async def test_forward_publishes_a_wakeup(broker: RedisBroker, redis: Redis, qk: QueueKeys, now: int) -> None:
    await seed_task(redis, qk, "s1", "scheduled")
    await redis.zadd(qk.scheduled, {"s1": now})
    pubsub = redis.pubsub()
    await pubsub.subscribe(broker.schema.wakeup_channel)
    try:
        await pubsub.get_message(timeout=1)
        await broker.forward(Q)
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
        assert message is not None
        assert message["data"] == Q.encode()
    finally:
        await pubsub.aclose()


# --- list_lease_expired / recover / repair_orphans ------------------------------------------------------------


async def test_list_lease_expired(broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys, now: int) -> None:
    for task_id, lease in (("a", now - 31), ("b", now - 30), ("c", now - 29)):
        await seed_active(redis, qk, task_id, lease)
    await redis.zadd(qk.lease, {"ghost": now - 100})  # a lease without a record is dropped
    assert await broker.list_lease_expired(Q, now - LEASE_SECONDS) == [msg("a"), msg("b")]
    snap = await snapshot(redis, schema.ns)
    assert snap[qk.lease] == [("a", now - 31), ("b", now - 30), ("c", now - 29)]  # listing changes no lease
    assert snap[qk.active] == ["c", "b", "a"]
    assert await broker.list_lease_expired(Q, now - LEASE_SECONDS, limit=1) == [msg("a")]


async def test_recover_requeues(broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys, now: int) -> None:
    await seed_active(redis, qk, "a", now - 10)
    assert await broker.recover(Q, "a", now, 3) == 1  # its worker died holding it alone: charged
    assert await snapshot(redis, schema.ns) == {
        qk.pending: ["a"],
        qk.suspects: {"a"},
        qk.task("a"): {"msg": msg("a"), "state": b"pending", "fw_recoveries": b"1"},
    }
    assert 0 < await redis.ttl(qk.suspects) <= 24 * 3600


async def test_recover_of_a_worker_that_held_several_charges_none(
    broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys, now: int
) -> None:
    await seed_active(redis, qk, "a", now - 10, fw_recoveries="3")  # at the limit: one more charge archives
    assert await broker.recover(Q, "a", now, 3, alone=False) == 1
    assert await snapshot(redis, schema.ns) == {
        qk.pending: ["a"],
        qk.suspects: {"a"},
        qk.task("a"): {"msg": msg("a"), "state": b"pending", "fw_recoveries": b"3"},
    }


async def test_a_lost_lease_given_back_is_neither_charged_nor_a_suspect(
    broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys, now: int
) -> None:
    await seed_active(redis, qk, "a", now - 10)
    assert await broker.recover(Q, "a", now, 3, count=False) == 1
    assert await snapshot(redis, schema.ns) == {qk.pending: ["a"], qk.task("a"): {"msg": msg("a"), "state": b"pending"}}


async def test_a_suspect_is_taken_only_alone_and_a_batch_stops_before_it(
    broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys, now: int
) -> None:
    for task_id in ("a", "b", "s", "c"):
        await broker.enqueue(Q, task_id, msg(task_id))
    await redis.sadd(qk.suspects, "s")
    taken = await broker.dequeue(Q, 10)  # the batch stops before the suspect; the rest stays, in order
    assert (taken, taken.suspect, taken.blocked) == ([("a", msg("a")), ("b", msg("b"))], False, False)
    assert (await snapshot(redis, schema.ns))[qk.pending] == ["c", "s"]
    before = await snapshot(redis, schema.ns)
    taken = await broker.dequeue(Q, 10)  # a worker that holds tasks takes nothing: the suspect is next
    assert (taken, taken.suspect, taken.blocked) == ([], False, True)
    assert await snapshot(redis, schema.ns) == before
    taken = await broker.dequeue(Q, 10, alone=True)  # one that holds nothing takes it, and only it
    assert (taken, taken.suspect, taken.blocked) == ([("s", msg("s"))], True, False)
    assert (await snapshot(redis, schema.ns))[qk.pending] == ["c"]
    taken = await broker.dequeue(Q, 10, alone=True)  # not a suspect: an ordinary batch
    assert (taken, taken.suspect) == ([("c", msg("c"))], False)
    await broker.clear_suspect(Q, "s")
    assert not await redis.exists(qk.suspects)


async def test_recover_fresh_lease_is_left_alone(
    broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys, now: int
) -> None:
    await seed_active(redis, qk, "a", now + 20)
    before = await snapshot(redis, schema.ns)
    assert await broker.recover(Q, "a", now, 3) == -1
    assert await snapshot(redis, schema.ns) == before


async def test_recover_gone(broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys, now: int) -> None:
    await seed_task(redis, qk, "a", "pending")
    before = await snapshot(redis, schema.ns)
    assert await broker.recover(Q, "a", now, 3) == 0
    assert await snapshot(redis, schema.ns) == before


async def test_recover_drops_a_lease_without_an_active_task(
    broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys, now: int
) -> None:
    await seed_task(redis, qk, "a", "pending")
    await redis.zadd(qk.lease, {"a": now - 10, "ghost": now - 10})
    await redis.lpush(qk.active, "ghost")
    assert await broker.recover(Q, "a", now, 3) == 0
    assert await broker.recover(Q, "ghost", now, 3) == 0
    assert await snapshot(redis, schema.ns) == {qk.task("a"): {"msg": msg("a"), "state": b"pending"}}


async def test_recover_poison_pill(broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys, now: int) -> None:
    await seed_active(redis, qk, "a", now - 10, fw_recoveries="3")
    assert await broker.recover(Q, "a", now, 3) == [2, msg("a")]
    assert await snapshot(redis, schema.ns) == {  # left active for the caller to archive
        qk.active: ["a"],
        qk.lease: [("a", now - 10)],
        qk.task("a"): {"msg": msg("a"), "state": b"active", "fw_recoveries": b"4"},
    }
    assert await broker.leased([(Q, "a"), (Q, "nothing")]) == [True, False]


async def test_repair_orphans(broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys, now: int) -> None:
    await redis.rpush(qk.active, "a", "b", "c")
    await redis.zadd(qk.lease, {"b": 123})
    assert await broker.repair_orphans(Q) == 2
    assert await snapshot(redis, schema.ns) == {
        qk.active: ["a", "b", "c"],
        qk.lease: [("b", 123), ("a", now - 2 * LEASE_SECONDS), ("c", now - 2 * LEASE_SECONDS)],
    }
    assert await broker.repair_orphans(Q) == 0


# --- delete_expired_completed ----------------------------------------------------------------------------------


async def test_delete_expired_completed(
    broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys, now: int
) -> None:
    for task_id, expiry in (("e1", now - 1), ("e2", now), ("k1", now + 1)):
        await seed_task(redis, qk, task_id, "completed")
        await redis.zadd(qk.completed, {task_id: expiry})
    assert await broker.delete_expired_completed(Q) == 2
    assert await snapshot(redis, schema.ns) == {
        qk.completed: [("k1", now + 1)],
        qk.task("k1"): {"msg": msg("k1"), "state": b"completed"},
    }


async def test_delete_expired_completed_in_batches(
    broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys, now: int
) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(250):
            pipe.hset(qk.task(f"t{i}"), mapping={"msg": b"m", "state": "completed"})
        pipe.zadd(qk.completed, {f"t{i}": now - 5 for i in range(250)})
        await pipe.execute()
    assert await SCRIPTS["delete_expired_completed"](redis, [qk.completed], [now, qk.task_prefix, 100]) == 100
    assert await broker.delete_expired_completed(Q, batch=100) == 150
    assert await snapshot(redis, schema.ns) == {}


# --- cron_enqueue --------------------------------------------------------------------------------------------


async def test_cron_enqueue_fires_each_tick_once(
    broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys, now: int
) -> None:
    tick = now - now % 60
    claim = qk.cron_claim("entry", tick)
    assert await broker.cron_enqueue(Q, "entry", tick, "cron-1", msg("cron-1"), claim_ttl=120) == 1
    expected = {
        schema.all_queues: {Q},
        claim: b"cron-1",
        qk.pending: ["cron-1"],
        qk.task("cron-1"): {"msg": msg("cron-1"), "state": b"pending", "pending_since": str(now * 10**9).encode()},
    }
    assert await snapshot(redis, schema.ns) == expected
    assert 118 <= await redis.ttl(claim) <= 120
    assert await broker.cron_enqueue(Q, "entry", tick, "cron-1", msg("cron-1"), claim_ttl=120) == 0
    assert await snapshot(redis, schema.ns) == expected


async def test_cron_enqueue_existing_task_is_not_overwritten(
    broker: RedisBroker, redis: Redis, schema: Schema, qk: QueueKeys, now: int
) -> None:
    await seed_task(redis, qk, "cron-1", "retry")
    assert await broker.cron_enqueue(Q, "entry", now, "cron-1", b"new", claim_ttl=60) == 0
    snap = await snapshot(redis, schema.ns)
    assert snap[qk.task("cron-1")] == {"msg": msg("cron-1"), "state": b"retry"}
    assert qk.pending not in snap


# --- the scripts themselves -------------------------------------------------------------------------------------

LUA_DIR = Path(framework.__file__).parent / "protocol" / "lua"
LUA_FILES = sorted(p for p in LUA_DIR.glob("*.lua") if not p.name.startswith("_"))  # not the preludes
COMPOSED = scripts_module._COMPOSED
"""Workflow scripts built around a transition's body: name -> (outer file, transition file)."""


def _header_and_body(path: Path) -> tuple[list[str], str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    header: list[str] = []
    for line in lines:
        if not line.startswith("--"):
            break
        header.append(line)
    return header, "\n".join(lines[len(header) :])


@pytest.mark.parametrize("path", LUA_FILES, ids=[p.stem for p in LUA_FILES])
def test_script_has_a_header_naming_keys_argv_and_returns(path: Path) -> None:
    header, body = _header_and_body(path)
    assert header, f"{path.name} has no header"
    assert header[0].startswith(f"-- {path.stem}: "), f"{path.name}: the header must open with '-- {path.stem}: '"
    text = "\n".join(header)
    assert "-- returns" in text, f"{path.name}: the header does not say what it returns"
    for kind in ("KEYS", "ARGV"):
        used = set(re.findall(rf"{kind}\[(\d+)\]", body))
        documented = set(re.findall(rf"{kind}\[(\d+)\]", text))
        assert used <= documented, f"{path.name}: {kind} {sorted(used - documented)} used but not in the header"


@pytest.mark.parametrize("path", LUA_FILES, ids=[p.stem for p in LUA_FILES])
def test_script_is_loaded_and_used(path: Path) -> None:
    names = [name for name, (outer, _) in COMPOSED.items() if outer == path.stem] or [path.stem]
    code = [
        py.read_text(encoding="utf-8")
        for py in Path(framework.__file__).parent.rglob("*.py")
        if py.name != "scripts.py"
    ]
    for name in names:
        assert name in SCRIPTS, f"{name} ({path.name}) is not loaded by framework.protocol.scripts"
        used = [text for text in code if f'SCRIPTS["{name}"]' in text or f'"{name}", step' in text]
        assert used, f"{name} ({path.name}) is loaded but no module runs it"


def test_every_loaded_script_has_a_file() -> None:
    outers_only = {outer for outer, _ in COMPOSED.values()} - set(COMPOSED)
    assert set(SCRIPTS) == {p.stem for p in LUA_FILES} - outers_only | set(COMPOSED)
