"""The demo's task: ``demo:hello`` greets someone after a short pause (see :mod:`framework.web.demo`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from framework.task import TaskDef

if TYPE_CHECKING:
    from framework.context import TaskContext

__all__ = ("DEMO_HELLO", "STEPS", "Greeting", "Hello", "hello_task")

DEMO_HELLO = "demo:hello"
STEPS = ("warming up", "finding the words", "polishing", "wrapping up")
"""What the task says it is doing, one step after another (its progress messages)."""


class Hello(msgspec.Struct, frozen=True, kw_only=True):
    """Payload of ``demo:hello``.

    Attributes:
        name: who to greet.
        work_seconds: how long the task pretends to work (at most 10).
    """

    name: str = "world"
    work_seconds: float = 0.5


class Greeting(msgspec.Struct, frozen=True, kw_only=True):
    """Result of ``demo:hello``.

    Attributes:
        greeting: the greeting.
        attempt: the attempt that made it (1 for the first run).
    """

    greeting: str
    attempt: int


async def handle_hello(ctx: TaskContext, payload: Hello) -> Greeting:
    """Pretend to work in a few steps, reporting progress after each, then return a greeting."""
    import asyncio  # noqa: PLC0415 - here, not at import: ``framework --help`` loads this module, never runs it

    pause = max(0.0, min(payload.work_seconds, 10.0)) / len(STEPS)
    for done, step in enumerate(STEPS):
        await ctx.progress(done / len(STEPS), step)
        await asyncio.sleep(pause)
    await ctx.progress(1.0, "done")
    return Greeting(greeting=f"Hello, {payload.name}!", attempt=ctx.attempt)


hello_task: TaskDef[Hello] = TaskDef(
    DEMO_HELLO,
    Hello,
    handle_hello,
    queue="default",
    max_retry=3,
    timeout=60,
    retention=3600,
    description="Greets someone after a short pause, reporting its progress (the demo task).",
    result=Greeting,
)
