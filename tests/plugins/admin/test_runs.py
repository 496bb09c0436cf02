"""The run recorder: each run's outcome and duration in a capped list; it never fails a task."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import structlog
from framework_admin.runs import MAX_RUNS, flush_runs, read_runs, record_runs_middleware, runs_key
from redis.exceptions import ConnectionError as RedisConnectionError

from framework.context import TaskContext


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
    assert runs[1].duration is not None and 0.015 <= runs[1].duration < 2
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
    async def slow(c: Any, p: Any) -> None:
        await asyncio.sleep(10)

    task = asyncio.create_task(record_runs_middleware(slow)(ctx(services, "c"), None))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
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
