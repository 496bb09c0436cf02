"""Workflows end to end on a real Valkey with real workers: shapes, typed inputs, failure policy, resume, cancel."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from framework.client.client import Client
from framework.errors import InvalidWorkflow, SkipRetry, WorkflowFailed
from framework.protocol.keys import Schema
from framework.task import TaskDef
from framework.workflow import Workflow, chain, chord, group
from tests.framework.worker_app import wait_until
from tests.framework.workflow_tasks import ADD, FAIL, SUM, Many, Num


@pytest.fixture
async def client(client: Client) -> AsyncIterator[Client]:
    yield client
    await client.waiters.close()


class MaybeMany(msgspec.Struct, frozen=True, kw_only=True):
    values: list[int | None] = []


class Text(msgspec.Struct, frozen=True, kw_only=True):
    s: str | None = None


async def total_known(ctx: Any, p: MaybeMany) -> int:
    return sum(v for v in p.values if v is not None)


SUM_KNOWN = TaskDef("wf:sum-known", MaybeMany, total_known, result=int)
TEXT = TaskDef("wf:text", Text, lambda ctx, p: p.s)


async def test_a_chain_passes_each_result_to_the_next_step(start: Any, client: Client) -> None:
    await start(ADD)
    wf = chain(ADD.step(Num(n=1)), *[ADD.step(Num(), input="prev") for _ in range(4)])
    assert await client.run_workflow(wf, wait_timeout=15) == 6


async def test_a_group_returns_the_list_and_a_chord_its_callback(start: Any, client: Client) -> None:
    await start(ADD, SUM)
    assert await client.run_workflow(group(*[ADD.step(Num(n=i)) for i in range(5)]), wait_timeout=15) == [1, 2, 3, 4, 5]
    wf = chord([ADD.step(Num(n=i)) for i in range(10)], SUM.step(Many(), input="values"))
    assert await client.run_workflow(wf, wait_timeout=15) == 55


async def test_a_graph_step_waits_for_all_its_dependencies(start: Any, client: Client) -> None:
    await start(ADD, SUM)
    wf = Workflow("diamond")
    a = wf.add(ADD.step(Num(n=1), name="a"))
    b = wf.add(ADD.step(Num(), input="prev", name="b"), after=a)
    c = wf.add(ADD.step(Num(), input="prev", name="c"), after=a)
    wf.add(SUM.step(Many(), input="values", name="d"), after=[b, c])
    info = await client.start_workflow(wf)
    assert await client.wait_workflow(info, timeout=15) == 6
    assert set(info.steps) == {"a", "b", "c", "d"}


def test_a_mismatched_input_is_refused_when_the_workflow_is_built() -> None:
    with pytest.raises(InvalidWorkflow, match=r"Text.s is str \| None, but step 'wf:add' returns int"):
        chain(ADD.step(Num()), TEXT.step(Text(), input="s")).plan()
    with pytest.raises(InvalidWorkflow, match="must be a list of their results"):
        chord([ADD.step(Num()), ADD.step(Num())], ADD.step(Num(), input="prev")).plan()
    with pytest.raises(InvalidWorkflow, match="declares no result type"):
        chain(TEXT.step(Text()), TEXT.step(Text(), input="s")).plan()
    with pytest.raises(InvalidWorkflow, match="its failure is handed on"):
        chord([ADD.step(Num(), on_failure="continue")], SUM.step(Many(), input="values")).plan()
    with pytest.raises(InvalidWorkflow, match="option 'process_in' is not for a step"):
        ADD.step(Num(), process_in=5)  # type: ignore[call-arg]
        chain(ADD.step(Num(), process_in=5)).plan()  # type: ignore[call-arg]


async def test_a_failed_step_fails_the_workflow_and_its_dependants_never_run(
    start: Any, client: Client, redis: Any, schema: Schema
) -> None:
    await start(ADD, FAIL, SUM)
    wf = chain(group(ADD.step(Num(n=1)), FAIL.step(Num(n=7))), SUM.step(Many(), input="values"))
    info = await client.start_workflow(wf)
    with pytest.raises(WorkflowFailed) as caught:
        await client.wait_workflow(info, timeout=15)
    assert caught.value.status == "failed"
    assert "step wf:fail: SkipRetry: step 7 gave up" in caught.value.error
    wk = schema.queue("default").workflow(info.id)
    await wait_until(lambda: _state(redis, wk, "wf:add"), timeout=10)
    states = {k.decode(): v.decode() for k, v in (await redis.hgetall(wk.state)).items()}
    assert states == {"wf:add": "succeeded", "wf:fail": "failed", "wf:sum": "waiting"}
    queue, task_id = info.steps["wf:sum"]
    assert not await redis.exists(schema.queue(queue).task(task_id))


async def test_continue_on_failure_hands_none_to_the_dependants(start: Any, client: Client) -> None:
    await start(ADD, FAIL, SUM_KNOWN)
    wf = chord(
        [ADD.step(Num(n=1)), FAIL.step(Num(n=7), on_failure="continue"), ADD.step(Num(n=2))],
        SUM_KNOWN.step(MaybeMany(), input="values"),
    )
    assert await client.run_workflow(wf, wait_timeout=15) == 5


async def _state(redis: Any, wk: Any, step: str) -> bool:
    return await redis.hget(wk.state, step) == b"succeeded"


async def test_retrying_the_archived_step_resumes_the_workflow(
    start: Any, client: Client, redis: Any, schema: Schema
) -> None:
    attempts: list[int] = []

    async def once(ctx: Any, p: Num) -> int:
        attempts.append(p.n)
        if len(attempts) == 1:
            raise SkipRetry("first run fails")
        return p.n * 10

    flaky = TaskDef("wf:flaky", Num, once, result=int, max_retry=0)
    await start(ADD, flaky)
    info = await client.start_workflow(chain(flaky.step(Num(n=4)), ADD.step(Num(), input="prev")))
    with pytest.raises(WorkflowFailed):
        await client.wait_workflow(info, timeout=15)
    # the archived step is run again from the archive, as the dashboard or Go's asynq CLI would
    queue, task_id = info.steps["wf:flaky"]
    from framework.inspector import Inspector

    inspector = Inspector(redis, schema=schema)
    await inspector.run_task(queue, task_id)
    assert await client.wait_workflow(info, timeout=15) == 41


async def test_cancel_deletes_pending_steps_and_drops_waiting_ones(
    start: Any, client: Client, redis: Any, schema: Schema
) -> None:
    gate = asyncio.Event()

    async def slow(ctx: Any, p: Num) -> int:
        await gate.wait()
        return 1

    blocker = TaskDef("wf:slow", Num, slow, result=int, max_retry=3)
    await start(blocker, ADD)
    info = await client.start_workflow(chain(blocker.step(Num()), ADD.step(Num(), input="prev")))
    wk = schema.queue("default").workflow(info.id)
    await wait_until(lambda: _active(redis, schema, info.steps["wf:slow"]))
    assert await client.cancel_workflow(info) == "running"
    with pytest.raises(WorkflowFailed) as caught:
        await client.wait_workflow(info, timeout=15)
    assert caught.value.status == "cancelled"
    # the running step was asked to stop and archived; the waiting one never ran
    await wait_until(lambda: _hget(redis, wk.state, "wf:slow", b"cancelled"), timeout=15)
    queue, task_id = info.steps["wf:add"]
    assert not await redis.exists(schema.queue(queue).task(task_id))
    assert await redis.ttl(wk.meta) > 0  # ended: expires after its retention


async def _active(redis: Any, schema: Schema, where: tuple[str, str]) -> bool:
    return await redis.hget(schema.queue(where[0]).task(where[1]), "state") == b"active"


async def _hget(redis: Any, key: str, field: str, value: bytes) -> bool:
    return await redis.hget(key, field) == value


class Pair(msgspec.Struct, frozen=True, kw_only=True):
    left: int
    right: int


async def pair(ctx: Any, p: Num) -> Pair:
    return Pair(left=p.n, right=-p.n)


PAIR = TaskDef("wf:pair", Num, pair, result=Pair)


async def test_results_come_back_in_their_declared_types_and_succeeded_workflows_expire(
    start: Any, client: Client, redis: Any, schema: Schema
) -> None:
    await start(PAIR)
    info = await client.start_workflow(group(PAIR.step(Num(n=1)), PAIR.step(Num(n=2))), retention=120)
    assert await client.wait_workflow(info, timeout=15) == [Pair(left=1, right=-1), Pair(left=2, right=-2)]
    wk = schema.queue("default").workflow(info.id)
    assert 0 < await redis.ttl(wk.meta) <= 120
    assert 0 < await redis.ttl(wk.results) <= 120
    assert not await redis.zscore(schema.queue("default").workflows_running(), info.id)
    # waited for by id alone, by a client that does not know the task types: plain JSON
    assert await client.wait_workflow(info.id, timeout=5) == [{"left": 1, "right": -1}, {"left": 2, "right": -2}]


async def test_a_chain_step_handed_a_failure_gets_none(start: Any, client: Client) -> None:
    await start(ADD, FAIL)
    wf = chain(FAIL.step(Num(n=3), on_failure="continue"), ADD.step(Num(n=40), input="prev"))
    assert await client.run_workflow(wf, wait_timeout=15) == 41


async def test_retry_workflow_resumes_after_a_failure_and_after_a_cancel(
    start: Any, client: Client, redis: Any, schema: Schema
) -> None:
    runs: list[str] = []

    async def second_time(ctx: Any, p: Num) -> int:
        runs.append("run")
        if len(runs) == 1:
            raise SkipRetry("not yet")
        return 100

    flaky = TaskDef("wf:second", Num, second_time, result=int, max_retry=0)
    gate = asyncio.Event()

    async def held(ctx: Any, p: Num) -> int:
        await gate.wait()
        return 5

    hold = TaskDef("wf:held", Num, held, result=int)
    await start(ADD, flaky, hold)  # one worker knows every type (another would put wf:held back as unknown)
    info = await client.start_workflow(chain(flaky.step(Num()), ADD.step(Num(), input="prev")))
    with pytest.raises(WorkflowFailed):
        await client.wait_workflow(info, timeout=15)
    assert await client.retry_workflow(info) == 1
    assert await client.wait_workflow(info, timeout=15) == 101
    wk = schema.queue("default").workflow(info.id)
    assert await redis.hget(wk.meta, "status") == b"succeeded"

    info = await client.start_workflow(chain(ADD.step(Num(n=1)), hold.step(Num()), ADD.step(Num(), input="prev")))
    await wait_until(lambda: _active(redis, schema, info.steps["wf:held"]))
    await client.cancel_workflow(info)
    wk = schema.queue("default").workflow(info.id)
    # the held step is stopped by the cancel (its handler waits on the gate), then archived as cancelled
    await wait_until(lambda: _hget(redis, wk.state, "wf:held", b"cancelled"), timeout=15)
    assert await redis.hget(wk.state, "wf:add-2") == b"waiting"
    gate.set()  # the step's next run returns at once
    assert await client.retry_workflow(info) == 1
    assert await client.wait_workflow(info, timeout=15) == 6


async def test_a_unique_first_step_whose_lock_is_held_stores_nothing(
    client: Client, redis: Any, schema: Schema
) -> None:
    from framework.errors import DuplicateTask

    await client.enqueue(ADD, Num(n=9), unique=60)
    wf = chain(ADD.step(Num(n=9), unique=60), ADD.step(Num(), input="prev"))
    with pytest.raises(DuplicateTask, match="step 'wf:add'"):
        await client.start_workflow(wf, workflow_id="wf-unique")
    assert not await redis.exists(schema.queue("default").workflow("wf-unique").meta)
    with pytest.raises(InvalidWorkflow, match="exists already"):
        await client.start_workflow(chain(ADD.step(Num(n=1))), workflow_id="wf-twice")
        await client.start_workflow(chain(ADD.step(Num(n=1))), workflow_id="wf-twice")


async def test_a_step_whose_task_vanished_is_reported_lost_and_fails_the_workflow(
    client: Client, redis: Any, schema: Schema
) -> None:
    from framework.errors import WorkflowNotFound
    from framework.inspector import Inspector

    info = await client.start_workflow(chain(ADD.step(Num(n=1)), ADD.step(Num(), input="prev")))
    queue, task_id = info.steps["wf:add"]
    await Inspector(redis, schema=schema).delete_task(queue, task_id)  # as `asynq task delete` would
    assert await client.broker.workflows.check(info.queue, info.id) == ["wf:add"]
    with pytest.raises(WorkflowFailed) as caught:
        await client.wait_workflow(info, timeout=5)
    assert "StepLost" in caught.value.error and "Go asynq" in caught.value.error
    # archived by hand: a failure of the step, which running it again would resume
    other = await client.start_workflow(chain(ADD.step(Num(n=2)), ADD.step(Num(), input="prev")))
    queue, task_id = other.steps["wf:add"]
    await Inspector(redis, schema=schema).archive_task(queue, task_id)
    assert await client.broker.workflows.check(other.queue, other.id) == []
    wk = schema.queue("default").workflow(other.id)
    assert await redis.hget(wk.state, "wf:add") == b"failed"
    with pytest.raises(WorkflowNotFound):
        await client.wait_workflow("no-such-workflow", timeout=1)


async def test_sync_client_runs_starts_and_cancels_workflows(start: Any, redis_url: str, schema: Schema) -> None:
    from framework.client.sync import SyncClient

    await start(ADD, SUM)

    def blocking() -> tuple[Any, Any, str]:
        with SyncClient(redis_url, schema=schema) as sync:
            ran = sync.run_workflow(chain(ADD.step(Num(n=1)), ADD.step(Num(), input="prev")), wait_timeout=15)
            info = sync.start_workflow(
                chord([ADD.step(Num(n=1)), ADD.step(Num(n=2))], SUM.step(Many(), input="values"))
            )
            waited = sync.wait_workflow(info, timeout=15)
            return ran, waited, sync.cancel_workflow(info)

    assert await asyncio.to_thread(blocking) == (3, 5, "succeeded")


def test_step_names_are_unique_and_usable() -> None:
    with pytest.raises(InvalidWorkflow, match="two steps are named 'x'"):
        chain(ADD.step(Num(), name="x"), ADD.step(Num(), name="x")).plan()
    with pytest.raises(InvalidWorkflow, match="line breaks"):
        chain(ADD.step(Num(), name="a\nb")).plan()
    with pytest.raises(InvalidWorkflow, match="at least one step"):
        Workflow().plan()
    plan = chain(ADD.step(Num(), name="wf:add-2"), ADD.step(Num()), ADD.step(Num())).plan()
    assert [s.name for s in plan.steps] == ["wf:add-2", "wf:add", "wf:add-3"]
    other = Workflow()
    handle = other.add(ADD.step(Num()))
    with pytest.raises(InvalidWorkflow, match="handles returned by this workflow"):
        Workflow().add(ADD.step(Num()), after=handle)
