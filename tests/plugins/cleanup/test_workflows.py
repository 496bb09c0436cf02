"""The ``workflows`` sweeper on a real Valkey: index entries of expired workflows, abandoned running workflows.

Steps go to queue ``go``, which no worker serves, so each workflow stays as the test leaves it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
from framework_cleanup.sweepers import SweepReport, run_sweeper
from structlog.testing import capture_logs

from framework.errors import WorkflowFailed
from framework.inspector import Inspector
from framework.task import TaskDef
from framework.workflow import chain, group
from tests.plugins.cleanup.conftest import builtin

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from framework.client.client import Client
    from framework.client.workflows import WorkflowInfo
    from framework.protocol.keys import Schema
    from framework.services import Services

DAY = 86400.0


class Num(msgspec.Struct, frozen=True, kw_only=True):
    n: int = 0
    prev: int | None = None


async def _add(ctx: Any, p: Num) -> int:
    return (p.prev if p.prev is not None else p.n) + 1


ADD = TaskDef("wfs:add", Num, _add, result=int)


def step(name: str) -> Any:
    return ADD.step(Num(n=1), name=name, queue="go")


async def sweep(services: Services, now: float, **kwargs: Any) -> SweepReport:
    return await run_sweeper(services, builtin(services.settings, "workflows"), now=now, **kwargs)


async def start(client: Client) -> WorkflowInfo:
    return await client.start_workflow(chain(step("a"), ADD.step(Num(), input="prev", name="b")), queue="default")


def drop_records(redis: Redis, schema: Schema, info: WorkflowInfo) -> Any:
    """Delete a workflow's records as their expiry would."""
    wk = schema.queue(info.queue).workflow(info.id)
    return redis.delete(wk.meta, wk.state, wk.graph, wk.results)


async def indexed(redis: Redis, schema: Schema, wid: str) -> tuple[bool, bool]:
    home = schema.queue("default")
    return (
        await redis.zscore(home.workflows(), wid) is not None,
        await redis.zscore(home.workflows_running(), wid) is not None,
    )


async def test_entries_of_expired_workflows_leave_both_indexes(
    services: Services, client: Client, redis: Redis, schema: Schema
) -> None:
    live, expired, ended = [await start(client) for _ in range(3)]
    await drop_records(redis, schema, expired)  # expired while still indexed as running
    await drop_records(redis, schema, ended)
    await redis.zrem(schema.queue("default").workflows_running(), ended.id)  # ended first, then expired
    later = time.time() + 2 * 3600  # past the one-hour grace

    assert (await sweep(services, time.time())).removed == 0  # within the grace period: untouched
    dry = await sweep(services, later, dry_run=True)
    assert (dry.removed, dry.dry_run) == (2, True)
    assert await indexed(redis, schema, expired.id) == (True, True)

    report = await sweep(services, later)
    assert (report.removed, report.errors, report.failed) == (2, [], False)
    assert await indexed(redis, schema, expired.id) == (False, False)
    assert await indexed(redis, schema, ended.id) == (False, False)
    assert await indexed(redis, schema, live.id) == (True, True)
    assert (await sweep(services, later)).removed == 0


async def test_an_abandoned_workflow_is_ended_and_expires(
    services: Services, client: Client, redis: Redis, schema: Schema
) -> None:
    abandoned = await start(client)
    waiting = await start(client)  # its first step's task is still pending: not abandoned
    queue, task_id = abandoned.steps["a"]
    await Inspector(redis, schema=schema).archive_task(queue, task_id)  # archived by a tool, never run again
    wk = schema.queue("default").workflow(abandoned.id)

    assert (await sweep(services, time.time() + 10 * DAY)).removed == 0  # archived 10 days ago: not yet
    with capture_logs() as logs:
        report = await sweep(services, time.time() + 31 * DAY, dry_run=True)
        assert report.removed == 1
        assert await redis.hget(wk.meta, "status") == b"running"
        report = await sweep(services, time.time() + 31 * DAY)
    assert (report.removed, report.items, report.errors) == (1, [wk.meta], [])
    ended = [e for e in logs if e["event"] == "cleanup_workflow_abandoned" and not e["dry_run"]]
    assert [(e["workflow"], e["home"], e["status"]) for e in ended] == [(abandoned.id, "default", "running")]

    assert await redis.hget(wk.meta, "status") == b"cancelled"
    assert (await redis.hget(wk.meta, "error") or b"").startswith(b"Abandoned: no step of it ran for 30 days")
    assert 0 < await redis.ttl(wk.meta) <= 7 * DAY  # keep_failed
    assert await indexed(redis, schema, abandoned.id) == (True, False)
    assert await indexed(redis, schema, waiting.id) == (True, True)
    assert await redis.hget(schema.queue("default").workflow(waiting.id).meta, "status") == b"running"
    with pytest.raises(WorkflowFailed) as caught:
        await client.wait_workflow(abandoned, timeout=5)
    assert caught.value.status == "cancelled"
    assert (await sweep(services, time.time() + 31 * DAY)).removed == 0

    # until it expires it can still be resumed: the archived step runs again
    assert await client.retry_workflow(abandoned) == 1
    assert await redis.hget(schema.queue(queue).task(task_id), "state") == b"pending"
    assert await indexed(redis, schema, abandoned.id) == (True, True)


