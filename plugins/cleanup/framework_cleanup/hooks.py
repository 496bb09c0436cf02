"""What the cleanup plugin contributes to the framework: the entry point of ``framework-cleanup``.

- ``register_task_types``: the ``cleanup:run`` task (:mod:`framework_cleanup.tasks`).
- ``register_cron_entries``: one entry ``<sweeper>:cleanup`` per enabled sweeper, on its schedule.
- ``register_sweepers``: the built-in sweepers (:mod:`framework_cleanup.builtin`).
- ``register_commands``: ``framework cleanup run|ls`` (:mod:`framework_cleanup.cli`).
- ``register_admin_panels``: the last report of each sweeper, for the admin's cleanup panel (a hook the
  admin plugin declares; optional, so this plugin loads without the admin).
- ``check_config``: decodes ``[plugins.cleanup]`` as start-up does.

``framework_hookspecs`` points the plugin manager at :mod:`framework_cleanup.hookspecs`, through which
other plugins and apps add sweepers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from framework import hookimpl
from framework_cleanup import hookspecs

# The rest of the plugin is imported by the hooks that use it: every ``framework`` command loads this module
# (``framework --help`` asks it for its commands), and the sweepers bring redis-py and asyncio.

if TYPE_CHECKING:
    import click
    import pluggy

    from framework import CronEntry, Services, Settings, TaskDef
    from framework_cleanup.sweepers import Sweeper

__all__ = (
    "check_config",
    "framework_hookspecs",
    "register_admin_panels",
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
    from framework_cleanup.config import load_config  # noqa: PLC0415

    load_config(settings)


@hookimpl
def register_task_types(settings: Settings) -> list[TaskDef[Any]]:
    """Contribute the ``cleanup:run`` task."""
    from framework_cleanup.tasks import cleanup_task  # noqa: PLC0415

    return [cleanup_task]


@hookimpl
def register_cron_entries(settings: Settings, plugin_manager: pluggy.PluginManager) -> list[CronEntry]:
    """Contribute ``<sweeper>:cleanup`` for every enabled sweeper of every plugin (asked through ``plugin_manager``)."""
    from framework import CronEntry  # noqa: PLC0415
    from framework.logging import get_logger  # noqa: PLC0415
    from framework_cleanup.config import load_config  # noqa: PLC0415
    from framework_cleanup.registry import collect_sweepers  # noqa: PLC0415
    from framework_cleanup.tasks import CleanupRun, cleanup_task  # noqa: PLC0415

    config = load_config(settings)
    if config.queue not in settings.queues:
        get_logger("framework_cleanup").warning(
            "cleanup_queue_not_served", queue=config.queue, queues=sorted(settings.queues)
        )
    return [
        CronEntry(
            name=f"{sweeper.name}:cleanup",
            spec=sweeper.schedule,
            task=cleanup_task,
            payload=CleanupRun(sweeper=sweeper.name),
            options={"queue": config.queue, "max_retry": 1},
        )
        for sweeper in collect_sweepers(plugin_manager, settings)
    ]


@hookimpl
def register_sweepers(settings: Settings) -> list[Sweeper]:
    """Contribute the built-in sweepers: ``tokens``, ``tmp``, ``uploads``, ``outbox`` and ``workflows``."""
    from framework_cleanup.builtin import builtin_sweepers  # noqa: PLC0415
    from framework_cleanup.config import load_config  # noqa: PLC0415

    return builtin_sweepers(settings, load_config(settings))


@hookimpl
def register_commands(cli: click.Group) -> None:
    """Add ``framework cleanup``."""
    from framework_cleanup.cli import cleanup  # noqa: PLC0415 - click commands load only for the CLI

    cli.add_command(cleanup)


async def _last_reports(services: Services) -> list[dict[str, Any]]:
    """The last report of each sweeper, as JSON-ready dicts (the admin's cleanup panel)."""
    import msgspec  # noqa: PLC0415

    from framework_cleanup.sweepers import last_results  # noqa: PLC0415

    return [msgspec.to_builtins(report) for report in (await last_results(services.redis, services.schema)).values()]


@hookimpl(optionalhook=True)
def register_admin_panels(settings: Settings) -> dict[str, Any]:
    """Offer the admin the last report of each sweeper, read when its cleanup panel renders."""
    return {"cleanup": _last_reports}
