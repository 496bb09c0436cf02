"""Admin queries and operations: queue stats, task listing and actions, servers and schedulers.

:class:`Inspector` (:mod:`~framework.inspector.core`) is the one entry point; it delegates to parts split by
noun, each an object holding the :class:`~framework.inspector.namespace.Namespace` it reads:
:mod:`~framework.inspector.queues`, :mod:`~framework.inspector.tasks`, :mod:`~framework.inspector.actions`,
:mod:`~framework.inspector.servers` and :mod:`~framework.inspector.schedulers`.

May import: the top-level model modules, :mod:`framework.transport`, :mod:`framework.protocol`,
:mod:`framework.broker` (its constants).
"""

from __future__ import annotations

from framework.errors import QueueNotFound, TaskNotFound
from framework.inspector.actions import BATCH_SIZE, Progress
from framework.inspector.core import Inspector
from framework.inspector.details import TaskDetails
from framework.inspector.errors import InvalidTaskState, QueueNotEmpty
from framework.inspector.memory import MEMORY_SAMPLE
from framework.inspector.progress import TaskProgress
from framework.inspector.queues import DailyStats, MinuteStats, QueueInfo
from framework.inspector.servers import ServerStatus
from framework.inspector.tasks import MAX_PAGE_SIZE, GroupInfo, TaskPage
from framework.protocol.message import SchedulerEnqueueEvent, SchedulerEntry, ServerInfo, TaskState, WorkerInfo

__all__ = (
    "BATCH_SIZE",
    "MAX_PAGE_SIZE",
    "MEMORY_SAMPLE",
    "DailyStats",
    "GroupInfo",
    "Inspector",
    "InvalidTaskState",
    "MinuteStats",
    "Progress",
    "QueueInfo",
    "QueueNotEmpty",
    "QueueNotFound",
    "SchedulerEnqueueEvent",
    "SchedulerEntry",
    "ServerInfo",
    "ServerStatus",
    "TaskDetails",
    "TaskNotFound",
    "TaskPage",
    "TaskProgress",
    "TaskState",
    "WorkerInfo",
)
