"""Admin queries and operations: queue stats, task listing and actions, servers and schedulers.

:class:`Inspector` (:mod:`~framework.inspector.core`) is the one entry point; it delegates to parts split by
noun, each an object holding the :class:`~framework.inspector.namespace.Namespace` it reads:
:mod:`~framework.inspector.queues`, :mod:`~framework.inspector.tasks`, :mod:`~framework.inspector.actions`,
:mod:`~framework.inspector.servers`, :mod:`~framework.inspector.schedulers`, :mod:`~framework.inspector.progress`,
:mod:`~framework.inspector.workflows` and :mod:`~framework.inspector.limits`.

May import: the top-level model modules, :mod:`framework.limits`, :mod:`framework.transport`, :mod:`framework.protocol`,
:mod:`framework.broker` (its constants, and the workflow scripts' runner).
"""

from __future__ import annotations

from framework.errors import QueueNotFound, TaskNotFound, WorkflowNotFound
from framework.inspector.actions import BATCH_SIZE, Progress
from framework.inspector.core import Inspector
from framework.inspector.details import TaskDetails
from framework.inspector.errors import InvalidTaskState, QueueNotEmpty
from framework.inspector.limits import LimitDeclaration, LimitInfo, LimitKeyUse
from framework.inspector.memory import MEMORY_SAMPLE
from framework.inspector.namespace import MAX_JSON_DEPTH, json_value
from framework.inspector.progress import TaskProgress
from framework.inspector.queues import DailyStats, MinuteStats, QueueInfo
from framework.inspector.servers import ServerStatus
from framework.inspector.tasks import MAX_PAGE_SIZE, GroupInfo, TaskPage
from framework.inspector.workflows import (
    WORKFLOW_STATUSES,
    WorkflowCancelled,
    WorkflowDetail,
    WorkflowRetried,
    WorkflowStates,
    WorkflowStep,
    WorkflowSummary,
)
from framework.inspector.workflows import layers as workflow_layers
from framework.protocol.message import SchedulerEnqueueEvent, SchedulerEntry, ServerInfo, TaskState, WorkerInfo

__all__ = (
    "BATCH_SIZE",
    "MAX_JSON_DEPTH",
    "MAX_PAGE_SIZE",
    "MEMORY_SAMPLE",
    "WORKFLOW_STATUSES",
    "DailyStats",
    "GroupInfo",
    "Inspector",
    "InvalidTaskState",
    "LimitDeclaration",
    "LimitInfo",
    "LimitKeyUse",
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
    "WorkflowCancelled",
    "WorkflowDetail",
    "WorkflowNotFound",
    "WorkflowRetried",
    "WorkflowStates",
    "WorkflowStep",
    "WorkflowSummary",
    "json_value",
    "workflow_layers",
)
