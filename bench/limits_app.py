"""The limits benchmark's task types (``FRAMEWORK_APP=bench.limits_app``).

* ``bench:free``: no limit; ``INCR bench:free``.
* ``bench:rated``: limit ``bench-rated`` at 1,000/s (``[limits.bench-rated]`` in settings changes it);
  ``INCR bench:rated`` and, with ``stamp``, ``RPUSH bench:starts`` of its start time.
* ``bench:capped``: limit ``bench-capped``, 5 at once; ``INCR bench:capped``.
* ``bench:other``: no limit; ``INCR bench:other`` (arrivals of an unlimited type, to compare with limited ones).
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from framework import Limit, TaskDef, hookimpl

FREE_KEY, RATED_KEY, CAPPED_KEY, STARTS_KEY = "bench:free", "bench:rated", "bench:capped", "bench:starts"
OTHER_KEY = "bench:other"


class Job(msgspec.Struct, frozen=True, kw_only=True):
    """``stamp``: record the start time too."""

    stamp: bool = False


async def free(ctx: Any, job: Job) -> None:
    await ctx.services.redis.incr(FREE_KEY)


async def rated(ctx: Any, job: Job) -> None:
    if job.stamp:
        await ctx.services.redis.rpush(STARTS_KEY, repr(time.time()))
    else:
        await ctx.services.redis.incr(RATED_KEY)


async def capped(ctx: Any, job: Job) -> None:
    await ctx.services.redis.incr(CAPPED_KEY)


async def other(ctx: Any, job: Job) -> None:
    await ctx.services.redis.incr(OTHER_KEY)


FREE = TaskDef("bench:free", Job, free)
RATED = TaskDef("bench:rated", Job, rated, limit=Limit(rate="1000/s", name="bench-rated"))
CAPPED = TaskDef("bench:capped", Job, capped, limit=Limit(concurrency=5, name="bench-capped"))
OTHER = TaskDef("bench:other", Job, other)


@hookimpl
def register_task_types(settings: Any) -> list[TaskDef[Any]]:
    """The four task types."""
    return [FREE, RATED, CAPPED, OTHER]
