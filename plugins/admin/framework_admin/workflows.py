"""The dashboard's workflows: the list, one workflow's page with its graph, the live states it polls, cancel and retry.

A workflow's page draws its graph on the server as SVG (:func:`draw`): each step in the column of its longest
path from a first step, a box coloured by its state, an arrow per dependency. A column of more than
:data:`COLLAPSE` steps (the thousands of steps of a big fan-out) is one box counting them by state, so the
page stays small whatever the workflow's size. While it is open, the page polls ``<api>/workflow/live``,
which answers with the state of each drawn step and the counts of each collapsed column (never the states of
every step of a big workflow), and recolours the boxes in place.

Addresses carry the workflow's id and home queue as query values (``/workflow?id=&queue=``), as a task's do:
a workflow id may hold characters a path segment cannot.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote

import msgspec
from litestar import Request, get, post
from litestar.di import NamedDependency
from litestar.exceptions import ClientException, HTTPException, NotFoundException
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.response import Redirect, Template

from framework.errors import WorkflowNotFound
from framework.inspector import WORKFLOW_STATUSES, Inspector, WorkflowDetail, WorkflowSummary, workflow_layers
from framework_admin import actions
from framework_admin.auth import current_actor, require_admin_role
from framework_admin.forms import back, form_fields, safe_next
from framework_admin.layout import admin_template, mount_of
from framework_admin.schemas import ActionResult

if TYPE_CHECKING:
    from framework_admin.config import Mount

__all__ = (
    "COLLAPSE",
    "WORKFLOW_ACTION_HANDLERS",
    "WORKFLOW_API_HANDLERS",
    "WORKFLOW_PAGE_HANDLERS",
    "Graph",
    "GraphNode",
    "LiveGroup",
    "WorkflowLive",
    "draw",
    "group_text",
    "workflow_page_url",
)

COLLAPSE = 50
"""A column of more steps than this is drawn as one box counting them by state."""
PAGE_SIZE = 50
"""Workflows per page of the list."""

_W = [require_admin_role]
_TAGS = ["admin"]
_BOX_W, _BOX_H, _GAP_X, _GAP_Y, _PAD = 180, 44, 56, 14, 12
_LABEL = 24
_WORST_FIRST = (
    "failed",
    "lost",
    "archived",
    "retry",
    "active",
    "pending",
    "scheduled",
    "waiting",
    "cancelled",
    "completed",
    "succeeded",
)
"""The state a collapsed box takes: the first of these any of its steps is in."""
_LAYOUTS: OrderedDict[tuple[str, str], dict[str, str]] = OrderedDict()
"""(queue, id) -> step -> the key of its box (itself, or its collapsed column): a graph never changes."""
_LAYOUTS_KEPT = 128

WorkflowIdQuery = Annotated[str, QueryParameter(name="id", description="the workflow id (any string, percent-encoded)")]
HomeQuery = Annotated[
    str | None, QueryParameter(name="queue", description="the workflow's home queue (searched when absent)")
]


@dataclass(slots=True)
class GraphNode:
    """One box of a drawn workflow: a step, or a collapsed column of steps.

    Attributes:
        key: the step's name, or ``layer:<n>`` for a collapsed column.
        x: left edge.
        y: top edge.
        label: the text on its first line (the step's name, cut; or the column's step count).
        title: its tooltip (the step's name and task type).
        state: the state it is coloured by.
        sub: the text on its second line (the step's state, or the column's counts).
        queue: the step's task queue ("" for a column).
        task_id: the step's task id ("" for a column).
        group: whether it is a collapsed column.
    """

    key: str
    x: int
    y: int
    label: str
    title: str
    state: str
    sub: str
    queue: str = ""
    task_id: str = ""
    group: bool = False


@dataclass(slots=True)
class Graph:
    """A workflow drawn: its size, boxes and arrows (SVG path data).

    Attributes:
        width: the drawing's width.
        height: its height.
        box_w: a box's width.
        box_h: a box's height.
        nodes: the boxes.
        edges: one path per arrow between two boxes.
    """

    width: int
    height: int
    box_w: int = _BOX_W
    box_h: int = _BOX_H
    nodes: list[GraphNode] = field(default_factory=list)
    edges: list[str] = field(default_factory=list)


class LiveGroup(msgspec.Struct, frozen=True, kw_only=True):
    """A collapsed column as the live endpoint reports it.

    Attributes:
        state: the state its box is coloured by.
        text: its counts in words ("10,000 steps: 9,800 succeeded, 200 pending").
        counts: its steps per state.
    """

    state: str
    text: str
    counts: dict[str, int]


class WorkflowLive(msgspec.Struct, frozen=True, kw_only=True):
    """What a workflow's open page polls: its status, and the state of each box of its drawing.

    Attributes:
        summary: the workflow as the list shows it.
        counts: its steps per state.
        steps: the state of each step drawn in its own box.
        groups: each collapsed column (``layer:<n>``) with its counts.
    """

    summary: WorkflowSummary
    counts: dict[str, int]
    steps: dict[str, str]
    groups: dict[str, LiveGroup]


def group_text(counts: dict[str, int]) -> str:
    """A collapsed column's counts in words: ``10,000 steps: 9,800 succeeded, 200 pending`` (most first)."""
    total = sum(counts.values())
    parts = [f"{n:,} {state}" for state, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    return f"{total:,} steps: " + ", ".join(parts)


def _group_state(counts: dict[str, int]) -> str:
    return next((state for state in _WORST_FIRST if counts.get(state)), next(iter(counts), "waiting"))


def _cut(text: str, n: int = _LABEL) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _boxes(detail: WorkflowDetail) -> dict[str, str]:
    """Step -> the key of the box it is drawn in (itself, or ``layer:<n>`` when its column is collapsed)."""
    out: dict[str, str] = {}
    for n, names in enumerate(workflow_layers(detail)):
        for name in names:
            out[name] = f"layer:{n}" if len(names) > COLLAPSE else name
    return out


def _remember(detail: WorkflowDetail, boxes: dict[str, str]) -> None:
    key = (detail.summary.queue, detail.summary.id)
    _LAYOUTS[key] = boxes
    _LAYOUTS.move_to_end(key)
    while len(_LAYOUTS) > _LAYOUTS_KEPT:
        _LAYOUTS.popitem(last=False)


def draw(detail: WorkflowDetail) -> Graph:
    """Lay a workflow out for its SVG drawing.

    Columns by longest path from a first step, one box per step (or per collapsed column), one arrow per pair
    of boxes with a dependency between them.
    """
    by_name = {step.name: step for step in detail.steps}
    columns = workflow_layers(detail)
    boxes = _boxes(detail)
    _remember(detail, boxes)
    rows = max((1 if len(names) > COLLAPSE else len(names) for names in columns), default=1)
    height = 2 * _PAD + rows * _BOX_H + (rows - 1) * _GAP_Y
    width = 2 * _PAD + len(columns) * _BOX_W + max(len(columns) - 1, 0) * _GAP_X
    graph = Graph(width=max(width, _BOX_W + 2 * _PAD), height=height)
    where: dict[str, tuple[int, int]] = {}
    for n, names in enumerate(columns):
        x = _PAD + n * (_BOX_W + _GAP_X)
        if len(names) > COLLAPSE:
            counts: dict[str, int] = {}
            for name in names:
                counts[by_name[name].state] = counts.get(by_name[name].state, 0) + 1
            y = (height - _BOX_H) // 2
            key = f"layer:{n}"
            where[key] = (x, y)
            graph.nodes.append(
                GraphNode(
                    key=key,
                    x=x,
                    y=y,
                    label=f"{len(names):,} steps",
                    title=f"{len(names):,} steps: " + ", ".join(sorted({by_name[s].task_type for s in names})),
                    state=_group_state(counts),
                    sub=group_text(counts),
                    group=True,
                )
            )
            continue
        top = (height - (len(names) * _BOX_H + (len(names) - 1) * _GAP_Y)) // 2
        for i, name in enumerate(names):
            step = by_name[name]
            y = top + i * (_BOX_H + _GAP_Y)
            where[name] = (x, y)
            graph.nodes.append(
                GraphNode(
                    key=name,
                    x=x,
                    y=y,
                    label=_cut(name),
                    title=f"{name} ({step.task_type})" if step.task_type and step.task_type != name else name,
                    state=step.state,
                    sub=step.state,
                    queue=step.queue,
                    task_id=step.task_id,
                )
            )
    seen: set[tuple[str, str]] = set()
    for dep, name in detail.edges:
        pair = (boxes.get(dep, dep), boxes.get(name, name))
        if pair in seen or pair[0] not in where or pair[1] not in where or pair[0] == pair[1]:
            continue
        seen.add(pair)
        (x1, y1), (x2, y2) = where[pair[0]], where[pair[1]]
        x1, y1, y2 = x1 + _BOX_W, y1 + _BOX_H // 2, y2 + _BOX_H // 2
        mid = (x1 + x2) // 2
        graph.edges.append(f"M{x1},{y1} C{mid},{y1} {mid},{y2} {x2 - 2},{y2}")
    return graph


async def live_states(inspector: Inspector, workflow_id: str, queue: str | None) -> WorkflowLive:
    """The state of each box of a workflow's drawing (see :class:`WorkflowLive`).

    Raises:
        WorkflowNotFound: no such workflow.
    """
    states = await inspector.workflow_states(workflow_id, queue)
    key = (states.summary.queue, states.summary.id)
    boxes = _LAYOUTS.get(key)
    if boxes is None or len(boxes) != len(states.states):
        detail = await inspector.workflow(workflow_id, states.summary.queue)
        boxes = _boxes(detail)
        _remember(detail, boxes)
    steps: dict[str, str] = {}
    grouped: dict[str, dict[str, int]] = {}
    for name, state in states.states.items():
        box = boxes.get(name, name)
        if box == name:
            steps[name] = state
        else:
            counts = grouped.setdefault(box, {})
            counts[state] = counts.get(state, 0) + 1
    groups = {
        box: LiveGroup(state=_group_state(counts), text=group_text(counts), counts=dict(sorted(counts.items())))
        for box, counts in grouped.items()
    }
    return WorkflowLive(summary=states.summary, counts=states.counts, steps=steps, groups=groups)


def workflow_page_url(mount: Mount, queue: str, workflow_id: str) -> str:
    """The dashboard page of one workflow."""
    return f"{mount.path}/workflow?queue={quote(queue, safe='')}&id={quote(workflow_id, safe='')}"


def _not_found(exc: WorkflowNotFound) -> NotFoundException:
    return NotFoundException(str(exc))


# -- pages -----------------------------------------------------------------------------------------


@get("/workflows", include_in_schema=False)
async def workflows_page(
    request: Request[Any, Any, Any],
    inspector: NamedDependency[Inspector],
    status: FromQuery[str | None] = None,
    queue: FromQuery[str | None] = None,
    page: FromQuery[int] = 1,
) -> Template:
    """Workflows newest first: running, succeeded, failed and cancelled, filtered by status and home queue."""
    chosen = status if status in WORKFLOW_STATUSES else None
    page = max(1, page)
    try:
        found = await inspector.workflows(queue or None, chosen, limit=PAGE_SIZE + 1, offset=(page - 1) * PAGE_SIZE)
    except ValueError as exc:  # a page past what a listing reaches
        raise ClientException(str(exc)) from exc
    context = {
        "workflows": found[:PAGE_SIZE],
        "more": len(found) > PAGE_SIZE,
        "page": page,
        "status": chosen or "",
        "queue": queue or "",
        "statuses": WORKFLOW_STATUSES,
        "queues": await inspector.queues(),
    }
    return await admin_template(request, "admin/workflows.html", context)


@get("/workflow", include_in_schema=False)
async def workflow_page(
    request: Request[Any, Any, Any],
    inspector: NamedDependency[Inspector],
    workflow_id: WorkflowIdQuery,
    queue: HomeQuery = None,
) -> Template:
    """One workflow: its graph (live), its steps with their states, errors and results, Cancel and Retry."""
    try:
        detail = await inspector.workflow(workflow_id, queue or None)
    except WorkflowNotFound as exc:
        raise _not_found(exc) from exc
    context = {"wf": detail, "graph": draw(detail), "shown_steps": detail.steps[:200]}
    return await admin_template(request, "admin/workflow.html", context)


@post("/workflow/{action:str}", guards=_W, include_in_schema=False, status_code=303)
async def workflow_form(
    request: Request[Any, Any, Any],
    inspector: NamedDependency[Inspector],
    action: FromPath[str],
    workflow_id: WorkflowIdQuery,
    queue: HomeQuery = None,
) -> Redirect:
    """Cancel or retry a workflow, then go back to its page with a message."""
    mount = mount_of(request)
    form = await form_fields(request)
    target = safe_next(form.get("next"), mount, workflow_page_url(mount, queue or "", workflow_id))
    if action not in actions.WORKFLOW_ACTIONS:
        return back(request, mount, target, f"Unknown action {action!r}.", error=True)
    try:
        actor = await current_actor(request)
        result = await actions.workflow_action(inspector, actor, action, workflow_id, queue or None)
    except HTTPException as exc:
        return back(request, mount, target, str(exc.detail), error=True)
    target = safe_next(form.get("next"), mount, workflow_page_url(mount, result.queue, workflow_id))
    return back(request, mount, target, result.message)


# -- API -------------------------------------------------------------------------------------------


@get("/workflows", tags=_TAGS)
async def workflows_list(
    inspector: NamedDependency[Inspector],
    status: FromQuery[str | None] = None,
    queue: FromQuery[str | None] = None,
    limit: FromQuery[int] = 50,
    offset: FromQuery[int] = 0,
) -> list[WorkflowSummary]:
    """Workflows newest first, of one home queue or every queue, of one status or any."""
    try:
        return await inspector.workflows(queue or None, status or None, limit=limit, offset=offset)
    except ValueError as exc:
        raise ClientException(str(exc)) from exc


@get("/workflow", tags=_TAGS)
async def workflow_get(
    inspector: NamedDependency[Inspector], workflow_id: WorkflowIdQuery, queue: HomeQuery = None
) -> WorkflowDetail:
    """One workflow: its steps (task, state, dependencies, error, result) and edges."""
    try:
        return await inspector.workflow(workflow_id, queue or None)
    except WorkflowNotFound as exc:
        raise _not_found(exc) from exc


@get("/workflow/live", tags=_TAGS)
async def workflow_live(
    inspector: NamedDependency[Inspector], workflow_id: WorkflowIdQuery, queue: HomeQuery = None
) -> WorkflowLive:
    """What a workflow's open page polls: its status, each drawn step's state and each collapsed column's counts."""
    try:
        return await live_states(inspector, workflow_id, queue or None)
    except WorkflowNotFound as exc:
        raise _not_found(exc) from exc


@post("/workflow/{action:str}", tags=_TAGS, guards=_W, status_code=200)
async def workflow_post(
    request: Request[Any, Any, Any],
    inspector: NamedDependency[Inspector],
    action: FromPath[str],
    workflow_id: WorkflowIdQuery,
    queue: HomeQuery = None,
) -> ActionResult:
    """``cancel`` or ``retry`` the workflow ``?id=``."""
    if action not in actions.WORKFLOW_ACTIONS:
        raise NotFoundException(
            f"unknown workflow action {action!r}; use one of: {', '.join(actions.WORKFLOW_ACTIONS)}"
        )
    actor = await current_actor(request)
    return await actions.workflow_action(inspector, actor, action, workflow_id, queue or None)


WORKFLOW_PAGE_HANDLERS = (workflows_page, workflow_page)
"""The workflow pages, mounted with the dashboard's pages."""
WORKFLOW_ACTION_HANDLERS = (workflow_form,)
"""The workflow form actions (behind ``require_admin_role``)."""
WORKFLOW_API_HANDLERS = (workflows_list, workflow_get, workflow_live, workflow_post)
"""The workflow endpoints of the JSON API."""
