"""The error text a failed task is stored with, whatever the handler raised: huge, or unprintable."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from framework.client.client import Client
from framework.errors import TaskFailed
from framework.protocol.keys import Schema
from framework.protocol.message import decode_message
from framework.task import TaskDef


class In(msgspec.Struct, frozen=True, kw_only=True):
    n: int = 0


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text for this one")


async def test_a_huge_error_message_is_cut_so_the_failure_is_written(
    start: Any, client: Client, redis: Any, schema: Schema
) -> None:
    """The whole message went into the task's record: one larger than Redis takes (``proto-max-bulk-len``, 512 MiB
    by default, lowered here) made the write fail, and it was retried for ever, the task left active."""
    old = (await redis.config_get("proto-max-bulk-len"))["proto-max-bulk-len"]
    await redis.config_set("proto-max-bulk-len", 1024 * 1024)
    try:

        async def fail(ctx: Any, p: In) -> None:
            raise ValueError("x" * p.n)

        task = TaskDef("ft:huge", In, fail, max_retry=0, retention=60)
        await start(task)
        with pytest.raises(TaskFailed) as caught:
            await client.apply(task, In(n=2 * 1024 * 1024), wait_timeout=20)
        error = caught.value.error
        assert error.startswith("ValueError: xxx")
        assert error.endswith(f"... (cut: {len('ValueError: ') + 2 * 1024 * 1024:,} characters)")
        assert len(error) < 20_000
        data = await redis.hget(schema.queue("default").task(caught.value.task_id), "msg")
        assert decode_message(data).error_msg == error
    finally:
        await redis.config_set("proto-max-bulk-len", old)


async def test_an_exception_whose_text_cannot_be_read_still_fails_the_task(start: Any, client: Client) -> None:
    async def fail(ctx: Any, p: In) -> None:
        raise Unprintable

    task = TaskDef("ft:unprintable", In, fail, max_retry=0)
    await start(task)
    with pytest.raises(TaskFailed) as caught:
        await client.apply(task, In(), wait_timeout=20)
    assert caught.value.error == "Unprintable: <the error's text could not be read: RuntimeError: no text for this one>"
