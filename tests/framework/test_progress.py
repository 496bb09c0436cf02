"""Task progress: ``ctx.progress`` stored beside the task, rate-limited, announced, read and followed."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import msgspec
import pytest

from framework.context import PROGRESS_MESSAGE_MAX, TaskContext, check_progress
from framework.inspector import Inspector, TaskProgress
from framework.task import TaskDef
from framework.worker.progress import INTERVAL, LINGER
from tests.framework.worker_app import wait_until


class P(msgspec.Struct, frozen=True, kw_only=True):
    n: int = 0


@pytest.fixture
def inspector(redis: Any, schema: Any) -> Inspector:
    return Inspector(redis, schema)


async def _writes(redis: Any, schema: Any, queue: str = "default") -> tuple[Any, list[dict[str, Any]]]:
    """Subscribe to every progress channel of ``queue``; returns the pubsub and the list it fills (in a task)."""
    pubsub = redis.pubsub()
    await pubsub.psubscribe(schema.queue(queue).xprefix + "progress:*")
    seen: list[dict[str, Any]] = []

    async def collect() -> None:
        async for message in pubsub.listen():
            if message["type"] == "pmessage":
                seen.append(msgspec.json.decode(message["data"]))

    pubsub.collector = asyncio.create_task(collect())
    return pubsub, seen


async def _close(pubsub: Any) -> None:
    pubsub.collector.cancel()
    await pubsub.aclose()


async def _state(redis: Any, schema: Any, task_id: str) -> str | None:
    raw = await redis.hget(schema.queue("default").task(task_id), "state")
    return raw.decode() if raw else None


async def test_progress_is_stored_beside_the_task_and_read_by_the_inspector(
    start: Any, client: Any, redis: Any, schema: Any, inspector: Inspector
) -> None:
    go = asyncio.Event()

    async def handle(ctx: TaskContext, p: P) -> None:
        await ctx.progress(0.4, "resizing")
        await go.wait()

    task = TaskDef("progress:stored", P, handle)
    await start(task)
    info = await client.enqueue(task, P())

    async def reported() -> bool:
        return await inspector.progress("default", info.id) is not None

    await wait_until(reported)
    progress = await inspector.progress("default", info.id)
    assert progress is not None
    assert (progress.fraction, progress.message, progress.attempt, progress.ended) == (0.4, "resizing", 1, False)
    assert progress.percent == 40
    assert progress.updated_at is not None and abs(progress.updated_at.timestamp() - time.time()) < 5
    key = schema.queue("default").progress(info.id)
    assert key.startswith(schema.ext + ":"), "our own key, outside asynq's namespace"
    assert 0 < await redis.ttl(key) <= 1800 + LINGER  # a minute past the task's deadline (30 min by default)
    assert await redis.hget(schema.queue("default").task(info.id), "progress") is None  # asynq's hash untouched

    go.set()

    async def gone() -> bool:
        return await _state(redis, schema, info.id) is None

    await wait_until(gone)
    [ended] = await inspector.progress_many([("default", info.id)])
    assert ended is not None and ended.ended and ended.fraction == 0.4
    assert 0 < await redis.ttl(key) <= LINGER  # expires a minute after the handler ended
    assert await inspector.progress_many([]) == []
    assert await inspector.progress("default", "no-such-task") is None


async def test_a_tight_loop_of_reports_makes_few_writes_and_the_last_one_is_stored(
    start: Any, client: Any, redis: Any, schema: Any, inspector: Inspector
) -> None:
    took: list[float] = []

    async def handle(ctx: TaskContext, p: P) -> None:
        t0 = time.monotonic()
        for i in range(1000):
            await ctx.progress(i / 1000, f"step {i}")
            if p.n and i % 10 == 0:
                await asyncio.sleep(0.01)  # a loop that yields now and then
        took.append(time.monotonic() - t0)

    task = TaskDef("progress:loop", P, handle)
    await start(task)
    pubsub, writes = await _writes(redis, schema)
    try:
        for n in (0, 1):
            writes.clear()
            info = await client.enqueue(task, P(n=n))

            async def ended(task_id: str = info.id) -> bool:
                return any(w["ended"] for w in writes) and await _state(redis, schema, task_id) is None

            await wait_until(ended)
            assert len(writes) <= took[-1] / INTERVAL + 3, (len(writes), took[-1])
            assert writes[-1]["fraction"] == 0.999 and writes[-1]["message"] == "step 999"
            stored = await inspector.progress("default", info.id)
            assert stored is not None and (stored.fraction, stored.message, stored.ended) == (0.999, "step 999", True)
            fractions = [w["fraction"] for w in writes]
            assert fractions == sorted(fractions)
        assert len(writes) >= 3  # the yielding loop ran long enough for the rate limit to let a few through
    finally:
        await _close(pubsub)


async def test_a_report_of_one_is_written_at_once(start: Any, client: Any, redis: Any, schema: Any) -> None:
    go = asyncio.Event()

    async def handle(ctx: TaskContext, p: P) -> None:
        await ctx.progress(0.1, "start")
        await ctx.progress(0.5, "held back by the rate limit")
        await ctx.progress(1.0, "done")
        await go.wait()

    task = TaskDef("progress:one", P, handle)
    await start(task)
    pubsub, writes = await _writes(redis, schema)
    try:
        await client.enqueue(task, P())

        async def written() -> bool:
            return len(writes) >= 2

        await wait_until(written)
        assert [(w["fraction"], w["ended"]) for w in writes[:2]] == [(0.1, False), (1.0, False)]
        go.set()
    finally:
        await _close(pubsub)


async def test_reports_of_one_after_the_first_are_rate_limited_too(
    start: Any, client: Any, redis: Any, schema: Any, inspector: Inspector
) -> None:
    """Each report of ``1.0`` used to be written at once: a loop of them (finishing steps, from a coroutine or a
    sync handler's thread) wrote to Redis and published on every call."""
    took: list[float] = []

    async def handle(ctx: TaskContext, p: P) -> None:
        t0 = time.monotonic()
        for i in range(1000):
            await ctx.progress(1.0, f"finishing {i}")
        took.append(time.monotonic() - t0)

    def handle_sync(ctx: TaskContext, p: P) -> None:
        t0 = time.monotonic()
        for i in range(1000):
            ctx.report_progress(1.0, f"finishing {i}")
        took.append(time.monotonic() - t0)

    tasks = TaskDef("progress:ones", P, handle), TaskDef("progress:ones-sync", P, handle_sync)
    await start(*tasks)
    pubsub, writes = await _writes(redis, schema)
    try:
        for task in tasks:
            writes.clear()
            info = await client.enqueue(task, P())

            async def ended(task_id: str = info.id) -> bool:
                return any(w["ended"] for w in writes) and await _state(redis, schema, task_id) is None

            await wait_until(ended)
            assert len(writes) <= took[-1] / INTERVAL + 3, (task.type, len(writes), took[-1])
            assert writes[0]["message"] == "finishing 0"  # the first one at once
            assert (writes[-1]["message"], writes[-1]["ended"]) == ("finishing 999", True)
            stored = await inspector.progress("default", info.id)
            assert stored is not None and (stored.fraction, stored.message) == (1.0, "finishing 999")
    finally:
        await _close(pubsub)


async def test_a_sync_handler_reports_progress_from_its_thread(
    start: Any, client: Any, redis: Any, schema: Any, inspector: Inspector
) -> None:
    took: list[float] = []

    def handle(ctx: TaskContext, p: P) -> None:
        t0 = time.monotonic()
        for i in range(1, 51):
            ctx.report_progress(i / 50, f"chunk {i}")
            time.sleep(0.01)
        took.append(time.monotonic() - t0)

    task = TaskDef("progress:sync", P, handle)
    await start(task)
    pubsub, writes = await _writes(redis, schema)
    try:
        info = await client.enqueue(task, P())

        async def done() -> bool:
            return any(w["ended"] for w in writes) and await _state(redis, schema, info.id) is None

        await wait_until(done)
        # the first and the last, and one every INTERVAL between them (the half second it sleeps, or longer on a
        # loaded machine): not one for each of the fifty reports
        assert 2 <= len(writes) <= took[-1] / INTERVAL + 3, (len(writes), took[-1])
        stored = await inspector.progress("default", info.id)
        assert stored is not None and (stored.fraction, stored.message, stored.ended) == (1.0, "chunk 50", True)
    finally:
        await _close(pubsub)


async def test_watch_progress_receives_each_update_and_ends_with_the_task(
    start: Any, client: Any, inspector: Inspector
) -> None:
    async def handle(ctx: TaskContext, p: P) -> None:
        channel = ctx.services.schema.queue(ctx.queue).progress_channel(ctx.id)

        async def watched() -> bool:
            [(_, subscribers)] = await ctx.services.redis.pubsub_numsub(channel)
            return bool(subscribers)

        await wait_until(watched, timeout=30)  # the watcher subscribes first
        for fraction, message in ((0.25, "fetching"), (0.5, "resizing"), (0.75, "uploading")):
            await ctx.progress(fraction, message)
            await asyncio.sleep(0.3)

    task = TaskDef("progress:watch", P, handle)
    await start(task)
    info = await client.enqueue(task, P())
    seen: list[TaskProgress] = []

    async def follow() -> None:
        async for progress in inspector.watch_progress("default", info.id, idle=1.0):
            seen.append(progress)

    await asyncio.wait_for(follow(), timeout=15)
    assert [(p.fraction, p.message) for p in seen if not p.ended] == [
        (0.25, "fetching"),
        (0.5, "resizing"),
        (0.75, "uploading"),
    ]
    assert seen[-1].ended and seen[-1].fraction == 0.75


async def test_watch_progress_of_a_finished_task_ends_at_once(inspector: Inspector, client: Any) -> None:
    seen = [p async for p in inspector.watch_progress("default", "no-such-task", idle=0.2)]
    assert seen == []


async def test_a_bad_report_raises_in_the_handler_and_fails_the_task(
    start: Any, client: Any, redis: Any, schema: Any, inspector: Inspector
) -> None:
    errors: list[str] = []

    async def handle(ctx: TaskContext, p: P) -> None:
        for bad in (1.5, -0.1, math.nan, True, "0.5"):
            try:
                await ctx.progress(bad)  # type: ignore[arg-type]
            except (TypeError, ValueError) as exc:
                errors.append(type(exc).__name__)
        await ctx.progress(0.5, "x" * 1000)

    task = TaskDef("progress:bad", P, handle)
    await start(task)
    info = await client.enqueue(task, P())

    async def gone() -> bool:
        return await _state(redis, schema, info.id) is None

    await wait_until(gone)
    assert errors == ["ValueError", "ValueError", "ValueError", "TypeError", "TypeError"]
    stored = await inspector.progress("default", info.id)
    assert stored is not None and stored.message == "x" * PROGRESS_MESSAGE_MAX


def test_check_progress() -> None:
    assert check_progress(0, "") == (0.0, "")
    assert check_progress(1, "done") == (1.0, "done")
    assert check_progress(0.5, "é" * 300) == (0.5, "é" * PROGRESS_MESSAGE_MAX)
    with pytest.raises(ValueError, match="from 0 to 1"):
        check_progress(40, "percent is not a fraction")
    with pytest.raises(ValueError, match="from 0 to 1"):
        check_progress(math.inf, "")
    with pytest.raises(ValueError, match="from 0 to 1"):
        check_progress(10**400, "an int too large for a float")
    with pytest.raises(TypeError, match="must be a number"):
        check_progress(None, "")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="message must be a string"):
        check_progress(0.5, b"bytes")  # type: ignore[arg-type]


async def test_a_context_outside_a_worker_has_no_progress_writer() -> None:
    ctx = TaskContext(
        id="x",
        type="t",
        queue="q",
        retried=0,
        max_retry=0,
        deadline=0,
        headers={},
        logger=None,
        services=None,  # type: ignore[arg-type]
    )
    with pytest.raises(RuntimeError, match="no progress writer"):
        await ctx.progress(0.5)
    with pytest.raises(RuntimeError, match="no progress writer"):
        ctx.report_progress(0.5)
