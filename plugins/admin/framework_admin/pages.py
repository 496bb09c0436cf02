"""The dashboard's pages (server-rendered Jinja2, refreshed in the browser from the JSON API).

Every page renders through :func:`framework_admin.layout.admin_template`, which adds the layout's
values (menu, who is signed in, the CSRF token, a flash message).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any, Literal

from litestar import Request, Response, get
from litestar.datastructures import ResponseHeader
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.response import Stream, Template

from framework import Services
from framework.inspector import Inspector
from framework_admin import panels, queries
from framework_admin.actions import find_task
from framework_admin.layout import admin_template
from framework_admin.runs import recent_runs
from framework_admin.urls import QueueQuery, TaskIdQuery

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ("DOWNLOAD_CHUNK", "PAGE_HANDLERS")

DOWNLOAD_CHUNK = 64 * 1024
"""Bytes written at a time when a task's payload or result is downloaded."""
_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9._-]+")

_STATES = ("pending", "active", "scheduled", "retry", "archived", "completed", "aggregating")


@get("/", name="admin-overview", include_in_schema=False)
async def overview(
    request: Request[Any, Any, Any], inspector: NamedDependency[Inspector], services: NamedDependency[Services]
) -> Template:
    """Queue cards, throughput chart, recent runs, failed tasks, servers, cron and the plugin panels."""
    folder = panels.outbox_dir(services)
    context = {
        "stats": await queries.stats(inspector),
        "runs": await recent_runs(inspector, services, 15),
        "retry": await queries.list_tasks(inspector, "retry", page_size=10),
        "archived": await queries.list_tasks(inspector, "archived", page_size=10, newest=True),
        "servers": await queries.servers(inspector),
        "cron": await queries.cron_entries(inspector, history=0),
        "outbox": await panels.outbox_list(folder, 5) if folder is not None else None,
        "cleanup": await panels.cleanup_results(services) if panels.cleanup_enabled(services) else None,
    }
    return await admin_template(request, "admin/overview.html", context)


@get("/jobs/{status:str}", include_in_schema=False)
async def jobs_page(
    request: Request[Any, Any, Any],
    inspector: NamedDependency[Inspector],
    status: FromPath[str],
    queue: FromQuery[str | None] = None,
    task_type: Annotated[str | None, QueryParameter(name="type")] = None,
    page: FromQuery[int] = 1,
) -> Template:
    """Tasks in one state, across queues or of one queue, filtered by type, with their actions."""
    listing = await queries.list_tasks(
        inspector, status, queue=queue or None, task_type=task_type or None, page=max(1, page), page_size=25
    )
    context = {"listing": listing, "status": status, "queues": await inspector.queues(), "states": _STATES}
    return await admin_template(request, "admin/jobs.html", context)


@get("/queue", include_in_schema=False)
async def queue_page(
    request: Request[Any, Any, Any], inspector: NamedDependency[Inspector], queue: QueueQuery
) -> Template:
    """One queue (``?queue=``, so any name works): counts per state with the bulk actions, pause switch and history."""
    detail = await queries.queue_detail(inspector, queue, 14)
    return await admin_template(request, "admin/queue.html", {"detail": detail, "states": _STATES})


@get("/queues/{queue:str}", include_in_schema=False)
async def queue_path_page(
    request: Request[Any, Any, Any], inspector: NamedDependency[Inspector], queue: FromPath[str]
) -> Template:
    """:func:`queue_page` at the older address, for names that fit in a path segment."""
    detail = await queries.queue_detail(inspector, queue, 14)
    return await admin_template(request, "admin/queue.html", {"detail": detail, "states": _STATES})


@get("/task", include_in_schema=False)
async def task_page(
    request: Request[Any, Any, Any],
    inspector: NamedDependency[Inspector],
    task_id: TaskIdQuery,
    queue: FromQuery[str | None] = None,
) -> Template:
    """One task (``?queue=&id=``, so any id works): payload, error, retries, times, result and its actions."""
    task = await queries.task_view(inspector, await find_task(inspector, task_id, queue or None))
    return await admin_template(request, "admin/task.html", {"task": task})


@get("/tasks/{queue:str}/{task_id:str}", include_in_schema=False)
async def task_path_page(
    request: Request[Any, Any, Any], inspector: NamedDependency[Inspector], queue: FromPath[str], task_id: FromPath[str]
) -> Template:
    """:func:`task_page` at the older address, for ids that fit in a path segment."""
    task = await queries.task_view(inspector, await find_task(inspector, task_id, queue))
    return await admin_template(request, "admin/task.html", {"task": task})


def _chunks(data: bytes) -> Iterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(view), DOWNLOAD_CHUNK):
        yield bytes(view[start : start + DOWNLOAD_CHUNK])


def _download_name(queue: str, task_id: str, part: str, is_json: bool) -> str:
    """``<queue>-<id>-<part>.json`` (or ``.bin``), every character but letters, digits and ``._-`` made ``_``."""
    stem = _UNSAFE_IN_NAME.sub("_", f"{queue}-{task_id}")[:120].strip("._") or "task"
    return f"{stem}-{part}.{'json' if is_json else 'bin'}"


