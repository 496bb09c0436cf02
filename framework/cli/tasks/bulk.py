"""``framework tasks run-all|archive-all|delete-all``: act on every task of a state, with progress."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from framework.cli import CliContext, examples, pass_cli
from framework.cli.tasks._common import StateChoice, emit_json, json_option, run_inspector, tasks

if TYPE_CHECKING:
    from framework.inspector import Inspector, Progress

__all__ = ("archive_all", "delete_all", "run_all")

_RUN = ("scheduled", "retry", "archived", "completed", "aggregating")
_ARCHIVE = ("pending", "scheduled", "retry", "completed", "aggregating")
_DELETE = ("pending", "scheduled", "retry", "archived", "completed", "aggregating")
_QUESTIONS = {
    "archive": "Archive {n} {state} task(s) of queue {queue!r}? (the archive keeps at most 10,000 per queue)",
    "delete": "Delete {n} {state} task(s) of queue {queue!r}? This cannot be undone",
}


def _bulk(ctx: CliContext, action: str, queue: str, state: str, group: str | None, *, yes: bool, as_json: bool) -> None:
    """Count, ask when destructive, then run the bulk action with a progress bar on stderr."""
    from rich.console import Console  # noqa: PLC0415
    from rich.progress import Progress as Bar  # noqa: PLC0415

    async def go(ins: Inspector) -> int:
        total = (await ins.list_tasks(queue, state, size=1, group=group)).total
        if total and action in _QUESTIONS and not yes:
            question = _QUESTIONS[action].format(n=total, state=state, queue=queue)
            click.confirm(question, abort=True, err=True)
        with Bar(console=Console(stderr=True)) as bar:
            bar_id = bar.add_task(f"{action} {state} tasks of {queue}", total=total)

            def progress(done: int, total: int) -> None:
                bar.update(bar_id, completed=done, total=max(done, total))

            fn = {"run": ins.run_all, "archive": ins.archive_all, "delete": ins.delete_all}[action]
            callback: Progress = progress
            return await fn(queue, state, group=group, progress=callback)

    count = run_inspector(ctx, go)
    if as_json:
        emit_json({"queue": queue, "state": state, "action": action, "count": count})
    else:
        done = {"run": "made pending", "archive": "archived", "delete": "deleted"}[action]
        click.echo(f"{count} {state} task(s) of queue {queue!r} {done}")


_group_option = click.option("--group", default=None, help="For aggregating tasks: only this group.")
_yes_option = click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")


@tasks.command(
    "run-all", epilog=examples("framework tasks run-all default failed", "framework tasks run-all low scheduled")
)
@click.argument("queue")
@click.argument("state", type=StateChoice(_RUN), metavar="STATE")
@_group_option
@json_option
@pass_cli
def run_all(ctx: CliContext, queue: str, state: str, group: str | None, as_json: bool) -> None:
    """Run every STATE task of QUEUE now (make them pending).

    STATE is scheduled, retry, archived (or failed, as the dashboard says), completed or aggregating.
    """
    _bulk(ctx, "run", queue, state, group, yes=True, as_json=as_json)


@tasks.command(
    "archive-all",
    epilog=examples("framework tasks archive-all default retry", "framework tasks archive-all low pending --yes"),
)
@click.argument("queue")
@click.argument("state", type=StateChoice(_ARCHIVE), metavar="STATE")
@_group_option
@_yes_option
@json_option
@pass_cli
def archive_all(ctx: CliContext, queue: str, state: str, group: str | None, yes: bool, as_json: bool) -> None:
    """Archive every STATE task of QUEUE (asks first unless --yes).

    STATE is pending, scheduled, retry, completed or aggregating.
    """
    _bulk(ctx, "archive", queue, state, group, yes=yes, as_json=as_json)


@tasks.command(
    "delete-all",
    epilog=examples("framework tasks delete-all default failed", "framework tasks delete-all low completed --yes"),
)
@click.argument("queue")
@click.argument("state", type=StateChoice(_DELETE), metavar="STATE")
@_group_option
@_yes_option
@json_option
@pass_cli
def delete_all(ctx: CliContext, queue: str, state: str, group: str | None, yes: bool, as_json: bool) -> None:
    """Delete every STATE task of QUEUE (asks first unless --yes).

    STATE is any state but active: pending, scheduled, retry, archived (or failed, as the dashboard
    says), completed or aggregating.
    """
    _bulk(ctx, "delete", queue, state, group, yes=yes, as_json=as_json)
