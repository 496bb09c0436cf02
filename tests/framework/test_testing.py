"""framework.testing against real Valkey: seeding every state, draining a worker, and injected Redis faults."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
from redis.exceptions import ConnectionError, TimeoutError  # noqa: A004 - redis-py's, as the framework meets them

from framework.client.client import Client, TaskCall
from framework.errors import RedisUnavailable, SkipRetry
from framework.inspector import Inspector, TaskState
from framework.task import TaskDef
from framework.testing import (
    DrainResult,
    DrainTimeout,
    Faults,
    FaultyBroker,
    Harness,
    InjectedFault,
    Outcome,
    Seeder,
    TaskRun,
    drain,
)
from framework.worker.worker import Worker
from tests.framework import scheduler_app

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from framework.protocol.keys import Schema
    from framework.settings import Settings


class Note(msgspec.Struct, frozen=True, kw_only=True):
    text: str


async def _note(ctx: Any, payload: Note) -> None:
    if payload.text == "bad":
        raise SkipRetry("bad note")
    if payload.text == "flaky" and ctx.retried == 0:
        raise ValueError("flaky once")
    await ctx.write_result(payload.text.encode())


NOTE = TaskDef("test:note", Note, _note, queue="default")


@pytest.fixture
def quick(settings: Settings) -> Settings:
    """One queue, and retries due at once (so a drain sees them run)."""
    return settings.replace(queues={"default": 1})


def _worker(settings: Settings, **kwargs: Any) -> Worker:
    return Worker(settings, tasks=[NOTE], retry_delay=lambda retried, error: 0.0, **kwargs)


# -- seeding -------------------------------------------------------------------------------------------


async def test_every_state_is_seeded_through_the_broker_and_read_back(seeder: Seeder, client: Client) -> None:
    pending = await seeder.seed_pending(NOTE, Note(text="p"))
    scheduled = await seeder.seed_scheduled(NOTE, Note(text="s"), at=time.time() + 600)
    grouped = await seeder.seed_aggregating(NOTE, Note(text="g"), group="batch")
    active = await seeder.seed_active(NOTE, Note(text="a"), lease_until=time.time() - 60)
    retry = await seeder.seed_retry(NOTE, Note(text="r"), error="smtp down", retried=2)
    archived = await seeder.seed_archived(NOTE, Note(text="x"), error="no such mailbox")
    completed = await seeder.seed_completed(NOTE, Note(text="c"), result=b"sent")

    expected = [
        (pending, TaskState.PENDING),
        (scheduled, TaskState.SCHEDULED),
        (grouped, TaskState.AGGREGATING),
        (active, TaskState.ACTIVE),
        (retry, TaskState.RETRY),
        (archived, TaskState.ARCHIVED),
        (completed, TaskState.COMPLETED),
    ]
    for task, state in expected:
        assert (task.state, task.type, task.queue) == (state, NOTE.type, "default")
        assert await seeder.ids("default", state) == [task.id]
    assert msgspec.json.decode(grouped.payload) == {"text": "g"}
    assert grouped.group == "batch"
    assert (retry.error, retry.retried) == ("smtp down", 2)
    assert retry.next_process_at is not None and retry.next_process_at.timestamp() > time.time() + 3000
    assert (archived.error, archived.retried) == ("no such mailbox", 0)
    assert (completed.result, completed.retention) == (b"sent", 3600)
    assert completed.completed_at is not None
    lease = await seeder.lease("default", active.id)
    assert lease is not None and lease < time.time()
    assert await seeder.lease("default", pending.id) is None

    info = await Inspector(client.redis, client.schema).queue_info("default", memory=False)
    counts = (info.pending, info.scheduled, info.aggregating, info.active, info.retry, info.archived, info.completed)
    assert counts == (1, 1, 1, 1, 1, 1, 1)
    # seeded as a worker would have left them: the failures and the success count as processed
    assert (info.processed_total, info.failed_total) == (3, 2)


async def test_taking_a_task_keeps_the_pending_ones_as_they_were(seeder: Seeder, client: Client) -> None:
    first = await seeder.seed_pending(NOTE, Note(text="1"))
    second = await seeder.seed_pending(NOTE, Note(text="2"))
    inspector = Inspector(client.redis, client.schema)
    await inspector.pause("default")
    retry = await seeder.seed_retry(NOTE, Note(text="3"))

    assert await seeder.ids("default", "pending") == [first.id, second.id]  # still oldest first
    assert [t.pending_since for t in await seeder.tasks("default", "pending")] == [
        first.pending_since,
        second.pending_since,
    ]
    assert retry.state is TaskState.RETRY
    assert (await inspector.queue_info("default", memory=False)).paused  # paused again after the take


async def test_seeded_tasks_take_enqueue_options_and_type_strings(seeder: Seeder) -> None:
    task = await seeder.seed_archived("legacy:job", {"n": 1}, queue="low", max_retry=3, task_id="fixed-id")
    assert (task.id, task.queue, task.type, task.max_retry) == ("fixed-id", "low", "legacy:job", 3)
    assert task.payload_json == {"n": 1}
    assert await seeder.tasks("low", "pending") == []


async def test_wait_for_names_where_the_task_is(seeder: Seeder) -> None:
    task = await seeder.seed_pending(NOTE, Note(text="p"))
    assert (await seeder.wait_for("default", task.id, "pending")).id == task.id
    with pytest.raises(AssertionError, match=r"is not completed after 0\.1 s: pending"):
        await seeder.wait_for("default", task.id, "completed", timeout=0.1)


# -- drain ---------------------------------------------------------------------------------------------


async def test_drain_runs_until_the_queues_are_empty(quick: Settings, client: Client, seeder: Seeder) -> None:
    good = await client.enqueue(NOTE, Note(text="good"), retention=60)
    bad = await client.enqueue(NOTE, Note(text="bad"))
    flaky = await client.enqueue(NOTE, Note(text="flaky"))
    later = await client.enqueue(NOTE, Note(text="later"), process_in=600)

    result = await drain(_worker(quick), timeout=10)

    assert sorted(result.succeeded) == sorted([good.id, flaky.id])
    assert result.archived == [bad.id]
    assert result.retried == [flaky.id]
    assert result.processed == 4
    assert result.last(good.id) == TaskRun(good.id, "default", NOTE.type, Outcome.COMPLETED, "", 0)
    assert result.last(bad.id).error == "SkipRetry: bad note"
    assert [r.outcome for r in result.runs if r.id == flaky.id] == [Outcome.RETRIED, Outcome.DONE]
    assert result.last(flaky.id).retried == 1
    with pytest.raises(KeyError):
        result.last(later.id)  # scheduled for later: not drained
    assert (await seeder.get("default", later.id)).state is TaskState.SCHEDULED
    assert (await seeder.get("default", good.id)).result == b"good"


async def test_drain_stops_after_max_tasks(quick: Settings, client: Client, seeder: Seeder) -> None:
    for i in range(5):
        await client.enqueue(NOTE, Note(text=f"n{i}"))
    result = await drain(_worker(quick), max_tasks=2)
    assert result.processed == 2
    assert len(await seeder.ids("default", "pending")) == 3


async def test_drain_times_out_with_what_it_did(quick: Settings, client: Client) -> None:
    async def slow(ctx: Any, payload: Note) -> None:
        await asyncio.sleep(30)

    stuck = TaskDef("test:slow", Note, slow)
    info = await client.enqueue(stuck, Note(text="zz"))
    worker = Worker(quick.replace(shutdown_timeout=0.2), tasks=[stuck])
    with pytest.raises(DrainTimeout, match=r"did not drain its queues in 0.5 s .*1 in its hands") as caught:
        await drain(worker, timeout=0.5)
    assert caught.value.result == DrainResult([TaskRun(info.id, "default", stuck.type, Outcome.REQUEUED)])


async def test_drain_wants_a_worker_it_can_start(quick: Settings) -> None:
    worker = _worker(quick)
    await worker.start()
    try:
        with pytest.raises(ValueError, match="not been started"):
            await drain(worker)
    finally:
        await worker.stop()


# -- faults --------------------------------------------------------------------------------------------


async def test_a_worker_retries_writes_through_injected_faults(
    quick: Settings, client: Client, faults: Faults, seeder: Seeder
) -> None:
    info = await client.enqueue(NOTE, Note(text="ok"))
    faults.fail("dequeue", times=2)  # the fetch loop backs off and asks again
    faults.fail("done", times=3, error=TimeoutError)  # the ack is written again until Redis answers

    result = await drain(_worker(quick, wrap_broker=faults.wrap))

    assert result.succeeded == [info.id]
    assert (faults.injected["dequeue"], faults.injected["done"]) == (2, 3)
    assert faults.calls["done"] == 4
    with pytest.raises(LookupError):  # done and deleted, once
        await seeder.get("default", info.id)


async def test_a_failing_enqueue_raises_a_clear_error_then_recovers(
    redis: Redis, schema: Schema, settings: Settings, faults: Faults
) -> None:
    client = Client(redis, schema=schema, settings=settings, url="redis://cache:6379", wrap_broker=faults.wrap)
    assert isinstance(client.broker, FaultyBroker)
    faults.fail("enqueue", times=None)
    attempts = (lambda: client.enqueue(NOTE, Note(text="a")), lambda: client.enqueue("raw:type", b"x", queue="low"))
    for attempt in attempts:
        with pytest.raises(RedisUnavailable, match=r"cannot reach Redis at redis://cache:6379: injected fault") as e:
            await attempt()
        assert isinstance(e.value.__cause__, ConnectionError)
        assert isinstance(e.value.__cause__, InjectedFault)
    assert faults.injected["enqueue"] == 2

    faults.fail("enqueue_many", error=TimeoutError)
    with pytest.raises(RedisUnavailable):
        await client.enqueue_many([TaskCall(NOTE, Note(text="b"))])

    faults.clear()
    info = await client.enqueue(NOTE, Note(text="c"))
    [stored] = await client.enqueue_many([TaskCall(NOTE, Note(text="d"))])
    assert not isinstance(stored, Exception)
    assert await Seeder(client).ids("default", "pending") == [info.id, stored.id]
    assert faults.calls["enqueue"] == 3


async def test_fault_rules(faults: Faults, redis: Redis, schema: Schema) -> None:
    client = Client(redis, schema=schema, wrap_broker=faults.wrap)
    faults.delay("enqueue", 0.2, times=1)
    start = time.monotonic()
    await client.enqueue(NOTE, Note(text="slow"))
    assert time.monotonic() - start >= 0.2
    faults.fail("enqueue", after=1, error=RuntimeError("boom"))
    await client.enqueue(NOTE, Note(text="let through"))
    with pytest.raises(RuntimeError, match="boom"):  # not a Redis error: the client passes it on as it is
        await client.enqueue(NOTE, Note(text="failed"))
    await client.enqueue(NOTE, Note(text="passes again"))
    assert (faults.calls["enqueue"], faults.injected["enqueue"]) == (4, 2)
    with pytest.raises(ValueError, match=r"'dequeu' is not a broker method; use one of: .*dequeue"):
        faults.fail("dequeu")
    with pytest.raises(ValueError, match="times is at least 1"):
        faults.fail("done", times=0)


# -- harness -------------------------------------------------------------------------------------------


async def test_the_harness_loads_what_the_framework_loads(settings: Settings, client: Client) -> None:
    app = settings.replace(app="tests.framework.scheduler_app", load_plugins=["admin"], queues={"cron": 1})
    harness = Harness(app)
    assert harness.plugin("app") is scheduler_app
    assert set(harness.plugins()) >= {"app", "admin"}
    assert harness.plugins()["admin"].distribution == "framework-admin"
    assert (harness.plugin_dir("admin") / "admin").is_dir()
    with pytest.raises(KeyError, match="no static folder for plugin 'app'"):
        harness.plugin_dir("app", "static")
    types = harness.task_types()
    assert types[scheduler_app.TICK] is scheduler_app.tick_task
    assert types.source(scheduler_app.TICK) == "plugin 'app'"
    assert [e.name for e in harness.cron_entries()] == ["plugin-tick"]

    info = await client.enqueue(scheduler_app.tick_task, scheduler_app.Tick(n=1))
    result = await drain(harness.worker())
    assert result.succeeded == [info.id]
