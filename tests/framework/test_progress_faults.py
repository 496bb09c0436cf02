"""Progress reports at the edges: a task with a timeout of centuries, a message Redis cannot take as UTF-8.

Progress is best effort: neither may fail the task, and the record must still expire on its own.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from structlog.testing import capture_logs

from framework.context import TaskContext
from framework.inspector import Inspector
from framework.protocol.keys import Schema
from framework.task import TaskDef
from framework.worker.progress import LINGER
from tests.framework.worker_app import wait_until


class P(msgspec.Struct, frozen=True, kw_only=True):
    text: str = ""


async def test_a_task_with_a_huge_timeout_still_gets_a_record_that_expires(
    start: Any, client: Any, redis: Any, schema: Schema
) -> None:
    go = asyncio.Event()

    async def handle(ctx: TaskContext, p: P) -> None:
        await ctx.progress(0.5, "halfway")
        await go.wait()

    task = TaskDef("progress:forever", P, handle)
    await start(task)
    with capture_logs() as logs:
        info = await client.enqueue(task, P(), timeout=2**62)
        key = schema.queue("default").progress(info.id)

        async def written() -> bool:
            return bool(await redis.hget(key, "fraction"))

        await wait_until(written)
        await asyncio.sleep(0.1)
        ttl = await redis.ttl(key)
        go.set()
    assert 0 < ttl <= 366 * 24 * 3600 + LINGER, ttl  # -1 would be a record that never expires
    assert not [e for e in logs if e["event"] == "task_progress_not_written"]


async def test_a_message_with_a_lone_surrogate_is_stored_and_the_task_succeeds(
    start: Any, client: Any, redis: Any, schema: Schema
) -> None:
    async def handle(ctx: TaskContext, p: P) -> str:
        name = b"photo-\xff.jpg".decode("utf-8", "surrogateescape")  # a file name as os.listdir gives it
        await ctx.progress(0.5, f"resizing {name}")
        await ctx.progress(0.75, f"saving {name}")
        return "ok"

    task = TaskDef("progress:surrogate", P, handle, retention=60, max_retry=0)
    await start(task)
    assert await client.apply(task, P(), wait_timeout=10) == "ok"
    progress = await Inspector(redis, schema).progress("default", (await _only_completed(redis, schema)))
    assert progress is not None
    assert progress.message == "saving photo-?.jpg"
    assert progress.ended


async def _only_completed(redis: Any, schema: Schema) -> str:
    ids = await redis.zrange(schema.queue("default").completed, 0, -1)
    assert len(ids) == 1
    return str(ids[0].decode())


async def test_report_progress_from_the_loop_thread_just_before_returning_is_the_last_report(
    start: Any, client: Any, redis: Any, schema: Schema
) -> None:
    async def handle(ctx: TaskContext, p: P) -> str:
        await ctx.progress(0.5, "halfway")
        ctx.report_progress(1.0, "done")  # callable from the loop's thread too, the docs say
        return "ok"

    def sync_handle(ctx: TaskContext, p: P) -> str:
        ctx.report_progress(0.5, "halfway")
        ctx.report_progress(0.9, "nearly")
        return "ok"

    for name, handler in (("progress:loop", handle), ("progress:thread", sync_handle)):
        task = TaskDef(name, P, handler, retention=60, max_retry=0)
        worker = await start(task)
        info = await client.enqueue(task, P())
        assert await client.wait(info, timeout=10) == "ok"
        progress = await Inspector(redis, schema).progress("default", info.id)
        assert progress is not None
        assert progress.ended
        assert (progress.fraction, progress.message) == ((1.0, "done") if name == "progress:loop" else (0.9, "nearly"))
        await worker.stop()
