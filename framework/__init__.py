"""framework: a Python application framework with a task queue wire-compatible with Go asynq.

Import the public API from here::

    from framework import TaskDef, TaskContext, Client, Worker, create_app, hookimpl
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from framework import _compat

_compat.install()

if TYPE_CHECKING:
    from framework.client.client import Client, Job, TaskCall, TaskInfo
    from framework.client.sync import SyncClient
    from framework.client.workflows import WorkflowInfo
    from framework.context import TaskContext
    from framework.errors import (
        BatchInterrupted,
        ConfigError,
        DuplicateTask,
        EnqueueFailed,
        FrameworkError,
        InvalidOption,
        InvalidWorkflow,
        PayloadTooLarge,
        PayloadTypeError,
        PluginError,
        QueueNotFound,
        RedisUnavailable,
        ResultTooLarge,
        ResultTypeError,
        RetryAfter,
        RevokeTask,
        SkipRetry,
        TaskAggregated,
        TaskCancelled,
        TaskDeleted,
        TaskFailed,
        TaskIdConflict,
        TaskNotFound,
        TaskUnconfirmed,
        UnknownTaskType,
        WaitTimeout,
        WorkflowFailed,
        WorkflowNotFound,
    )
    from framework.hookspecs import hookimpl
    from framework.inspector import Inspector
    from framework.limits import Limit
    from framework.plugins.calls import contributions_by_plugin, plugin_callers
    from framework.plugins.events import await_me_maybe
    from framework.plugins.lifecycle import start_services, stop_services
    from framework.protocol.keys import Schema
    from framework.scheduler.scheduler import Scheduler
    from framework.services import Services, StashKey
    from framework.settings import Settings, load_settings
    from framework.task import CronEntry, CronOptions, EnqueueOptions, Middleware, Run, Step, StepOptions, TaskDef
    from framework.web.app import create_app
    from framework.web.tasks import enqueue_and_wait, progress_events, task_status
    from framework.web.tokens import Tokens
    from framework.worker.background.aggregator import Aggregator
    from framework.worker.worker import Worker
    from framework.workflow import Workflow, chain, chord, group

    __version__: str  # the installed distribution's version, looked up on first use

__all__ = (
    "Aggregator",
    "BatchInterrupted",
    "Client",
    "ConfigError",
    "CronEntry",
    "CronOptions",
    "DuplicateTask",
    "EnqueueFailed",
    "EnqueueOptions",
    "FrameworkError",
    "Inspector",
    "InvalidOption",
    "InvalidWorkflow",
    "Job",
    "Limit",
    "Middleware",
    "PayloadTooLarge",
    "PayloadTypeError",
    "PluginError",
    "QueueNotFound",
    "RedisUnavailable",
    "ResultTooLarge",
    "ResultTypeError",
    "RetryAfter",
    "RevokeTask",
    "Run",
    "Scheduler",
    "Schema",
    "Services",
    "Settings",
    "SkipRetry",
    "StashKey",
    "Step",
    "StepOptions",
    "SyncClient",
    "TaskAggregated",
    "TaskCall",
    "TaskCancelled",
    "TaskContext",
    "TaskDef",
    "TaskDeleted",
    "TaskFailed",
    "TaskIdConflict",
    "TaskInfo",
    "TaskNotFound",
    "TaskUnconfirmed",
    "Tokens",
    "UnknownTaskType",
    "WaitTimeout",
    "Worker",
    "Workflow",
    "WorkflowFailed",
    "WorkflowInfo",
    "WorkflowNotFound",
    "__version__",
    "await_me_maybe",
    "chain",
    "chord",
    "contributions_by_plugin",
    "create_app",
    "enqueue_and_wait",
    "group",
    "hookimpl",
    "load_settings",
    "plugin_callers",
    "progress_events",
    "start_services",
    "stop_services",
    "task_status",
)

_LAZY = {
    "Aggregator": "framework.worker.background.aggregator",
    "Client": "framework.client.client",
    "CronEntry": "framework.task",
    "CronOptions": "framework.task",
    "EnqueueOptions": "framework.task",
    "Inspector": "framework.inspector",
    "Job": "framework.client.values",  # deprecated: the old name of TaskCall
    "Limit": "framework.limits",
    "Middleware": "framework.task",
    "Run": "framework.task",
    "Scheduler": "framework.scheduler.scheduler",
    "Schema": "framework.protocol.keys",
    "Services": "framework.services",
    "Settings": "framework.settings",
    "StashKey": "framework.services",
    "Step": "framework.task",
    "StepOptions": "framework.task",
    "SyncClient": "framework.client.sync",
    "TaskCall": "framework.client.values",
    "TaskContext": "framework.context",
    "TaskDef": "framework.task",
    "TaskInfo": "framework.client.values",
    "Tokens": "framework.web.tokens",
    "Worker": "framework.worker.worker",
    "Workflow": "framework.workflow",
    "WorkflowInfo": "framework.client.workflows",
    "await_me_maybe": "framework.plugins.events",
    "chain": "framework.workflow",
    "chord": "framework.workflow",
    "contributions_by_plugin": "framework.plugins.calls",
    "create_app": "framework.web.app",
    "enqueue_and_wait": "framework.web.tasks",
    "group": "framework.workflow",
    "hookimpl": "framework.hookspecs",
    "load_settings": "framework.settings",
    "plugin_callers": "framework.plugins.calls",
    "progress_events": "framework.web.tasks",
    "start_services": "framework.plugins.lifecycle",
    "stop_services": "framework.plugins.lifecycle",
    "task_status": "framework.web.tasks",
}
"""Where each public name lives; the exceptions are the names ``framework.errors`` exports."""


if not TYPE_CHECKING:  # type checkers see the imports above, so a misspelt name is an error there

    def __getattr__(name: str) -> Any:
        """Import each part of the public API on first use, so ``import framework.x`` loads only what ``x`` needs.

        A worker process, the supervisor and the command line start faster this way (the whole facade costs
        about 0.4 s of imports, the version lookup alone 60 ms).
        """
        if name == "__version__":
            from importlib import metadata  # noqa: PLC0415

            try:
                version = metadata.version("framework")
            except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
                version = "0.0.0"
            globals()["__version__"] = version
            return version
        module = _LAZY.get(name)
        if module is None:
            errors = importlib.import_module("framework.errors")
            if name not in errors.__all__:
                raise AttributeError(f"module 'framework' has no attribute {name!r}")
            module = errors.__name__
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value
        return value
