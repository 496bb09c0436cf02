"""What the API and the dashboard read, on top of the inspector: stats, task pages, throughput, servers, cron.

Every function takes the :class:`~framework.inspector.Inspector` and only calls its methods; the admin
adds paging across queues, the task-type filter and sums over queues.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import msgspec
from litestar.exceptions import ClientException, NotFoundException

from framework.errors import QueueNotFound
from framework.inspector import MAX_PAGE_SIZE, TaskState
from framework_admin.schemas import (
    LIST_PREVIEW_BYTES,
    TASK_PREVIEW_BYTES,
    CronEntryOut,
    CronRunOut,
    QueueDetailOut,
    StatsOut,
    TaskListOut,
    ThroughputOut,
    ThroughputPoint,
    Totals,
    cron_entry_out,
    server_out,
    task_out,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from framework.inspector import Inspector, QueueInfo, TaskDetails
    from framework_admin.schemas import ServerOut, TaskOut

__all__ = (
    "LISTABLE_STATES",
    "SCAN_LIMIT",
    "cron_entries",
    "cron_history",
    "list_tasks",
    "parse_state",
    "queue_detail",
    "queue_names",
    "servers",
    "stats",
    "throughput",
)

LISTABLE_STATES: tuple[str, ...] = ("active", "pending", "scheduled", "retry", "archived", "completed", "aggregating")
"""States the admin lists; ``failed`` is accepted as another name for ``archived`` (Grit's word)."""
SCAN_LIMIT = 5000
"""Tasks scanned per request when filtering by task type (the filter is applied by the admin)."""
_SCAN_CHUNK = 500
_SUMMED = (
    "size", "pending", "active", "scheduled", "retry", "archived", "completed", "aggregating",
    "processed_today", "failed_today", "processed_total", "failed_total",
)  # fmt: skip


def parse_state(status: str) -> TaskState:
    """A state from the URL (``failed`` means ``archived``).

    Raises:
        ClientException: an unknown state (400, listing the valid ones).
    """
    name = "archived" if status == "failed" else status
    if name not in LISTABLE_STATES:
        raise ClientException(f"unknown status {status!r}; use one of: {', '.join(LISTABLE_STATES)}, failed")
    return TaskState(name)


async def queue_names(inspector: Inspector, queue: str | None = None) -> list[str]:
    """``[queue]`` after checking it exists, or every queue.

    Raises:
        NotFoundException: ``queue`` does not exist.
    """
    names = await inspector.queues()
    if queue:
        if queue not in names:
            raise NotFoundException(f"queue {queue!r} does not exist")
        return [queue]
    return names


async def stats(inspector: Inspector) -> StatsOut:
    """Every queue's snapshot and the sums over them (and over the task limits: how many tasks they hold back)."""
    infos: list[QueueInfo] = await inspector.all_queue_info(memory=False)
    limits = await inspector.limits(busiest=0)
    sums = {name: sum(getattr(i, name) for i in infos) for name in _SUMMED}
    totals = Totals(
        queues=len(infos),
        paused=sum(i.paused for i in infos),
        limits=len(limits),
        throttled=sum(lim.waiting for lim in limits),
        **sums,
    )
    return StatsOut(totals=totals, queues=infos)


async def _slice(inspector: Inspector, queue: str, state: TaskState, start: int, count: int) -> list[TaskDetails]:
    """Tasks ``start .. start+count`` of one queue's state, from at most two inspector pages."""
    if count <= 0:
        return []
    first, last = start // count + 1, (start + count - 1) // count + 1
    tasks: list[TaskDetails] = []
    for page in range(first, last + 1):
        tasks += (await inspector.list_tasks(queue, state, page=page, size=count)).tasks
    offset = start - (first - 1) * count
    return tasks[offset : offset + count]


async def _unfiltered(
    inspector: Inspector, names: list[str], state: TaskState, page: int, size: int
) -> tuple[int, list[TaskDetails]]:
    totals = [await inspector.count_tasks(name, state) for name in names]
    start = (page - 1) * size
    out: list[TaskDetails] = []
    for name, total in zip(names, totals, strict=True):
        if len(out) >= size:
            break
        if start >= total:
            start -= total
            continue
        take = min(size - len(out), total - start)
        out += await _slice(inspector, name, state, start, take)
        start = 0
    return sum(totals), out


async def _latest(
    inspector: Inspector, names: list[str], state: TaskState, page: int, size: int
) -> tuple[int, list[TaskDetails]]:
    """A page of the latest tasks across ``names``: each queue's latest ``page * size``, merged by time."""
    reach = page * size
    if reach > MAX_PAGE_SIZE:
        raise ClientException(f"newest first reaches the latest {MAX_PAGE_SIZE} tasks; page * page_size is {reach}")
    total, found = 0, []
    for name in names:
        got = await inspector.list_tasks(name, state, size=reach, reverse=True)
        total += got.total
        found += got.tasks
    return total, _by_time(found, state)[reach - size : reach]


_TIME_OF: dict[TaskState, Callable[[TaskDetails], datetime | None]] = {
    TaskState.ARCHIVED: lambda t: t.last_failed_at,
    TaskState.COMPLETED: lambda t: t.completed_at,
    TaskState.SCHEDULED: lambda t: t.next_process_at,
    TaskState.RETRY: lambda t: t.next_process_at,
}
"""The time a task shows for its state (the admin's "When"), by which the latest come first."""


def _by_time(tasks: list[TaskDetails], state: TaskState) -> list[TaskDetails]:
    """Latest first by the time each task shows for ``state``; pending, active and aggregating keep their order."""
    time_of = _TIME_OF.get(state)
    if time_of is None or len(tasks) < 2:
        return tasks
    epoch = datetime.fromtimestamp(0, UTC)
    return sorted(tasks, key=lambda t: time_of(t) or epoch, reverse=True)


async def _filtered(
    inspector: Inspector, names: list[str], state: TaskState, task_type: str, page: int, size: int, newest: bool
) -> tuple[int, list[TaskDetails]]:
    matches: list[TaskDetails] = []
    scanned = 0
    for name in names:
        chunk_page = 1
        while scanned < SCAN_LIMIT:
            got = await inspector.list_tasks(name, state, page=chunk_page, size=_SCAN_CHUNK, reverse=newest)
            scanned += len(got.tasks)
            matches += [t for t in got.tasks if t.type == task_type]
            if chunk_page * _SCAN_CHUNK >= got.total or not got.tasks:
                break
            chunk_page += 1
    if newest:
        matches = _by_time(matches, state)
    start = (page - 1) * size
    return len(matches), matches[start : start + size]


async def list_tasks(
    inspector: Inspector,
    status: str,
    *,
    queue: str | None = None,
    task_type: str | None = None,
    page: int = 1,
    page_size: int = 20,
    newest: bool = False,
) -> TaskListOut:
    """One page of the tasks in ``status``, of one queue or of every queue (in queue-name order).

    ``newest`` lists the latest first instead (archived: the latest failures), merged across queues by
    the time that orders the state (archived, due or expiry time; pending and active tasks queue by queue).

    Raises:
        ClientException: an unknown status or a bad page.
        NotFoundException: ``queue`` does not exist.
    """
    state = parse_state(status)
    if page < 1 or not 1 <= page_size <= 100:
        raise ClientException("page must be >= 1 and page_size between 1 and 100")
    names = await queue_names(inspector, queue)
    try:
        if task_type:
            total, tasks = await _filtered(inspector, names, state, task_type, page, page_size, newest)
        elif newest:
            total, tasks = await _latest(inspector, names, state, page, page_size)
        else:
            total, tasks = await _unfiltered(inspector, names, state, page, page_size)
    except QueueNotFound as exc:  # removed while we read it
        raise NotFoundException(str(exc)) from exc
    return TaskListOut(
        state=state.value,
        queue=queue or "",
        type=task_type or "",
        page=page,
        page_size=page_size,
        total=total,
        tasks=[task_out(t, preview=LIST_PREVIEW_BYTES) for t in tasks],
    )


async def throughput(inspector: Inspector, hours: int = 1, queue: str | None = None) -> ThroughputOut:
    """Processed and failed tasks per minute over ``hours``, summed over the queues (or of one queue).

    Raises:
        ClientException: ``hours`` is not between 1 and 24.
        NotFoundException: ``queue`` does not exist.
    """
    if not 1 <= hours <= 24:
        raise ClientException("hours must be between 1 and 24")
    names = await queue_names(inspector, queue)
    sums: dict[datetime, list[int]] = {}
    for name in names:
        try:
            points = await inspector.minute_stats(name, hours)
        except QueueNotFound:
            continue
        for p in points:
            acc = sums.setdefault(p.minute, [0, 0])
            acc[0] += p.processed
            acc[1] += p.failed
    if not sums:
        last = int(datetime.now(UTC).timestamp()) // 60
        sums = {datetime.fromtimestamp(m * 60, UTC): [0, 0] for m in range(last - hours * 60 + 1, last + 1)}
    out = [ThroughputPoint(minute=m, processed=v[0], failed=v[1]) for m, v in sorted(sums.items())]
    return ThroughputOut(
        hours=hours,
        queue=queue or "",
        processed=sum(p.processed for p in out),
        failed=sum(p.failed for p in out),
        points=out,
    )


async def servers(inspector: Inspector) -> list[ServerOut]:
    """Live worker processes and the tasks each runs, with the progress each task reported."""
    now = datetime.now(UTC)
    out = [server_out(s, now) for s in await inspector.servers()]
    running = [(t.queue, t.task_id) for sv in out for t in sv.tasks]
    reports = iter(await inspector.progress_many(running))
    return [
        msgspec.structs.replace(sv, tasks=[msgspec.structs.replace(t, progress=next(reports)) for t in sv.tasks])
        for sv in out
    ]


async def task_view(inspector: Inspector, task: TaskDetails) -> TaskOut:
    """The API shape of ``task`` and its last progress report, payload and result cut at :data:`TASK_PREVIEW_BYTES`."""
    return task_out(task, await inspector.progress(task.queue, task.id), preview=TASK_PREVIEW_BYTES)


async def cron_entries(inspector: Inspector, history: int = 10) -> list[CronEntryOut]:
    """Cron entries of live schedulers, with their latest ``history`` enqueues.

    A scheduler rewrites its entries every few seconds, so the last run is the newer of the entry's
    own record and its latest history event.
    """
    out = []
    for entry in await inspector.scheduler_entries():
        events = await inspector.scheduler_history(entry.id, size=max(1, history))
        item = cron_entry_out(entry, events[:history])
        latest = events[0].enqueue_time if events else None
        if latest is not None and (item.last_run is None or latest > item.last_run):
            item = msgspec.structs.replace(item, last_run=latest)
        out.append(item)
    return out


async def cron_history(inspector: Inspector, entry_id: str, page: int = 1, page_size: int = 20) -> list[CronRunOut]:
    """One page of a cron entry's enqueues, newest first.

    Raises:
        ClientException: a bad page or page size.
    """
    if page < 1 or not 1 <= page_size <= 100:
        raise ClientException("page must be >= 1 and page_size between 1 and 100")
    events = await inspector.scheduler_history(entry_id, page=page, size=page_size)
    return [CronRunOut(task_id=e.task_id, enqueued_at=e.enqueue_time) for e in events]


async def queue_detail(inspector: Inspector, queue: str, days: int = 7) -> QueueDetailOut:
    """One queue's snapshot (with memory use) and its daily history.

    Raises:
        NotFoundException: no such queue.
        ClientException: ``days`` is not between 1 and 90.
    """
    if not 1 <= days <= 90:
        raise ClientException("days must be between 1 and 90")
    try:
        return QueueDetailOut(queue=await inspector.queue_info(queue), history=await inspector.history(queue, days))
    except QueueNotFound as exc:
        raise NotFoundException(str(exc)) from exc
