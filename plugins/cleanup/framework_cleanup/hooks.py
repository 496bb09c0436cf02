"""What the cleanup plugin contributes to the framework: the entry point of ``framework-cleanup``.

- ``register_task_types``: the ``cleanup:run`` task (:mod:`framework_cleanup.tasks`).
- ``register_cron_entries``: one entry ``<sweeper>:cleanup`` per enabled sweeper, on its schedule.
- ``register_sweepers``: the built-in sweepers (:mod:`framework_cleanup.builtin`).
- ``register_commands``: ``framework cleanup run|ls`` (:mod:`framework_cleanup.cli`).

``framework_hookspecs`` points the plugin manager at :mod:`framework_cleanup.hookspecs`, through which
other plugins and apps add sweepers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from framework.hookspecs import hookimpl
from framework.logging import get_logger
from framework.task import CronEntry
from framework_cleanup import hookspecs
from framework_cleanup.builtin import builtin_sweepers
from framework_cleanup.config import load_config
from framework_cleanup.registry import collect_sweepers, plugin_manager_for
from framework_cleanup.tasks import CleanupRun, cleanup_task

if TYPE_CHECKING:
    import click

    from framework.settings import Settings
    from framework.task import TaskDef
    from framework_cleanup.sweepers import Sweeper

__all__ = (
    "check_config",
    "framework_hookspecs",
    "register_commands",
    "register_cron_entries",
    "register_sweepers",
    "register_task_types",
)

framework_hookspecs = hookspecs
"""The hooks this plugin offers other plugins; the plugin manager adds them before registering plugins."""


@hookimpl
def check_config(settings: Settings) -> None:
    """Decode ``[plugins.cleanup]`` as start-up does (for ``framework doctor``)."""
    load_config(settings)


@hookimpl
def register_task_types(settings: Settings) -> list[TaskDef[Any]]:
    """Contribute the ``cleanup:run`` task."""
    return [cleanup_task]


@hookimpl
def register_cron_entries(settings: Settings) -> list[CronEntry]:
    """Contribute ``<sweeper>:cleanup`` for every enabled sweeper of every plugin."""
    config = load_config(settings)
    if config.queue not in settings.queues:
        get_logger("framework_cleanup").warning(
            "cleanup_queue_not_served", queue=config.queue, queues=sorted(settings.queues)
        )
    options = {"queue": config.queue, "max_retry": 1}
    return [
        CronEntry(
            name=f"{sweeper.name}:cleanup",
            spec=sweeper.schedule,
            task=cleanup_task,
            payload=CleanupRun(sweeper=sweeper.name),
            options=dict(options),
        )
        for sweeper in collect_sweepers(plugin_manager_for(settings), settings)
    ]


@hookimpl
def register_sweepers(settings: Settings) -> list[Sweeper]:
    """Contribute the built-in sweepers: ``tokens``, ``tmp``, ``uploads`` and ``outbox``."""
    return builtin_sweepers(settings, load_config(settings))


@hookimpl
def register_commands(cli: click.Group) -> None:
    """Add ``framework cleanup``."""
    from framework_cleanup.cli import cleanup  # noqa: PLC0415 - click commands load only for the CLI

    cli.add_command(cleanup)
