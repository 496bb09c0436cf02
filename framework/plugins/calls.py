"""Calling a hook one plugin at a time, still through the plugin manager.

Most hooks are called as pluggy calls them: ``pm.hook.<name>(...)``, every implementation in one call.
Where the framework must know which plugin gave what (to tag a task type or a cron entry with its
source, to name a plugin whose check failed, to keep one failing event hook from stopping the others),
it calls the hook once per plugin with :func:`plugin_callers`. Each of those callers is pluggy's own
``subset_hook_caller``: the call runs through the manager like any other, so ``FRAMEWORK_TRACE_PLUGINS``
traces it, ``wrapper=True`` (and old-style ``hookwrapper``) implementations wrap it, and each
implementation receives only the arguments it names. A wrapper therefore wraps each plugin's call on
its own and sees that plugin's results.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from framework.errors import PluginError

if TYPE_CHECKING:
    import pluggy

__all__ = ("contributions_by_plugin", "manager_of", "plugin_callers", "remember_manager")

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
        PluginError: an implementation raised, or returned something that is not a list; names the plugin.
    """
    kwargs.setdefault("plugin_manager", pm)
    out: list[tuple[str, list[Any]]] = []
    for plugin, call in plugin_callers(pm, name):
        try:
            results = call(**kwargs)
        except Exception as exc:
            raise PluginError(f"plugin {plugin!r} failed in {name}: {type(exc).__name__}: {exc}") from exc
        items: list[Any] = []
        for result in results:
            if not isinstance(result, list | tuple):
                raise PluginError(f"plugin {plugin!r}: {name} must return a list, got {result!r}")
            items.extend(result)
        out.append((plugin, items))
    return out
