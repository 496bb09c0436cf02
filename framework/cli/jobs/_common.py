"""The ``jobs`` group and what its commands share: Redis and inspector plumbing, output helpers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import click
import msgspec

from framework.cli import CliContext, cli
from framework.errors import (
    DuplicateTask,
    InvalidOption,
    PayloadTypeError,
    QueueNotFound,
    TaskIdConflict,
    TaskNotFound,
)
from framework.inspector import Inspector, InvalidTaskState, QueueNotEmpty

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from rich.console import Console
    from rich.table import Table

__all__ = (
    "emit_json",
    "jobs",
    "json_option",
    "payload_text",
    "print_table",
    "run_inspector",
    "run_redis",
    "size_text",
    "table",
    "when_text",
)

T = TypeVar("T")

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
"""The ``--json`` flag every command has (passed as ``as_json``)."""

_LOOKUP_ERRORS = (QueueNotFound, TaskNotFound, InvalidTaskState, QueueNotEmpty, DuplicateTask, TaskIdConflict)
_USAGE_ERRORS = (InvalidOption, PayloadTypeError)


@cli.group()
def jobs() -> None:
    """Inspect and steer job queues: stats, list, show, run, archive, delete, pause, cancel."""


async def _with_redis(ctx: CliContext, fn: Callable[[Redis], Awaitable[T]]) -> T:
    from framework.connection import check_connection, open_redis, resolve_redis_url  # noqa: PLC0415

    url = await asyncio.to_thread(resolve_redis_url, ctx.settings)
    redis = open_redis(url)
    try:
        await check_connection(redis, url)
        return await fn(redis)
    finally:
        await redis.aclose()


def run_redis(ctx: CliContext, fn: Callable[[Redis], Awaitable[T]]) -> T:
    """Run ``fn`` on the app's Redis; missing queues/tasks and refused actions exit 1, bad input exits 2."""
    try:
        return asyncio.run(_with_redis(ctx, fn))
    except _LOOKUP_ERRORS as exc:
        raise click.ClickException(str(exc)) from exc
    except _USAGE_ERRORS as exc:
        raise click.UsageError(str(exc)) from exc


def run_inspector(ctx: CliContext, fn: Callable[[Inspector], Awaitable[T]]) -> T:
    """Run ``fn`` with an :class:`Inspector` of the app's namespace; errors as :func:`run_redis`."""
    from framework.keys import Schema  # noqa: PLC0415

    async def go(redis: Redis) -> T:
        return await fn(Inspector(redis, Schema(ctx.settings.namespace)))

    return run_redis(ctx, go)


def emit_json(data: Any) -> None:
    """Print ``data`` (Structs, lists, dicts) as indented JSON on stdout."""
    click.echo(msgspec.json.format(msgspec.json.encode(data), indent=2))


def table(title: str, *columns: str) -> Table:
    """A rich table with these columns (long cells wrap rather than being cut)."""
    from rich.table import Table  # noqa: PLC0415

    out = Table(title=title)
    for column in columns:
        out.add_column(column, overflow="fold")
    return out


def print_table(tbl: Table, *, err: bool = False) -> None:
    """Print a rich table on stdout (or stderr)."""
    from rich.console import Console  # noqa: PLC0415

    console: Console = Console(stderr=err)
    console.print(tbl)


def when_text(value: datetime | None) -> str:
    """A time as ``YYYY-MM-DD HH:MM:SS UTC``; ``-`` for none."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else "-"


def size_text(n: int) -> str:
    """Bytes in B, KB, MB or GB."""
    value = float(n)
    for unit in ("B", "KB", "MB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def payload_text(payload: bytes, limit: int | None = 60) -> str:
    """Payload bytes as text (hex when not UTF-8), cut to ``limit`` characters."""
    try:
        out = payload.decode("utf-8")
    except UnicodeDecodeError:
        out = "0x" + payload.hex()
    if limit is not None and len(out) > limit:
        out = out[: limit - 1] + "…"
    return out
