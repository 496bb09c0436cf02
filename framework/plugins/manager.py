"""The plugin manager: finds plugins through the ``framework`` entry-point group and collects their work.

Order: the framework's own default plugins, then the built-in distributions (``framework-email``,
``framework-images``, ``framework-cleanup``, ``framework-admin``), then third-party plugins. pluggy
calls the most recently registered implementation first, so a third-party plugin can override a
built-in one for first-result hooks.

Which plugins load: ``settings.load_plugins`` / ``FRAMEWORK_LOAD_PLUGINS`` (an allow-list of names;
empty means none) and ``settings.block_plugins`` / ``FRAMEWORK_BLOCK_PLUGINS`` (a block-list).
``FRAMEWORK_TRACE_PLUGINS=1`` logs every hook call.

A plugin may declare hooks of its own for other plugins: its entry-point module sets
``framework_hookspecs`` to a module of ``@hookspec`` functions (for example
``framework_email.hookspecs``); they are added before any plugin is registered, so every
implementation is checked against them. A plugin implementing another plugin's hook marks it
``@hookimpl(optionalhook=True)``: without that plugin the spec is absent and ``check_pending()`` lets an
optional implementation through (it is never called), where a plain one stops start-up as a misspelt
hook would.

Every hook is called through ``pm.hook``; where a contribution must be known by its plugin, once per
plugin (see :mod:`framework.plugins.calls`).
"""

from __future__ import annotations

import importlib
import os
import sys
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import pluggy

from framework import hookspecs
from framework.errors import FrameworkError, PluginError
from framework.plugins.calls import contributions_by_plugin, plugin_callers, remember_manager

if TYPE_CHECKING:
    from framework.plugins.entry_points import DistributionLike, EntryPointLike
    from framework.registry import Registry
    from framework.settings import Settings
    from framework.task import CronEntry

__all__ = (
    "BUILTIN_DISTRIBUTIONS",
    "ENTRY_POINT_GROUP",
    "PluginInfo",
    "app_plugins",
    "check_plugin_configs",
    "collect_cron_entries",
    "collect_task_types",
    "get_app_plugin_manager",
    "get_plugin_manager",
    "get_plugins",
    "plugin_dirs",
)

ENTRY_POINT_GROUP = "framework"
BUILTIN_DISTRIBUTIONS = ("framework-email", "framework-images", "framework-cleanup", "framework-admin")

_DISTRIBUTIONS: weakref.WeakKeyDictionary[pluggy.PluginManager, dict[str, DistributionLike | None]] = (
    weakref.WeakKeyDictionary()
)
"""Per plugin manager: the distribution of each plugin loaded from an entry point (by plugin name)."""


@dataclass(slots=True)
class PluginInfo:
    """One loaded plugin, for ``framework plugins`` and the dashboard.

    Attributes:
        name: the plugin's registered name (its entry-point name).
        distribution: the distribution that provides it ("" for plugins registered in code).
        version: the distribution's version.
        hooks: names of the hooks it implements.
        templates_dir: its ``templates/`` folder, if any.
        static_dir: its ``static/`` folder, if any.
        builtin: whether it ships with the framework.
    """

    name: str
    distribution: str
    version: str
    hooks: list[str]
    templates_dir: str | None = None
    static_dir: str | None = None
    builtin: bool = False
    contributes: dict[str, list[str]] = field(default_factory=dict)


DEMO_APP = "framework.web.demo"
"""The hook module used when no app is configured: the demo page and its task."""


def app_plugins(settings: Settings | None = None) -> list[tuple[str, object]]:
    """The app's own hook module (``settings.app`` or ``$FRAMEWORK_APP``), or the built-in demo app.

    The demo is loaded by its import path like any app module, so this layer does not import the web layer.
    """
    path = settings.app if settings is not None else None
    path = path or os.environ.get("FRAMEWORK_APP")
    name = "app" if path else "demo"
    path = path or DEMO_APP
    try:
        module = importlib.import_module(path)
    except ImportError as exc:
        raise PluginError(f"the app module {path!r} (setting app) cannot be imported: {exc}") from exc
    except (Exception, SystemExit) as exc:  # its own code failed: name it, and where, as a plugin's failure is
        raise PluginError(
            f"the app module {path!r} (setting app) failed while importing: {type(exc).__name__}: {exc}{_where(exc)}"
        ) from exc
    return [(name, module)]


def _where(exc: BaseException) -> str:
    """`` (at FILE:LINE)``: where ``exc`` was raised, when its text does not say (a SyntaxError's does)."""
    if isinstance(exc, SyntaxError) or exc.__traceback__ is None:
        return ""
    tb = exc.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    return f" (at {tb.tb_frame.f_code.co_filename}:{tb.tb_lineno})"


