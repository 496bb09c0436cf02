"""Calling a hook one plugin at a time, still through the plugin manager.

Most hooks are called as pluggy calls them: ``pm.hook.<name>(...)``, every implementation in one call.
Where the framework must know which plugin gave what (to tag a task type or a cron entry with its
source, to name a plugin whose check failed, to keep one failing event hook from stopping the others),
it calls the hook once per plugin with :func:`plugin_callers`. Each of those callers is pluggy's own
``subset_hook_caller``: the call runs through the manager like any other, so ``FRAMEWORK_TRACE_PLUGINS``
traces it, ``wrapper=True`` (and old-style ``hookwrapper``) implementations wrap it, and each
implementation receives only the arguments it names. A wrapper therefore wraps each plugin's call on
its own and sees that plugin's results.

A plugin's failure is worded one way wherever a hook is called (:func:`plugin_failed`), and a folder a
plugin contributes is checked one way too (:func:`contributed_folder`).
"""

from __future__ import annotations

import os
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

from framework.errors import PluginError

if TYPE_CHECKING:
    import pluggy

__all__ = (
    "PLUGIN_FAILURES",
    "contributed_folder",
    "contributions_by_plugin",
    "error_text",
    "manager_of",
    "plugin_callers",
    "plugin_failed",
    "remember_manager",
)

PLUGIN_FAILURES = (Exception, SystemExit)
"""What a hook implementation raises that is reported as its plugin's failure (:func:`plugin_failed`).

``SystemExit`` included: a plugin calling ``sys.exit()`` on an error of its own is named like any other
failing plugin. ``KeyboardInterrupt`` and cancellations go through as they are.
"""

_MANAGERS: weakref.WeakValueDictionary[int, pluggy.PluginManager] = weakref.WeakValueDictionary()
"""Plugin managers built by the framework, by the id of their hook relay (see :func:`manager_of`)."""


def remember_manager(pm: pluggy.PluginManager) -> None:
    """Let :func:`manager_of` find ``pm`` from its hook relay (``pm.hook``)."""
    _MANAGERS[id(pm.hook)] = pm


def manager_of(hook: pluggy.HookRelay) -> pluggy.PluginManager | None:
    """The plugin manager whose relay ``hook`` is, if the framework built it (else ``None``).

    A relay keeps its manager alive (each hook caller holds the manager's call function), so an entry
    lives exactly as long as the relay it is keyed by.
    """
    pm = _MANAGERS.get(id(hook))
    return pm if pm is not None and pm.hook is hook else None


def error_text(exc: BaseException) -> str:
    """``exc`` in one line: ``Type: message``, or the type alone when the message is empty."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def plugin_failed(plugin: str, hook: str, exc: BaseException) -> PluginError:
    """The error reporting that plugin ``plugin`` raised ``exc`` in hook ``hook``; raise it ``from exc``."""
    return PluginError(f"plugin {plugin!r} failed in {hook}: {error_text(exc)}")


def plugin_callers(pm: pluggy.PluginManager, name: str) -> list[tuple[str, pluggy.HookCaller]]:
    """One caller per plugin implementing hook ``name``, in load order (built-ins, third-party, the app).

    Calling one runs that plugin's implementation, and every wrapper of the hook around it, through
    ``pm``: pluggy's order, tracing, wrappers, argument selection and ``firstresult`` all apply. pluggy
    itself calls the most recently loaded plugin first: iterate in reverse for that order.

    Args:
        pm: the plugin manager.
        name: the hook's name; a hook nobody implements (or no spec declares) gives no callers.
    """
    caller: pluggy.HookCaller | None = getattr(pm.hook, name, None)
    if caller is None:
        return []
    plugins: dict[int, tuple[str, object]] = {}
    for impl in caller.get_hookimpls():
        if not (impl.wrapper or impl.hookwrapper):
            plugins.setdefault(id(impl.plugin), (impl.plugin_name, impl.plugin))
    out = []
    for key, (plugin_name, _) in plugins.items():
        others = [plugin for other, (_, plugin) in plugins.items() if other != key]
        out.append((plugin_name, pm.subset_hook_caller(name, others)))
    return out


def contributions_by_plugin(pm: pluggy.PluginManager, name: str, **kwargs: Any) -> list[tuple[str, list[Any]]]:
    """Call collect hook ``name`` once per plugin and return each plugin's contributions, in load order.

    ``plugin_manager=pm`` is passed along unless given, so assembly hooks that name it can ask other
    plugins for theirs.

    Args:
        pm: the plugin manager.
        name: a ``register_*`` hook: each implementation returns a list (or ``None`` for nothing).
        **kwargs: the hook's arguments.

    Returns:
        ``(plugin name, the items it contributed)`` for each plugin implementing the hook.

    Raises:
        PluginError: an implementation raised (or called ``sys.exit``), or returned something that is not a
            list; names the plugin.
    """
    kwargs.setdefault("plugin_manager", pm)
    out: list[tuple[str, list[Any]]] = []
    for plugin, call in plugin_callers(pm, name):
        try:
            results = call(**kwargs)
        except PLUGIN_FAILURES as exc:
            raise plugin_failed(plugin, name, exc) from exc
        items: list[Any] = []
        for result in results:
            if not isinstance(result, list | tuple):
                raise PluginError(f"plugin {plugin!r}: {name} must return a list, got {result!r}")
            items.extend(result)
        out.append((plugin, items))
    return out


def contributed_folder(plugin: str, hook: str, value: object) -> Path | None:
    """``value``, which plugin ``plugin`` contributed to ``hook`` as a folder, as a path to that folder.

    A folder that does not exist gives None and a ``plugin_folder_missing`` warning naming the plugin: the
    caller skips it (an empty ``templates`` or ``static`` folder is not kept by git, so a fresh checkout of a
    working plugin may lack it; failing the start over it would break a deploy for nothing served).

    Raises:
        PluginError: ``value`` is not a path (a ``str`` or an ``os.PathLike``), or names something that is not
            a folder (a file); names the plugin, the hook and the value.
    """
    try:
        folder = Path(value) if isinstance(value, str | os.PathLike) else None
    except TypeError:  # an os.PathLike of bytes
        folder = None
    if folder is None:
        raise PluginError(f"plugin {plugin!r} contributed {value!r} to {hook}, not a folder path")
    if not folder.exists():
        from framework.logging import get_logger  # noqa: PLC0415 - only on this rare path

        get_logger("framework.plugins").warning(
            "plugin_folder_missing", plugin=plugin, hook=hook, folder=str(folder), note="skipped: it does not exist"
        )
        return None
    if not folder.is_dir():
        raise PluginError(f"plugin {plugin!r} contributed {str(folder)!r} to {hook}, which is not a folder")
    return folder
