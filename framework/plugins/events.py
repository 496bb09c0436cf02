"""Firing plugin hooks that may return awaitables, each plugin on its own, errors logged and never propagated.

"Errors" means whatever an implementation raises, ``BaseException`` included: a plugin calling
``sys.exit()``, raising ``KeyboardInterrupt`` or a library's own ``BaseException`` subclass, or a
``CancelledError`` it got from something it awaited, is logged like any other failure. An event fires in
the worker after a task's outcome is written, so anything escaping it would end the task's runner, or with
``SystemExit`` and ``KeyboardInterrupt`` the event loop and every task running on it. Only a cancellation
of the caller itself (the worker stopping) goes through. ``shutdown`` hooks are fired the same way, so one
plugin failing to shut down does not keep the others from releasing what they hold.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import TYPE_CHECKING, Any

import pluggy

from framework.plugins.calls import error_text, manager_of, plugin_callers

if TYPE_CHECKING:
    import structlog

__all__ = ("await_me_maybe", "event_callers", "fire_callers", "fire_event", "has_impls")


async def await_me_maybe(value: Any) -> Any:
    """Await ``value`` if it is awaitable, else return it."""
    if inspect.isawaitable(value):
        return await value
    return value


def has_impls(hook: pluggy.HookRelay | None, name: str) -> bool:
    """True when some plugin implements hook ``name``."""
    if hook is None:
        return False
    caller = getattr(hook, name, None)
    return bool(caller is not None and caller.get_hookimpls())


def event_callers(plugins: pluggy.PluginManager | pluggy.HookRelay, name: str) -> list[tuple[str, pluggy.HookCaller]]:
    """Per-plugin callers of event hook ``name`` in pluggy's call order (the most recently loaded plugin first).

    Build them once where an event fires often (the worker fires ``task_succeeded`` per task) and pass them
    to :func:`fire_callers`; the plugins of a running process do not change.
    """
    pm = plugins if isinstance(plugins, pluggy.PluginManager) else manager_of(plugins)
    if pm is not None:
        return plugin_callers(pm, name)[::-1]
    caller: pluggy.HookCaller | None = getattr(plugins, name, None)
    if caller is None:  # a relay of a manager built elsewhere: one call, errors named by every implementer
        return []
    names = ", ".join(dict.fromkeys(impl.plugin_name for impl in reversed(caller.get_hookimpls())))
    return [(names, caller)] if names else []


async def fire_event(
    plugins: pluggy.PluginManager | pluggy.HookRelay,
    name: str,
    logger: structlog.typing.FilteringBoundLogger,
    **kwargs: Any,
) -> None:
    """Call event hook ``name`` through the plugin manager, one plugin at a time, and await what each returns.

    A plugin that raises (calling it or awaiting its result) is logged as ``plugin_hook_failed`` with its
    name, and the next plugin is still called. Plugins are called in pluggy's order, the most recently
    loaded first.

    Args:
        plugins: the plugin manager (or its ``hook`` relay, for a manager built by the framework).
        name: the hook's name.
        logger: where failures are logged.
        **kwargs: the hook's arguments.
    """
    await fire_callers(event_callers(plugins, name), name, logger, **kwargs)


async def fire_callers(
    callers: list[tuple[str, pluggy.HookCaller]],
    name: str,
    logger: structlog.typing.FilteringBoundLogger,
    **kwargs: Any,
) -> None:
    """:func:`fire_event` with callers built beforehand by :func:`event_callers`."""
    for plugin, call in callers:
        try:
            results = call(**kwargs)
        except BaseException as exc:  # noqa: BLE001 - an event hook must never break the worker; logged here
            _failed(logger, name, plugin, exc)
            continue
        for result in results:
            try:
                await await_me_maybe(result)
            except BaseException as exc:  # noqa: BLE001 - as above
                _failed(logger, name, plugin, exc)


def _failed(logger: structlog.typing.FilteringBoundLogger, hook: str, plugin: str, exc: BaseException) -> None:
    """Log ``exc`` as ``plugin``'s failure in ``hook``; re-raise a cancellation of the caller itself."""
    if isinstance(exc, asyncio.CancelledError):
        task = asyncio.current_task()
        if task is not None and task.cancelling() > 0:
            raise exc
    logger.error("plugin_hook_failed", hook=hook, plugin=plugin, error=error_text(exc))
