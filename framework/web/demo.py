"""The built-in demo, served when no app is configured: a page that enqueues work and shows it run.

It is an ordinary plugin (hook implementations only), registered as ``demo`` when ``settings.app`` is
unset, so ``framework run`` on a fresh install shows the whole path: a request enqueues ``demo:hello``,
the worker in the same process runs it, and the page polls the task's state.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import msgspec

from framework.hookspecs import hookimpl
from framework.task import TaskDef

if TYPE_CHECKING:
    from framework.context import TaskContext
    from framework.settings import Settings

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


@hookimpl
def register_task_types(settings: Settings) -> list[TaskDef[Any]]:
    """The demo task."""
    return [hello_task]


@hookimpl
def register_routes(settings: Settings) -> list[Any]:
    """The demo page and its JSON endpoints."""
    from framework.web.demo_routes import ROUTES  # noqa: PLC0415 - the web stack loads only for the web app

    return list(ROUTES)
