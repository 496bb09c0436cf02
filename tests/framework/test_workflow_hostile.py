"""Workflows whose records or results are not what their steps expect, on a real Valkey with real workers.

What must hold: a step whose workflow is gone (its records expired or were deleted) never runs its handler on
an input made up of ``None``, and a step finishing then changes nothing; a dependency's result that cannot be
decoded fails the step that takes it at once, without retries; a workflow that ended and has one of its
archived steps run again keeps every one of its keys expiring together, and stops the clock while a step it
released runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from framework.client.client import Client
from framework.errors import SkipRetry, WorkflowFailed
from framework.inspector import Inspector
from framework.protocol.keys import Schema, WorkflowKeys
from framework.settings import Settings
from framework.task import TaskDef
from framework.workflow import Workflow, chain, chord
from tests.framework.worker_app import task_record, wait_until
from tests.framework.workflow_tasks import ADD, FAIL, Num

LATER = "later"
"""A queue no worker serves until the test starts one: a step released there waits for the test."""


@pytest.fixture
async def client(client: Client) -> AsyncIterator[Client]:
    yield client
    await client.waiters.close()


def _later(settings: Settings) -> Settings:
    return settings.replace(queues={LATER: 1})


async def _state(redis: Any, schema: Schema, where: tuple[str, str], *states: bytes | None) -> bool:
    return await redis.hget(schema.queue(where[0]).task(where[1]), "state") in states


async def _step(redis: Any, wk: WorkflowKeys, step: str, state: bytes) -> bool:
    return bool(await redis.hget(wk.state, step) == state)


async def _ttls(redis: Any, wk: WorkflowKeys) -> list[int]:
    return [await redis.ttl(key) for key in (wk.meta, wk.state, wk.graph, wk.results)]


class Values(msgspec.Struct, frozen=True, kw_only=True):
    values: list[int | None] = []
    prev: int | None = None
    anything: Any = None


def _recorder(seen: list[Values]) -> TaskDef[Values]:
    async def record(ctx: Any, p: Values) -> int:
        seen.append(p)
        return 0

    return TaskDef("hw:record", Values, record, result=int, max_retry=3)


@pytest.mark.parametrize("fan_in", [True, False], ids=["chord callback", "chain step"])
async def test_a_step_whose_workflow_is_gone_is_archived_without_running_its_handler(
    start: Any, client: Client, redis: Any, schema: Schema, settings: Settings, fan_in: bool
) -> None:
    """Its input would read as [] (or None, as if its dependency handed a failure on): it fails at once."""
    seen: list[Values] = []
    record = _recorder(seen)
    await start(ADD)
    if fan_in:
        wf = chord([ADD.step(Num(n=i)) for i in range(3)], record.step(Values(), input="values", queue=LATER))
    else:
        wf = chain(ADD.step(Num(n=1)), record.step(Values(), input="prev", queue=LATER))
    info = await client.start_workflow(wf, queue="default")
    where = info.steps["hw:record"]
    await wait_until(lambda: _state(redis, schema, where, b"pending"))
    wk = schema.queue(info.queue).workflow(info.id)
    await redis.delete(wk.meta, wk.state, wk.graph, wk.results)  # as its keeping time running out does
    await start(record, settings=_later(settings))
    await wait_until(lambda: _state(redis, schema, where, b"archived"))
    assert seen == []
    record_after = await task_record(redis, schema, *where)
    assert record_after["msg"].retried == 0
    assert f"its workflow {info.id!r} in queue 'default' is gone" in record_after["msg"].error_msg
    assert not await redis.exists(wk.meta, wk.state, wk.graph, wk.results)  # the archive wrote nothing there


@pytest.mark.parametrize("stored", [b"[" * 100_000 + b"]" * 100_000, b"\xff not JSON"], ids=["too deep", "not JSON"])
async def test_a_result_that_does_not_decode_fails_the_step_taking_it_at_once(
    start: Any, client: Client, redis: Any, schema: Schema, settings: Settings, stored: bytes
) -> None:
    """The step is archived on its first run, as for a result of the wrong type: no retry decodes it better."""
    seen: list[Values] = []
    record = _recorder(seen)
    await start(ADD)
    wf = chain(ADD.step(Num(n=1)), record.step(Values(), input="anything", queue=LATER))
    info = await client.start_workflow(wf)
    where = info.steps["hw:record"]
    await wait_until(lambda: _state(redis, schema, where, b"pending"))
    wk = schema.queue(info.queue).workflow(info.id)
    await redis.hset(wk.results, "wf:add", stored)  # nests deeper than a decoder goes, or is no JSON at all
    await start(record, settings=_later(settings))
    with pytest.raises(WorkflowFailed) as caught:
        await client.wait_workflow(info, timeout=2)
    assert caught.value.error.startswith("step hw:record: StepInputError: step 'hw:record': its dependencies'")
    assert seen == []
    assert (await task_record(redis, schema, *where))["msg"].retried == 0


async def test_a_step_finishing_after_its_workflow_record_was_deleted_changes_nothing(
    start: Any, client: Client, redis: Any, schema: Schema
) -> None:
    """No dependant is released, no record without a status is written, and what was left of it goes."""
    gate = asyncio.Event()

    async def held(ctx: Any, p: Num) -> int:
        await gate.wait()
        return 5

    hold = TaskDef("hw:held", Num, held, result=int)
    await start(hold)
    info = await client.start_workflow(chain(hold.step(Num()), ADD.step(Num(), input="prev", queue=LATER)))
    first = info.steps["hw:held"]
    await wait_until(lambda: _state(redis, schema, first, b"active"))
    wk = schema.queue(info.queue).workflow(info.id)
    await redis.delete(wk.meta)
    gate.set()
    await wait_until(lambda: _state(redis, schema, first, None))  # done: its task is gone
    assert not await redis.exists(schema.queue(LATER).task(info.steps["wf:add"][1]))
    assert not await redis.exists(wk.meta, wk.state, wk.graph, wk.results)


def _run_second_time() -> tuple[TaskDef[Num], list[int]]:
    runs: list[int] = []

    async def second_time(ctx: Any, p: Num) -> int:
        runs.append(p.n)
        if len(runs) == 1:
            raise SkipRetry("not yet")
        return 10

    return TaskDef("hw:second", Num, second_time, result=int, max_retry=0), runs


async def test_a_failed_workflow_that_ended_stops_its_clock_while_a_step_it_released_runs(
    start: Any, client: Client, redis: Any, schema: Schema, settings: Settings
) -> None:
    """a fails for good; b fails, is run again from the archive and releases c: the workflow (still failed,
    by a) keeps its records while c runs, then they all expire together, keep_failed after c finished."""
    flaky, _ = _run_second_time()
    await start(FAIL, flaky)
    wf = Workflow("ended")
    wf.add(FAIL.step(Num(n=1), name="a"))
    b = wf.add(flaky.step(Num(), name="b"))
    wf.add(ADD.step(Num(), input="prev", name="c", queue=LATER), after=b)
    info = await client.start_workflow(wf, keep_failed=600)
    wk = schema.queue(info.queue).workflow(info.id)
    running = schema.queue(info.queue).workflows_running()
    await wait_until(lambda: redis.hexists(wk.meta, "finished"))
    await Inspector(redis, schema=schema).run_task(*info.steps["b"])
    await wait_until(lambda: _step(redis, wk, "c", b"pending"))
    assert await redis.ttl(wk.meta) == -1  # c runs: no keeping time counts
    assert await redis.zscore(running, info.id) is not None  # the checker watches c
    await start(ADD, settings=_later(settings))
    await wait_until(lambda: _step(redis, wk, "c", b"succeeded"))
    assert all(590 <= ttl <= 600 for ttl in await _ttls(redis, wk)), await _ttls(redis, wk)
    assert await redis.zscore(running, info.id) is None
    assert await redis.hmget(wk.meta, "status", "open", "done", "failed") == [b"failed", b"0", b"2", b"1"]
    assert await redis.hget(wk.results, "c") == b"11"


async def test_a_handed_on_step_run_again_after_its_workflow_succeeded_stores_a_result_that_expires(
    start: Any, client: Client, redis: Any, schema: Schema
) -> None:
    flaky, runs = _run_second_time()
    await start(flaky)
    info = await client.start_workflow(chain(flaky.step(Num(), on_failure="continue")), retention=600)
    assert await client.wait_workflow(info, timeout=5) is None
    wk = schema.queue(info.queue).workflow(info.id)
    await Inspector(redis, schema=schema).run_task(*info.steps["hw:second"])
    await wait_until(lambda: _step(redis, wk, "hw:second", b"succeeded"))
    assert runs == [0, 0]
    assert await redis.hget(wk.results, "hw:second") == b"10"
    assert all(590 <= ttl <= 600 for ttl in await _ttls(redis, wk)), await _ttls(redis, wk)
    assert await redis.zscore(schema.queue(info.queue).workflows_running(), info.id) is None


async def test_a_check_of_a_workflow_whose_record_was_deleted_finds_nothing_lost(
    client: Client, redis: Any, schema: Schema
) -> None:
    """The record went between the checker's look at the index and its check of the workflow's steps."""
    info = await client.start_workflow(chain(ADD.step(Num(), queue=LATER), ADD.step(Num(), input="prev")))
    queue, task_id = info.steps["wf:add"]
    wk = schema.queue(info.queue).workflow(info.id)
    await redis.delete(wk.meta, schema.queue(queue).task(task_id))
    assert await client.broker.workflows.check(info.queue, info.id) == []
    assert not await redis.exists(wk.meta, wk.state, wk.graph, wk.results)
