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
HANDLER_CLIENT = os.environ.get("BENCH_HANDLER_CLIENT", "redis-py")
"""How the handler sends its INCR: ``redis-py`` (``ctx.services.redis``, as the peers' handlers do) or ``resp``."""
LAT_KEY = "bench:lat"


class Noop(msgspec.Struct, frozen=True, kw_only=True):
    """``t0`` is the enqueue time for latency jobs, 0 otherwise."""

    t0: float = 0.0


_FAST: dict[int, Any] = {}


def _fast_redis(ctx: Any) -> Any:
    from framework.resp import fast_path_for

    client = _FAST.get(id(ctx.services))
    if client is None:
        client = _FAST[id(ctx.services)] = fast_path_for(ctx.services.redis)
    return client


async def handle(ctx: Any, payload: Noop) -> None:
    """INCR the done counter; latency jobs also record enqueue-to-start milliseconds."""
    start = time.time()
    if HANDLER_CLIENT == "resp":
        fast = _fast_redis(ctx)
        if payload.t0:
            await fast.execute_many([("RPUSH", LAT_KEY, (start - payload.t0) * 1000.0), ("INCR", DONE_KEY)])
        else:
            await fast.execute("INCR", DONE_KEY)
        return
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
