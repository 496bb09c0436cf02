"""The run recorder: each run's outcome and duration in a capped list; it never fails a task."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import msgspec
import pytest
import structlog
from framework_admin.runs import MAX_RUNS, flush_runs, read_runs, record_runs_middleware, runs_key
from litestar.testing import AsyncTestClient
from redis.exceptions import ConnectionError as RedisConnectionError

from framework.context import TaskContext
from framework.hookspecs import hookimpl
from framework.inspector import Inspector
from framework.protocol.keys import Schema
from framework.task import TaskDef
from framework.web.app import create_app
from tests.plugins.admin.conftest import AUTH, FLAKY, OK, Job, admin_pm, wait_for


def ctx(services: Any, task_id: str, retried: int = 0) -> TaskContext:
    return TaskContext(
        id=task_id,
        type="t:x",
        queue="default",
        retried=retried,
        max_retry=3,
        deadline=0,
        headers={},
        logger=structlog.get_logger(),
        services=services,
    )


async def test_records_successes_and_failures_newest_first(services: Any) -> None:
    async def ok(c: Any, p: Any) -> None:
        await asyncio.sleep(0.02)

    async def bad(c: Any, p: Any) -> None:
        raise ValueError("<b>nope</b>")

    await record_runs_middleware(ok)(ctx(services, "a"), None)
    with pytest.raises(ValueError, match="nope"):
        await record_runs_middleware(bad)(ctx(services, "b", retried=2), None)
    await flush_runs(services)
    runs = await read_runs(services.redis, services.schema)
    assert [(r.id, r.status, r.attempt) for r in runs] == [("b", "failed", 3), ("a", "succeeded", 1)]
    assert runs[0].error == "ValueError: <b>nope</b>"
    # the 0.02 s the handler slept, in seconds (the upper bound only with room for a loaded machine)
    assert runs[1].duration is not None and 0.015 <= runs[1].duration < 10
    assert runs[1].finished_at is not None and runs[1].started_at is not None


async def test_the_list_is_capped_and_unreadable_records_are_skipped(services: Any) -> None:
    async def ok(c: Any, p: Any) -> None:
        return None

    run = record_runs_middleware(ok)
    for i in range(MAX_RUNS + 5):
        await run(ctx(services, f"t{i}"), None)
    key = runs_key(services.schema)
    await flush_runs(services)
    assert await services.redis.llen(key) == MAX_RUNS
    await services.redis.lpush(key, b"not json")
    runs = await read_runs(services.redis, services.schema, limit=3)
    assert [r.id for r in runs] == [f"t{MAX_RUNS + 4}", f"t{MAX_RUNS + 3}"]


async def test_cancelled_runs_are_not_recorded_and_redis_errors_are_swallowed(services: Any) -> None:
    running = asyncio.Event()

    async def slow(c: Any, p: Any) -> None:
        running.set()
        await asyncio.sleep(10)

    async def recorded_slow() -> None:
        await record_runs_middleware(slow)(ctx(services, "c"), None)

    task = asyncio.create_task(recorded_slow())
    await asyncio.wait_for(running.wait(), 10)  # cancelled while it runs, not before it began
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await flush_runs(services)  # anything recorded is written
    assert await read_runs(services.redis, services.schema) == []

    class Broken:
        def pipeline(self, **_: Any) -> Any:
            raise RedisConnectionError("down")

    services.redis, real = Broken(), services.redis
    try:

        async def ok(c: Any, p: Any) -> None:
            return None

        await record_runs_middleware(ok)(ctx(services, "d"), None)  # no exception
    finally:
        services.redis = real


class Slow(msgspec.Struct, frozen=True, kw_only=True):
    """Payload of the tasks below: how the handler takes its cancellation."""

    on_cancel: str = "stop"  # stop, return (swallow it and return), or run-on (swallow it and sleep on)


STARTED: set[str] = set()
RELEASED: set[str] = set()
"""Ids of the handlers running on past their cancellation that may end now."""
ENDED: set[str] = set()


async def _slow(ctx: Any, p: Slow) -> None:
    STARTED.add(ctx.id)
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        if p.on_cancel == "stop":
            raise
        while p.on_cancel == "run-on" and ctx.id not in RELEASED:  # until the test lets it end
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.05)
    finally:
        ENDED.add(ctx.id)


SLOW = TaskDef("admin-test:slow", Slow, _slow, queue="default", max_retry=0, timeout=1)


class SlowTasks:
    @hookimpl
    def register_task_types(self, settings: Any) -> list[Any]:
        return [SLOW]


async def test_a_real_worker_records_timeouts_and_cancellations(admin_settings: Any, client: Any, redis: Any) -> None:
    """Every run is recorded once, with the outcome the worker wrote: the handlers cancelled at their
    deadline (stopping, swallowing the cancellation, or running on until given up on) and through
    ``asynq:cancel`` included."""
    settings = admin_settings.replace(cancel_grace=0.3)
    app = create_app(settings, plugin_manager=admin_pm(settings, ("slow_tasks", SlowTasks())), run_worker=True)
    STARTED.clear()
    RELEASED.clear()
    ENDED.clear()
    async with AsyncTestClient(app) as api:
        for on_cancel in ("stop", "return", "run-on"):
            await client.enqueue(SLOW, Slow(on_cancel=on_cancel), task_id=f"timeout-{on_cancel}")
        await client.enqueue(SLOW, Slow(), task_id="cancel-me", timeout=30)

        async def running() -> bool:
            return "cancel-me" in STARTED

        await wait_for(running)
        await Inspector(redis, Schema(settings.namespace)).cancel("cancel-me")
        await client.enqueue(OK, Job(text="fine"), task_id="fine")
        await client.enqueue(FLAKY, Job(text="bad", fail_times=1), task_id="bad")

        async def recorded() -> dict[str, Any] | None:
            runs = (await api.get("/api/admin/runs", headers=AUTH)).json()
            finished = {r["id"]: r for r in runs if r["status"] != "active"}
            return finished if len(finished) == 6 else None

        try:
            # recorded when given up on: the handler that runs on still runs, until released below
            runs = await wait_for(recorded, timeout=30)
            assert "timeout-run-on" not in ENDED
        finally:
            RELEASED.add("timeout-run-on")

        async def ended() -> bool:
            return "timeout-run-on" in ENDED

        await wait_for(ended, timeout=30)
        # its end recorded nothing more: a run after it is recorded, and written no earlier than anything before
        await client.enqueue(OK, Job(text="after"), task_id="after")

        async def after() -> list[Any] | None:
            listed = (await api.get("/api/admin/runs", headers=AUTH)).json()
            finished = [r for r in listed if r["status"] != "active"]
            return finished if any(r["id"] == "after" for r in finished) else None

        again = await wait_for(after, timeout=30)
    assert sorted(r["id"] for r in again) == sorted([*runs, "after"])
    assert {i: r["status"] for i, r in runs.items()} == {
        "timeout-stop": "timeout",
        "timeout-return": "timeout",
        "timeout-run-on": "timeout",
        "cancel-me": "cancelled",
        "fine": "succeeded",
        "bad": "failed",
    }
    assert runs["timeout-stop"]["error"] == "TimeoutError: task timed out after 1s"
    assert runs["cancel-me"]["error"].startswith("TaskCancelled: ")
    assert runs["bad"]["error"] == "RuntimeError: boom bad"
    for run in runs.values():
        assert run["duration"] is not None
    # at the 1 s timeout, and the 0.3 s of grace after it for the one that ran on; the upper bounds only with room
    # for a loaded machine (that it was not recorded when it ended is checked above)
    assert 0.9 <= runs["timeout-stop"]["duration"] < 1 + 10
    assert 1.2 <= runs["timeout-run-on"]["duration"] < 1 + 0.3 + 10


def test_the_runs_key_keeps_the_value_it_had_in_the_core_schema() -> None:
    """Runs recorded before the key moved into the plugin are still read."""
    assert runs_key(Schema()) == "framework:admin:runs"
    assert runs_key(Schema("t1")) == "t1:fw:admin:runs"
