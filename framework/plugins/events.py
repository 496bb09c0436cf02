"""Firing plugin hooks that may return awaitables, with errors logged and never propagated."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pluggy
    import structlog

__all__ = ("await_me_maybe", "fire_event", "has_impls")


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


async def fire_event(
    hook: pluggy.HookRelay, name: str, logger: structlog.typing.FilteringBoundLogger, **kwargs: Any
) -> None:
    """Call every implementation of event hook ``name``; log (with the plugin name) and swallow errors."""
    caller = getattr(hook, name)
    for impl in reversed(caller.get_hookimpls()):
        try:
            args = {k: v for k, v in kwargs.items() if k in impl.argnames}
            await await_me_maybe(impl.function(**args))
        except Exception as exc:  # noqa: BLE001 - an event hook must never break the worker; logged below
            logger.error("plugin_hook_failed", hook=name, plugin=impl.plugin_name, error=f"{type(exc).__name__}: {exc}")
