"""Collects the sweepers every plugin contributes and applies ``[plugins.cleanup]`` to them.

:func:`collect_sweepers` calls ``register_sweepers`` through the plugin manager, once per plugin, checks
what each returns (a :class:`~framework_cleanup.sweepers.Sweeper`, a valid schedule, a name no other
plugin used), then applies the settings: ``schedules`` and ``grace`` overrides, and ``disabled``.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from framework import ConfigError, PluginError, StashKey, contributions_by_plugin
from framework.scheduler.cron import CronSpecError, parse_schedule
from framework_cleanup.builtin import builtin_sweepers
from framework_cleanup.config import PLUGIN_NAME, CleanupConfig, load_config
from framework_cleanup.sweepers import Sweeper

if TYPE_CHECKING:
    import pluggy

    from framework import Services, Settings

__all__ = ("collect_sweepers", "sweepers_for")

_SWEEPERS: StashKey[dict[str, Sweeper]] = StashKey("framework_cleanup.sweepers")


def _contributions(pm: pluggy.PluginManager | None, settings: Settings, config: CleanupConfig) -> list[tuple[str, Any]]:
    if pm is None:  # no plugins loaded: the plugin's own sweepers only
        return [(PLUGIN_NAME, s) for s in builtin_sweepers(settings, config)]
    return [
        (plugin, item)
        for plugin, items in contributions_by_plugin(pm, "register_sweepers", settings=settings)
        for item in items
    ]


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


def collect_sweepers(
    pm: pluggy.PluginManager | None, settings: Settings, *, include_disabled: bool = False
) -> list[Sweeper]:
    """Every plugin's sweepers, in plugin order, with the settings applied.

    Args:
        pm: the plugin manager (``None``: no plugin is loaded, so only this plugin's own sweepers).
        settings: the app's settings (``[plugins.cleanup]``).
        include_disabled: keep the sweepers listed in ``disabled``.

    Raises:
        PluginError: a plugin returned something that is not a Sweeper, a sweeper with an invalid
            schedule, or a name another plugin already used.
        ConfigError: ``[plugins.cleanup]`` is invalid or names a sweeper nobody contributes.
    """
    config = load_config(settings)
    found: dict[str, Sweeper] = {}
    for plugin, item in _contributions(pm, settings, config):
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


def sweepers_for(services: Services) -> dict[str, Sweeper]:
    """The enabled sweepers by name, collected once per process (``services.plugin_manager``)."""
    cached = services.stash.get(_SWEEPERS)
    if cached is None:
        cached = {s.name: s for s in collect_sweepers(services.plugin_manager, services.settings)}
        services.stash[_SWEEPERS] = cached
    return cached
