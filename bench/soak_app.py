"""The soak's tasks: one per outcome a long-running worker sees.

Loaded by the worker under test through ``FRAMEWORK_APP=bench.soak_app``. ``soak:job`` succeeds, fails its
first attempt (then succeeds on the retry), or sleeps past its timeout, as its payload says; a payload that
is not a ``Job`` fails to decode and is archived. Tasks of a type no worker registers are enqueued by the
soak itself.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from framework import TaskDef, hookimpl


class Job(msgspec.Struct, frozen=True, kw_only=True):
    """``fail``: the first attempt raises; ``sleep``: seconds to sleep (past the task's timeout to time out)."""

    fail: bool = False
    sleep: float = 0.0


async def handle(ctx: Any, job: Job) -> None:
    """Fail the first attempt of a ``fail`` job; sleep as long as asked."""
    if job.fail and ctx.retried == 0:
        raise RuntimeError("the first attempt fails on purpose")
    if job.sleep:
        await asyncio.sleep(job.sleep)


def _at_once(retried: int, error: BaseException) -> float:
    return 0.0


job = TaskDef("soak:job", Job, handle, max_retry=1, retry_delay=_at_once)


@hookimpl
def register_task_types(settings: Any) -> list[Any]:
    """The soak's task."""
    return [job]
