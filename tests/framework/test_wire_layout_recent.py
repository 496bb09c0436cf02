"""asynq's layout where newer paths write: limit parking, unique workflow steps, cron unique ticks.

Each test writes through the real scripts on the test Valkey and reads back what Go's tools would read.
"""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING, Any

import msgspec

from framework.broker.broker import RedisBroker
from framework.clock import SimulatedClock
from framework.limits import Limit, applied_limits
from framework.protocol.message import decode_message
from framework.registry import Registry
from framework.scheduler.scheduler import Scheduler
from framework.task import CronEntry, TaskDef

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from framework.protocol.keys import Schema
    from framework.settings import Settings

Q = "wirelimits"


def _frac_clock() -> SimulatedClock:
    """A real-looking clock with a sub-second part, as a worker's wall clock almost always has."""
    return SimulatedClock(float(int(time.time())) + 0.437)


async def _take_active(broker: RedisBroker, *ids: str) -> None:
    for task_id in ids:
        await broker.enqueue(Q, task_id, f"msg-{task_id}".encode())
    taken = await broker.dequeue(Q, len(ids))
    assert sorted(i for i, _ in taken) == sorted(ids)


def _assert_integral_scores(items: list[tuple[bytes, float]], zset: str) -> None:
    # spec §1.1: "Zset scores are integral. The Inspector parses them with cast.ToInt64E, so a fractional
    # score makes the listing fail." (asynq task ls --state=scheduled, asynqmon's scheduled tab)
    bad = [(m.decode(), s) for m, s in items if s != int(s)]
    assert not bad, f"fractional scores in {zset} (Go's Inspector cannot list them): {bad}"


# --- limit_take.lua: a task put off into asynq's scheduled zset -------------------------------------------------


async def test_a_task_parked_for_a_concurrency_slot_gets_an_integral_scheduled_score(
    redis: Redis, schema: Schema
) -> None:
    """limit_take.lua's leave_active ZADDs ``<ns>:{q}:scheduled`` with ``(now_ms + fallback * 1000) / 1000``: with a
    clock that has a fractional second (any real clock) the score is fractional, which asynq's Inspector
    (``cast.ToInt64E``) refuses: ``asynq task ls --state scheduled`` and asynqmon fail on the whole queue."""
    broker = RedisBroker(redis, schema, _frac_clock())
    [lim] = applied_limits([Limit(concurrency=1, name="wire-slot")], "t", None)
    await _take_active(broker, "a", "b")
    assert (await broker.limit_take(Q, "a", [lim])).code == 0
    assert (await broker.limit_take(Q, "b", [lim])).code == 2  # parked: into asynq's scheduled zset
    qk = schema.queue(Q)
    assert await redis.hget(qk.task("b"), "state") == b"scheduled"
    _assert_integral_scores(await redis.zrange(qk.scheduled, 0, -1, withscores=True), qk.scheduled)


async def test_a_task_put_off_far_by_a_rate_gets_an_integral_scheduled_score(redis: Redis, schema: Schema) -> None:
    """The far rate wait (code 1) ZADDs ``(due_ms - early_ms) / 1000`` to the scheduled zset: fractional too."""
    broker = RedisBroker(redis, schema, _frac_clock())
    [lim] = applied_limits([Limit(rate="1/m", name="wire-rate")], "t", None)
    await _take_active(broker, "a", "b")
    assert (await broker.limit_take(Q, "a", [lim])).code == 0
    assert (await broker.limit_take(Q, "b", [lim])).code == 1  # a minute away: it waits in the scheduled zset
    qk = schema.queue(Q)
    assert await redis.hget(qk.task("b"), "state") == b"scheduled"
    _assert_integral_scores(await redis.zrange(qk.scheduled, 0, -1, withscores=True), qk.scheduled)


# --- cron_enqueue.lua with a unique task type: what Go's tools read of the lock -------------------------------


class Job(msgspec.Struct, frozen=True, kw_only=True):
    n: int = 0


async def _handle(ctx: Any, payload: Job) -> None:
    return None


async def test_cron_unique_tick_writes_asynqs_unique_enqueue_layout(
    settings: Settings, redis: Redis, schema: Schema
) -> None:
    """Pins spec §1 / §1.1 / §3 "enqueue unique" for the cron path: the lock is ``<ns>:{q}:unique:<type>:<md5>``
    holding the task id with a whole-second TTL, the task hash has msg, state=pending, pending_since (ns) and
    unique_key = that key, and the TaskMessage's field 10 holds the same key (Inspector delete releases it)."""
    t0 = 1_700_000_040.0
    task = TaskDef("wire:cronunique", Job, _handle, queue="cronwire", unique=600)
    clock = SimulatedClock(t0 + 5)
    sched = Scheduler(
        settings,
        entries=[CronEntry("u", "@every 10s", task, Job(n=1))],
        registry=Registry([task]),
        redis=redis,
        clock=clock,
    )
    await sched.fire_due()
    clock.set(t0 + 10)
    await sched.fire_due()
    qk = schema.queue("cronwire")
    ids = [raw.decode() for raw in await redis.lrange(qk.pending, 0, -1)]
    assert len(ids) == 1
    [task_id] = ids
    lock = f"{schema.ns}:{{cronwire}}:unique:wire:cronunique:" + hashlib.md5(b'{"n":1}').hexdigest()
    assert await redis.get(lock) == task_id.encode()
    ttl = await redis.ttl(lock)
    assert 0 < ttl <= 600
    fields = await redis.hgetall(qk.task(task_id))
    assert fields[b"state"] == b"pending"
    assert fields[b"unique_key"] == lock.encode()
    assert fields[b"pending_since"].isdigit() and int(fields[b"pending_since"]) > 10**18  # ns, decimal
    msg = decode_message(fields[b"msg"])
    assert msg.unique_key == lock
    assert msg.id == task_id and msg.queue == "cronwire" and msg.type == "wire:cronunique"
    assert await redis.sismember(f"{schema.ns}:queues", "cronwire")


# --- workflow scripts (_workflow.lua wf_release): a unique step stored as asynq's unique enqueue stores it -------


async def test_a_unique_workflow_step_is_stored_with_its_unique_key_field(client: Any, redis: Redis) -> None:
    """Spec §1.1 / §3 "enqueue unique": the task hash carries ``unique_key`` (the Inspector's delete reads it to
    release the lock). wf_release.lua takes the step's lock (``SET lock id NX EX ttl``) but its HSET writes only
    msg, state and pending_since, so ``asynq task delete`` (and our own delete_task.lua, which reads the same
    field) leaves the lock held until its TTL: the same task cannot be enqueued again meanwhile."""
    from framework.workflow import chain
    from tests.framework.workflow_tasks import ADD, Num

    info = await client.start_workflow(chain(ADD.step(Num(n=5), unique=600), ADD.step(Num(), input="prev")))
    first = next(iter(info.steps.values()))
    queue, task_id = first
    qk = client.schema.queue(queue)
    fields = await redis.hgetall(qk.task(task_id))
    assert fields[b"state"] == b"pending"
    lock = decode_message(fields[b"msg"]).unique_key
    assert lock, "the step's TaskMessage names its unique lock"
    assert await redis.get(lock) == task_id.encode()  # the lock is held by the step's task
    assert fields.get(b"unique_key") == lock.encode(), f"task hash fields: {sorted(fields)}"
