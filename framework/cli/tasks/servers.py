"""``framework tasks servers``: live worker processes (Go's and ours) and the tasks they run."""

from __future__ import annotations

import click

from framework.cli import CliContext, examples, pass_cli
from framework.cli.tasks._common import (
    emit_json,
    json_option,
    payload_text,
    print_table,
    run_inspector,
    table,
    tasks,
)
from framework.cli.tasks._common import when_text as _when

__all__ = ("servers",)


@tasks.command(epilog=examples("framework tasks servers", "framework tasks servers --json"))
@json_option
@pass_cli
def servers(ctx: CliContext, as_json: bool) -> None:
    """List live servers and their active tasks."""
    found = run_inspector(ctx, lambda ins: ins.servers())
    if as_json:
        emit_json(found)
        return
    if not found:
        click.echo("no servers")
        return
    tbl = table("Servers", "host", "pid", "id", "status", "queues", "busy", "started")
    for s in found:
        info = s.server
        queues = ", ".join(f"{q}={w}" for q, w in sorted(info.queues.items()))
        busy = f"{len(s.workers)}/{info.concurrency}"
        tbl.add_row(info.host, str(info.pid), info.server_id, info.status, queues, busy, _when(info.start_time))
    print_table(tbl)
    workers = [w for s in found for w in s.workers]
    if workers:
        wt = table("Active tasks", "server", "task id", "type", "queue", "payload", "started", "deadline")
        for w in workers:
            started, deadline = _when(w.start_time), _when(w.deadline)
            wt.add_row(w.server_id, w.task_id, w.task_type, w.queue, payload_text(w.task_payload), started, deadline)
        print_table(wt)
