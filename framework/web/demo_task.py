"""The demo's task: ``demo:hello`` greets someone after a short pause (see :mod:`framework.web.demo`)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import msgspec

from framework.task import TaskDef

if TYPE_CHECKING:
    from framework.context import TaskContext

__all__ = ("DEMO_HELLO", "Hello", "hello_task")

DEMO_HELLO = "demo:hello"


class Hello(msgspec.Struct, frozen=True, kw_only=True):
    """Payload of ``demo:hello``.

    Attributes:
        name: who to greet.
        work_seconds: how long the task pretends to work.
    """

    name: str = "world"
    work_seconds: float = 0.5


async def handle_hello(ctx: TaskContext, payload: Hello) -> None:
    """Pretend to work, then store a greeting as the task's result."""
    await asyncio.sleep(max(0.0, min(payload.work_seconds, 10.0)))
    await ctx.write_result(msgspec.json.encode({"greeting": f"Hello, {payload.name}!", "attempt": ctx.attempt}))


hello_task: TaskDef[Hello] = TaskDef(
    DEMO_HELLO,
    Hello,
    handle_hello,
    queue="default",
    max_retry=3,
    timeout=60,
    retention=3600,
    description="Greets someone after a short pause (the demo task).",
)