def get_app_plugin_manager(settings: Settings) -> pluggy.PluginManager:
    """The plugin manager of an app: installed plugins, then the app's own hook module (or the demo)."""
    return get_plugin_manager(settings, extra=app_plugins(settings))


def _env_list(name: str) -> list[str] | None:
    raw = os.environ.get(name)
    if raw is None:
        return None
    return [p.strip() for p in raw.split(",") if p.strip()]


def _allowed(settings: Settings | None) -> list[str] | None:
    """The allow-list (``FRAMEWORK_LOAD_PLUGINS``, else ``settings.load_plugins``); None allows every plugin."""
    allow = _env_list("FRAMEWORK_LOAD_PLUGINS")
    if allow is None and settings is not None:
        allow = settings.load_plugins
    return allow


def _wanted(name: str, settings: Settings | None) -> bool:
    allow = _allowed(settings)
    block = set(_env_list("FRAMEWORK_BLOCK_PLUGINS") or [])
    if settings is not None:
        block.update(settings.block_plugins)
    if name in block:
        return False
    return allow is None or name in allow


def _entry_points() -> list[EntryPointLike]:
    """The ``framework`` entry points, built-in distributions first.

    Listed as ``importlib.metadata.entry_points(group="framework")`` lists them, without importing it where
    the installed distributions are all in ``sys.path``'s directories (:mod:`framework.plugins.entry_points`).
    A name two distributions declare is listed once per distribution: :func:`get_plugin_manager` refuses it.
    """
    from framework.plugins.entry_points import entry_points  # noqa: PLC0415

    eps = entry_points(ENTRY_POINT_GROUP)

    def rank(ep: EntryPointLike) -> tuple[int, int, str]:
        dist = _dist_name(ep)
        if dist in BUILTIN_DISTRIBUTIONS:
            return (0, BUILTIN_DISTRIBUTIONS.index(dist), ep.name)
        return (1, 0, dist + ":" + ep.name)

    seen: set[tuple[str, str]] = set()
    unique = []
    for ep in sorted(eps, key=rank):
        if (ep.name, _dist_name(ep)) not in seen:
            seen.add((ep.name, _dist_name(ep)))
            unique.append(ep)
    return unique


def _dist_name(ep: EntryPointLike) -> str:
    return ep.dist.name if ep.dist is not None else ""


def _load(ep: EntryPointLike, taken: dict[str, EntryPointLike]) -> ModuleType:
    """Import the plugin ``ep`` names, as one whose name no other distribution's plugin has.

    Raises:
        PluginError: its name is taken by a plugin of another distribution, or it fails to import (anything
            it raises, ``SystemExit`` included); the message names the plugin and its distribution.
    """
    dist = _dist_name(ep) or "?"
    other = taken.get(ep.name)
    if other is not None:
        raise PluginError(
            f"two distributions declare a plugin named {ep.name!r}: {_dist_name(other) or '?'} ({other.value}) "
            f"and {dist} ({ep.value}); uninstall one of them"
        )
    taken[ep.name] = ep
    try:
        module: ModuleType = ep.load()
    except (Exception, SystemExit) as exc:
        raise PluginError(
            f"plugin {ep.name!r} from distribution {dist} failed to load ({ep.value}): {type(exc).__name__}: {exc}"
        ) from exc
    return module


def _add_specs(pm: pluggy.PluginManager, name: str, plugin: object, where: str) -> None:
    """Add the hooks ``plugin`` declares for other plugins (its ``framework_hookspecs`` module), if any.

    Raises:
        PluginError: the module declares no hook, or one that another module declares; names the plugin.
    """
    specs = getattr(plugin, "framework_hookspecs", None)
    if specs is None:
        return
    try:
        pm.add_hookspecs(specs)
    except ValueError as exc:
        raise PluginError(f"plugin {name!r}{where}: its framework_hookspecs cannot be added: {exc}") from exc


def _register(pm: pluggy.PluginManager, name: str, plugin: object, where: str) -> None:
    """Register ``plugin`` as ``name``.

    Raises:
        PluginError: a hook implementation does not fit its hook (an argument the hook does not have, a
            wrapper that is not a generator), or the plugin is registered already (the same module under
            another name, or the name taken); names the plugin.
    """
    try:
        pm.register(plugin, name=name)
    except (ValueError, pluggy.PluginValidationError) as exc:
        raise PluginError(f"plugin {name!r}{where} cannot be registered: {exc}") from exc


