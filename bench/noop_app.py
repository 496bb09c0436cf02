"""The benchmark's task: a no-op that counts itself (the same workload the peer benchmark runs).

Loaded by the worker under test through ``FRAMEWORK_APP=bench.noop_app``.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from framework import TaskDef, hookimpl

DONE_KEY = "bench:done"
LAT_KEY = "bench:lat"


class Noop(msgspec.Struct, frozen=True, kw_only=True):
    """``t0`` is the enqueue time for latency jobs, 0 otherwise."""

    t0: float = 0.0


async def handle(ctx: Any, payload: Noop) -> None:
    """INCR the done counter; latency jobs also record enqueue-to-start milliseconds."""
    start = time.time()
    redis = ctx.services.redis
    if payload.t0:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.rpush(LAT_KEY, (start - payload.t0) * 1000.0)
            pipe.incr(DONE_KEY)
            await pipe.execute()
    else:
        await redis.incr(DONE_KEY)


noop = TaskDef("bench:noop", Noop, handle, queue="default")


@hookimpl
def register_task_types(settings: Any) -> list[Any]:
    """The benchmark task."""
    return [noop]
