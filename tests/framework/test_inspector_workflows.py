"""The inspector's workflow reads and actions on a real Valkey, with real workers where steps must run."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from framework.client.client import Client
from framework.errors import SkipRetry, WorkflowNotFound
from framework.inspector import Inspector
from framework.protocol.keys import Schema
from framework.task import TaskDef
from framework.workflow import Workflow, chain
from tests.framework.worker_app import wait_until
from tests.framework.workflow_tasks import ADD, SUM, Many, Num


@pytest.fixture
async def client(client: Client) -> AsyncIterator[Client]:
    yield client
    await client.waiters.close()


@pytest.fixture
def inspector(redis: Any, schema: Schema) -> Inspector:
    return Inspector(redis, schema)


def diamond(first: TaskDef[Any]) -> Workflow:
    wf = Workflow("diamond")
    a = wf.add(first.step(Num(n=1), name="a"))
    b = wf.add(ADD.step(Num(), input="prev", name="b"), after=a)
    c = wf.add(ADD.step(Num(), input="prev", name="c"), after=a)
    wf.add(SUM.step(Many(), input="values", name="d"), after=[b, c])
    return wf


async def test_a_running_workflow_shows_live_step_states_then_results(
    start: Any, client: Client, inspector: Inspector
) -> None:
    gate = asyncio.Event()

    async def gated(ctx: Any, p: Num) -> int:
        await gate.wait()
        return p.n

    first = TaskDef("iwf:gated", Num, gated, result=int)
    await start(first, ADD, SUM)
    info = await client.start_workflow(diamond(first), workflow_id="wf-diamond")

    async def first_active() -> bool:
        return (await inspector.workflow_states(info.id)).states["a"] == "active"

    await wait_until(first_active)
    detail = await inspector.workflow(info.id)  # no queue: found in the indexes
    assert detail.summary.queue == "default"
    assert (detail.summary.name, detail.summary.status, detail.summary.total) == ("diamond", "running", 4)
    assert [(s.name, s.task_type, s.state) for s in detail.steps] == [
        ("a", "iwf:gated", "active"),
        ("b", "wf:add", "waiting"),
        ("c", "wf:add", "waiting"),
        ("d", "wf:sum", "waiting"),
    ]
    assert sorted(detail.edges) == [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")]
    assert detail.steps[3].deps == ["b", "c"]
    assert detail.steps[0].task_id == info.steps["a"][1]
    assert detail.counts == {"active": 1, "waiting": 3}
    assert detail.outputs == ["d"]

    gate.set()
    assert await client.wait_workflow(info, timeout=15) == 4
    detail = await inspector.workflow(info.id, "default")
    assert {s.name: s.state for s in detail.steps} == dict.fromkeys("abcd", "succeeded")
    assert {s.name: s.result for s in detail.steps} == {"a": 1, "b": 2, "c": 2, "d": 4}
    assert detail.steps[3].result_text == "4"
    assert detail.summary.status == "succeeded"
    assert detail.summary.finished is not None
    assert (await inspector.workflow_states(info.id)).counts == {"succeeded": 4}


async def test_a_failed_workflow_shows_its_waiting_steps_cancelled_and_retry_resumes_it(
    start: Any, client: Client, inspector: Inspector, redis: Any
) -> None:
    attempts: list[int] = []

    async def once(ctx: Any, p: Num) -> int:
        attempts.append(p.n)
        if len(attempts) == 1:
            raise SkipRetry("first run fails")
        return p.n

    flaky = TaskDef("iwf:flaky", Num, once, result=int, max_retry=0)
    await start(flaky, ADD)
    info = await client.start_workflow(chain(flaky.step(Num(n=4)), ADD.step(Num(), input="prev")))

    async def failed() -> bool:
        return (await inspector.workflow_states(info.id)).summary.status == "failed"

    await wait_until(failed)
    detail = await inspector.workflow(info.id)
    assert [(s.state, s.error) for s in detail.steps] == [
        ("failed", "SkipRetry: first run fails"),
        ("cancelled", ""),  # waiting, but it will not start unless retried
    ]
    assert "first run fails" in detail.summary.error
    assert [w.id for w in await inspector.workflows(status="failed")] == [info.id]
    assert await inspector.workflows(status="running") == []

    retried = await inspector.retry_workflow(info.id)
    assert (retried.queue, retried.status, retried.again) == ("default", "failed", 1)
    assert await client.wait_workflow(info, timeout=15) == 5


async def test_cancel_stops_a_workflow_and_an_unknown_one_is_not_found(
    start: Any, client: Client, inspector: Inspector
) -> None:
    gate = asyncio.Event()

    async def blocked(ctx: Any, p: Num) -> int:
        await gate.wait()
        return 1

    slow = TaskDef("iwf:slow", Num, blocked, result=int, max_retry=3)
    await start(slow, ADD)
    info = await client.start_workflow(chain(slow.step(Num()), ADD.step(Num(), input="prev")))

    async def active() -> bool:
        return (await inspector.workflow_states(info.id)).states["iwf:slow"] == "active"

    await wait_until(active)
    done = await inspector.cancel_workflow(info.id)
    assert (done.status, done.deleted, done.stopping) == ("running", 0, 1)

    async def cancelled() -> bool:
        states = await inspector.workflow_states(info.id)
        return states.summary.status == "cancelled" and states.counts == {"cancelled": 2}

    await wait_until(cancelled)
    again = await inspector.cancel_workflow(info.id, "default")
    assert (again.status, again.deleted, again.stopping) == ("cancelled", 0, 0)
    with pytest.raises(WorkflowNotFound):
        await inspector.workflow("no-such-workflow")
    with pytest.raises(WorkflowNotFound):
        await inspector.workflow_states(info.id, "other")
    with pytest.raises(WorkflowNotFound):
        await inspector.cancel_workflow("no-such-workflow", "default")
    with pytest.raises(WorkflowNotFound):
        await inspector.retry_workflow("no-such-workflow")
    gate.set()


async def test_live_workflows_behind_a_batch_of_expired_index_entries_are_listed(
    client: Client, inspector: Inspector, redis: Any, schema: Schema
) -> None:
    """Index entries are read by rank; removing the expired ones just read moved the later entries down, past the
    next read's start: five live workflows behind 100 expired entries listed as none."""
    qk = schema.queue("default")
    live = []
    for i in range(5):
        wid = f"live-{i}"
        await client.start_workflow(chain(ADD.step(Num(n=i)), ADD.step(Num(), input="prev")), workflow_id=wid)
        await redis.zadd(qk.workflows(), {wid: 1_000 + i})
        await redis.hset(qk.workflow(wid).meta, "created", 1_000 + i)
        live.append(wid)
    await redis.zadd(qk.workflows(), {f"expired-{i}": 2_000 + i for i in range(100)})  # newer, records gone
    listed = await inspector.workflows(limit=10)
    assert [w.id for w in listed] == list(reversed(live))
    assert await redis.zcard(qk.workflows()) == 5  # the expired entries left the index


