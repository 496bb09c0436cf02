"""The workflow benchmark's step types (``bench/workflows.py``), loaded by its workers as ``FRAMEWORK_APP``.

* ``bench:member``: a no-op that counts itself (``INCR``) and returns 0: a chord's member, or a plain task;
* ``bench:count``: a chord's callback, returning how many results it got;
* ``bench:hand``: a chain link: records how long after the step before returned it started (its input is
  that step's return time), and returns its own return time.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from framework import TaskDef, hookimpl

DONE_KEY = "bench:wf:done"
HAND_KEY = "bench:wf:hand"


class Member(msgspec.Struct, frozen=True, kw_only=True):
    """A no-op step."""


class Results(msgspec.Struct, frozen=True, kw_only=True):
    """A callback's input: the group's results."""

    values: list[int] = []


class Link(msgspec.Struct, frozen=True, kw_only=True):
    """A chain link's input: the Unix time the step before returned (None for the first)."""

    prev: float | None = None


async def member(ctx: Any, payload: Member) -> int:
    """Count the run."""
    await ctx.services.redis.incr(DONE_KEY)
    return 0


async def count(ctx: Any, payload: Results) -> int:
    """How many results the group gave."""
    return len(payload.values)


async def link(ctx: Any, payload: Link) -> float:
    """Record the hand-off from the step before (ms), return when this one returns."""
    start = time.time()
    if payload.prev is not None:
        await ctx.services.redis.rpush(HAND_KEY, (start - payload.prev) * 1000.0)
    return time.time()


MEMBER = TaskDef("bench:member", Member, member, result=int, queue="default")
COUNT = TaskDef("bench:count", Results, count, result=int, queue="default")
LINK = TaskDef("bench:hand", Link, link, result=float, queue="default")


@hookimpl
def register_task_types(settings: Any) -> list[Any]:
    """The benchmark's step types."""
    return [MEMBER, COUNT, LINK]
