"""``framework tasks limits``: each task limit, its current use, the tasks waiting on it and its counters."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from framework.cli import CliContext, examples, pass_cli
from framework.cli.tasks._common import emit_json, json_option, print_table, run_inspector, table, tasks

if TYPE_CHECKING:
    from collections.abc import Sequence

    from rich.table import Table

    from framework.inspector import LimitInfo

__all__ = ("limits", "limits_table")


def limits_table(infos: Sequence[LimitInfo]) -> Table:
    """The "Limits" table: name, rate, concurrency, in use, waiting, started, delayed, parked."""
    tbl = table("Limits", "limit", "rate", "concurrency", "in use", "waiting", "started", "delayed", "parked")
    for info in infos:
        rate = f"{info.rate} (burst {info.burst})" if info.rate and info.burst > 1 else info.rate or "-"
        cap = str(info.concurrency or "-") + (" per key" if info.keyed and info.concurrency else "")
        in_use = f"{info.in_use}/{info.concurrency}" if info.concurrency and not info.keyed else str(info.in_use)
        tbl.add_row(
            info.name + (f" ({info.keys} key{'' if info.keys == 1 else 's'})" if info.keyed else ""),
            rate,
            cap,
            in_use,
            str(info.waiting),
            str(info.started),
            str(info.delayed),
            str(info.parked),
        )
    return tbl


@tasks.command(epilog=examples("framework tasks limits", "framework tasks limits --json"))
@json_option
@pass_cli
def limits(ctx: CliContext, as_json: bool) -> None:
    """Task limits the workers declared: values, slots in use, tasks waiting, counters.

    "waiting" counts tasks a limit put off that have not started yet; "delayed" and "parked" count every
    task ever put off by the limit's rate and for one of its slots. A keyed limit also lists its busiest keys.
    """
    found: list[LimitInfo] = run_inspector(ctx, lambda ins: ins.limits())
    if as_json:
        emit_json(found)
        return
    if not found:
        click.echo("no limits (a worker lists its task types' limits when it starts)")
        return
    print_table(limits_table(found))
    busiest = [(info.name, row) for info in found for row in info.busiest]
    if busiest:
        kt = table("Busiest keys", "limit", "key", "in use", "waiting")
        for name, row in busiest:
            kt.add_row(name, row.key, str(row.in_use), str(row.waiting))
        print_table(kt)
