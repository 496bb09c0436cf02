"""The built-in demo, served when no app is configured: a page that enqueues work and shows it run.

It is an ordinary plugin (hook implementations only), registered as ``demo`` when ``settings.app`` is
unset, so ``framework run`` on a fresh install shows the whole path: a request enqueues ``demo:hello``,
the worker in the same process runs it, and the page polls the task's state.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import msgspec
from litestar import get, post
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, JSONBody
from litestar.response import Template

from framework.client import Client
from framework.hookspecs import hookimpl
from framework.services import Services
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


class EnqueueForm(msgspec.Struct, frozen=True, kw_only=True):
    """Body of ``POST /demo/tasks``."""

    name: str = "world"
    work_seconds: float = 0.5


@get("/", sync_to_thread=False)
def home() -> Template:
    """The demo page."""
    return Template(template_name="framework/demo.html")


@post("/demo/tasks", status_code=202)
async def enqueue_demo(data: JSONBody[EnqueueForm], client: NamedDependency[Client]) -> dict[str, Any]:
    """Enqueue a ``demo:hello`` task and answer at once with its id."""
    info = await hello_task.enqueue(client, Hello(name=data.name[:100], work_seconds=data.work_seconds))
    return {"id": info.id, "queue": info.queue, "state": str(info.state)}


@get("/demo/tasks/{task_id:str}")
async def demo_task(task_id: FromPath[str], services: NamedDependency[Services]) -> dict[str, Any]:
    """The state of a demo task, and its result once completed."""
    qk = services.schema.queue(hello_task.queue)
    state, result = await services.redis.hmget(qk.task(task_id), ["state", "result"])  # type: ignore[misc]
    if state is None:
        raise NotFoundException(f"no demo task {task_id!r}")
    out: dict[str, Any] = {"id": task_id, "state": state.decode()}
    if result:
        out["result"] = msgspec.json.decode(result)
    return out


@get("/healthz", sync_to_thread=False)
def healthz() -> dict[str, str]:
    """Liveness probe."""
    return {"status": "ok"}


@hookimpl
def register_task_types(settings: Settings) -> list[TaskDef[Any]]:
    """The demo task."""
    return [hello_task]


@hookimpl
def register_routes(settings: Settings) -> list[Any]:
    """The demo page and its JSON endpoints."""
    return [home, enqueue_demo, demo_task, healthz]
