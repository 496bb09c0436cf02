"""Collects the sweepers every plugin contributes and applies ``[plugins.cleanup]`` to them.

:func:`collect_sweepers` calls each ``register_sweepers`` implementation, checks what it returns (a
:class:`~framework_cleanup.sweepers.Sweeper`, a valid schedule, a name no other plugin used), then
applies the settings: ``schedules`` and ``grace`` overrides, and ``disabled``.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from framework import StashKey
from framework.errors import ConfigError, PluginError
from framework.scheduler.cron import CronSpecError, parse_schedule
from framework_cleanup.config import CleanupConfig, load_config
from framework_cleanup.sweepers import Sweeper

if TYPE_CHECKING:
    import pluggy

    from framework.services import Services
    from framework.settings import Settings

__all__ = ("collect_sweepers", "plugin_manager_for", "sweepers_for")

_SWEEPERS: StashKey[dict[str, Sweeper]] = StashKey("framework_cleanup.sweepers")


def _contributions(pm: pluggy.PluginManager, settings: Settings) -> list[tuple[str, Any]]:
    caller = getattr(pm.hook, "register_sweepers", None)
    if caller is None:  # the cleanup plugin's specs are not loaded: nobody can contribute
        return []
    out: list[tuple[str, Any]] = []
    for impl in caller.get_hookimpls():
        try:
            result = impl.function(**({"settings": settings} if "settings" in impl.argnames else {}))
        except Exception as exc:  # any failure must name the plugin; re-raised
            raise PluginError(
                f"plugin {impl.plugin_name!r} failed in register_sweepers: {type(exc).__name__}: {exc}"
            ) from exc
        out.extend((impl.plugin_name, item) for item in result or [])
    return out


def _check_names(config: CleanupConfig, known: set[str]) -> None:
    for setting, names in (("schedules", config.schedules), ("grace", config.grace), ("disabled", config.disabled)):
        unknown = sorted(set(names) - known)
        if unknown:
            raise ConfigError(
                f"setting [plugins.cleanup] {setting} names unknown sweeper(s) {', '.join(map(repr, unknown))} "
                f"(known: {', '.join(sorted(known)) or 'none'})"
            )


def _configured(sweeper: Sweeper, config: CleanupConfig) -> Sweeper:
    schedule = config.schedules.get(sweeper.name, sweeper.schedule)
    try:
        parse_schedule(schedule)
    except CronSpecError as exc:
        if sweeper.name in config.schedules:
            raise ConfigError(f"setting [plugins.cleanup] schedules[{sweeper.name!r}]: {exc}") from None
        raise PluginError(f"sweeper {sweeper.name!r} from plugin {sweeper.source!r}: {exc}") from None
    return dataclasses.replace(sweeper, schedule=schedule, grace=config.grace_for(sweeper.name, sweeper.grace))


def collect_sweepers(pm: pluggy.PluginManager, settings: Settings, *, include_disabled: bool = False) -> list[Sweeper]:
    """Every plugin's sweepers, in plugin order, with the settings applied.

    Args:
        pm: the plugin manager.
        settings: the app's settings (``[plugins.cleanup]``).
        include_disabled: keep the sweepers listed in ``disabled``.

    Raises:
        PluginError: a plugin returned something that is not a Sweeper, a sweeper with an invalid
            schedule, or a name another plugin already used.
        ConfigError: ``[plugins.cleanup]`` is invalid or names a sweeper nobody contributes.
    """
    config = load_config(settings)
    found: dict[str, Sweeper] = {}
    for plugin, item in _contributions(pm, settings):
        if not isinstance(item, Sweeper):
            raise PluginError(f"plugin {plugin!r} returned {item!r} from register_sweepers, not a Sweeper")
        if item.name in found:
            first = found[item.name].source
            raise PluginError(
                f"sweeper {item.name!r} from plugin {plugin!r} is already contributed by plugin {first!r}"
            )
        found[item.name] = dataclasses.replace(item, source=item.source or plugin)
    _check_names(config, set(found))
    return [_configured(s, config) for s in found.values() if include_disabled or s.name not in config.disabled]


def plugin_manager_for(settings: Settings) -> pluggy.PluginManager:
    """A plugin manager built as the framework builds one: entry-point plugins, then the app's module.

    Assembly hooks receive only the settings; this is how the cleanup plugin's
    ``register_cron_entries`` finds the sweepers of every other plugin.
    """
    from framework.plugins.manager import app_plugins, get_plugin_manager  # noqa: PLC0415 - avoids an import cycle

    return get_plugin_manager(settings, extra=app_plugins(settings))


def sweepers_for(services: Services) -> dict[str, Sweeper]:
    """The enabled sweepers by name, collected once per process (``services.plugin_manager``)."""
    cached = services.stash.get(_SWEEPERS)
    if cached is None:
        pm = services.plugin_manager or plugin_manager_for(services.settings)
        cached = {s.name: s for s in collect_sweepers(pm, services.settings)}
        services.stash[_SWEEPERS] = cached
    return cached
