"""The :class:`Inspector`: admin queries and operations on queues, tasks, servers and schedulers.

The inspector is a facade over eight parts, each an object of its own holding the :class:`Namespace` it reads
(the Redis client, the key schema and the clock): :class:`~framework.inspector.queues.QueueOps`,
:class:`~framework.inspector.tasks.TaskReads`, :class:`~framework.inspector.actions.TaskActions`,
:class:`~framework.inspector.servers.ServerReads`, :class:`~framework.inspector.schedulers.SchedulerReads`,
:class:`~framework.inspector.progress.ProgressReads`, :class:`~framework.inspector.workflows.WorkflowReads` and
:class:`~framework.inspector.limits.LimitReads`.
Every public method delegates to one of them.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from framework.clock import SystemClock
from framework.inspector.actions import TaskActions
from framework.inspector.limits import BUSIEST_KEYS, LimitReads
from framework.inspector.namespace import Namespace
from framework.inspector.progress import ProgressReads
from framework.inspector.queues import QueueOps
from framework.inspector.schedulers import SchedulerReads
from framework.inspector.servers import ServerReads
from framework.inspector.tasks import TaskReads
from framework.inspector.workflows import WorkflowReads
from framework.protocol.keys import Schema
from framework.transport.connection import open_redis, resolve_redis_url

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from redis.asyncio import Redis

    from framework.clock import Clock
    from framework.inspector.actions import Progress
    from framework.inspector.details import TaskDetails
    from framework.inspector.limits import LimitInfo
    from framework.inspector.progress import TaskProgress
    from framework.inspector.queues import DailyStats, MinuteStats, QueueInfo
    from framework.inspector.servers import ServerStatus
    from framework.inspector.tasks import GroupInfo, TaskPage
    from framework.inspector.workflows import (
        WorkflowCancelled,
        WorkflowDetail,
        WorkflowRetried,
        WorkflowStates,
        WorkflowSummary,
    )
    from framework.protocol.message import SchedulerEnqueueEvent, SchedulerEntry, TaskState
    from framework.settings import Settings

__all__ = ("Inspector",)


class Inspector:
    """Reads and steers the queues of one namespace; used by the admin plugin and ``framework tasks``.

    Works on data written by Go asynq as well as by this framework. Every read is paged or sampled,
    so it stays cheap on queues of any size; every change to a task is one atomic Lua script.

    Args:
        redis: an asyncio Redis client (bytes replies, as :func:`framework.transport.connection.open_redis` makes).
        schema: the key schema (default: asynq's namespace).
        clock: where "now" comes from (default: the wall clock).

    Attributes:
        redis: the Redis client (the caller's to close, unless the inspector came from :meth:`from_settings`).
        schema: the key schema.
        clock: the clock.

    Example:
        >>> async with Inspector.from_settings(settings) as inspector:
        ...     page = await inspector.list_tasks("default", "retry", page=1, size=20)
    """

    def __init__(self, redis: Redis, schema: Schema | None = None, *, clock: Clock | None = None) -> None:
        self.redis = redis
        self.schema = schema or Schema()
        self.clock: Clock = clock or SystemClock()
        ns = Namespace(self.redis, self.schema, self.clock)
        self._queues = QueueOps(ns)
        self._tasks = TaskReads(ns)
        self._actions = TaskActions(ns)
        self._servers = ServerReads(ns)
        self._schedulers = SchedulerReads(ns)
        self._progress = ProgressReads(ns)
        self._workflows = WorkflowReads(ns)
        self._limits = LimitReads(ns)

    @classmethod
    @contextlib.asynccontextmanager
    async def from_settings(cls, settings: Settings, *, clock: Clock | None = None) -> AsyncIterator[Inspector]:
        """An inspector of the app's queues, with a connection of its own closed on exit.

        Connects to ``settings.redis_url``, or to the embedded Valkey of the data directory when no URL is
        set (started, or found running), and reads the settings' namespace.

        Args:
            settings: the app's settings.
            clock: where "now" comes from (default: the wall clock).

        Example:
            >>> async with Inspector.from_settings(load_settings()) as inspector:
            ...     print(await inspector.all_queue_info())
        """
        url = await asyncio.to_thread(resolve_redis_url, settings)  # may start the embedded server: not on the loop
        redis = open_redis(url)
        try:
            yield cls(redis, Schema(settings.namespace), clock=clock)
        finally:
            await redis.aclose()

    # -- queues ------------------------------------------------------------------------------------

    async def queues(self) -> list[str]:
        """Every queue name, sorted."""
        return await self._queues.queues()

    async def queue_info(self, queue: str, *, memory: bool = True) -> QueueInfo:
        """Counts, throughput, latency, memory and pause state of one queue.

        Args:
            queue: the queue name.
            memory: estimate memory use (a few dozen extra commands); ``memory_usage`` is 0 otherwise.

        Raises:
            QueueNotFound: the queue does not exist.
        """
        return await self._queues.queue_info(queue, memory=memory)

    async def all_queue_info(self, *, memory: bool = True) -> list[QueueInfo]:
        """:meth:`queue_info` of every queue, by name; queues removed meanwhile are left out."""
        return await self._queues.all_queue_info(memory=memory)

    async def history(self, queue: str, days: int = 7) -> list[DailyStats]:
        """Processed and failed counts per UTC day for the last ``days`` days, oldest first (today last).

        Raises:
            QueueNotFound: the queue does not exist.
            ValueError: ``days`` is not between 1 and 90 (asynq keeps daily counters for 90 days).
        """
        return await self._queues.history(queue, days)

    async def minute_stats(self, queue: str, hours: int = 1) -> list[MinuteStats]:
        """Processed and failed counts per minute for the last ``hours`` hours, oldest first.

        These are the framework's own counters (asynq keeps daily ones only), so minutes in which only
        Go workers ran read as 0.

        Raises:
            QueueNotFound: the queue does not exist.
            ValueError: ``hours`` is not between 1 and 24.
        """
        return await self._queues.minute_stats(queue, hours)

    async def pause(self, queue: str) -> bool:
        """Pause ``queue``: workers stop taking its tasks (``SETNX paused <now>``).

        Returns:
            True if it was paused now, False if it already was.

        Raises:
            QueueNotFound: the queue does not exist.
        """
        return await self._queues.pause(queue)

    async def unpause(self, queue: str) -> bool:
        """Resume ``queue``.

        Returns:
            True if it was paused, False if it was not.

        Raises:
            QueueNotFound: the queue does not exist.
        """
        return await self._queues.unpause(queue)

    # -- tasks -------------------------------------------------------------------------------------

    async def list_tasks(
        self,
        queue: str,
        state: TaskState | str,
        *,
        page: int = 1,
        size: int = 20,
        group: str | None = None,
        reverse: bool = False,
    ) -> TaskPage:
        """One page of the tasks of ``queue`` in ``state``, the next to be processed first.

        Pending and active tasks are in processing order (oldest first); scheduled and retry tasks by
        due time; archived by time archived; completed by expiry; aggregating by group, then time added.
        ``reverse`` turns each order round (the latest archived first, for instance); groups stay in name
        order.

        Args:
            queue: the queue name.
            state: the state to list.
            page: the page number, from 1.
            size: tasks per page (at most :data:`MAX_PAGE_SIZE`).
            group: for aggregating tasks, only this group.
            reverse: the last first.

        Raises:
            QueueNotFound: the queue does not exist.
            ValueError: an unknown state, or a bad page or size.
        """
        return await self._tasks.list_tasks(queue, state, page=page, size=size, group=group, reverse=reverse)

    async def count_tasks(self, queue: str, state: TaskState | str, *, group: str | None = None) -> int:
        """How many tasks of ``queue`` are in ``state`` (in ``group``, for aggregating), reading none of them.

        Raises:
            QueueNotFound: the queue does not exist.
            ValueError: an unknown state.
        """
        return await self._tasks.count_tasks(queue, state, group=group)

    async def list_groups(self, queue: str) -> list[GroupInfo]:
        """The aggregation groups of ``queue`` and their sizes, by name.

        Raises:
            QueueNotFound: the queue does not exist.
        """
        return await self._tasks.list_groups(queue)

    async def get_task(self, queue: str, task_id: str) -> TaskDetails:
        """One task of ``queue``, in whatever state it is.

        Raises:
            QueueNotFound: the queue does not exist.
            TaskNotFound: the queue has no task ``task_id``.
        """
        return await self._tasks.get_task(queue, task_id)

    # -- actions -----------------------------------------------------------------------------------

    async def run_task(self, queue: str, task_id: str) -> None:
        """Make a scheduled, retry, archived, completed or aggregating task pending now.

        Raises:
            QueueNotFound: the queue does not exist.
            TaskNotFound: the queue has no such task.
            InvalidTaskState: the task is active or already pending.
        """
        return await self._actions.run_task(queue, task_id)

    async def archive_task(self, queue: str, task_id: str) -> None:
        """Archive a non-active task now (it will not run unless run again).

        Raises:
            QueueNotFound: the queue does not exist.
            TaskNotFound: the queue has no such task.
            InvalidTaskState: the task is active or already archived.
        """
        return await self._actions.archive_task(queue, task_id)

    async def delete_task(self, queue: str, task_id: str) -> None:
        """Delete a non-active task and its record; its uniqueness lock is released if it holds it.

        Raises:
            QueueNotFound: the queue does not exist.
            TaskNotFound: the queue has no such task.
            InvalidTaskState: the task is active, or being merged into an aggregate task (staged in an
                aggregation set: its payload may be in the aggregate already).
        """
        return await self._actions.delete_task(queue, task_id)

    async def cancel(self, task_id: str) -> int:
        """Ask every worker to cancel the active task ``task_id`` (``PUBLISH <ns>:cancel``).

        Returns:
            How many subscribers (worker processes) received the request. On a Redis Cluster, where
            PUBLISH counts the subscribers of one node only, the subscribers of every node are counted.
        """
        return await self._actions.cancel(task_id)

    async def run_all(
        self, queue: str, state: TaskState | str, *, group: str | None = None, progress: Progress | None = None
    ) -> int:
        """Make every task of ``state`` (scheduled, retry, archived, completed, aggregating) pending now.

        Args:
            queue: the queue name.
            state: the state to empty.
            group: for aggregating tasks, only this group (default: every group).
            progress: called after each batch with (done, total).

        Returns:
            How many tasks were made pending.

        Raises:
            QueueNotFound: the queue does not exist.
            InvalidTaskState: ``state`` cannot be run (pending, active).
        """
        return await self._actions.run_all(queue, state, group=group, progress=progress)

    async def archive_all(
        self, queue: str, state: TaskState | str, *, group: str | None = None, progress: Progress | None = None
    ) -> int:
        """Archive every task of ``state`` (pending, scheduled, retry, completed, aggregating).

        The archive keeps its caps (90 days, 10,000 tasks per queue): the oldest archived tasks beyond
        them are deleted, as on every archive.

        Returns:
            How many tasks were archived.

        Raises:
            QueueNotFound: the queue does not exist.
            InvalidTaskState: ``state`` cannot be archived (active, archived).
        """
        return await self._actions.archive_all(queue, state, group=group, progress=progress)

    async def delete_all(
        self, queue: str, state: TaskState | str, *, group: str | None = None, progress: Progress | None = None
    ) -> int:
        """Delete every task of ``state`` (any but active) and release the uniqueness locks they hold.

        Returns:
            How many task records were deleted.

        Raises:
            QueueNotFound: the queue does not exist.
            InvalidTaskState: ``state`` is active.
        """
        return await self._actions.delete_all(queue, state, group=group, progress=progress)

    async def delete_queue(self, queue: str, *, force: bool = False, progress: Progress | None = None) -> None:
        """Remove a queue: its keys and its name. Only an empty queue, unless ``force``.

        With ``force``, every task that is not active is deleted first; a queue with active tasks is
        never removed.

        Raises:
            QueueNotFound: the queue does not exist.
            QueueNotEmpty: the queue has tasks (and not ``force``), or active tasks.
        """
        return await self._actions.delete_queue(queue, force=force, progress=progress)

    # -- progress ----------------------------------------------------------------------------------

    async def progress(self, queue: str, task_id: str) -> TaskProgress | None:
        """The last progress report of a task (``ctx.progress``); None when it has reported none.

        The record is kept while the task runs and for a minute after its handler ended, then expires.

        Example:
            >>> p = await inspector.progress("default", task_id)
            >>> print(f"{p.percent}% {p.message}" if p else "no progress reported")
        """
        return await self._progress.progress(queue, task_id)

    async def progress_many(self, tasks: Sequence[tuple[str, str]]) -> list[TaskProgress | None]:
        """:meth:`progress` of several ``(queue, task id)`` pairs in one round trip, in order."""
        return await self._progress.progress_many(tasks)

    def watch_progress(self, queue: str, task_id: str, *, idle: float = 5.0) -> AsyncIterator[TaskProgress]:
        """Follow a task's progress: the stored report, then each new one as it is written (Pub/Sub, no polling).

        Ends when the task is completed, archived or gone (checked when an attempt ends, and after ``idle``
        seconds without a report); a task waiting for a retry is followed into its next attempt.

        Args:
            queue: the task's queue.
            task_id: its id.
            idle: seconds without a report after which the task's state is checked.

        Example:
            >>> async for p in inspector.watch_progress("default", task_id):
            ...     print(f"{p.percent:3d}% {p.message}")
        """
        return self._progress.watch_progress(queue, task_id, idle=idle)

    # -- servers and schedulers --------------------------------------------------------------------

    async def servers(self) -> list[ServerStatus]:
        """Every server whose heartbeat has not expired, by host, pid and id.

        Records that are gone or cannot be decoded are skipped.
        """
        return await self._servers.servers()

    async def scheduler_entries(self) -> list[SchedulerEntry]:
        """The entries of every live scheduler, by next enqueue time; undecodable entries are skipped."""
        return await self._schedulers.scheduler_entries()

    async def scheduler_history(self, entry_id: str, *, page: int = 1, size: int = 20) -> list[SchedulerEnqueueEvent]:
        """The enqueues of one scheduler entry, newest first, one page at a time.

        Raises:
            ValueError: a bad page or size.
        """
        return await self._schedulers.scheduler_history(entry_id, page=page, size=size)

    # -- workflows ---------------------------------------------------------------------------------

    async def workflows(
        self, queue: str | None = None, status: str | None = None, *, limit: int = 50, offset: int = 0
    ) -> list[WorkflowSummary]:
        """Workflows newest first, of one home queue (default: every queue), optionally of one status.

        Workflows whose records expired are left out (and leave the index).

        Args:
            queue: only the workflows whose home queue this is.
            status: only the workflows with this status (running, succeeded, failed, cancelled).
            limit: at most this many (up to :data:`~framework.inspector.workflows.MAX_WORKFLOWS`).
            offset: skip this many first (at most :data:`~framework.inspector.workflows.MAX_OFFSET`).

        Raises:
            ValueError: an unknown status, or a bad limit or offset.

        Example:
            >>> for wf in await inspector.workflows(status="failed", limit=20):
            ...     print(wf.id, wf.name, wf.error)
        """
        return await self._workflows.workflows(queue, status, limit=limit, offset=offset)

    async def workflow(self, workflow_id: str, queue: str | None = None) -> WorkflowDetail:
        """One workflow: its steps (task, shown state, dependencies, error, result) and the edges between them.

        Args:
            workflow_id: its id.
            queue: its home queue (default: found in the queues' indexes).

        Raises:
            WorkflowNotFound: no such workflow (never started, or expired).
        """
        return await self._workflows.workflow(workflow_id, queue)

    async def workflow_states(self, workflow_id: str, queue: str | None = None) -> WorkflowStates:
        """A workflow's status and each step's shown state only: what a page following it polls.

        Raises:
            WorkflowNotFound: no such workflow (never started, or expired).
        """
        return await self._workflows.workflow_states(workflow_id, queue)

    async def cancel_workflow(self, workflow_id: str, queue: str | None = None) -> WorkflowCancelled:
        """Cancel a workflow: its released steps not running yet are deleted, running ones asked to stop.

        Its waiting steps never start, unless it is retried. A succeeded or cancelled workflow is left as it is
        (the result's ``status`` says which it was).

        Raises:
            WorkflowNotFound: no such workflow (never started, or expired).
        """
        return await self._workflows.cancel(workflow_id, queue)

    async def retry_workflow(self, workflow_id: str, queue: str | None = None) -> WorkflowRetried:
        """Run a failed or cancelled workflow again: its failed and cancelled steps run again, it is running again.

        Raises:
            WorkflowNotFound: no such workflow (never started, or expired).
        """
        return await self._workflows.retry(workflow_id, queue)

    # -- limits ------------------------------------------------------------------------------------

    async def limits(self, *, busiest: int = BUSIEST_KEYS) -> list[LimitInfo]:
        """Every task limit the workers declared, by name: its values, slots in use, tasks waiting, counters.

        A keyed limit sums its keys (up to :data:`~framework.inspector.limits.KEY_PAGE` of them) and lists its
        ``busiest`` keys.

        Example:
            >>> for lim in await inspector.limits():
            ...     print(lim.name, f"{lim.in_use}/{lim.concurrency or '-'}", lim.waiting)
        """
        return await self._limits.limits(busiest=busiest)

    async def throttled(self) -> int:
        """Tasks put off by a limit that have not started yet, over every limit."""
        return await self._limits.throttled()
