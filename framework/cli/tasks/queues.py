"""``framework tasks stats|history|pause|unpause|delete-queue``: queue-level commands."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from framework.cli import CliContext, examples, pass_cli
from framework.cli.tasks._common import (
    emit_json,
    json_option,
    print_table,
    run_inspector,
    size_text,
    table,
    tasks,
)
from framework.cli.tasks.limits import limits_table

if TYPE_CHECKING:
    from rich.table import Table

    from framework.inspector import DailyStats, Inspector, LimitInfo, QueueInfo

__all__ = ("delete_queue", "history", "pause", "stats", "unpause")

_COUNTS = ("pending", "active", "scheduled", "retry", "archived", "completed", "aggregating")


@tasks.command(epilog=examples("framework tasks stats", "framework tasks stats --no-memory --json"))
@click.option("--no-memory", is_flag=True, help="Skip the (sampled) memory estimate.")
@json_option
@pass_cli
def stats(ctx: CliContext, no_memory: bool, as_json: bool) -> None:
    """Counts, throughput today, latency and memory of every queue.

    The archived column counts what the dashboard calls failed tasks (``ls QUEUE failed`` lists them);
    "failed today" counts failed runs, retried or not. When task limits exist, a second table shows each
    one's use and the tasks waiting on it (``framework tasks limits``; ``--json`` prints the queues alone).
    """

    async def go(ins: Inspector) -> tuple[list[QueueInfo], list[LimitInfo]]:
        return await ins.all_queue_info(memory=not no_memory), await ins.limits(busiest=0)

    infos, found = run_inspector(ctx, go)
    if as_json:
        emit_json(infos)
        return
    if not infos:
        click.echo("no queues")
    else:
        print_table(_queues_table(infos, no_memory))
    if found:
        print_table(limits_table(found))


def _queues_table(infos: list[QueueInfo], no_memory: bool) -> Table:
    tbl = table("Queues", "queue", *_COUNTS, "processed today", "failed today", "latency", "memory", "paused")
    for q in infos:
        tbl.add_row(
            q.queue,
            *(str(getattr(q, c)) for c in _COUNTS),
            str(q.processed_today),
            str(q.failed_today),
            f"{q.latency:.1f}s" if q.latency is not None else "-",
            "-" if no_memory else size_text(q.memory_usage),
            "paused" if q.paused else "no",
        )
    return tbl


@tasks.command(epilog=examples("framework tasks history", "framework tasks history --days 30 -q default"))
@click.option("--days", type=click.IntRange(1, 90), default=7, show_default=True, help="Days to show.")
@click.option("--queue", "-q", "queues", multiple=True, help="Only this queue (repeatable; default: all).")
@json_option
@pass_cli
def history(ctx: CliContext, days: int, queues: tuple[str, ...], as_json: bool) -> None:
    """Processed and failed tasks per UTC day and queue, oldest first."""

    async def go(ins: Inspector) -> list[DailyStats]:
        names = list(queues) or await ins.queues()
        return [s for name in names for s in await ins.history(name, days)]

    rows = run_inspector(ctx, go)
    if as_json:
        emit_json(rows)
        return
    tbl = table(f"History, last {days} day(s) (UTC)", "date", "queue", "processed", "failed")
    for s in sorted(rows, key=lambda r: (r.date, r.queue)):
        tbl.add_row(s.date.isoformat(), s.queue, str(s.processed), str(s.failed))
    print_table(tbl)


def _switch(ctx: CliContext, queue: str, as_json: bool, *, paused: bool) -> None:
    changed: bool = run_inspector(ctx, lambda ins: ins.pause(queue) if paused else ins.unpause(queue))
    if as_json:
        emit_json({"queue": queue, "paused": paused, "changed": changed})
        return
    word = "paused" if paused else "resumed"
    click.echo(f"queue {queue!r} {word}" if changed else f"queue {queue!r} was already {word}")


@tasks.command(epilog=examples("framework tasks pause low"))
@click.argument("queue")
@json_option
@pass_cli
def pause(ctx: CliContext, queue: str, as_json: bool) -> None:
    """Pause QUEUE: workers stop taking its tasks (running ones finish)."""
    _switch(ctx, queue, as_json, paused=True)


@tasks.command(epilog=examples("framework tasks unpause low"))
@click.argument("queue")
@json_option
@pass_cli
def unpause(ctx: CliContext, queue: str, as_json: bool) -> None:
    """Resume a paused QUEUE."""
    _switch(ctx, queue, as_json, paused=False)


@tasks.command(
    "delete-queue", epilog=examples("framework tasks delete-queue old", "framework tasks delete-queue old --force")
)
@click.argument("queue")
@click.option("--force", is_flag=True, help="Delete its tasks too (never active ones).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@json_option
@pass_cli
def delete_queue(ctx: CliContext, queue: str, force: bool, yes: bool, as_json: bool) -> None:
    """Remove QUEUE; it must be empty unless --force."""

    async def go(ins: Inspector) -> dict[str, Any]:
        info = await ins.queue_info(queue, memory=False)
        if force and info.size and not yes:
            click.confirm(f"Delete queue {queue!r} and its {info.size} task(s)?", abort=True, err=True)
        await ins.delete_queue(queue, force=force)
        return {"queue": queue, "deleted": True, "tasks": info.size}

    result = run_inspector(ctx, go)
    if as_json:
        emit_json(result)
    else:
        click.echo(f"queue {queue!r} deleted")
