"""The demo's Litestar routes: the page, enqueue and poll endpoints (registered by :mod:`framework.web.demo`)."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import get, post
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, JSONBody
from litestar.response import Template

from framework.client.client import Client
from framework.services import Services
from framework.web.demo_task import Hello, hello_task

__all__ = ("ROUTES",)


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
    state, result = await services.redis.hmget(qk.task(task_id), ["state", "result"])
    if not isinstance(state, bytes):
        raise NotFoundException(f"no demo task {task_id!r}")
    out: dict[str, Any] = {"id": task_id, "state": state.decode()}
    if result:
        out["result"] = msgspec.json.decode(result)
    return out


@get("/healthz", sync_to_thread=False)
def healthz() -> dict[str, str]:
    """Liveness probe."""
    return {"status": "ok"}


ROUTES = (home, enqueue_demo, demo_task, healthz)
