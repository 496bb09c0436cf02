"""The workflow checker on a real Valkey with real workers: steps taken outside the framework fail as lost.

A step runs on queue ``go``, which no framework worker here serves; the tests take its task there as
``asynq task delete`` or a Go asynq worker would. The workflows' home queue is ``default``, which the worker
serves, so its checker finds the step lost and fails it (or hands the failure on).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from structlog.testing import capture_logs

from framework.broker.broker import RedisBroker
from framework.broker.workflows import check_running, claim_check
from framework.client.client import Client
from framework.clock import SystemClock
from framework.errors import WorkflowFailed
from framework.inspector import Inspector
from framework.protocol.keys import Schema
from framework.settings import Settings
from framework.task import TaskDef
from framework.workflow import chain, chord
from tests.framework.worker_app import wait_until

CHECK = 0.2


@pytest.fixture
async def client(client: Client) -> AsyncIterator[Client]:
    yield client
    await client.waiters.close()


@pytest.fixture
def checked(settings: Settings) -> Settings:
    """Settings whose worker serves only the home queue and checks its workflows often."""
    return settings.replace(queues={"default": 1}, workflow_check_interval=CHECK)


class Num(msgspec.Struct, frozen=True, kw_only=True):
    n: int = 0
    prev: int | None = None


class MaybeMany(msgspec.Struct, frozen=True, kw_only=True):
    values: list[int | None] = []


async def add_one(ctx: Any, p: Num) -> int:
    return (p.prev if p.prev is not None else p.n) + 1


async def total_known(ctx: Any, p: MaybeMany) -> int:
    return sum(v for v in p.values if v is not None)


ADD = TaskDef("wfc:add", Num, add_one, result=int)
SUM_KNOWN = TaskDef("wfc:sum-known", MaybeMany, total_known, result=int)


def go_step(**options: Any) -> Any:
    """A step whose task goes to queue ``go``, served by no framework worker here."""
    return ADD.step(Num(n=1), name="go-step", queue="go", **options)


async def take_as_go_would(redis: Any, schema: Schema, task_id: str) -> None:
    """Move a pending task of queue ``go`` to active as Go asynq's dequeue does (pending -> active, leased)."""
    qk = schema.queue("go")
    await wait_until(lambda: _in_pending(redis, qk.pending, task_id))
    await redis.lrem(qk.pending, 0, task_id)
    await redis.lpush(qk.active, task_id)
    await redis.hset(qk.task(task_id), "state", "active")
    await redis.hdel(qk.task(task_id), "pending_since")
    await redis.zadd(qk.lease, {task_id: int(SystemClock().now()) + 30})


async def _in_pending(redis: Any, key: str, task_id: str) -> bool:
    return task_id.encode() in await redis.lrange(key, 0, -1)


async def _logged(logs: list[Any], event: str) -> bool:
    return any(e["event"] == event for e in logs)


def assert_lost(caught: WorkflowFailed, task_id: str, how: str) -> None:
    assert caught.status == "failed"
    assert caught.error.startswith(f"step go-step: StepLost: task {task_id} in queue go {how} without")
    assert "a worker that does not run workflows, such as Go asynq's, ran it, or it was deleted" in caught.error


async def test_a_deleted_step_fails_its_workflow_and_wakes_the_waiter(
    start: Any, client: Client, redis: Any, schema: Schema, checked: Settings
) -> None:
    await start(ADD, settings=checked)
    info = await client.start_workflow(chain(go_step(), ADD.step(Num(), input="prev")), queue="default")
    waiter = asyncio.create_task(client.wait_workflow(info, timeout=20))
    await asyncio.sleep(3 * CHECK)  # the step's task is still there: nothing is lost
    assert not waiter.done()
    queue, task_id = info.steps["go-step"]
    with capture_logs() as logs:
        await Inspector(redis, schema=schema).delete_task(queue, task_id)  # as `asynq task delete` does
        with pytest.raises(WorkflowFailed) as caught:
            await waiter
        await wait_until(lambda: _logged(logs, "workflow_step_lost"))  # logged just after the script ran
    assert_lost(caught.value, task_id, "vanished")
    lost = [e for e in logs if e["event"] == "workflow_step_lost"]
    assert len(lost) == 1
    assert {k: lost[0][k] for k in ("workflow", "home", "step", "queue", "task_id", "log_level")} == {
        "workflow": info.id,
        "home": "default",
        "step": "go-step",
        "queue": "go",
        "task_id": task_id,
        "log_level": "warning",
    }
    wk = schema.queue("default").workflow(info.id)
    assert await redis.hgetall(wk.state) == {b"go-step": b"lost", b"wfc:add": b"waiting"}
    assert await redis.ttl(wk.meta) > 0  # ended: expires after keep_failed
    assert await redis.zscore(schema.queue("default").workflows_running(), info.id) is None


