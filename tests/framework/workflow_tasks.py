"""Task types the workflow tests share: add one, sum a list, give up."""

from __future__ import annotations

from typing import Any

import msgspec

from framework.errors import SkipRetry
from framework.task import TaskDef

__all__ = ("ADD", "FAIL", "SUM", "Many", "Num", "add_one", "give_up", "total")


class Num(msgspec.Struct, frozen=True, kw_only=True):
    """A number, or the previous step's result (``prev``) when it has one."""

    n: int = 0
    prev: int | None = None


class Many(msgspec.Struct, frozen=True, kw_only=True):
    """The results of a group."""

    values: list[int] = []


async def add_one(ctx: Any, p: Num) -> int:
    return (p.prev if p.prev is not None else p.n) + 1


async def total(ctx: Any, p: Many) -> int:
    return sum(p.values)


async def give_up(ctx: Any, p: Num) -> int:
    raise SkipRetry(f"step {p.n} gave up")


ADD = TaskDef("wf:add", Num, add_one, result=int)
SUM = TaskDef("wf:sum", Many, total, result=int)
FAIL = TaskDef("wf:fail", Num, give_up, result=int, max_retry=0)