def get_plugin_manager(
    settings: Settings | None = None, *, extra: list[tuple[str, object]] | None = None
) -> pluggy.PluginManager:
    """Build the plugin manager: specs, then entry-point plugins in order, then ``extra`` plugins.

    Args:
        settings: decides which plugins load (allow/block lists).
        extra: (name, plugin object) pairs registered last (an app's own hook implementations).

    Raises:
        PluginError: a plugin failed to import (names the distribution and the error), two distributions
            declare plugins of the same name, or a plugin implements a hook that does not exist or with
            arguments the hook does not have.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    loaded: list[tuple[str, ModuleType, EntryPointLike]] = []
    taken: dict[str, EntryPointLike] = {}
    # an empty allow-list loads no plugin: the installed distributions' metadata is not read at all
    for ep in _entry_points() if _allowed(settings) != [] else []:
        if not _wanted(ep.name, settings):
            continue
        module = _load(ep, taken)
        loaded.append((ep.name, module, ep))
        _add_specs(pm, ep.name, module, f" from distribution {_dist_name(ep) or '?'}")
    dists = _DISTRIBUTIONS.setdefault(pm, {})
    for name, module, ep in loaded:
        _register(pm, name, module, f" from distribution {_dist_name(ep) or '?'}")
        dists[name] = ep.dist
    for name, plugin in extra or []:
        _add_specs(pm, name, plugin, "")
        _register(pm, name, plugin, "")
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"a plugin implements an unknown hook: {exc}") from exc
    if os.environ.get("FRAMEWORK_TRACE_PLUGINS"):
        pm.trace.root.setwriter(sys.stderr.write)
        pm.enable_tracing()
    remember_manager(pm)
    return pm


def collect_task_types(pm: pluggy.PluginManager, settings: Settings, registry: Registry) -> None:
    """Add every plugin's task types to ``registry``; a duplicate type names both plugins."""
    for plugin, tasks in contributions_by_plugin(pm, "register_task_types", settings=settings):
        for task in tasks:
            registry.add(task, source=f"plugin {plugin!r}")


def check_plugin_configs(pm: pluggy.PluginManager, settings: Settings) -> list[tuple[str, str | None]]:
    """Let every plugin check its own settings (the ``check_config`` hook), each on its own.

    Returns:
        ``(plugin, problem)`` per plugin that implements the hook, in registration order; ``problem``
        is ``None`` when its settings are fine, else what its check raised.
    """
    out: list[tuple[str, str | None]] = []
    for plugin, call in plugin_callers(pm, "check_config"):
        try:
            call(settings=settings, plugin_manager=pm)
        except Exception as exc:  # noqa: BLE001 - any failure is this plugin's problem to report
            problem = str(exc) if isinstance(exc, FrameworkError) else f"{type(exc).__name__}: {exc}"
            out.append((plugin, problem))
        else:
            out.append((plugin, None))
    return out


def collect_cron_entries(pm: pluggy.PluginManager, settings: Settings) -> list[CronEntry]:
    """Every plugin's cron entries, each marked with its source plugin.

    Raises:
        PluginError: a plugin's hook raised, or gave something that is not a list of ``CronEntry``; names it.
    """
    from dataclasses import replace  # noqa: PLC0415

    from framework.task import CronEntry  # noqa: PLC0415

    entries: list[CronEntry] = []
    for plugin, contributed in contributions_by_plugin(pm, "register_cron_entries", settings=settings):
        for e in contributed:
            if not isinstance(e, CronEntry):
                raise PluginError(f"plugin {plugin!r} contributed {e!r} to register_cron_entries, not a CronEntry")
            entries.append(replace(e, source=e.source or plugin))
    return entries


_results_by_plugin = contributions_by_plugin
"""The name :func:`~framework.plugins.calls.contributions_by_plugin` had in this module."""


def plugin_dirs(pm: pluggy.PluginManager, kind: str) -> list[tuple[str, Path]]:
    """The ``templates`` or ``static`` folders next to each plugin's module, in call order."""
    out = []
    for name, plugin in pm.list_name_plugin():
        module = sys.modules.get(getattr(plugin, "__name__", ""), None) if isinstance(plugin, ModuleType) else None
        file = getattr(module, "__file__", None)
        if file is None:
            continue
        folder = Path(file).resolve().parent / kind
        if folder.is_dir():
            out.append((name, folder))
    return out


def get_plugins(pm: pluggy.PluginManager, settings: Settings | None = None) -> list[PluginInfo]:
    """Describe every registered plugin: distribution, version, hooks and asset folders."""
    dists = _DISTRIBUTIONS.get(pm, {})
    templates = dict(plugin_dirs(pm, "templates"))
    static = dict(plugin_dirs(pm, "static"))
    infos = []
    for name, plugin in pm.list_name_plugin():
        if plugin is hookspecs:
            continue
        dist = dists.get(name)
        hooks = sorted(caller.name for caller in pm.get_hookcallers(plugin) or [])
        infos.append(
            PluginInfo(
                name=name,
                distribution=dist.name if dist is not None else "",
                version=dist.version if dist is not None else "",
                hooks=hooks,
                templates_dir=str(templates[name]) if name in templates else None,
                static_dir=str(static[name]) if name in static else None,
                builtin=dist is not None and dist.name in BUILTIN_DISTRIBUTIONS,
            )
        )
    return infos
