"""The :class:`CronEntry` value: what a plugin or the settings ask the scheduler to enqueue, and when."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from framework.task import TaskDef

__all__ = ("CronEntry",)


@dataclass(frozen=True, slots=True)
class CronEntry:
    """A periodic task. Declared by plugins (``register_cron_entries``) or in settings.

    Attributes:
        name: stable name; with the spec it identifies the entry across restarts and replicas.
        spec: five-field cron spec, ``@hourly``/``@daily``/``@weekly``/``@monthly`` or ``@every <duration>``.
        task: the task type to enqueue (a :class:`TaskDef` or its type string).
        payload: the payload (an instance of the task's payload type, or JSON-compatible data).
        tz: IANA time zone the spec is read in.
        options: enqueue options (queue, max_retry, timeout, ...).
        run_missed: after downtime, run the most recent missed tick once (default: skip missed ticks).
        source: the plugin that declared it; set by the framework.
    """

    name: str
    spec: str
    task: TaskDef[Any] | str
    payload: Any = None
    tz: str = "UTC"
    options: dict[str, Any] = field(default_factory=dict)
    run_missed: bool = False
    source: str = ""

    @property
    def task_type(self) -> str:
        """The task type string."""
        return self.task if isinstance(self.task, str) else self.task.type
