"""The task-type registry: type string -> :class:`~framework.task.TaskDef` (asynq's ServeMux)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from framework.errors import PluginError, UnknownTaskType
from framework.task import TaskDef

__all__ = ("Registry",)


class Registry:
    """Every task type this process knows, and which plugin contributed it.

    Args:
        tasks: task definitions to register at once (source ``app``).
    """

    def __init__(self, tasks: Iterable[TaskDef[Any]] = ()) -> None:
        self._tasks: dict[str, TaskDef[Any]] = {}
        self._sources: dict[str, str] = {}
        for task in tasks:
            self.add(task)

    def add(self, task: TaskDef[Any], source: str = "app") -> None:
        """Register ``task``, contributed by ``source``.

        Raises:
            PluginError: the type is already registered; the message names both sources.
        """
        if not isinstance(task, TaskDef):
            raise PluginError(f"{source} contributed {task!r}, which is not a TaskDef")
        existing = self._sources.get(task.type)
        if existing is not None:
            if self._tasks[task.type] is task:
                return
            raise PluginError(
                f"task type {task.type!r} is registered twice: by {existing} and by {source}; "
                "block one of the plugins or rename the type"
            )
        self._tasks[task.type] = task
        self._sources[task.type] = source

    def get(self, task_type: str) -> TaskDef[Any] | None:
        """Return the definition of ``task_type`` or None."""
        return self._tasks.get(task_type)

    def __getitem__(self, task_type: str) -> TaskDef[Any]:
        try:
            return self._tasks[task_type]
        except KeyError:
            raise UnknownTaskType(f"no handler is registered for task type {task_type!r}") from None

    def __contains__(self, task_type: object) -> bool:
        return task_type in self._tasks

    def __iter__(self) -> Iterator[TaskDef[Any]]:
        return iter(self._tasks.values())

    def __len__(self) -> int:
        return len(self._tasks)

    def source(self, task_type: str) -> str:
        """The plugin (or ``app``) that registered ``task_type``."""
        return self._sources[task_type]