async def test_a_failed_workflow_left_running_by_an_archived_step_is_ended(
    services: Services, client: Client, redis: Redis, schema: Schema
) -> None:
    info = await client.start_workflow(group(step("a"), step("b")), queue="default")
    inspector = Inspector(redis, schema=schema)
    await inspector.delete_task(*info.steps["a"])
    assert await client.broker.workflows.check("default", info.id) == ["a"]  # failed; b stays released
    await inspector.archive_task(*info.steps["b"])
    wk = schema.queue("default").workflow(info.id)
    assert await redis.hget(wk.meta, "status") == b"failed"
    assert await indexed(redis, schema, info.id) == (True, True)

    report = await sweep(services, time.time() + 31 * DAY)
    assert report.removed == 1
    assert await indexed(redis, schema, info.id) == (True, False)
    assert (await redis.hget(wk.meta, "error") or b"").startswith(b"step a: StepLost")  # its own error is kept
    assert await redis.ttl(wk.meta) > 0


async def test_index_entries_that_are_not_utf8_are_pruned_with_the_others(
    services: Services, client: Client, redis: Redis, schema: Schema
) -> None:
    """Ids (and queue names) another client wrote that are not UTF-8 text failed the sweep on every run, so no
    expired entry was pruned again; they are pruned as stored, and the others with them."""
    expired = await start(client)
    await drop_records(redis, schema, expired)
    home = schema.queue("default")
    created = time.time() - DAY
    await redis.zadd(home.workflows(), {b"gone-\xff\xfe": created})
    await redis.zadd(home.workflows_running(), {b"gone-\xff\xfe": created})
    odd = schema.queue(b"odd-\xff".decode("utf-8", "surrogateescape"))  # a queue name Go may write
    await redis.sadd(schema.all_queues, b"odd-\xff")
    await redis.zadd(odd.workflows().encode("utf-8", "surrogateescape"), {b"other": created})

    dry = await sweep(services, time.time() + 2 * 3600, dry_run=True)
    assert (dry.failed, dry.errors, dry.removed) == (False, [], 3)
    assert await redis.zcard(home.workflows()) == 2

    report = await sweep(services, time.time() + 2 * 3600)

    assert (report.failed, report.errors, report.removed) == (False, [], 3)
    assert set(report.items) == {
        home.workflow(expired.id).meta,
        home.workflow("gone-\\xff\\xfe").meta,
        schema.queue("odd-\\xff").workflow("other").meta,
    }
    assert await redis.zcard(home.workflows()) == 0
    assert await redis.zcard(home.workflows_running()) == 0
    assert await redis.zcard(odd.workflows().encode("utf-8", "surrogateescape")) == 0


async def test_an_abandoned_workflow_whose_id_is_not_utf8_is_reported_and_the_others_are_ended(
    services: Services, client: Client, redis: Redis, schema: Schema
) -> None:
    """The client cannot name such a workflow to end it: it is left alone and reported, and the others are ended."""
    abandoned = await start(client)
    await Inspector(redis, schema=schema).archive_task(*abandoned.steps["a"])
    home = schema.queue("default")
    odd = home.workflow(b"odd-\xff".decode("utf-8", "surrogateescape"))
    await redis.hset(odd.meta.encode("utf-8", "surrogateescape"), mapping={"status": "running", "created": 1.0})
    await redis.hset(odd.state.encode("utf-8", "surrogateescape"), b"step-\xfe", b"pending")  # its step names too
    await redis.hset(odd.graph.encode("utf-8", "surrogateescape"), b"t:step-\xfe", b"go\ngone-task-\xfe")
    await redis.zadd(home.workflows(), {b"odd-\xff": time.time() - 40 * DAY})
    await redis.zadd(home.workflows_running(), {b"odd-\xff": time.time() - 40 * DAY})

    with capture_logs() as logs:
        report = await sweep(services, time.time() + 31 * DAY)

    assert (report.failed, report.removed, report.items) == (False, 1, [home.workflow(abandoned.id).meta])
    assert len(report.errors) == 1
    assert "workflow 'odd-\\xff' of queue 'default' looks abandoned but is left alone" in report.errors[0]
    not_ended = [(e["workflow"], e["home"]) for e in logs if e["event"] == "cleanup_workflow_not_ended"]
    assert not_ended == [("odd-\\xff", "default")]
    assert await redis.hget(home.workflow(abandoned.id).meta, "status") == b"cancelled"
    assert await redis.zscore(home.workflows_running(), b"odd-\xff") is not None
