"""Addresses of single tasks in the dashboard and the API: the queue and the id travel as query values.

Task ids (and queue names) may be any non-blank string, so they cannot be path segments: once the
server decodes ``%2F`` the segment splits in two, and browsers and HTTP clients drop ``.`` and ``..``
segments before sending a request, percent-encoded ones (``%2E%2E``) included. Query values have
neither problem once every reserved character is percent-encoded, so a task's page is
``<admin>/task?queue=<queue>&id=<id>``, its form actions ``<admin>/task/<action>?queue=...&id=...``,
the downloads of its whole payload and result ``<admin>/task/payload?queue=...&id=...`` and
``<admin>/task/result?queue=...&id=...``, and its API address ``<api>/task?id=<id>&queue=<queue>``. The
older path addresses (``<admin>/tasks/<queue>/<id>``, ``<api>/tasks/<id>``) still answer, for ids that fit in
a path.

Queues are addressed the same way: a queue's page is ``<admin>/queue?queue=<queue>``, its forms post to
``<admin>/queue/<action>?queue=...`` (pause, unpause) and ``<admin>/queue/<state>/<action>?queue=...``
(run-all, archive-all, delete-all), and the API has the same three under ``<api>/queue``. The
``/queues/<queue>`` addresses still answer, for names that fit in a path.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from litestar.params import QueryParameter

__all__ = ("QueueQuery", "TaskIdQuery", "queue_page_url", "task_page_url", "task_query")

TaskIdQuery = Annotated[str, QueryParameter(name="id", description="the task id (any string, percent-encoded)")]
"""The ``id`` query parameter of the single-task routes."""
QueueQuery = Annotated[str, QueryParameter(name="queue", description="the queue name (any string, percent-encoded)")]
"""The ``queue`` query parameter of the single-queue routes."""


def task_query(queue: str, task_id: str) -> str:
    """``queue=<queue>&id=<id>``, every character but letters, digits and ``_.-~`` percent-encoded."""
    return f"queue={quote(queue, safe='')}&id={quote(task_id, safe='')}"


def task_page_url(admin_path: str, queue: str, task_id: str) -> str:
    """The dashboard page of one task."""
    return f"{admin_path}/task?{task_query(queue, task_id)}"


def queue_page_url(admin_path: str, queue: str) -> str:
    """The dashboard page of one queue."""
    return f"{admin_path}/queue?queue={quote(queue, safe='')}"
