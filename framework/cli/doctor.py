"""``framework doctor``: check the settings, Redis, plugins and queued task types, and say what to fix.

Each check reports ``ok``, ``warn`` or ``fail`` with a detail and, when something is off, what to do.
The command exits with status 1 when any check fails (warnings do not fail it).

Plugin settings are checked by each plugin itself (the ``check_config`` hook), the way start-up would
decode them. Queues that task types (their default queue) or cron entries use but this app's workers
do not serve (``queues``) fail the check: their tasks would wait forever.
"""

from __future__ import annotations

import asyncio
import difflib
import shlex
from collections import defaultdict
from typing import TYPE_CHECKING, Literal

import click
import msgspec

from framework.cli import CliContext, examples, pass_cli
from framework.errors import FrameworkError

if TYPE_CHECKING:
    import pluggy
    from redis.asyncio import Redis

    from framework.registry import Registry
    from framework.settings import Settings

__all__ = ("Check", "doctor")

MIN_REDIS = (6, 2)
"""Oldest Redis the scripts support (``ZRANGE ... BYSCORE``)."""
SAMPLE = 100
"""Tasks sampled per queue and state when looking for task types nobody handles."""
SHOWN_IDS = 3
"""Task ids named in the fix for queued tasks of an unhandled type."""

_MARKS = {"ok": "✓", "warn": "!", "fail": "✗"}


