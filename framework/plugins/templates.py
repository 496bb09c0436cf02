"""The one Jinja environment shared by the web app and by plugins that render templates (emails).

Loader chain, first match wins: the app's own templates folder, then each plugin's ``templates/`` (and
folders from ``register_template_dirs``), third-party plugins before built-ins, then the framework's
defaults. A template may extend the version it overrides through the ``default:`` prefix, which skips
the app's folder: ``{% extends "default:email/welcome.html" %}``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import jinja2

from framework.plugins.calls import (
    PLUGIN_FAILURES,
    contributed_folder,
    contributions_by_plugin,
    plugin_callers,
    plugin_failed,
)
from framework.plugins.manager import plugin_dirs

if TYPE_CHECKING:
    import pluggy

    from framework.settings import Settings

__all__ = ("build_environment", "template_search_path")


def template_search_path(settings: Settings, pm: pluggy.PluginManager | None) -> tuple[list[Path], list[Path]]:
    """Return (app folders, plugin and default folders) in lookup order.

    Raises:
        PluginError: a plugin's ``register_template_dirs`` raised, or gave something that is not a list of
            folder paths; names the plugin (a folder that does not exist is skipped with a warning).
    """
    app_dirs: list[Path] = []
    if settings.templates_dir:
        app_dirs.append(Path(settings.templates_dir).expanduser().resolve())
    plugin_folders: list[Path] = []
    if pm is not None:
        hook = "register_template_dirs"
        # contributed folders, then the plugins' own: in both, later-registered (third-party) plugins first, so
        # they override built-ins
        for plugin, folders in reversed(contributions_by_plugin(pm, hook, settings=settings)):
            for value in folders:
                folder = contributed_folder(plugin, hook, value)
                if folder is not None:
                    plugin_folders.append(folder)
        plugin_folders.extend(folder for _, folder in reversed(plugin_dirs(pm, "templates")))
    plugin_folders.append(Path(str(resources.files("framework.web") / "templates")))
    return app_dirs, plugin_folders


def build_environment(settings: Settings, pm: pluggy.PluginManager | None) -> jinja2.Environment:
    """Build the autoescaping Jinja environment and let plugins prepare it.

    Raises:
        PluginError: a plugin's ``register_template_dirs`` or ``prepare_jinja2_environment`` failed; names the plugin.
    """
    app_dirs, others = template_search_path(settings, pm)
    loader = jinja2.ChoiceLoader(
        [
            jinja2.PrefixLoader({"default": jinja2.FileSystemLoader(others)}, delimiter=":"),
            jinja2.FileSystemLoader([*app_dirs, *others]),
        ]
    )
    env = jinja2.Environment(loader=loader, autoescape=jinja2.select_autoescape(default=True), enable_async=False)
    if pm is not None:
        for plugin, call in reversed(plugin_callers(pm, "prepare_jinja2_environment")):  # pluggy's order
            try:
                call(env=env, settings=settings, plugin_manager=pm)
            except PLUGIN_FAILURES as exc:
                raise plugin_failed(plugin, "prepare_jinja2_environment", exc) from exc
    return env
