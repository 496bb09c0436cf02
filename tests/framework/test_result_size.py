"""Results too large to store: a handler's return value or ``ctx.write_result`` bytes over ``max_result_size``.

Redis refuses a string over its ``proto-max-bulk-len`` (512 MiB by default) with a protocol error and drops
the connection. The worker took that for a Redis fault and retried the outcome write for as long as the
task's lease held, which the heartbeat kept extending: the task stayed active for ever, the worker reported
Redis unavailable, the task's limit slot stayed taken and its waiter never learned anything.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from framework.client.client import Client
from framework.errors import ConfigError, TaskFailed
from framework.limits import Limit
from framework.protocol.keys import Schema
from framework.settings import Settings
from framework.task import TaskDef

DEFAULT_LIMIT = 64 * 1024 * 1024
"""The default ``max_result_size``."""


class In(msgspec.Struct, frozen=True, kw_only=True):
    n: int = 0


async def text_of(ctx: Any, p: In) -> str:
    return "x" * p.n


async def test_a_result_over_the_default_limit_archives_the_task_naming_its_size(
    start: Any, client: Client, redis: Any, schema: Schema
) -> None:
    task = TaskDef("rs:big", In, text_of, max_retry=3, retention=60)  # no result type: still refused
    await start(task)
    with pytest.raises(TaskFailed) as caught:
        await client.apply(task, In(n=DEFAULT_LIMIT), wait_timeout=60)
    assert caught.value.archived  # a retry would return as much again
    assert caught.value.error == (
        f"ResultTooLarge: the result task 'rs:big' returned is {DEFAULT_LIMIT + 2:,} bytes, "
        f"over the limit of {DEFAULT_LIMIT:,} bytes (setting max_result_size)"
    )
    assert await redis.hget(schema.queue("default").task(caught.value.task_id), "result") is None


async def test_a_result_redis_refuses_fails_the_task_and_frees_its_limit_slot(
    start: Any, client: Client, redis: Any, schema: Schema
) -> None:
    """A server whose strings are capped lower (``proto-max-bulk-len``) refused the write: retried for ever."""
    old = (await redis.config_get("proto-max-bulk-len"))["proto-max-bulk-len"]
    await redis.config_set("proto-max-bulk-len", 1024 * 1024)
    try:
        task = TaskDef("rs:limited", In, text_of, result=str, max_retry=5, limit=Limit(concurrency=1))
        await start(task)
        with pytest.raises(TaskFailed) as caught:
            await client.apply(task, In(n=DEFAULT_LIMIT), wait_timeout=20)
        assert caught.value.archived
        assert caught.value.error.startswith(
            f"ResultTooLarge: the result task 'rs:limited' returned is {DEFAULT_LIMIT + 2:,} bytes"
        )
        assert await redis.llen(schema.queue("default").active) == 0
        assert await client.apply(task, In(n=3), wait_timeout=20) == "xxx"  # its concurrency slot was given back
    finally:
        await redis.config_set("proto-max-bulk-len", old)


async def test_max_result_size_is_a_setting(start: Any, client: Client, settings: Settings) -> None:
    task = TaskDef("rs:small", In, text_of, result=str, max_retry=5)
    await start(task, settings=settings.replace(max_result_size=100))
    assert await client.apply(task, In(n=98), wait_timeout=20) == "x" * 98
    with pytest.raises(TaskFailed) as caught:
        await client.apply(task, In(n=99), wait_timeout=20)
    assert caught.value.error == (
        "ResultTooLarge: the result task 'rs:small' returned is 101 bytes, over the limit of 100 bytes "
        "(setting max_result_size)"
    )
    for wrong in (0, 512 * 1024 * 1024 + 1):
        with pytest.raises(ConfigError, match="max_result_size"):
            settings.replace(max_result_size=wrong)


async def test_write_result_refuses_bytes_over_the_limit_and_what_is_not_bytes(
    start: Any, client: Client, redis: Any, schema: Schema
) -> None:
    async def writer(ctx: Any, p: In) -> list[str]:
        refused = []
        for data in (b"x" * (DEFAULT_LIMIT + 1), "text", {"a": 1}):
            try:
                await ctx.write_result(data)
            except Exception as exc:
                refused.append(f"{type(exc).__name__}: {exc}")
        await ctx.write_result(bytearray(b"kept"))
        return refused

    task = TaskDef("rs:writer", In, writer, retention=60)
    await start(task)
    info = await client.enqueue(task, In())
    await client.wait(info, timeout=60)
    stored = await redis.hget(schema.queue("default").task(info.id), "result")
    assert msgspec.json.decode(stored) == [
        f"ResultTooLarge: the result task 'rs:writer' wrote is {DEFAULT_LIMIT + 1:,} bytes, "
        f"over the limit of {DEFAULT_LIMIT:,} bytes (setting max_result_size)",
        "TypeError: ctx.write_result takes bytes, not str",
        "TypeError: ctx.write_result takes bytes, not dict",
    ]
