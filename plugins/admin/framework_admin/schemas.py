"""The JSON shapes the admin's API answers with, and the converters from the inspector's values.

The API answers with these Structs, so Litestar documents them in the OpenAPI schema. Task payloads,
errors and results are data: they are sent as JSON values or text and never interpreted as markup.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import msgspec

from framework.inspector import DailyStats, QueueInfo, TaskProgress, json_value

if TYPE_CHECKING:
    from framework.inspector import SchedulerEnqueueEvent, SchedulerEntry, ServerStatus, TaskDetails, WorkerInfo

__all__ = (
    "ActionResult",
    "CronEntryOut",
    "CronRunOut",
    "QueueDetailOut",
    "RunOut",
    "RunningTaskOut",
    "ServerOut",
    "StatsOut",
    "TaskListOut",
    "TaskOut",
    "ThroughputOut",
    "ThroughputPoint",
    "Totals",
    "cron_entry_out",
    "decode_data",
    "server_out",
    "task_out",
)


class Totals(msgspec.Struct, frozen=True, kw_only=True):
    """Counts summed over every queue.

    Attributes:
        queues: number of queues.
        size: tasks in every state.
        pending: tasks ready to run.
        active: tasks being processed.
        scheduled: tasks waiting for their time.
        retry: failed tasks waiting for a retry.
        archived: tasks that failed for good (Grit's "failed").
        completed: succeeded tasks kept for their retention.
        aggregating: tasks waiting in groups.
        processed_today: tasks processed today (UTC).
        failed_today: tasks failed today (UTC).
        processed_total: tasks processed since the counters started.
        failed_total: tasks failed since the counters started.
        paused: queues that are paused.
        limits: task limits the workers declared.
        throttled: tasks a limit put off that have not started yet (a task waiting on two limits counts twice).
    """

    queues: int = 0
    size: int = 0
    pending: int = 0
    active: int = 0
    scheduled: int = 0
    retry: int = 0
    archived: int = 0
    completed: int = 0
    aggregating: int = 0
    processed_today: int = 0
    failed_today: int = 0
    processed_total: int = 0
    failed_total: int = 0
    paused: int = 0
    limits: int = 0
    throttled: int = 0


class StatsOut(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /jobs/stats``: every queue's snapshot and the totals.

    Attributes:
        totals: counts over every queue.
        queues: one snapshot per queue, by name (``latency`` in seconds, ``null`` when nothing waits).
    """

    totals: Totals
    queues: list[QueueInfo]


class QueueDetailOut(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /queues/{queue}``: one queue in detail.

    Attributes:
        queue: its snapshot, with estimated memory use.
        history: processed and failed tasks per UTC day, oldest first.
    """

    queue: QueueInfo
    history: list[DailyStats]


LIST_PREVIEW_BYTES = 4096
"""In task listings, payloads and results longer than this many bytes are cut short (``truncated``). A page of
100 tasks with 4 MiB payloads would otherwise be a response of about a gigabyte (each payload twice: as JSON and
as text)."""

TASK_PREVIEW_BYTES = 1024 * 1024
"""One task's own view (its page, ``GET /task?id=``) cuts a payload or a result longer than this many bytes short
(``payload_truncated``, ``result_truncated``, with ``payload_size`` and ``result_size`` its whole length); the whole
value is a download from the dashboard (``<admin>/task/payload?queue=&id=``, ``<admin>/task/result?queue=&id=``,
with the same access as the task's page: a read-only token or session may download it).

A result may be 64 MiB (``max_result_size``), a payload as large as ``max_payload_size`` allows (or anything a
Go client stored), and the page shows each HTML-escaped and pretty-printed, the API as JSON and as text, and the
page fetches the API again every few seconds: a whole value made responses of hundreds of MiB that hung the
browser. One MiB is far more than anyone reads on a page, keeps every payload of the usual sizes whole (JSON
of a few hundred KiB included), and keeps the page a few MiB at worst, which browsers render at once."""


def _preview(data: bytes, limit: int) -> tuple[bytes, bool]:
    """``data`` cut to at most ``limit`` bytes on a UTF-8 character boundary, and whether it was cut."""
    if len(data) <= limit:
        return data, False
    end = limit
    while end > 0 and data[end] & 0xC0 == 0x80:  # a continuation byte: the character starts before
        end -= 1
    return data[:end], True


def decode_data(data: bytes | None) -> tuple[Any, str, bool]:
    """Bytes as shown to people: (JSON value or None, text, whether it is JSON)."""
    if data is None:
        return None, "", False
    value, is_json = json_value(data)
    return value, data.decode("utf-8", errors="replace"), is_json


class TaskOut(msgspec.Struct, frozen=True, kw_only=True):
    """One task.

    Attributes:
        id: the task id (unique within its queue).
        queue: its queue.
        type: its task type.
        state: pending, active, scheduled, retry, archived, completed or aggregating.
        payload: the payload as a JSON value, when it is JSON.
        payload_text: the payload as text (UTF-8, invalid bytes replaced).
        payload_is_json: whether ``payload`` holds it.
        headers: its headers.
        error: the last error ("" if it never failed).
        retried: retries so far.
        max_retry: retries allowed.
        last_failed_at: when it last failed.
        next_process_at: when a scheduled or retry task becomes pending.
        timeout: seconds one run may take.
        deadline: when it must have finished.
        retention: seconds a completed task is kept.
        completed_at: when it succeeded.
        result: the result its handler wrote, as a JSON value when it is JSON.
        result_text: the result as text.
        group: its aggregation group.
        pending_since: when it last became pending.
        decode_error: why its stored message could not be decoded ("" when it could); the message's
            fields (type, payload, headers, retries, times) are then empty.
        progress: its last progress report (``ctx.progress``): kept while it runs and a minute after.
        payload_size: the payload's length in bytes.
        truncated: the payload or the result is cut short: longer than :data:`LIST_PREVIEW_BYTES` in a listing,
            than :data:`TASK_PREVIEW_BYTES` in the task's own view. Its text is cut on a character boundary and
            its JSON value left out (None); the whole value is a download.
        result_size: the result's length in bytes (0 when there is none).
        payload_truncated: the payload is cut short (``payload_text`` is its start, ``payload`` is None).
        result_truncated: the result is cut short (``result_text`` is its start, ``result`` is None).
    """

    id: str
    queue: str
    type: str
    state: str
    payload: Any
    payload_text: str
    payload_is_json: bool
    headers: dict[str, str]
    error: str
    retried: int
    max_retry: int
    last_failed_at: datetime | None
    next_process_at: datetime | None
    timeout: int
    deadline: datetime | None
    retention: int
    completed_at: datetime | None
    result: Any
    result_text: str
    group: str
    pending_since: datetime | None
    decode_error: str = ""
    progress: TaskProgress | None = None
    payload_size: int = 0
    truncated: bool = False
    result_size: int = 0
    payload_truncated: bool = False
    result_truncated: bool = False


def task_out(task: TaskDetails, progress: TaskProgress | None = None, *, preview: int | None = None) -> TaskOut:
    """The API shape of an inspector task (and its last progress report, when it made one).

    ``preview``: the most bytes of the payload and of the result given (:data:`LIST_PREVIEW_BYTES` for listings,
    :data:`TASK_PREVIEW_BYTES` for one task's view); None gives them whole.
    """
    payload, payload_cut = (task.payload, False) if preview is None else _preview(task.payload, preview)
    stored, result_cut = (
        (task.result, False) if preview is None or task.result is None else _preview(task.result, preview)
    )
    result, result_text, _ = decode_data(stored)
    if result_cut:
        result = None  # the start of a JSON document is not its value
    return TaskOut(
        id=task.id,
        queue=task.queue,
        type=task.type,
        state=str(task.state),
        payload=task.payload_json if task.payload_is_json and not payload_cut else None,
        payload_text=payload.decode("utf-8", errors="replace"),
        payload_is_json=task.payload_is_json,
        headers=task.headers,
        error=task.error,
        retried=task.retried,
        max_retry=task.max_retry,
        last_failed_at=task.last_failed_at,
        next_process_at=task.next_process_at,
        timeout=task.timeout,
        deadline=task.deadline,
        retention=task.retention,
        completed_at=task.completed_at,
        result=result,
        result_text=result_text,
        group=task.group,
        pending_since=task.pending_since,
        decode_error=task.decode_error,
        progress=progress,
        payload_size=len(task.payload),
        truncated=payload_cut or result_cut,
        result_size=0 if task.result is None else len(task.result),
        payload_truncated=payload_cut,
        result_truncated=result_cut,
    )


class TaskListOut(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /jobs/{status}``: one page of tasks in one state.

    Attributes:
        state: the state listed.
        queue: the queue filter ("" = every queue).
        type: the task type filter ("" = every type).
        page: the page number, from 1.
        page_size: tasks per page.
        total: matching tasks altogether (with a type filter: among the first ``scan_limit`` scanned).
        tasks: the tasks on this page.
    """

    state: str
    queue: str
    type: str
    page: int
    page_size: int
    total: int
    tasks: list[TaskOut]


class ActionResult(msgspec.Struct, frozen=True, kw_only=True):
    """What an action did.

    Attributes:
        action: the action's name (``run``, ``archive``, ``delete``, ``cancel``, ``run_all``, ...).
        queue: the queue acted on.
        task_id: the task acted on ("" for queue-wide actions).
        state: the state acted on, for bulk actions; a workflow's status before, for workflow actions.
        count: tasks changed (bulk actions), workers reached (cancel), steps run again or stopped (workflows),
            or 1.
        message: a sentence for people.
        workflow_id: the workflow acted on ("" for task and queue actions).
    """

    action: str
    queue: str = ""
    task_id: str = ""
    state: str = ""
    count: int = 1
    message: str = ""
    workflow_id: str = ""


class RunningTaskOut(msgspec.Struct, frozen=True, kw_only=True):
    """A task a server is running.

    Attributes:
        task_id: the task id.
        type: its task type.
        queue: its queue.
        payload_text: its payload as text.
        started_at: when the run started.
        deadline: when it must end.
        elapsed: seconds since it started.
        progress: its last progress report (``ctx.progress``), when it made one.
    """

    task_id: str
    type: str
    queue: str
    payload_text: str
    started_at: datetime | None
    deadline: datetime | None
    elapsed: float | None
    progress: TaskProgress | None = None


class ServerOut(msgspec.Struct, frozen=True, kw_only=True):
    """A live worker process and what it runs.

    Attributes:
        host: its host name.
        pid: its process id.
        server_id: its id.
        concurrency: tasks it may run at once.
        queues: queue -> weight.
        strict_priority: whether it empties higher-weight queues first.
        status: ``active``, ``stopped``, ...
        started_at: when it started.
        active: tasks it runs now.
        tasks: the tasks it runs now, oldest first.
    """

    host: str
    pid: int
    server_id: str
    concurrency: int
    queues: dict[str, int]
    strict_priority: bool
    status: str
    started_at: datetime | None
    active: int
    tasks: list[RunningTaskOut]


def _running(worker: WorkerInfo, now: datetime) -> RunningTaskOut:
    elapsed = (now - worker.start_time).total_seconds() if worker.start_time else None
    return RunningTaskOut(
        task_id=worker.task_id,
        type=worker.task_type,
        queue=worker.queue,
        payload_text=bytes(worker.task_payload).decode("utf-8", errors="replace"),
        started_at=worker.start_time,
        deadline=worker.deadline,
        elapsed=None if elapsed is None else round(max(0.0, elapsed), 3),
    )


def server_out(status: ServerStatus, now: datetime) -> ServerOut:
    """The API shape of an inspector server record."""
    s = status.server
    return ServerOut(
        host=s.host,
        pid=s.pid,
        server_id=s.server_id,
        concurrency=s.concurrency,
        queues=s.queues,
        strict_priority=s.strict_priority,
        status=s.status,
        started_at=s.start_time,
        active=len(status.workers),
        tasks=[_running(w, now) for w in status.workers],
    )


class CronRunOut(msgspec.Struct, frozen=True, kw_only=True):
    """One enqueue by a cron entry.

    Attributes:
        task_id: the task it enqueued.
        enqueued_at: when.
    """

    task_id: str
    enqueued_at: datetime | None


class CronEntryOut(msgspec.Struct, frozen=True, kw_only=True):
    """A cron entry of a live scheduler.

    Attributes:
        id: the entry id.
        spec: its cron spec.
        task_type: the task it enqueues.
        payload: the payload as a JSON value, when it is JSON.
        payload_text: the payload as text.
        options: its enqueue options, in Go's form (``Queue("low")``).
        next_run: when it fires next.
        last_run: when it last fired (``null`` if never).
        history: its latest enqueues, newest first.
    """

    id: str
    spec: str
    task_type: str
    payload: Any
    payload_text: str
    options: list[str]
    next_run: datetime | None
    last_run: datetime | None
    history: list[CronRunOut]


def cron_entry_out(entry: SchedulerEntry, history: list[SchedulerEnqueueEvent]) -> CronEntryOut:
    """The API shape of a scheduler entry and its history."""
    payload, text, _ = decode_data(bytes(entry.task_payload))
    return CronEntryOut(
        id=entry.id,
        spec=entry.spec,
        task_type=entry.task_type,
        payload=payload,
        payload_text=text,
        options=list(entry.enqueue_options),
        next_run=entry.next_enqueue_time,
        last_run=entry.prev_enqueue_time,
        history=[CronRunOut(task_id=e.task_id, enqueued_at=e.enqueue_time) for e in history],
    )


class ThroughputPoint(msgspec.Struct, frozen=True, kw_only=True):
    """Tasks processed and failed in one minute.

    Attributes:
        minute: the start of the minute (UTC).
        processed: tasks processed (succeeded or failed) in it.
        failed: tasks that failed in it.
    """

    minute: datetime
    processed: int
    failed: int


class ThroughputOut(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /throughput``: per-minute counters, oldest first.

    Attributes:
        hours: hours covered.
        queue: the queue ("" = every queue summed).
        processed: processed in the whole span.
        failed: failed in the whole span.
        points: one point per minute.
    """

    hours: int
    queue: str
    processed: int
    failed: int
    points: list[ThroughputPoint]


class RunOut(msgspec.Struct, frozen=True, kw_only=True):
    """A task run, as the dashboard's "recent runs" shows it.

    Attributes:
        id: the task id.
        queue: its queue.
        type: its task type.
        status: ``active`` (running now), ``succeeded``, ``failed``, ``completed`` or ``archived``.
        attempt: 1 for the first run, 2 for the first retry, ...
        started_at: when the run started (unknown for tasks only seen in the completed or archived lists).
        finished_at: when it ended.
        duration: seconds it ran (so far, when active; ``null`` when unknown).
        error: the error of a failed run.
    """

    id: str
    queue: str
    type: str
    status: str
    attempt: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration: float | None = None
    error: str = ""
