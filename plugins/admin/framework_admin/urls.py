"""Addresses of single tasks in the dashboard and the API: the queue and the id travel as query values.

Task ids (and queue names) may be any non-blank string, so they cannot be path segments: once the
server decodes ``%2F`` the segment splits in two, and browsers and HTTP clients drop ``.`` and ``..``
segments before sending a request, percent-encoded ones (``%2E%2E``) included. Query values have
neither problem once every reserved character is percent-encoded, so a task's page is
``<admin>/task?queue=<queue>&id=<id>``, its form actions ``<admin>/task/<action>?queue=...&id=...``
and its API address ``<api>/task?id=<id>&queue=<queue>``. The older path addresses
(``<admin>/tasks/<queue>/<id>``, ``<api>/tasks/<id>``) still answer, for ids that fit in a path.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from litestar.params import QueryParameter

__all__ = ("TaskIdQuery", "task_page_url", "task_query")

TaskIdQuery = Annotated[str, QueryParameter(name="id", description="the task id (any string, percent-encoded)")]
"""The ``id`` query parameter of the single-task routes."""


def task_query(queue: str, task_id: str) -> str:
    """``queue=<queue>&id=<id>``, every character but letters, digits and ``_.-~`` percent-encoded."""
    return f"queue={quote(queue, safe='')}&id={quote(task_id, safe='')}"


def task_page_url(admin_path: str, queue: str, task_id: str) -> str:
    """The dashboard page of one task."""
    return f"{admin_path}/task?{task_query(queue, task_id)}"
