"""The mixed benchmark's task: records each run, fails its first attempt when told to.

Loaded by the worker under test through ``FRAMEWORK_APP=bench.mixed_app``.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from framework import TaskDef, hookimpl

RUNS = "bench:mixed:runs"
"""HASH task number -> attempts started."""
OK = "bench:mixed:ok"
"""Successful attempts."""
ORDER = "bench:mixed:order"
"""LIST of the queue of every attempt started, in start order."""
LATE = "bench:mixed:late"
"""LIST of milliseconds between a delayed task's due time and its first start."""


class Mixed(msgspec.Struct, frozen=True, kw_only=True):
    """``due`` is the Unix time a delayed task was asked for (0 = now); ``blob`` pads the payload."""

    i: int
    fail: bool = False
    due: float = 0.0
    blob: str = ""


async def handle(ctx: Any, payload: Mixed) -> None:
    """Record the attempt; the first attempt of a ``fail`` task raises, so it is retried."""
    start = time.time()
    failing = payload.fail and ctx.retried == 0
    async with ctx.services.redis.pipeline(transaction=False) as pipe:
        pipe.hincrby(RUNS, str(payload.i), 1)
        pipe.rpush(ORDER, ctx.queue)
        if payload.due and ctx.retried == 0:
            pipe.rpush(LATE, (start - payload.due) * 1000.0)
        if not failing:
            pipe.incr(OK)
        await pipe.execute()
    if failing:
        raise RuntimeError("the first attempt fails on purpose")


def _one_second(retried: int, error: BaseException) -> float:
    return 1.0


mixed = TaskDef("bench:mixed", Mixed, handle, retry_delay=_one_second)


@hookimpl
def register_task_types(settings: Any) -> list[Any]:
    """The benchmark task."""
    return [mixed]
