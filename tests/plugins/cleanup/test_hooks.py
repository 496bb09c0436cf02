"""What the plugin contributes: sweepers from every plugin, one cron entry each, the task type and commands.

This module doubles as an app's hook module (``settings.app``): it contributes the ``reports`` sweeper.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click
import pytest
from framework_cleanup import hooks
from framework_cleanup.registry import collect_sweepers, sweepers_for
from framework_cleanup.sweepers import SweepContext, Sweeper, SweepResult, run_sweeper
from framework_cleanup.tasks import CLEANUP_RUN

from framework.errors import ConfigError, PluginError
from framework.hookspecs import hookimpl
from framework.plugins.manager import collect_task_types, get_app_plugin_manager, get_plugin_manager
from framework.registry import Registry
from framework.scheduler.cron import parse_schedule
from framework.scheduler.scheduler import Scheduler, load_entries

if TYPE_CHECKING:
    from framework.services import Services
    from framework.settings import Settings

BUILTIN = ["tokens", "tmp", "uploads", "outbox", "workflows"]


async def sweep_reports(ctx: SweepContext) -> SweepResult:
    if not ctx.dry_run:
        ctx.result.add("reports/old.csv", 42)
    return ctx.result


@hookimpl
def register_sweepers(settings: Settings) -> list[Sweeper]:
    """The app's own sweeper."""
    return [Sweeper("reports", "@every 15m", sweep_reports, grace=600, description="old reports")]


@pytest.fixture
def app_settings(settings: Settings) -> Settings:
    """Only this plugin from the entry points, plus this module as the app."""
    return settings.replace(load_plugins=["cleanup"], app=__name__)


def with_cleanup(settings: Settings, **section: Any) -> Settings:
    return settings.replace(plugins={**settings.plugins, "cleanup": section})


def test_hook_register_sweepers(app_settings: Settings) -> None:
    pm = get_app_plugin_manager(app_settings)
    sweepers = collect_sweepers(pm, app_settings)
    assert [s.name for s in sweepers] == [*BUILTIN, "reports"]
    reports = sweepers[-1]
    assert (reports.schedule, reports.grace, reports.source, reports.description) == (
        "@every 15m",
        600,
        "app",
        "old reports",
    )
    assert {s.source for s in sweepers[:-1]} == {"cleanup"}
    names = [e.name for e in hooks.register_cron_entries(app_settings, pm)]
    assert names == [f"{n}:cleanup" for n in [*BUILTIN, "reports"]]


async def test_a_contributed_sweeper_runs(app_settings: Settings, services: Services) -> None:
    sweeper = {s.name: s for s in collect_sweepers(get_app_plugin_manager(app_settings), app_settings)}["reports"]
    report = await run_sweeper(services, sweeper)
    assert (report.removed, report.bytes, report.items) == (1, 42, ["reports/old.csv"])


def test_cron_entries_are_valid_for_the_scheduler(app_settings: Settings) -> None:
    pm = get_app_plugin_manager(app_settings)
    registry = Registry()
    collect_task_types(pm, app_settings, registry)

    entries = {e.name: e for e in load_entries(app_settings, pm, registry)}

    assert sorted(entries) == sorted(f"{n}:cleanup" for n in [*BUILTIN, "reports"])
    specs = {name: e.schedule.spec for name, e in entries.items()}
    assert specs == {
        "tokens:cleanup": "@hourly",
        "tmp:cleanup": "30 * * * *",
        "uploads:cleanup": "0 2 * * *",
        "outbox:cleanup": "0 3 * * *",
        "workflows:cleanup": "30 3 * * *",
        "reports:cleanup": "@every 15m",
    }
    for name, entry in entries.items():
        assert entry.task_type == CLEANUP_RUN
        assert json.loads(entry.payload) == {"sweeper": name.removesuffix(":cleanup")}
        assert (entry.options.queue, entry.options.max_retry) == ("low", 1)
        assert entry.source == "cleanup"
    uploads = entries["uploads:cleanup"].schedule
    day = 1_767_225_600.0  # 2026-01-01 00:00 UTC
    assert uploads.next_after(day) == day + 2 * 3600


async def test_the_scheduler_accepts_the_entries(app_settings: Settings, redis: Any) -> None:
    scheduler = Scheduler(app_settings, plugin_manager=get_app_plugin_manager(app_settings), redis=redis)
    assert {e.name for e in scheduler.entries} >= {f"{n}:cleanup" for n in BUILTIN}


def test_schedules_grace_and_queue_come_from_settings(app_settings: Settings) -> None:
    settings = with_cleanup(
        app_settings,
        schedules={"tokens": "@every 10m", "reports": "0 5 * * *"},
        grace={"tmp": "2h", "outbox": "3d"},
        queue="default",
    )
    sweepers = {s.name: s for s in collect_sweepers(get_app_plugin_manager(settings), settings)}
    assert (sweepers["tokens"].schedule, sweepers["reports"].schedule) == ("@every 10m", "0 5 * * *")
    assert (sweepers["tmp"].grace, sweepers["outbox"].grace, sweepers["uploads"].grace) == (7200, 3 * 86400, 3600)
    entries = {e.name: e for e in hooks.register_cron_entries(settings, get_app_plugin_manager(settings))}
    assert entries["tokens:cleanup"].spec == "@every 10m"
    assert entries["tokens:cleanup"].options == {"queue": "default", "max_retry": 1}
    parse_schedule(entries["reports:cleanup"].spec)