@pytest.mark.parametrize("finish", ["done", "complete"])
async def test_a_step_a_go_worker_ran_fails_as_lost(
    finish: str, start: Any, client: Client, redis: Any, schema: Schema, checked: Settings
) -> None:
    await start(ADD, settings=checked)
    info = await client.start_workflow(chain(go_step(), ADD.step(Num(), input="prev")), queue="default")
    queue, task_id = info.steps["go-step"]
    await take_as_go_would(redis, schema, task_id)
    broker = RedisBroker(redis, schema, SystemClock())  # a Go worker's acknowledgement: the plain transitions
    try:
        if finish == "done":
            assert await broker.done(queue, [(task_id, "")]) == [1]
            how = "vanished"
        else:
            msg = await redis.hget(schema.queue(queue).task(task_id), "msg")
            assert await broker.mark_complete(queue, task_id, msg, int(SystemClock().now()) + 3600, "") == 1
            how = "was completed"
    finally:
        broker.close()
    with pytest.raises(WorkflowFailed) as caught:
        await client.wait_workflow(info, timeout=20)
    assert_lost(caught.value, task_id, how)


async def test_a_lost_step_under_continue_hands_none_to_its_dependants(
    start: Any, client: Client, redis: Any, schema: Schema, checked: Settings
) -> None:
    await start(ADD, SUM_KNOWN, settings=checked)
    wf = chord([ADD.step(Num(n=1)), go_step(on_failure="continue")], SUM_KNOWN.step(MaybeMany(), input="values"))
    info = await client.start_workflow(wf, queue="default")
    _, task_id = info.steps["go-step"]
    await wait_until(lambda: _in_pending(redis, schema.queue("go").pending, task_id))
    await Inspector(redis, schema=schema).delete_task("go", task_id)
    assert await client.wait_workflow(info, timeout=20) == 2
    states = await redis.hgetall(schema.queue("default").workflow(info.id).state)
    assert states[b"go-step"] == b"lost"


async def test_one_worker_claims_a_queue_per_interval(client: Client, redis: Any, schema: Schema) -> None:
    ops = client.broker.workflows
    assert await claim_check(ops, "default", 0.3)
    await asyncio.sleep(0.4)
    assert await claim_check(ops, "default", 60)  # the interval is over
    assert not await claim_check(ops, "default", 60)  # a long interval: no slow round trip can outlast it
    assert await claim_check(ops, "other", 60)


async def test_a_check_pages_through_the_index_and_drops_entries_without_records(
    client: Client, redis: Any, schema: Schema
) -> None:
    infos = [await client.start_workflow(chain(go_step()), queue="default") for _ in range(5)]
    ids = [info.id for info in infos]
    home = schema.queue("default")
    gone = schema.queue("default").workflow(ids[1])
    await redis.delete(gone.meta, gone.state, gone.graph, gone.results)  # removed by hand
    ops = client.broker.workflows
    first = await check_running(ops, "default", limit=2)
    assert (first.checked, first.dropped, first.lost) == (1, [ids[1]], [])
    assert await redis.zscore(home.workflows_running(), ids[1]) is None
    assert await redis.zscore(home.workflows(), ids[1]) is None
    second = await check_running(ops, "default", limit=2)
    assert (second.checked, second.dropped) == (2, [])
    third = await check_running(ops, "default", limit=2)  # the last, short page: back to the top next time
    assert third.checked == 1
    assert int(await redis.get(home.workflows_cursor())) == 0
    _, task_id = infos[4].steps["go-step"]
    await Inspector(redis, schema=schema).delete_task("go", task_id)
    found = (await check_running(ops, "default", limit=10)).lost
    assert [(s.workflow, s.step, s.queue, s.task_id) for s in found] == [(ids[4], "go-step", "go", task_id)]
