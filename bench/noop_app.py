"""The benchmark's task: a no-op that counts itself (the same workload the peer benchmark runs).

Loaded by the worker under test through ``FRAMEWORK_APP=bench.noop_app``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import msgspec

from framework import TaskDef, hookimpl

DONE_KEY = "bench:done"
HANDLER_CLIENT = os.environ.get("BENCH_HANDLER_CLIENT", "services")
"""The handler's Redis client: ``services`` (``ctx.services.redis``) or ``plain`` (a plain redis-py client)."""
LAT_KEY = "bench:lat"


class Noop(msgspec.Struct, frozen=True, kw_only=True):
    """``t0`` is the enqueue time for latency jobs, 0 otherwise."""

    t0: float = 0.0


_PLAIN: dict[int, Any] = {}


def _redis(ctx: Any) -> Any:
    if HANDLER_CLIENT != "plain":
        return ctx.services.redis
    import asyncio

    import redis.asyncio

    loop = id(asyncio.get_running_loop())
    client = _PLAIN.get(loop)
    if client is None:
        url = ctx.services.extra.get("redis_url") or os.environ["REDIS_URL"]
        client = _PLAIN[loop] = redis.asyncio.Redis.from_url(url)
    return client


async def handle(ctx: Any, payload: Noop) -> None:
    """INCR the done counter; latency jobs also record enqueue-to-start milliseconds."""
    start = time.time()
    redis = _redis(ctx)
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
