"""An app as the framework puts it together from its settings, for tests of apps and plugins.

:class:`Harness` loads what ``framework worker`` and ``framework run`` would load for the same settings:
installed plugins (within ``load_plugins``), then the app's hook module (``app``, or the demo app). A test
then asks it what the framework sees (the plugins, the task types and which plugin gave each, the cron
entries, a plugin's folders) and gets workers built the same way, to run with :func:`~framework.testing.drain`.

Example::

    async def test_the_plugin_sends_its_mail(settings, client, seeder):
        harness = Harness(settings.replace(load_plugins=["mailer"]))
        assert harness.task_types().source(SEND) == "plugin 'mailer'"
        info = await client.enqueue(SEND, {"to": "ada@example.com"}, retention=60)
        result = await drain(harness.worker())
        assert result.succeeded == [info.id]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from framework.plugins.manager import collect_task_types, get_app_plugin_manager, get_plugins, plugin_dirs
from framework.registry import Registry
from framework.scheduler.loader import load_entries
from framework.worker.worker import Worker

if TYPE_CHECKING:
    from pathlib import Path

    import pluggy

    from framework.plugins.manager import PluginInfo
    from framework.scheduler.resolved import ResolvedEntry
    from framework.settings import Settings

__all__ = ("Harness",)


class Harness:
    """The plugins and app hooks the framework loads for ``settings``, and what they contribute.

    Args:
        settings: the app's settings (``app``, ``load_plugins``, ``templates_dir``, ``queues``, ...).

    Attributes:
        settings: the settings.
        plugin_manager: the plugin manager, as a worker or the web app of these settings has it.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.plugin_manager: pluggy.PluginManager = get_app_plugin_manager(settings)

    def plugin(self, name: str) -> Any:
        """The plugin registered as ``name`` (an app's hook module is ``"app"``; None if there is none)."""
        return self.plugin_manager.get_plugin(name)

    def plugins(self) -> dict[str, PluginInfo]:
        """Every plugin loaded, by name: distribution, version, hooks and folders (as ``framework plugins`` shows)."""
        return {info.name: info for info in get_plugins(self.plugin_manager, self.settings)}

    def plugin_dir(self, plugin: str, kind: str = "templates") -> Path:
        """The ``templates`` (or ``static``) folder of a plugin, as the framework finds it.

        Raises:
            KeyError: the plugin is not loaded, or has no such folder.
        """
        folders = dict(plugin_dirs(self.plugin_manager, kind))
        if plugin not in folders:
            raise KeyError(f"no {kind} folder for plugin {plugin!r}; plugins with one: {sorted(folders)}")
        return folders[plugin]

    def task_types(self) -> Registry:
        """The task types the plugins and the app register; ``registry.source(type)`` names who gave each.

        Raises:
            PluginError: two plugins register the same type.
        """
        registry = Registry()
        collect_task_types(self.plugin_manager, self.settings, registry)
        return registry

    def cron_entries(self) -> list[ResolvedEntry]:
        """The cron entries of the settings and the plugins, validated as the scheduler validates them.

        Raises:
            ConfigError, PluginError: an entry is invalid; the message names it and where it came from.
        """
        return load_entries(self.settings, self.plugin_manager, self.task_types())

    def worker(self, **kwargs: Any) -> Worker:
        """A worker of these settings and plugins, not started (for :func:`~framework.testing.drain`).

        Args:
            **kwargs: more :class:`~framework.worker.worker.Worker` arguments (``tasks``, ``retry_delay``,
                ``wrap_broker``, ...).
        """
        return Worker(self.settings, plugin_manager=self.plugin_manager, **kwargs)