async def test_the_list_is_newest_first_across_queues_paged_and_skips_expired_ones(
    client: Client, inspector: Inspector, redis: Any, schema: Schema
) -> None:
    # no worker: every workflow stays running; created times are set apart so that the order is known
    ids: list[tuple[str, str]] = []
    for i in range(230):
        queue, wid = ("default", "east", "west")[i % 3], f"wf-{i:03d}"
        await client.start_workflow(
            chain(ADD.step(Num(n=i)), ADD.step(Num(), input="prev")), workflow_id=wid, queue=queue
        )
        qk = schema.queue(queue)
        await redis.zadd(qk.workflows(), {wid: 1_000_000 + i})
        await redis.zadd(qk.workflows_running(), {wid: 1_000_000 + i})
        await redis.hset(qk.workflow(wid).meta, "created", 1_000_000 + i)
        ids.append((queue, wid))
    for _, wid in ids[::10]:
        await inspector.cancel_workflow(wid)
    newest = [wid for _, wid in reversed(ids)]
    cancelled = {wid for _, wid in ids[::10]}

    everything = await inspector.workflows(limit=1000)
    assert [w.id for w in everything] == newest
    assert everything[0].created is not None and everything[0].created.timestamp() == 1_000_229
    assert (everything[0].queue, everything[0].total, everything[0].done) == ("east", 2, 0)
    pages = [await inspector.workflows(limit=40, offset=o) for o in range(0, 240, 40)]
    assert [w.id for page in pages for w in page] == newest
    east = await inspector.workflows("east", limit=5)
    assert [w.id for w in east] == [wid for q, wid in reversed(ids) if q == "east"][:5]
    running = await inspector.workflows(status="running", limit=1000)
    assert [w.id for w in running] == [wid for wid in newest if wid not in cancelled]
    stopped = await inspector.workflows(status="cancelled", limit=10, offset=5)
    assert [w.id for w in stopped] == [wid for wid in newest if wid in cancelled][5:15]
    assert {w.status for w in stopped} == {"cancelled"}

    # a workflow whose records expired is skipped, and leaves the index
    queue, gone = ids[-1]
    wk = schema.queue(queue).workflow(gone)
    await redis.delete(wk.meta, wk.state, wk.graph, wk.results)
    assert [w.id for w in await inspector.workflows(limit=3)] == newest[1:4]
    assert await redis.zscore(schema.queue(queue).workflows(), gone) is None
    assert await redis.zscore(schema.queue(queue).workflows_running(), gone) is None
    with pytest.raises(ValueError, match="unknown workflow status 'done'"):
        await inspector.workflows(status="done")
    with pytest.raises(ValueError, match="limit"):
        await inspector.workflows(limit=0)
