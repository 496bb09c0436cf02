"""The cold-start benchmark's task: a no-op that notes when its process ran its first task, and counts itself.

Loaded by the worker under test through ``FRAMEWORK_APP=bench.cold_app`` (see :mod:`bench.cold_start`).
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from framework import TaskDef, hookimpl

DONE_KEY = "bench:cold:done"
FIRST_KEY = "bench:cold:first"
"""The wall-clock time (``time.time()``) at which the worker process's first handler started."""

_first = True


class Nothing(msgspec.Struct, frozen=True):
    """No payload."""


async def handle(ctx: Any, payload: Nothing) -> None:
    """The first call records its start time; every call INCRs the done counter."""
    global _first  # noqa: PLW0603 - one flag per worker process
    start = time.time()
    redis = ctx.services.redis
    if _first:
        _first = False
        await redis.set(FIRST_KEY, repr(start))
    await redis.incr(DONE_KEY)


cold = TaskDef("bench:cold", Nothing, handle, queue="default")


@hookimpl
def register_task_types(settings: Any) -> list[Any]:
    """The benchmark task."""
    return [cold]
