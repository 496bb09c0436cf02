"""``framework cron ls``: every cron entry with its source, spec, time zone, last and next run."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import click

from framework.cli import CliContext, examples, pass_cli

if TYPE_CHECKING:
    from framework.scheduler.scheduler import ResolvedEntry
    from framework.settings import Settings

__all__ = ("cron", "ls")


@click.group(epilog=examples("framework cron ls"))
def cron() -> None:
    """Cron entries (from settings and plugins)."""


async def _last_ticks(settings: Settings, ids: list[str]) -> dict[str, int]:
    """The last fired tick of each entry, from ``<ext>:cron:last``; a value that is not a tick is left out."""
    from framework.protocol.keys import Schema  # noqa: PLC0415
    from framework.scheduler.records import parse_tick  # noqa: PLC0415
    from framework.transport.connection import check_connection, open_redis, resolve_redis_url  # noqa: PLC0415

    url = await asyncio.to_thread(resolve_redis_url, settings)
    redis = open_redis(url)
    try:
        await check_connection(redis, url)
        values = await redis.hmget(Schema(settings.namespace).cron_last, ids)
    finally:
        await redis.aclose()
    ticks = {i: parse_tick(v) for i, v in zip(ids, values, strict=True)}
    return {i: tick for i, tick in ticks.items() if tick is not None}


def _when(t: float | None, tz: str) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, ZoneInfo(tz)).isoformat()


def _entry_rows(entries: list[ResolvedEntry], last: dict[str, int], now: float) -> list[dict[str, Any]]:
    """One JSON-ready row per entry; times are ISO 8601 in the entry's time zone (``None`` = never)."""
    return [
        {
            "name": e.name,
            "id": e.id,
            "source": e.source,
            "spec": e.spec,
            "tz": e.tz,
            "task_type": e.task_type,
            "queue": e.options.queue,
            "run_missed": e.run_missed,
            "last_run": _when(last.get(e.id), e.tz),
            "next_run": _when(e.schedule.next_after(now), e.tz),
        }
        for e in entries
    ]


@cron.command(epilog=examples("framework cron ls", "framework cron ls --json"))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_cli
def ls(ctx: CliContext, as_json: bool) -> None:
    """List every cron entry: source plugin, spec, time zone, last and next run."""
    from redis.exceptions import RedisError  # noqa: PLC0415

    from framework.clock import SystemClock  # noqa: PLC0415
    from framework.errors import RedisUnavailable  # noqa: PLC0415
    from framework.plugins.manager import collect_task_types  # noqa: PLC0415
    from framework.registry import Registry  # noqa: PLC0415
    from framework.scheduler.scheduler import load_entries  # noqa: PLC0415

    settings, pm = ctx.settings, ctx.pm
    registry = Registry()
    collect_task_types(pm, settings, registry)
    entries = load_entries(settings, pm, registry)
    last: dict[str, int] = {}
    if entries:
        try:
            last = asyncio.run(_last_ticks(settings, [e.id for e in entries]))
        except (RedisUnavailable, RedisError, OSError) as exc:  # lost on the way, or a key of another type
            click.echo(f"warning: last runs unknown: {exc}", err=True)
    rows = _entry_rows(entries, last, SystemClock().now())
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    _print_table(rows)


def _print_table(rows: list[dict[str, Any]]) -> None:
    from framework.cli._tables import PlainTable, plain_console, print_fitted  # noqa: PLC0415

    if not rows:
        click.echo("No cron entries.")
        return
    table = PlainTable(title="Cron entries")
    for column in ("Name", "Source", "Spec", "Time zone", "Task", "Queue", "Last run", "Next run"):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(
            r["name"],
            r["source"],
            r["spec"],
            r["tz"],
            r["task_type"],
            r["queue"],
            _short(r["last_run"], r["tz"]) or "never",
            _short(r["next_run"], r["tz"]) or "-",
        )
    console = plain_console()
    if not console.is_terminal:
        console = plain_console(width=max(console.width, 160))  # piped: keep each entry on one line
    print_fitted(table, console)


def _short(iso: str | None, tz: str) -> str | None:
    """``2024-03-31T03:00:00+02:00`` -> ``2024-03-31 03:00:00 CEST``."""
    if iso is None:
        return None
    return datetime.fromisoformat(iso).astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M:%S %Z")