class Check(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of one check.

    Attributes:
        name: what was checked.
        status: ``ok``, ``warn`` or ``fail``.
        detail: what was found.
        fix: what to do about it ("" when nothing).
    """

    name: str
    status: Literal["ok", "warn", "fail"]
    detail: str
    fix: str = ""


def _version(info: dict[str, object]) -> tuple[str, tuple[int, ...]]:
    """A label and the Redis-compatible version from ``INFO server``."""
    redis_version = str(info.get("redis_version", "0"))
    parts = tuple(int(p) for p in redis_version.split(".")[:2] if p.isdigit())
    valkey = info.get("valkey_version")
    label = f"Valkey {valkey} (Redis {redis_version} compatible)" if valkey else f"Redis {redis_version}"
    return label, parts


async def _check_redis(settings: Settings) -> tuple[list[Check], Redis | None]:
    from redis.exceptions import RedisError  # noqa: PLC0415 - redis loads only for the checks

    from framework.transport.connection import check_connection, open_redis, redact_url, resolve_redis_url  # noqa: PLC0415

    try:
        url = await asyncio.to_thread(resolve_redis_url, settings)
    except FrameworkError as exc:
        fix = "set FRAMEWORK_REDIS_URL or REDIS_URL"
        if not settings.redis_url:  # the embedded Valkey did not start: its error says why
            fix = "fix what the error names (setting data_dir, FRAMEWORK_DATA_DIR), or " + fix
        return [Check(name="redis", status="fail", detail=str(exc), fix=fix)], None
    redis = open_redis(url)
    try:
        await check_connection(redis, url)
        info = await redis.info("server")
    except (FrameworkError, RedisError, OSError) as exc:
        await redis.aclose()
        fix = "start Redis (or Valkey) there, or point FRAMEWORK_REDIS_URL / REDIS_URL at a running server"
        return [Check(name="redis", status="fail", detail=str(exc), fix=fix)], None
    label, version = _version(info)
    where = redact_url(url) if settings.redis_url else f"embedded Valkey in {settings.data_path / 'valkey'}"
    checks = [Check(name="redis", status="ok", detail=f"{label} at {where}"), await _check_eviction(redis)]
    if version < MIN_REDIS:
        checks.append(
            Check(
                name="redis version",
                status="warn",
                detail=f"{label} is older than 6.2; archiving and forwarding use ZRANGE BYSCORE and will fail",
                fix="upgrade to Redis 6.2 or later (or Valkey)",
            )
        )
    return checks, redis


async def _check_eviction(redis: Redis) -> Check:
    """Whether the server may drop the queues' keys when it is full (its ``maxmemory-policy``)."""
    from redis.exceptions import RedisError  # noqa: PLC0415 - redis loads only for the checks

    from framework.transport.health import EVICTION_FIX, eviction_risk  # noqa: PLC0415

    try:
        risk = await eviction_risk(redis)
    except RedisError as exc:  # INFO refused (a managed service's ACL): say so, it is the user's to check
        return Check(name="redis eviction", status="warn", detail=f"cannot read INFO memory: {exc}", fix=EVICTION_FIX)
    if risk is None:
        return Check(name="redis eviction", status="ok", detail="no key is evicted (noeviction, or no maxmemory)")
    return Check(name="redis eviction", status="warn", detail=risk, fix=EVICTION_FIX)


def _check_plugins(ctx: CliContext) -> tuple[list[Check], Registry | None]:
    from framework.plugins.manager import collect_task_types, get_plugins  # noqa: PLC0415
    from framework.registry import Registry  # noqa: PLC0415

    try:
        infos = get_plugins(ctx.pm, ctx.settings)
        registry = Registry()
        collect_task_types(ctx.pm, ctx.settings, registry)
    except FrameworkError as exc:
        fix = "fix or remove the plugin named above, or block it with FRAMEWORK_BLOCK_PLUGINS"
        return [Check(name="plugins", status="fail", detail=str(exc), fix=fix)], None
    names = ", ".join(f"{i.name} {i.version}".strip() for i in infos) or "none"
    types = ", ".join(sorted(t.type for t in registry)) or "none"
    return [
        Check(name="plugins", status="ok", detail=f"{len(infos)} loaded: {names}"),
        Check(name="task types", status="ok", detail=f"{len(registry)} registered: {types}"),
    ], registry


def _check_plugin_settings(pm: pluggy.PluginManager, settings: Settings) -> list[Check]:
    """Each plugin decodes its own section; a section no loaded plugin owns is a likely typo."""
    from framework.plugins.manager import check_plugin_configs  # noqa: PLC0415

    checks = []
    results = check_plugin_configs(pm, settings)
    for plugin, problem in results:
        if problem is not None:
            fix = f"correct [plugins.{plugin}] in the settings file (see the plugin's documentation)"
            checks.append(Check(name="plugin settings", status="fail", detail=f"{plugin}: {problem}", fix=fix))
    names = [name for name, _ in pm.list_name_plugin()]
    for section in sorted(set(settings.plugins) - set(names)):
        close = difflib.get_close_matches(section, names, n=1)
        hint = f" (did you mean [plugins.{close[0]}]?)" if close else ""
        checks.append(
            Check(
                name="plugin settings",
                status="warn",
                detail=f"no loaded plugin is named {section!r}: the [plugins.{section}] section is not read{hint}",
                fix="rename the section, or install and enable that plugin (see `framework plugins`)",
            )
        )
    if not checks:
        checked = ", ".join(plugin for plugin, _ in results)
        detail = f"checked by {checked}" if checked else "no loaded plugin has settings to check"
        checks.append(Check(name="plugin settings", status="ok", detail=detail))
    return checks


def _check_queues(pm: pluggy.PluginManager, registry: Registry, settings: Settings) -> list[Check]:
    """Queues that task types (their default queue) or cron entries send tasks to, but no worker here serves."""
    from framework.scheduler.loader import load_entries  # noqa: PLC0415

    users: dict[str, list[str]] = defaultdict(list)
    for task in registry:
        users[task.queue].append(f"task type {task.type!r}")
    checks = []
    try:
        entries = load_entries(settings, pm, registry)
    except FrameworkError as exc:
        fix = "correct the entry named above ([[cron]] in the settings file, or the plugin that declares it)"
        checks.append(Check(name="cron entries", status="fail", detail=str(exc), fix=fix))
    else:
        for entry in entries:
            users[entry.options.queue].append(f"cron entry {entry.name!r}")
    served = ",".join(f"{q}={w}" for q, w in settings.queues.items())
    for queue in sorted(set(users) - set(settings.queues)):
        verb = "uses" if len(users[queue]) == 1 else "use"
        detail = f"{', '.join(users[queue])} {verb} queue {queue!r}, which no worker serves (queues: {served})"
        fix = (
            f"add {queue!r} to the queues setting (e.g. FRAMEWORK_QUEUES={served},{queue}=1), "
            "or send those tasks to a served queue"
        )
        checks.append(Check(name="queues", status="fail", detail=detail, fix=fix))
    if not checks:
        checks.append(Check(name="queues", status="ok", detail="every task type and cron entry uses a served queue"))
    return checks


Found = dict[str, dict[tuple[str, str], list[str]]]
"""Task type -> (queue, state) -> ids of the sampled tasks of that type."""


async def _queued_types(redis: Redis, settings: Settings) -> Found:
    """The types of the sampled pending, scheduled and retry tasks, with where they wait and their ids."""
    from framework.inspector import Inspector, QueueNotFound  # noqa: PLC0415
    from framework.protocol.keys import Schema  # noqa: PLC0415

    inspector = Inspector(redis, Schema(settings.namespace))
    found: Found = defaultdict(lambda: defaultdict(list))
    for queue in await inspector.queues():
        for state in ("pending", "scheduled", "retry"):
            try:
                page = await inspector.list_tasks(queue, state, size=SAMPLE)
            except QueueNotFound:
                break
            for task in page.tasks:
                found[task.type][queue, state].append(task.id)
    return found


def _set_aside(places: list[tuple[tuple[str, str], list[str]]]) -> str:
    """Commands that archive just these tasks (a few of them; the rest are listed by ``tasks ls``)."""
    ids = [(queue, task_id) for (queue, _), task_ids in places for task_id in task_ids]
    commands = ", ".join(f"`framework tasks archive {shlex.quote(q)} {shlex.quote(i)}`" for q, i in ids[:SHOWN_IDS])
    if len(ids) > SHOWN_IDS:
        (queue, state), _ = places[0]
        commands += f" and so on (`framework tasks ls {shlex.quote(queue)} {state}` lists them)"
    return commands


def _check_types(found: Found, registry: Registry, settings: Settings) -> list[Check]:
    checks = []
    for task_type in sorted(t for t in found if t not in registry):
        places = sorted(found[task_type].items())
        served = [(place, ids) for place, ids in places if place[0] in settings.queues]
        where = ", ".join(f"{q!r} {state} ({len(ids)})" for (q, state), ids in places)
        detail = f"{task_type!r} tasks wait in {where} (sampled) and no loaded plugin handles the type"
        if served:
            queues = ", ".join(sorted({repr(q) for (q, _), _ in served}))
            fix = (
                f"this app's workers serve {queues} and would retry, then archive, these tasks: register the type "
                "(install or enable the plugin that defines it), serve the queue only from workers that handle it "
                f"(e.g. Go), or set just these tasks aside: {_set_aside(served)} "
                "(`framework tasks retry` brings one back)"
            )
            checks.append(Check(name="queued task types", status="fail", detail=detail, fix=fix))
        else:
            fix = "make sure another worker fleet (e.g. a Go service) serves these queues"
            checks.append(Check(name="queued task types", status="warn", detail=detail, fix=fix))
    if not checks:
        checks.append(Check(name="queued task types", status="ok", detail="every sampled waiting task has a handler"))
    return checks


async def _run_checks(ctx: CliContext) -> list[Check]:
    from framework.errors import ConfigError  # noqa: PLC0415

    try:
        settings = ctx.settings
    except ConfigError as exc:
        fix = "correct that setting in the settings file (--config, FRAMEWORK_CONFIG, ./framework.toml) or environment"
        return [Check(name="settings", status="fail", detail=str(exc), fix=fix)]
    queues = ", ".join(f"{q}={w}" for q, w in settings.queues.items())
    checks = [Check(name="settings", status="ok", detail=f"namespace {settings.namespace!r}, queues {queues}")]
    plugin_checks, registry = _check_plugins(ctx)
    if registry is not None:
        plugin_checks += _check_plugin_settings(ctx.pm, settings)
        plugin_checks += _check_queues(ctx.pm, registry, settings)
    redis_checks, redis = await _check_redis(settings)
    checks += redis_checks + plugin_checks
    if redis is None:
        return checks
    try:
        if registry is not None:
            checks += _check_types(await _queued_types(redis, settings), registry, settings)
    finally:
        await redis.aclose()
    return checks


@click.command(epilog=examples("framework doctor", "framework --config prod.toml doctor --json"))
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@pass_cli
def doctor(ctx: CliContext, as_json: bool) -> None:
    """Check settings, Redis, plugins and queued task types; say what to fix.

    Each plugin checks its own settings section; task types and cron entries must use queues the
    workers serve. Exits with status 1 when a check fails.
    """
    checks = asyncio.run(_run_checks(ctx))
    failed = any(c.status == "fail" for c in checks)
    if as_json:
        click.echo(msgspec.json.format(msgspec.json.encode({"ok": not failed, "checks": checks}), indent=2))
    else:
        for c in checks:
            click.echo(f"{_MARKS[c.status]} {c.name}: {c.detail}")
            if c.fix:
                click.echo(f"    fix: {c.fix}")
        click.echo("some checks failed" if failed else "all good")
    if failed:
        raise click.exceptions.Exit(1)
