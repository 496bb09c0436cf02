"""``framework doctor``: check the settings, Redis, plugins and queued task types, and say what to fix.

Each check reports ``ok``, ``warn`` or ``fail`` with a detail and, when something is off, what to do.
The command exits with status 1 when any check fails (warnings do not fail it).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import TYPE_CHECKING, Literal

import click
import msgspec
from redis.exceptions import RedisError

from framework.cli import CliContext, cli, pass_cli
from framework.errors import FrameworkError

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from framework.registry import Registry
    from framework.settings import Settings

__all__ = ("Check", "doctor")

MIN_REDIS = (6, 2)
"""Oldest Redis the scripts support (``ZRANGE ... BYSCORE``)."""
SAMPLE = 100
"""Tasks sampled per queue and state when looking for task types nobody handles."""

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
    from framework.connection import check_connection, open_redis, redact_url, resolve_redis_url  # noqa: PLC0415

    try:
        url = await asyncio.to_thread(resolve_redis_url, settings)
    except FrameworkError as exc:
        return [Check(name="redis", status="fail", detail=str(exc), fix="set FRAMEWORK_REDIS_URL or REDIS_URL")], None
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
    checks = [Check(name="redis", status="ok", detail=f"{label} at {where}")]
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


def _check_plugins(ctx: CliContext) -> tuple[list[Check], Registry | None]:
    from framework.plugins import collect_task_types, get_plugins  # noqa: PLC0415
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


async def _queued_types(redis: Redis, settings: Settings) -> dict[str, dict[tuple[str, str], int]]:
    """Task type -> (queue, state) -> tasks of that type among the sampled pending, scheduled and retry tasks."""
    from framework.inspector import Inspector, QueueNotFound  # noqa: PLC0415
    from framework.keys import Schema  # noqa: PLC0415

    inspector = Inspector(redis, Schema(settings.namespace))
    found: dict[str, dict[tuple[str, str], int]] = defaultdict(lambda: defaultdict(int))
    for queue in await inspector.queues():
        for state in ("pending", "scheduled", "retry"):
            try:
                page = await inspector.list_tasks(queue, state, size=SAMPLE)
            except QueueNotFound:
                break
            for task in page.tasks:
                found[task.type][queue, state] += 1
    return found


def _check_types(found: dict[str, dict[tuple[str, str], int]], registry: Registry, settings: Settings) -> list[Check]:
    checks = []
    for task_type in sorted(t for t in found if t not in registry):
        places = sorted(found[task_type].items())
        served = [(q, state) for (q, state), _ in places if q in settings.queues]
        where = ", ".join(f"{q!r} {state} ({n})" for (q, state), n in places)
        detail = f"{task_type!r} tasks wait in {where} (sampled) and no loaded plugin handles the type"
        if served:
            queues = ", ".join(sorted({repr(q) for q, _ in served}))
            fix = (
                f"this app's workers serve {queues} and would retry, then archive, these tasks: install or enable "
                "the plugin that defines the type, serve the queue only from workers that handle it (e.g. Go), "
                f"or remove them (`framework jobs delete-all {served[0][0]!r} {served[0][1]}`)"
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


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@pass_cli
def doctor(ctx: CliContext, as_json: bool) -> None:
    """Check settings, Redis, plugins and queued task types; say what to fix."""
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
