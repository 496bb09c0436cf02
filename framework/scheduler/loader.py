"""Loading cron entries: collecting them from settings, plugins and code, and validating every one.

Entries come from settings (``[[cron]]``) and from plugins (``register_cron_entries``). :func:`load_entries`
checks every one at startup (spec, time zone, task type, payload, options) and fails naming the entry and
where it came from; the scheduler, ``framework cron ls`` and ``framework run`` use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from framework.client.options import resolve_options
from framework.clock import SystemClock
from framework.errors import ConfigError, FrameworkError, InvalidOption, PayloadTypeError, PluginError
from framework.registry import Registry
from framework.scheduler.cron import CronSpecError, parse_schedule
from framework.scheduler.resolved import ResolvedEntry, entry_id
from framework.task import CronEntry, CronOptions, TaskDef

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    import pluggy

    from framework.settings import Settings

__all__ = ("load_entries",)

_CRON_OPTIONS = CronOptions.__optional_keys__
"""The enqueue options a cron entry may give (checked here for entries from settings and untyped code)."""


def load_entries(
    settings: Settings,
    pm: pluggy.PluginManager | None = None,
    registry: Registry | None = None,
    *,
    entries: Iterable[CronEntry] = (),
    now: float | None = None,
) -> list[ResolvedEntry]:
    """Collect the cron entries of settings, plugins and code, and validate every one.

    Args:
        settings: the app's settings (``settings.cron`` and queue defaults).
        pm: the plugin manager whose ``register_cron_entries`` hooks are called.
        registry: the known task types (entries name their task by type string).
        entries: more entries, given in code (source ``app`` unless set).
        now: the current Unix time, for option validation.

    Returns:
        The entries in order: settings, plugins, code.

    Raises:
        ConfigError: an entry from settings or code is invalid; the message names it and its origin.
        PluginError: an entry from a plugin is invalid; the message names it and the plugin.
    """
    raw: list[tuple[Any, str, str | None]] = []  # (entry, source, the plugin that contributed it)
    for cs in settings.cron:
        options: CronOptions = {"queue": cs.queue} if cs.queue else {}
        entry = CronEntry(cs.name, cs.spec, cs.task, cs.payload, cs.tz, options, cs.run_missed, "settings")
        raw.append((entry, "settings", None))
    if pm is not None:
        raw.extend(_plugin_entries(pm, settings))
    raw.extend((e, getattr(e, "source", "") or "app", None) for e in entries)
    reg = registry if registry is not None else Registry()
    at = SystemClock().now() if now is None else now
    out: list[ResolvedEntry] = []
    seen: dict[str, str] = {}
    for entry, source, plugin in raw:
        resolved = _resolve(entry, source, plugin, reg, settings, at)
        if resolved.name in seen:
            problem = f"the name is already used by the entry from {seen[resolved.name]}"
            raise _entry_error(resolved.name, source, plugin, problem)
        seen[resolved.name] = _where(source, plugin)
        out.append(resolved)
    return out


def _plugin_entries(pm: pluggy.PluginManager, settings: Settings) -> list[tuple[Any, str, str | None]]:
    from framework.plugins.manager import _results_by_plugin  # noqa: PLC0415 - contributions with their plugin

    out: list[tuple[Any, str, str | None]] = []
    for plugin, contributed in _results_by_plugin(pm, "register_cron_entries", settings=settings):
        if not isinstance(contributed, list | tuple):
            if contributed is None:
                continue
            raise PluginError(f"plugin {plugin!r}: register_cron_entries must return a list, got {contributed!r}")
        out.extend((e, getattr(e, "source", "") or plugin, plugin) for e in contributed)
    return out


def _where(source: str, plugin: str | None) -> str:
    return f"plugin {plugin!r}" if plugin else source


def _entry_error(name: str, source: str, plugin: str | None, problem: str) -> FrameworkError:
    cls = PluginError if plugin else ConfigError
    return cls(f"cron entry {name!r} from {_where(source, plugin)}: {problem}")


def _resolve(
    entry: Any, source: str, plugin: str | None, registry: Registry, settings: Settings, now: float
) -> ResolvedEntry:
    if not isinstance(entry, CronEntry):
        raise _entry_error(repr(entry)[:60], source, plugin, "is not a framework.task.CronEntry")
    name = entry.name

    def fail(problem: str) -> FrameworkError:
        return _entry_error(name, source, plugin, problem)

    if not isinstance(name, str) or not name.strip():
        raise fail("the name must be a non-blank string")
    if not isinstance(entry.spec, str):
        raise fail(f"the spec must be a string, got {entry.spec!r}")
    try:
        schedule = parse_schedule(entry.spec, entry.tz)
    except CronSpecError as exc:
        raise fail(str(exc)) from None
    taskdef = _taskdef(entry.task, registry, fail)
    try:
        payload = _payload_bytes(taskdef, entry.payload)
    except PayloadTypeError as exc:
        raise fail(str(exc)) from None
    except (TypeError, ValueError, RecursionError) as exc:  # a value JSON cannot carry, a lone surrogate, a cycle
        raise fail(f"the payload cannot be encoded as JSON: {exc}") from None
    if not isinstance(entry.options or {}, Mapping):
        raise fail(f"options must be a mapping of enqueue options, got {entry.options!r}")
    options = dict(entry.options or {})
    bad = sorted(set(options) - _CRON_OPTIONS)
    if bad:
        allowed = ", ".join(sorted(_CRON_OPTIONS))
        raise fail(f"option(s) {', '.join(bad)} cannot be used for a cron entry (allowed: {allowed})")
    try:
        resolved = resolve_options(taskdef, options, settings, now)
    except InvalidOption as exc:
        raise fail(str(exc)) from None
    return ResolvedEntry(
        id=entry_id(name, schedule.spec, schedule.tz, taskdef.type),
        name=name,
        schedule=schedule,
        task_type=taskdef.type,
        payload=payload,
        options=resolved,
        run_missed=bool(entry.run_missed),
        source=source,
    )


def _taskdef(task: Any, registry: Registry, fail: Callable[[str], FrameworkError]) -> TaskDef[Any]:
    if isinstance(task, TaskDef):
        return task
    if not isinstance(task, str) or not task.strip():
        raise fail(f"task must be a TaskDef or a task type string, got {task!r}")
    found = registry.get(task)
    if found is None:
        known = ", ".join(sorted(t.type for t in registry)) or "none"
        raise fail(f"unknown task type {task!r} (registered types: {known})")
    return found


def _payload_bytes(taskdef: TaskDef[Any], payload: Any) -> bytes:
    if taskdef.payload is bytes:
        if payload is None or payload == {}:
            return b""
        return bytes(payload) if isinstance(payload, bytes | bytearray) else taskdef.encode(taskdef.convert(payload))
    if payload is None:
        payload = {}
    if not isinstance(payload, taskdef.payload):
        if isinstance(payload, msgspec.Struct):
            expected = getattr(taskdef.payload, "__name__", "other")
            raise PayloadTypeError(f"task {taskdef.type!r} takes a {expected} payload, got {type(payload).__name__}")
        payload = taskdef.convert(payload)
    return taskdef.encode(payload)
