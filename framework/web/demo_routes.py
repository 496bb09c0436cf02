"""The demo's Litestar routes: the page, and task routes built on :mod:`framework.web.tasks`.

* ``POST /demo/tasks`` enqueues a greeting and answers at once; the page then follows the task on
  ``GET /demo/tasks/{id}/events`` (server-sent events: progress, then the greeting).
* ``POST /demo/greetings`` enqueues one and waits for it: ``200`` with the greeting, or ``202`` and the status URL.
* ``GET /demo/tasks/{id}`` is that status URL.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from litestar.response import ServerSentEvent, Template

from framework.client.client import Client
from framework.inspector import Inspector
from framework.web.demo_task import Hello, hello_task
from framework.web.tasks import enqueue_and_wait, progress_events, task_status

__all__ = ("ROUTES",)

STATUS_URL = "/demo/tasks/{id}"
EVENTS_URL = "/demo/tasks/{id}/events"
MAX_WAIT = 10.0
"""Seconds ``POST /demo/greetings`` waits at most, whatever the request asks."""


class EnqueueForm(msgspec.Struct, frozen=True, kw_only=True):
    """Body of ``POST /demo/tasks``."""

    name: str = "world"
    work_seconds: float = 0.5


class GreetForm(msgspec.Struct, frozen=True, kw_only=True):
    """Body of ``POST /demo/greetings``: a greeting, and how long to wait for it."""

    name: str = "world"
    work_seconds: float = 0.5
    wait_seconds: float = 5.0


def _hello(name: str, work_seconds: float) -> Hello:
    return Hello(name=name[:100], work_seconds=max(0.0, min(work_seconds, 10.0)))


@get("/", sync_to_thread=False)
def home() -> Template:
    """The demo page."""
    return Template(template_name="framework/demo.html")


@post("/demo/tasks", status_code=202)
async def enqueue_demo(data: JSONBody[EnqueueForm], client: NamedDependency[Client]) -> dict[str, Any]:
    """Enqueue a ``demo:hello`` task and answer at once with its id and where to follow it."""
    info = await hello_task.enqueue(client, _hello(data.name, data.work_seconds))
    return {
        "id": info.id,
        "queue": info.queue,
        "state": str(info.state),
        "status_url": STATUS_URL.format(id=info.id),
        "events_url": EVENTS_URL.format(id=info.id),
    }


@post("/demo/greetings")
async def greet(data: JSONBody[GreetForm], client: NamedDependency[Client]) -> Response[Any]:
    """Enqueue a ``demo:hello`` task and answer with its greeting, or ``202`` if it is not ready in time."""
    wait = max(0.0, min(data.wait_seconds, MAX_WAIT))
    return await enqueue_and_wait(
        client, hello_task, _hello(data.name, data.work_seconds), wait_timeout=wait, status_url=STATUS_URL
    )


@get("/demo/tasks/{task_id:str}")
async def demo_task(task_id: FromPath[str], client: NamedDependency[Client]) -> Response[Any]:
    """A demo task's outcome: ``200`` with the greeting, ``202`` while it runs, ``404`` for no such task."""
    return await task_status(client, task_id, queue=hello_task.queue, taskdef=hello_task, status_url=STATUS_URL)


@get("/demo/tasks/{task_id:str}/events")
async def demo_events(
    task_id: FromPath[str], client: NamedDependency[Client], inspector: NamedDependency[Inspector]
) -> ServerSentEvent:
    """A demo task's progress as server-sent events, then its greeting (or its error)."""
    return progress_events(client, task_id, queue=hello_task.queue, taskdef=hello_task, inspector=inspector)


@get("/healthz", sync_to_thread=False)
def healthz() -> dict[str, str]:
    """Liveness probe."""
    return {"status": "ok"}


ROUTES = (home, enqueue_demo, greet, demo_task, demo_events, healthz)
