"""The admin's JSON API (mounted at ``/api/admin`` by :func:`framework_admin.routes.admin_routes`).

Grit's endpoints, with the same paths:

- ``GET /jobs/stats``: every queue's counts, latency and totals.
- ``GET /jobs/{status}``: a page of tasks in one state (``active``, ``pending``, ``scheduled``, ``retry``,
  ``archived`` or ``failed``, ``completed``, ``aggregating``), filtered by ``queue`` and ``type``.
- ``POST /jobs/{id}/retry``: run a retry, scheduled, archived or completed task now.
- ``DELETE /jobs/queue/{queue}``: delete the completed tasks of a queue.

And beyond them: task detail, run/archive/delete/cancel one task, run-all/archive-all/delete-all per
state, pause/unpause, queue detail with daily history, servers, cron entries with history, per-minute
throughput, recent runs, the email outbox and cleanup results. Every handler only reads or acts
through the inspector (via :mod:`~framework_admin.queries` and :mod:`~framework_admin.actions`).
Task ids are unique per queue: pass ``?queue=``; without it the id is looked up in every queue.

One queue is addressed as ``/queue?queue=<queue>`` (``GET``) and ``/queue/<action>?queue=...``,
``/queue/<state>/<action>?queue=...`` (``POST``), which works for every name; ``/queues/{queue}...`` works
for names that fit in a path segment.

One task is addressed as ``/task?id=<id>&queue=<queue>`` (``GET``, ``DELETE``) and
``/task/<action>?id=...`` (``POST``), which works for every id (see :mod:`framework_admin.urls`);
``/tasks/{id}`` and ``/jobs/{id}/retry`` work for ids that fit in a path segment.
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, delete, get, post
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, FromQuery, QueryParameter

from framework import Services
from framework.inspector import Inspector, QueueInfo
from framework_admin import actions, panels, queries
from framework_admin.auth import current_actor, require_admin_role
from framework_admin.runs import recent_runs
from framework_admin.schemas import (
    ActionResult,
    CronEntryOut,
    CronRunOut,
    QueueDetailOut,
    RunOut,
    ServerOut,
    StatsOut,
    TaskListOut,
    TaskOut,
    ThroughputOut,
)
from framework_admin.urls import QueueQuery, TaskIdQuery

__all__ = ("API_HANDLERS",)

_W = [require_admin_role]
_TAGS = ["admin"]
# Deleting a task has its own route (DELETE /task?id=, DELETE /tasks/{task_id}).
_TASK_ACTIONS: tuple[actions.TaskAction, ...] = ("run", "archive", "cancel")
TypeFilter = Annotated[str | None, QueryParameter(name="type", description="only tasks of this task type")]
QueueFilter = Annotated[
    str | None, QueryParameter(description="the task's queue (searched in every queue when absent)")
]


@get("/jobs/stats", tags=_TAGS)
async def jobs_stats(inspector: NamedDependency[Inspector]) -> StatsOut:
    """Counts per state, latency and processed/failed counters of every queue, and their totals."""
    return await queries.stats(inspector)


@get("/jobs/{status:str}", tags=_TAGS)
async def jobs_list(
    inspector: NamedDependency[Inspector],
    status: FromPath[str],
    task_type: TypeFilter = None,
    queue: FromQuery[str | None] = None,
    page: FromQuery[int] = 1,
    page_size: FromQuery[int] = 20,
    newest: FromQuery[bool] = False,
) -> TaskListOut:
    """A page of tasks in ``status`` (``failed`` = ``archived``), of one queue or all (latest first: ``newest``)."""
    return await queries.list_tasks(
        inspector, status, queue=queue, task_type=task_type, page=page, page_size=page_size, newest=newest
    )


@post("/jobs/{task_id:str}/retry", tags=_TAGS, guards=_W, status_code=200)
async def jobs_retry(
    request: Request[Any, Any, Any],
    inspector: NamedDependency[Inspector],
    task_id: FromPath[str],
    queue: QueueFilter = None,
) -> ActionResult:
    """Run a retry, scheduled, archived or completed task now (it becomes pending)."""
    return await actions.task_action(inspector, await current_actor(request), "run", task_id, queue)


@delete("/jobs/queue/{queue:str}", tags=_TAGS, guards=_W, status_code=200)
async def jobs_clear_completed(
    request: Request[Any, Any, Any], inspector: NamedDependency[Inspector], queue: FromPath[str]
) -> ActionResult:
    """Delete the completed tasks of ``queue`` (Grit's "clear queue")."""
    return await actions.bulk_action(inspector, await current_actor(request), "delete-all", queue, "completed")


@get("/task", tags=_TAGS)
async def task_get(inspector: NamedDependency[Inspector], task_id: TaskIdQuery, queue: QueueFilter = None) -> TaskOut:
    """One task, by ``?id=`` (any id): payload, error, retries, times and result."""
    return await queries.task_view(inspector, await actions.find_task(inspector, task_id, queue))


@post("/task/{action:str}", tags=_TAGS, guards=_W, status_code=200)
async def task_post(
    request: Request[Any, Any, Any],
    inspector: NamedDependency[Inspector],
    action: FromPath[str],
    task_id: TaskIdQuery,
    queue: QueueFilter = None,
) -> ActionResult:
    """``run``, ``archive`` or ``cancel`` the task ``?id=`` (any id)."""
    return await _act(request, inspector, action, task_id, queue)


@delete("/task", tags=_TAGS, guards=_W, status_code=200)
async def task_remove(
    request: Request[Any, Any, Any],
    inspector: NamedDependency[Inspector],
    task_id: TaskIdQuery,
    queue: QueueFilter = None,
) -> ActionResult:
    """Delete the task ``?id=`` (any id) when it is not active."""
    return await actions.task_action(inspector, await current_actor(request), "delete", task_id, queue)


async def _act(
    request: Request[Any, Any, Any], inspector: Inspector, action: str, task_id: str, queue: str | None
) -> ActionResult:
    if action not in _TASK_ACTIONS:
        raise NotFoundException(f"unknown task action {action!r}; use run, archive or cancel")
    return await actions.task_action(inspector, await current_actor(request), action, task_id, queue)


@get("/tasks/{task_id:str}", tags=_TAGS)
async def task_detail(
    inspector: NamedDependency[Inspector], task_id: FromPath[str], queue: QueueFilter = None
) -> TaskOut:
    """One task: payload, error, retries, times and result."""
    return await queries.task_view(inspector, await actions.find_task(inspector, task_id, queue))


@post("/tasks/{task_id:str}/{action:str}", tags=_TAGS, guards=_W, status_code=200)
async def task_act(
    request: Request[Any, Any, Any],
    inspector: NamedDependency[Inspector],
    task_id: FromPath[str],
    action: FromPath[str],
    queue: QueueFilter = None,
) -> ActionResult:
    """``run``, ``archive`` or ``cancel`` one task (``cancel`` asks the worker running it to stop)."""
    return await _act(request, inspector, action, task_id, queue)


@delete("/tasks/{task_id:str}", tags=_TAGS, guards=_W, status_code=200)
async def task_delete(
    request: Request[Any, Any, Any],
    inspector: NamedDependency[Inspector],
    task_id: FromPath[str],
    queue: QueueFilter = None,
) -> ActionResult:
    """Delete one task that is not active."""
    return await actions.task_action(inspector, await current_actor(request), "delete", task_id, queue)


@get("/queues", tags=_TAGS)
async def queues_list(inspector: NamedDependency[Inspector]) -> list[QueueInfo]:
    """Every queue's snapshot, by name."""
    return await inspector.all_queue_info(memory=False)


@get("/queue", tags=_TAGS)
async def queue_get(
    inspector: NamedDependency[Inspector], queue: QueueQuery, days: FromQuery[int] = 7
) -> QueueDetailOut:
    """One queue, by ``?queue=`` (any name): its snapshot (with memory use) and processed/failed per day."""
    return await queries.queue_detail(inspector, queue, days)


@post("/queue/{action:str}", tags=_TAGS, guards=_W, status_code=200)
async def queue_post(
    request: Request[Any, Any, Any], inspector: NamedDependency[Inspector], action: FromPath[str], queue: QueueQuery
) -> ActionResult:
    """``pause`` or ``unpause`` the queue ``?queue=`` (any name)."""
    return await _queue_act(request, inspector, action, queue)


@post("/queue/{task_state:str}/{action:str}", tags=_TAGS, guards=_W, status_code=200)
async def queue_bulk_post(
    request: Request[Any, Any, Any],
    inspector: NamedDependency[Inspector],
    task_state: FromPath[str],
    action: FromPath[str],
    queue: QueueQuery,
) -> ActionResult:
    """``run-all``, ``archive-all`` or ``delete-all`` tasks of one state of the queue ``?queue=`` (any name)."""
    return await _bulk_act(request, inspector, queue, task_state, action)


async def _queue_act(request: Request[Any, Any, Any], inspector: Inspector, action: str, queue: str) -> ActionResult:
    if action not in actions.QUEUE_ACTIONS:
        raise NotFoundException(f"unknown queue action {action!r}; use pause or unpause")
    return await actions.queue_action(inspector, await current_actor(request), action, queue)


async def _bulk_act(
    request: Request[Any, Any, Any], inspector: Inspector, queue: str, task_state: str, action: str
) -> ActionResult:
    if action not in actions.BULK_ACTIONS:
        raise NotFoundException(f"unknown bulk action {action!r}; use run-all, archive-all or delete-all")
    st = queries.parse_state(task_state).value
    return await actions.bulk_action(inspector, await current_actor(request), action, queue, st)


@get("/queues/{queue:str}", tags=_TAGS)
async def queue_detail(
    inspector: NamedDependency[Inspector], queue: FromPath[str], days: FromQuery[int] = 7
) -> QueueDetailOut:
    """One queue: its snapshot (with memory use) and processed/failed per day (``days`` 1 to 90)."""
    return await queries.queue_detail(inspector, queue, days)


@post("/queues/{queue:str}/{action:str}", tags=_TAGS, guards=_W, status_code=200)
async def queue_act(
    request: Request[Any, Any, Any], inspector: NamedDependency[Inspector], queue: FromPath[str], action: FromPath[str]
) -> ActionResult:
    """``pause`` or ``unpause`` a queue."""
    return await _queue_act(request, inspector, action, queue)


@post("/queues/{queue:str}/{task_state:str}/{action:str}", tags=_TAGS, guards=_W, status_code=200)
async def queue_bulk(
    request: Request[Any, Any, Any],
    inspector: NamedDependency[Inspector],
    queue: FromPath[str],
    task_state: FromPath[str],
    action: FromPath[str],
) -> ActionResult:
    """``run-all``, ``archive-all`` or ``delete-all`` tasks of one state of a queue (``failed`` = ``archived``)."""
    return await _bulk_act(request, inspector, queue, task_state, action)


@get("/servers", tags=_TAGS)
async def servers_list(inspector: NamedDependency[Inspector]) -> list[ServerOut]:
    """Live worker processes and the tasks each is running."""
    return await queries.servers(inspector)


@get("/cron", tags=_TAGS)
async def cron_list(inspector: NamedDependency[Inspector], history: FromQuery[int] = 5) -> list[CronEntryOut]:
    """Cron entries of live schedulers, with their last and next run and latest enqueues."""
    return await queries.cron_entries(inspector, max(0, min(history, 100)))


@get("/cron/{entry_id:str}/history", tags=_TAGS)
async def cron_history(
    inspector: NamedDependency[Inspector],
    entry_id: FromPath[str],
    page: FromQuery[int] = 1,
    page_size: FromQuery[int] = 20,
) -> list[CronRunOut]:
    """The enqueues of one cron entry, newest first."""
    return await queries.cron_history(inspector, entry_id, page, page_size)


@get("/throughput", tags=_TAGS)
async def throughput(
    inspector: NamedDependency[Inspector], hours: FromQuery[int] = 1, queue: FromQuery[str | None] = None
) -> ThroughputOut:
    """Tasks processed and failed per minute over the last ``hours`` (1 to 24), summed over queues."""
    return await queries.throughput(inspector, hours, queue)


@get("/runs", tags=_TAGS)
async def runs(
    inspector: NamedDependency[Inspector], services: NamedDependency[Services], limit: FromQuery[int] = 20
) -> list[RunOut]:
    """Recent runs: tasks running now, then finished runs with status and duration, newest first."""
    return await recent_runs(inspector, services, max(1, min(limit, 200)))


@get("/outbox", tags=_TAGS)
async def outbox(services: NamedDependency[Services]) -> list[panels.OutboxEmail]:
    """Emails the email plugin's ``outbox`` backend wrote, newest first (404 when it is not in use)."""
    folder = panels.outbox_dir(services)
    if folder is None:
        raise NotFoundException("the email plugin is not loaded or does not use the outbox backend")
    return await panels.outbox_list(folder)


@get("/outbox/{name:str}", tags=_TAGS)
async def outbox_email(services: NamedDependency[Services], name: FromPath[str]) -> panels.OutboxEmailDetail:
    """One outbox email with its text and HTML bodies."""
    folder = panels.outbox_dir(services)
    detail = await panels.outbox_email(folder, name) if folder is not None else None
    if detail is None:
        raise NotFoundException(f"no outbox email {name!r}")
    return detail


@get("/cleanup", tags=_TAGS)
async def cleanup(services: NamedDependency[Services]) -> list[dict[str, Any]]:
    """The last report of each cleanup sweeper (404 when the cleanup plugin is not loaded)."""
    if not panels.cleanup_enabled(services):
        raise NotFoundException("the cleanup plugin is not loaded")
    return await panels.cleanup_results(services)


@get("/me", tags=_TAGS)
async def me(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Who the admin thinks you are."""
    actor = await current_actor(request)
    return {"name": actor.name, "role": actor.role, "via": actor.via, "can_act": actor.can_act}


API_HANDLERS = (
    jobs_stats,
    jobs_list,
    jobs_retry,
    jobs_clear_completed,
    task_get,
    task_post,
    task_remove,
    task_detail,
    task_act,
    task_delete,
    queues_list,
    queue_get,
    queue_post,
    queue_bulk_post,
    queue_detail,
    queue_act,
    queue_bulk,
    servers_list,
    cron_list,
    cron_history,
    throughput,
    runs,
    outbox,
    outbox_email,
    cleanup,
    me,
)
"""Every API handler, for :func:`framework_admin.routes.admin_routes`."""