async def _download(
    inspector: Inspector, task_id: str, queue: str | None, part: Literal["payload", "result"]
) -> Stream:
    """The whole payload or result of a task, as stored, as a download (404 for a task without a result).

    Always ``application/octet-stream`` and ``Content-Disposition: attachment`` (with ``nosniff`` from the
    router): the bytes are whatever a client stored, and a browser must save them, never render them.
    """
    task = await find_task(inspector, task_id, queue or None)
    if part == "payload":
        data, is_json = task.payload, task.payload_is_json
    elif task.result is None:
        raise NotFoundException(f"task {task.id!r} has no result")
    else:
        data, is_json = task.result, False  # not decoded to name the file: it may be 64 MiB
    name = _download_name(task.queue, task.id, part, is_json)
    headers = {"Content-Length": str(len(data)), "Content-Disposition": f'attachment; filename="{name}"'}
    return Stream(_chunks(data), media_type="application/octet-stream", headers=headers)


@get("/task/payload", include_in_schema=False)
async def task_payload_download(
    inspector: NamedDependency[Inspector], task_id: TaskIdQuery, queue: FromQuery[str | None] = None
) -> Stream:
    """One task's whole payload (``?queue=&id=``), as stored, as a download: the page shows at most 1 MiB of it."""
    return await _download(inspector, task_id, queue, "payload")


@get("/task/result", include_in_schema=False)
async def task_result_download(
    inspector: NamedDependency[Inspector], task_id: TaskIdQuery, queue: FromQuery[str | None] = None
) -> Stream:
    """One task's whole result (``?queue=&id=``), as stored, as a download: the page shows at most 1 MiB of it."""
    return await _download(inspector, task_id, queue, "result")


@get("/servers", include_in_schema=False)
async def servers_page(request: Request[Any, Any, Any], inspector: NamedDependency[Inspector]) -> Template:
    """Live worker processes and the tasks they run."""
    return await admin_template(request, "admin/servers.html", {"servers": await queries.servers(inspector)})


@get("/cron", include_in_schema=False)
async def cron_page(request: Request[Any, Any, Any], inspector: NamedDependency[Inspector]) -> Template:
    """Cron entries with their last and next run and their latest enqueues."""
    return await admin_template(request, "admin/cron.html", {"cron": await queries.cron_entries(inspector, history=10)})


def _outbox_folder(services: Services) -> Any:
    folder = panels.outbox_dir(services)
    if folder is None:
        raise NotFoundException("the email plugin is not loaded or does not use the outbox backend")
    return folder


@get("/outbox", include_in_schema=False)
async def outbox_page(request: Request[Any, Any, Any], services: NamedDependency[Services]) -> Template:
    """The emails the outbox backend wrote."""
    emails = await panels.outbox_list(_outbox_folder(services))
    return await admin_template(request, "admin/outbox.html", {"emails": emails})


@get("/outbox/{name:str}", include_in_schema=False)
async def outbox_email_page(
    request: Request[Any, Any, Any], services: NamedDependency[Services], name: FromPath[str]
) -> Template:
    """One outbox email: headers, the text body, and the HTML body in a sandboxed frame."""
    detail = await panels.outbox_email(_outbox_folder(services), name)
    if detail is None:
        raise NotFoundException(f"no outbox email {name!r}")
    return await admin_template(request, "admin/outbox_email.html", {"detail": detail})


_PREVIEW_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox; frame-ancestors 'self'"


@get(
    "/outbox/{name:str}/body.html",
    include_in_schema=False,
    response_headers=[
        ResponseHeader(name="Content-Security-Policy", value=_PREVIEW_CSP),
        ResponseHeader(name="X-Frame-Options", value="SAMEORIGIN"),
    ],
)
async def outbox_email_html(services: NamedDependency[Services], name: FromPath[str]) -> Response[str]:
    """An outbox email's HTML body, for the preview frame: sandboxed, no scripts, nothing loaded."""
    detail = await panels.outbox_email(_outbox_folder(services), name)
    if detail is None or not detail.html:
        raise NotFoundException(f"no HTML body for outbox email {name!r}")
    return Response(detail.html, media_type="text/html")


@get("/cleanup", include_in_schema=False)
async def cleanup_page(request: Request[Any, Any, Any], services: NamedDependency[Services]) -> Template:
    """The last report of each cleanup sweeper."""
    if not panels.cleanup_enabled(services):
        raise NotFoundException("the cleanup plugin is not loaded")
    return await admin_template(request, "admin/cleanup.html", {"reports": await panels.cleanup_results(services)})


PAGE_HANDLERS = (
    overview,
    jobs_page,
    queue_page,
    queue_path_page,
    task_page,
    task_path_page,
    task_payload_download,
    task_result_download,
    servers_page,
    cron_page,
    outbox_page,
    outbox_email_page,
    outbox_email_html,
    cleanup_page,
)
"""Every page handler, for :func:`framework_admin.routes.admin_routes`."""
