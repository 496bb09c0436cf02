"""The ``tasks`` group and what its commands share: Redis and inspector plumbing, output helpers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import click
import msgspec

from framework.cli import CliContext, examples
from framework.errors import (
    DuplicateTask,
    InvalidOption,
    PayloadTypeError,
    QueueNotFound,
    TaskIdConflict,
    TaskNotFound,
)

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from rich.table import Table

    from framework.inspector import Inspector

__all__ = (
    "FAILED",
    "StateChoice",
    "emit_json",
    "json_option",
    "payload_text",
    "print_table",
    "run_inspector",
    "run_redis",
    "size_text",
    "table",
    "tasks",
    "when_text",
)

T = TypeVar("T")


FAILED = "failed"
"""What the dashboard calls archived tasks; every STATE argument takes it for ``archived``."""


class StateChoice(click.Choice):  # type: ignore[type-arg]
    """A task state among ``states``; ``failed`` is taken for ``archived`` when that is one of them."""

    def __init__(self, states: Iterable[str]) -> None:
        names = list(states)
        super().__init__([*names, FAILED] if "archived" in names else names)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """The state's name, with ``failed`` turned into ``archived``."""
        state = super().convert(value, param, ctx)
        return "archived" if state == FAILED else state


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
"""The ``--json`` flag every command has (passed as ``as_json``)."""

_LOOKUP_ERRORS = (QueueNotFound, TaskNotFound, DuplicateTask, TaskIdConflict)
"""Refusals that exit 1; the inspector's own (invalid state, queue not empty) are added when it loads."""
_USAGE_ERRORS = (InvalidOption, PayloadTypeError)


@click.group(
    epilog=examples(
        "framework tasks stats",
        "framework tasks ls default pending",
        "framework tasks ls default failed      # 'failed' is the dashboard's word for archived",
        "framework tasks show TASK_ID",
    )
)
def tasks() -> None:
    """Inspect and steer the task queues.

    Queues: stats, history, pause, unpause, delete-queue. Tasks: enqueue, ls, show, retry, archive,
    delete, cancel. Every task of a state: run-all, archive-all, delete-all. Workers: servers.
    Task limits: limits.

    A STATE argument also takes 'failed', the dashboard's name for archived tasks.
    """


async def _with_redis(ctx: CliContext, fn: Callable[[Redis], Awaitable[T]]) -> T:
    """Run ``fn`` on a checked connection; Redis lost or refusing a command on the way is a one-line error."""
    from redis.exceptions import ConnectionError as RedisConnectionError  # noqa: PLC0415
    from redis.exceptions import RedisError  # noqa: PLC0415
    from redis.exceptions import TimeoutError as RedisTimeoutError  # noqa: PLC0415

    from framework.errors import RedisUnavailable  # noqa: PLC0415
    from framework.transport.connection import (  # noqa: PLC0415
        check_connection,
        open_redis,
        redact_url,
        resolve_redis_url,
    )

    url = await asyncio.to_thread(resolve_redis_url, ctx.settings)
    redis = open_redis(url)
    try:
        await check_connection(redis, url)
        return await fn(redis)
    except RedisUnavailable:
        raise
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        raise RedisUnavailable(f"lost Redis at {redact_url(url)} during the command: {exc}") from exc
    except RedisError as exc:
        raise click.ClickException(f"Redis at {redact_url(url)} refused a command: {exc}") from exc
    finally:
        with contextlib.suppress(RedisError, OSError):
            await redis.aclose()


def run_redis(ctx: CliContext, fn: Callable[[Redis], Awaitable[T]]) -> T:
    """Run ``fn`` on the app's Redis; missing queues/tasks and refused actions exit 1, bad input exits 2."""
    from framework.inspector import InvalidTaskState, QueueNotEmpty  # noqa: PLC0415 - loads redis

    try:
        return asyncio.run(_with_redis(ctx, fn))
    except (*_LOOKUP_ERRORS, InvalidTaskState, QueueNotEmpty) as exc:
        raise click.ClickException(str(exc)) from exc
    except _USAGE_ERRORS as exc:
        raise click.UsageError(str(exc)) from exc


def run_inspector(ctx: CliContext, fn: Callable[[Inspector], Awaitable[T]]) -> T:
    """Run ``fn`` with an :class:`Inspector` of the app's namespace; errors as :func:`run_redis`."""
    from framework.inspector import Inspector  # noqa: PLC0415
    from framework.protocol.keys import Schema  # noqa: PLC0415

    async def go(redis: Redis) -> T:
        return await fn(Inspector(redis, Schema(ctx.settings.namespace)))

    return run_redis(ctx, go)


def emit_json(data: Any) -> None:
    """Print ``data`` (Structs, lists, dicts) as indented JSON on stdout."""
    click.echo(msgspec.json.format(msgspec.json.encode(data), indent=2))


def table(title: str, *columns: str) -> Table:
    """A rich table with these columns (long cells wrap rather than being cut; cells are plain text, not markup)."""
    from framework.cli._tables import PlainTable  # noqa: PLC0415

    out = PlainTable(title=title)
    for column in columns:
        out.add_column(column, overflow="fold")
    return out


def print_table(tbl: Table, *, err: bool = False) -> None:
    """Print a rich table on stdout (or stderr), fitted to the terminal's width without breaking words.

    Its strings are printed as text: no markup is read, control characters are escaped (see
    :mod:`framework.cli._tables`).
    """
    from framework.cli._tables import plain_console, print_fitted  # noqa: PLC0415

    print_fitted(tbl, plain_console(stderr=err))


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