def test_disabled_sweepers_get_no_entry(app_settings: Settings) -> None:
    settings = with_cleanup(app_settings, disabled=["outbox", "reports"])
    pm = get_app_plugin_manager(settings)
    assert [s.name for s in collect_sweepers(pm, settings)] == ["tokens", "tmp", "uploads", "workflows"]
    assert [s.name for s in collect_sweepers(pm, settings, include_disabled=True)] == [*BUILTIN, "reports"]
    assert [e.name for e in hooks.register_cron_entries(settings, pm)] == [
        "tokens:cleanup",
        "tmp:cleanup",
        "uploads:cleanup",
        "workflows:cleanup",
    ]


@pytest.mark.parametrize("setting", ["schedules", "grace", "disabled"])
def test_settings_naming_an_unknown_sweeper_fail(app_settings: Settings, setting: str) -> None:
    value: Any = ["nope"] if setting == "disabled" else {"nope": "1h"}
    settings = with_cleanup(app_settings, **{setting: value})
    with pytest.raises(ConfigError, match=rf"\[plugins.cleanup\] {setting} names unknown sweeper\(s\) 'nope'"):
        collect_sweepers(get_app_plugin_manager(settings), settings)


def test_an_invalid_schedule_in_settings_fails(app_settings: Settings) -> None:
    settings = with_cleanup(app_settings, schedules={"tmp": "every day"})
    with pytest.raises(ConfigError, match=r"schedules\['tmp'\]"):
        collect_sweepers(get_app_plugin_manager(settings), settings)


class Plugin:
    def __init__(self, *sweepers: Any) -> None:
        self.sweepers = list(sweepers)

    @hookimpl
    def register_sweepers(self, settings: Settings) -> list[Any]:
        return self.sweepers


def pm_with(settings: Settings, *plugins: Any) -> Any:
    return get_plugin_manager(settings.replace(load_plugins=["cleanup"]), extra=list(plugins))


def test_an_invalid_schedule_from_a_plugin_names_it(settings: Settings) -> None:
    pm = pm_with(settings, ("bad", Plugin(Sweeper("x", "61 * * * *", sweep_reports))))
    with pytest.raises(PluginError, match="sweeper 'x' from plugin 'bad'"):
        collect_sweepers(pm, settings)


def test_a_name_used_twice_names_both_plugins(settings: Settings) -> None:
    pm = pm_with(
        settings,
        ("one", Plugin(Sweeper("dup", "@daily", sweep_reports))),
        ("two", Plugin(Sweeper("dup", "@daily", sweep_reports))),
    )
    with pytest.raises(PluginError, match="sweeper 'dup' from plugin 'two' is already contributed by plugin 'one'"):
        collect_sweepers(pm, settings)


def test_a_plugin_overriding_a_builtin_name_fails(settings: Settings) -> None:
    pm = pm_with(settings, ("mine", Plugin(Sweeper("tokens", "@daily", sweep_reports))))
    with pytest.raises(PluginError, match="'tokens' from plugin 'mine' is already contributed by plugin 'cleanup'"):
        collect_sweepers(pm, settings)


def test_something_else_than_a_sweeper_fails(settings: Settings) -> None:
    pm = pm_with(settings, ("odd", Plugin({"name": "x"})))
    with pytest.raises(PluginError, match=r"plugin 'odd' returned .* not a Sweeper"):
        collect_sweepers(pm, settings)


def test_a_plugin_raising_in_the_hook_is_named(settings: Settings) -> None:
    class Broken:
        @hookimpl
        def register_sweepers(self, settings: Settings) -> list[Any]:
            raise KeyError("missing")

    pm = pm_with(settings, ("broken", Broken()))
    with pytest.raises(PluginError, match="plugin 'broken' failed in register_sweepers: KeyError"):
        collect_sweepers(pm, settings)


def test_without_the_cleanup_plugin_there_are_no_sweepers(settings: Settings) -> None:
    pm = get_plugin_manager(settings.replace(load_plugins=[]))
    assert collect_sweepers(pm, settings) == []


def test_sweepers_for_caches_per_process(app_settings: Settings, services: Services) -> None:
    services.plugin_manager = get_app_plugin_manager(app_settings)
    first = sweepers_for(services)
    assert list(first) == [*BUILTIN, "reports"]  # the plugin manager's sweepers
    assert sweepers_for(services) is first


def test_sweepers_for_without_a_plugin_manager(services: Services) -> None:
    assert list(sweepers_for(services)) == BUILTIN


def test_register_task_types() -> None:
    (task,) = hooks.register_task_types(settings=None)  # type: ignore[arg-type]
    assert (task.type, task.queue, task.max_retry, task.timeout) == ("cleanup:run", "low", 1, 1800.0)


def test_register_commands_adds_the_cleanup_group() -> None:
    group = click.Group("framework")
    hooks.register_commands(group)
    assert sorted(group.commands["cleanup"].commands) == ["ls", "run"]  # type: ignore[attr-defined]


def test_the_hookspec_is_documented() -> None:
    import inspect

    from framework_cleanup import hookspecs

    doc = inspect.getdoc(hookspecs.register_sweepers) or ""
    for part in ("Args:", "settings:", "Returns:", "Kind: collect.", "Fires:"):
        assert part in doc
    assert hooks.framework_hookspecs is hookspecs
