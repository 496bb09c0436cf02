"""``framework workflows``: list workflows, show one with its steps and graph, cancel and retry them.

Every command prints a table (or text), or JSON with ``--json``. A workflow that does not exist (never
started, or expired) exits with status 1. Without ``--queue`` a workflow is looked up in every queue.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from framework.cli import CliContext, examples, pass_cli
from framework.cli.tasks._common import emit_json, json_option, print_table, run_inspector, table, when_text
from framework.errors import WorkflowNotFound

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from framework.inspector import Inspector, WorkflowDetail

__all__ = ("cancel", "graph_text", "ls", "retry", "show", "workflows")

_STATUSES = ("running", "succeeded", "failed", "cancelled")
_ERROR_WIDTH = 80

queue_option = click.option("--queue", "-q", default=None, help="The home queue (default: every queue).")


@click.group(
    epilog=examples(
        "framework workflows ls",
        "framework workflows ls --status failed",
        "framework workflows show WORKFLOW_ID",
        "framework workflows retry WORKFLOW_ID",
    )
)
def workflows() -> None:
    """Inspect, cancel and retry workflows.

    ls lists them newest first; show prints one with its steps, their states and its graph; cancel stops
    one; retry runs a failed or cancelled one again from where it stopped.
    """


def _run(ctx: CliContext, fn: Callable[[Inspector], Awaitable[Any]]) -> Any:
    """Run ``fn`` with an inspector; a workflow that does not exist exits 1."""
    try:
        return run_inspector(ctx, fn)
    except WorkflowNotFound as exc:
        raise click.ClickException(str(exc)) from exc


@workflows.command(
    epilog=examples("framework workflows ls", "framework workflows ls --status running --queue default --json")
)
@queue_option
@click.option("--status", "-s", type=click.Choice(_STATUSES), default=None, help="Only workflows with this status.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True, help="At most this many.")
@json_option
@pass_cli
def ls(ctx: CliContext, queue: str | None, status: str | None, limit: int, as_json: bool) -> None:
    """List workflows, newest first."""
    found = _run(ctx, lambda ins: ins.workflows(queue, status, limit=limit))
    if as_json:
        emit_json(found)
        return
    if not found:
        click.echo("no workflows")
        return
    tbl = table("Workflows", "id", "queue", "name", "status", "done", "created", "finished", "error")
    for wf in found:
        tbl.add_row(
            wf.id,
            wf.queue,
            wf.name,
            wf.status,
            f"{wf.done}/{wf.total}" + (f" ({wf.failed} failed)" if wf.failed else ""),
            when_text(wf.created),
            when_text(wf.finished),
            _cut(wf.error),
        )
    print_table(tbl)


def _cut(text: str, width: int = _ERROR_WIDTH) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def graph_text(detail: WorkflowDetail) -> list[str]:
    """A compact text drawing of a workflow: one line per layer, each step with its state.

    A step is drawn in the layer of its longest path from a first step; a step that does not follow every
    step of the layer before names its dependencies. Layers of many steps are counted by state instead.
    """
    from framework.inspector.workflows import layers  # noqa: PLC0415

    by_name = {step.name: step for step in detail.steps}
    out: list[str] = []
    previous: list[str] = []
    for names in layers(detail):
        if len(names) > 8:
            counts: dict[str, int] = {}
            for name in names:
                counts[by_name[name].state] = counts.get(by_name[name].state, 0) + 1
            cells = [f"{len(names)} steps: " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))]
        else:
            cells = []
            for name in names:
                step = by_name[name]
                after = "" if not previous or set(step.deps) == set(previous) else f" <- {', '.join(step.deps)}"
                cells.append(f"{name} [{step.state}]{after}")
        out.append(("  -> " if out else "     ") + " | ".join(cells))
        previous = names
    return out


@workflows.command(epilog=examples("framework workflows show WORKFLOW_ID", "framework workflows show ID -q default"))
@click.argument("workflow_id")
@queue_option
@json_option
@pass_cli
def show(ctx: CliContext, workflow_id: str, queue: str | None, as_json: bool) -> None:
    """Show WORKFLOW_ID: its status, its graph, and each step's task, state, dependencies and error."""
    detail: WorkflowDetail = _run(ctx, lambda ins: ins.workflow(workflow_id, queue))
    if as_json:
        emit_json(detail)
        return
    from framework.cli._tables import terminal_text  # noqa: PLC0415

    wf = detail.summary
    lines = [
        f"workflow {wf.id} ({wf.name}) in queue {wf.queue}: {wf.status}, {wf.done}/{wf.total} steps done",
        f"created {when_text(wf.created)}, finished {when_text(wf.finished)}",
        *([f"error: {wf.error}"] if wf.error else []),
        "",
        *graph_text(detail),
        "",
    ]
    for line in lines:
        click.echo(terminal_text(line))  # names and errors are stored data: no escape sequence reaches the terminal
    tbl = table("Steps", "step", "task", "state", "after", "queue", "task id", "error")
    for step in detail.steps:
        tbl.add_row(
            step.name,
            step.task_type,
            step.state,
            ", ".join(step.deps) or "-",
            step.queue,
            step.task_id,
            _cut(step.error) or "-",
        )
    print_table(tbl)


@workflows.command(epilog=examples("framework workflows cancel WORKFLOW_ID"))
@click.argument("workflow_id")
@queue_option
@json_option
@pass_cli
def cancel(ctx: CliContext, workflow_id: str, queue: str | None, as_json: bool) -> None:
    """Cancel WORKFLOW_ID: steps not started are dropped, running ones asked to stop."""
    done = _run(ctx, lambda ins: ins.cancel_workflow(workflow_id, queue))
    if as_json:
        emit_json(done)
    elif done.status in ("succeeded", "cancelled"):
        click.echo(f"workflow {done.id} was already {done.status}")
    else:
        dropped = f"{done.deleted} step(s) dropped"
        click.echo(f"workflow {done.id} cancelled: {dropped}, {done.stopping} running step(s) asked to stop")


@workflows.command(epilog=examples("framework workflows retry WORKFLOW_ID"))
@click.argument("workflow_id")
@queue_option
@json_option
@pass_cli
def retry(ctx: CliContext, workflow_id: str, queue: str | None, as_json: bool) -> None:
    """Run a failed or cancelled WORKFLOW_ID again, from the steps that failed or were cancelled."""
    done = _run(ctx, lambda ins: ins.retry_workflow(workflow_id, queue))
    if as_json:
        emit_json(done)
    elif done.again == 0 and done.status in ("succeeded", "running"):
        click.echo(f"workflow {done.id} is {done.status}: nothing to retry")
    else:
        click.echo(f"workflow {done.id} running again: {done.again} step(s) run again")
