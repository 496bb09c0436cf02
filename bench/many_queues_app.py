"""The many-queues benchmark's task: records its queue and when it started.

Loaded by the workers under test through ``FRAMEWORK_APP=bench.many_queues_app``. Each run appends
``<queue> <enqueued at> <started at>`` (Unix s) to :data:`STARTS_KEY`, so the benchmark sees which queue
made progress when, and the enqueue-to-start latency of each task.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from framework import TaskDef, hookimpl

STARTS_KEY = "bench:starts"


class Stamp(msgspec.Struct, frozen=True, kw_only=True):
    """``t0``: when the task was enqueued (Unix s)."""

    t0: float = 0.0


async def handle(ctx: Any, payload: Stamp) -> None:
    """Record the queue, the enqueue time and the start time."""
    started = time.time()
    await ctx.services.redis.rpush(STARTS_KEY, f"{ctx.queue} {payload.t0:.6f} {started:.6f}")


stamp = TaskDef("bench:stamp", Stamp, handle)


@hookimpl
def register_task_types(settings: Any) -> list[Any]:
    """The benchmark task."""
    return [stamp]
