"""Workflows when things go wrong, on a real Valkey with real workers.

What must hold: a wait that times out raises ``WaitTimeout`` and only a Redis fault becomes
``RedisUnavailable``; a workflow resumed with ``retry_workflow`` (after a failure, or right after a cancel
whose step is still stopping) completes and no longer shows the error it stopped with; steps that fail in
other ways (a payload that does not decode, a result that does not encode, a task type no worker knows)
fail their workflow with an error naming the step.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from framework.client.client import Client
from framework.embedded.launch import free_port
from framework.errors import RedisUnavailable, SkipRetry, WaitTimeout, WorkflowFailed
from framework.inspector import Inspector
from framework.protocol.keys import Schema
from framework.task import TaskDef
from framework.workflow import chain, chord
from tests.framework.worker_app import wait_until
from tests.framework.workflow_tasks import ADD, SUM, Many, Num


@pytest.fixture
async def client(client: Client) -> AsyncIterator[Client]:
    yield client
    await client.waiters.close()


async def _hget(redis: Any, key: str, field: str, value: bytes) -> bool:
    return await redis.hget(key, field) == value


async def _active(redis: Any, schema: Schema, where: tuple[str, str]) -> bool:
    return await redis.hget(schema.queue(where[0]).task(where[1]), "state") == b"active"


@pytest.mark.parametrize("how", ["retry_workflow", "run its archived step"])
async def test_a_resumed_workflow_that_succeeds_shows_no_error(
    start: Any, client: Client, redis: Any, schema: Schema, how: str
) -> None:
    """A workflow that failed, resumed (by retry_workflow, or by running its archived step) and then succeeded
    shows neither the workflow's old error nor its re-run step's."""
    runs: list[int] = []

    async def second_time(ctx: Any, p: Num) -> int:
        runs.append(p.n)
        if len(runs) == 1:
            raise SkipRetry("not yet")
        return 10

    flaky = TaskDef("rv:second", Num, second_time, result=int, max_retry=0)
    await start(ADD, flaky)
    info = await client.start_workflow(chain(flaky.step(Num()), ADD.step(Num(), input="prev")))
    with pytest.raises(WorkflowFailed):
        await client.wait_workflow(info, timeout=15)
    inspector = Inspector(redis, schema=schema)
    if how == "retry_workflow":
        assert await client.retry_workflow(info) == 1
    else:
        await inspector.run_task(*info.steps["rv:second"])
    assert await client.wait_workflow(info, timeout=15) == 11
    detail = await inspector.workflow(info.id, info.queue)
    assert (detail.summary.status, detail.summary.error) == ("succeeded", "")
    assert [step.error for step in detail.steps] == ["", ""]


async def test_a_chord_member_that_succeeds_on_its_retry_completes_the_chord(
    start: Any, client: Client, redis: Any, schema: Schema
) -> None:
    ran: dict[int, int] = {}

    async def member(ctx: Any, p: Num) -> int:
        ran[p.n] = ran.get(p.n, 0) + 1
        if p.n == 2 and ran[p.n] == 1:
            raise RuntimeError("boom")
        return p.n

    mem = TaskDef("rv:member", Num, member, result=int, max_retry=1, retry_delay=lambda n, e: 0.1)
    await start(mem, SUM)
    wf = chord([mem.step(Num(n=i)) for i in range(1, 4)], SUM.step(Many(), input="values"))
    info = await client.start_workflow(wf)
    assert await client.wait_workflow(info, timeout=15) == 6
    assert ran == {1: 1, 2: 2, 3: 1}


async def test_wait_workflow_times_out_and_the_workflow_goes_on(
    start: Any, client: Client, redis: Any, schema: Schema
) -> None:
    gate = asyncio.Event()

    async def held(ctx: Any, p: Num) -> int:
        await gate.wait()
        return 5

    hold = TaskDef("rv:held", Num, held, result=int)
    await start(hold, ADD)
    info = await client.start_workflow(chain(hold.step(Num()), ADD.step(Num(), input="prev")))
    with pytest.raises(WaitTimeout):
        await client.wait_workflow(info, timeout=0.3)
    gate.set()
    assert await client.wait_workflow(info, timeout=15) == 6


async def test_run_workflow_raises_wait_timeout_when_the_workflow_outlives_it(start: Any, client: Client) -> None:
    gate = asyncio.Event()

    async def held(ctx: Any, p: Num) -> int:
        await gate.wait()
        return 5

    hold = TaskDef("rv:held", Num, held, result=int)
    await start(hold)
    try:
        with pytest.raises(WaitTimeout):
            await client.run_workflow(chain(hold.step(Num())), wait_timeout=0.3, workflow_id="outlives")
    finally:
        gate.set()
    assert await client.wait_workflow("outlives", timeout=15) == 5


async def test_workflow_calls_report_an_unreachable_redis_as_redis_unavailable() -> None:
    unreachable = Client.from_url(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    try:
        with pytest.raises(RedisUnavailable):
            await unreachable.start_workflow(chain(ADD.step(Num())))
        with pytest.raises(RedisUnavailable):
            await unreachable.wait_workflow("any", timeout=5)
        with pytest.raises(RedisUnavailable):
            await unreachable.cancel_workflow("any")
        with pytest.raises(RedisUnavailable):
            await unreachable.retry_workflow("any")
    finally:
        await unreachable.close()


class Other(msgspec.Struct, frozen=True, kw_only=True):
    n: str = "x"


async def test_a_step_whose_payload_does_not_decode_fails_the_workflow_at_once(
    start: Any, client: Client, redis: Any, schema: Schema
) -> None:
    wrong = TaskDef("wf:add", Other, lambda ctx, p: 1, result=int)  # the client's idea of wf:add
    await start(ADD)
    info = await client.start_workflow(chain(wrong.step(Other(n="abc")), ADD.step(Num(), input="prev")))
    with pytest.raises(WorkflowFailed) as caught:
        await client.wait_workflow(info, timeout=15)
    assert caught.value.status == "failed"
    assert "does not decode" in caught.value.error


async def test_a_workflow_resumed_while_its_cancelled_step_still_stops_completes(
    start: Any, client: Client, redis: Any, schema: Schema
) -> None:
    stopping = asyncio.Event()
    release = asyncio.Event()
    runs: list[int] = []

    async def slow_to_stop(ctx: Any, p: Num) -> int:
        runs.append(1)
        if len(runs) > 1:
            return 7
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            stopping.set()
            await release.wait()  # cleaning up takes a moment
            raise
        return 7

    slow = TaskDef("rv:slow", Num, slow_to_stop, result=int, max_retry=3)
    await start(slow, ADD)
    info = await client.start_workflow(chain(slow.step(Num()), ADD.step(Num(), input="prev")))
    await wait_until(lambda: _active(redis, schema, info.steps["rv:slow"]))
    assert await client.cancel_workflow(info) == "running"
    await asyncio.wait_for(stopping.wait(), 10)
    assert await client.retry_workflow(info) == 1  # the stopping step runs again once it stopped
    release.set()
    assert await client.wait_workflow(info, timeout=15) == 8
    assert runs == [1, 1]
    queue, task_id = info.steps["rv:slow"]
    assert not await redis.exists(schema.queue(queue).cancel_request(task_id))
    detail = await Inspector(redis, schema=schema).workflow(info.id, info.queue)
    assert (detail.summary.status, detail.summary.error) == ("succeeded", "")
    assert [step.error for step in detail.steps] == ["", ""]


async def test_a_workflow_cancelled_again_after_its_resume_stays_cancelled(
    start: Any, client: Client, redis: Any, schema: Schema
) -> None:
    stopping = asyncio.Event()
    release = asyncio.Event()
    runs: list[int] = []

    async def slow_to_stop(ctx: Any, p: Num) -> int:
        runs.append(1)
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            stopping.set()
            await release.wait()
            raise
        return 7

    slow = TaskDef("rv:slow2", Num, slow_to_stop, result=int, max_retry=3)
    await start(slow, ADD)
    info = await client.start_workflow(chain(slow.step(Num()), ADD.step(Num(), input="prev")))
    await wait_until(lambda: _active(redis, schema, info.steps["rv:slow2"]))
    assert await client.cancel_workflow(info) == "running"
    await asyncio.wait_for(stopping.wait(), 10)
    assert await client.retry_workflow(info) == 1
    assert await client.cancel_workflow(info) == "running"
    release.set()
    wk = schema.queue(info.queue).workflow(info.id)
    await wait_until(lambda: _hget(redis, wk.state, "rv:slow2", b"cancelled"))
    with pytest.raises(WorkflowFailed) as caught:
        await client.wait_workflow(info, timeout=15)
    assert caught.value.status == "cancelled"
    queue, task_id = info.steps["rv:slow2"]
    assert await redis.hget(schema.queue(queue).task(task_id), "state") == b"archived"
    assert runs == [1]


async def test_a_large_result_is_handed_on(start: Any, client: Client) -> None:
    class Blob(msgspec.Struct, frozen=True, kw_only=True):
        size: int = 0
        data: str | None = None

    async def make(ctx: Any, p: Blob) -> str:
        return "x" * p.size

    async def measure(ctx: Any, p: Blob) -> int:
        return len(p.data or "")

    mk = TaskDef("rv:make", Blob, make, result=str)
    ms = TaskDef("rv:measure", Blob, measure, result=int)
    await start(mk, ms)
    wf = chain(mk.step(Blob(size=8_000_000)), ms.step(Blob(), input="data"))
    assert await client.run_workflow(wf, wait_timeout=30) == 8_000_000


async def test_a_step_of_a_type_no_worker_knows_is_archived_and_fails_its_workflow(
    start: Any, client: Client, redis: Any, schema: Schema, settings: Any
) -> None:
    ghost = TaskDef("rv:ghost", Num, lambda ctx, p: 1, result=int)  # registered by no worker here
    await start(ADD, settings=settings.replace(unknown_type_wait=0))
    info = await client.start_workflow(chain(ADD.step(Num(n=1)), ghost.step(Num(), input="prev")))
    with pytest.raises(WorkflowFailed) as caught:
        await client.wait_workflow(info, timeout=15)
    assert "step rv:ghost: UnknownTaskType" in caught.value.error
    wk = schema.queue("default").workflow(info.id)
    assert await redis.hget(wk.state, "wf:add") == b"succeeded"
    assert await redis.hget(wk.results, "wf:add") == b"2"  # the completed step's result is kept


async def test_a_result_that_does_not_fit_fails_the_step_and_the_workflow(start: Any, client: Client) -> None:
    async def wrong(ctx: Any, p: Num) -> Any:
        return object()  # not JSON

    bad = TaskDef("rv:bad", Num, wrong, result=int, max_retry=0)
    await start(ADD, bad)
    info = await client.start_workflow(chain(bad.step(Num()), ADD.step(Num(), input="prev")))
    with pytest.raises(WorkflowFailed) as caught:
        await client.wait_workflow(info, timeout=15)
    assert "step rv:bad: ResultTypeError" in caught.value.error
