"""framework: a Python application framework with a background-job battery wire-compatible with Go asynq.

Import the public API from here::

    from framework import TaskDef, TaskContext, Client, Worker, create_app, hookimpl
"""

from __future__ import annotations

from importlib import metadata as _metadata
from typing import TYPE_CHECKING, Any

from framework.aggregator import Aggregator
from framework.client import Client, Job, SyncClient, TaskInfo
from framework.context import StashKey, TaskContext
from framework.cron_entry import CronEntry
from framework.errors import (
    ConfigError,
    DuplicateTask,
    FrameworkError,
    InvalidOption,
    LeaseExpired,
    PayloadTypeError,
    PluginError,
    RedisUnavailable,
    RetryAfter,
    RevokeTask,
    SkipRetry,
    TaskIdConflict,
    TaskNotFound,
    UnknownTaskType,
)
from framework.hookspecs import hookimpl
from framework.settings import Settings, load_settings
from framework.task import TaskDef
from framework.worker import Worker

if TYPE_CHECKING:
    from framework.app import create_app
    from framework.inspector import Inspector
    from framework.scheduler import Scheduler

try:
    __version__ = _metadata.version("framework")
except _metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = (
    "Aggregator",
    "Client",
    "ConfigError",
    "CronEntry",
    "DuplicateTask",
    "FrameworkError",
    "Inspector",
    "InvalidOption",
    "Job",
    "LeaseExpired",
    "PayloadTypeError",
    "PluginError",
    "RedisUnavailable",
    "RetryAfter",
    "RevokeTask",
    "Scheduler",
    "Settings",
    "SkipRetry",
    "StashKey",
    "SyncClient",
    "TaskContext",
    "TaskDef",
    "TaskIdConflict",
    "TaskInfo",
    "TaskNotFound",
    "UnknownTaskType",
    "Worker",
    "__version__",
    "create_app",
    "hookimpl",
    "load_settings",
)

_LAZY = {
    "create_app": ("framework.app", "create_app"),
    "Inspector": ("framework.inspector", "Inspector"),
    "Scheduler": ("framework.scheduler", "Scheduler"),
}


def __getattr__(name: str) -> Any:
    """Import the heavier parts (the web app, the inspector, the scheduler) on first use."""
    if name in _LAZY:
        import importlib  # noqa: PLC0415

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'framework' has no attribute {name!r}")
