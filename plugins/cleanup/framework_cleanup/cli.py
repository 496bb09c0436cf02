"""``framework cleanup``: run sweepers now (``run [SWEEPER] [--dry-run]``) and list them (``ls``).

``run`` runs in this process, not through the queue, and exits with status 1 when a sweeper failed.
Both commands connect to the app's Redis (and storage) as configured.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, TypeVar

import click

from framework.cli import CliContext, examples, pass_cli

# What the commands run with (asyncio, msgspec, the sweepers and through them redis-py) is imported when one
# runs: ``framework --help`` imports this module to list ``cleanup``.

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from framework import Services
    from framework_cleanup.sweepers import Sweeper, SweepReport

__all__ = ("cleanup", "format_bytes", "format_seconds")

_T = TypeVar("_T")


def format_bytes(size: int) -> str:
    """``1536`` -> ``1.5 KiB``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover - the loop returns


def format_seconds(seconds: float) -> str:
    """``90`` -> ``1m30s``, ``86400`` -> ``1d``."""
    rest = round(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts) or "0s"


def _with_services(ctx: CliContext, work: Callable[[Services], Awaitable[_T]]) -> _T:
    """Run ``work`` with the app's services (Redis, storage, plugin start-up); logs go to stderr."""
    import asyncio  # noqa: PLC0415

    from framework import start_services, stop_services  # noqa: PLC0415 - the web stack loads on use
    from framework.logging import configure_logging  # noqa: PLC0415

    configure_logging(ctx.settings.log_level, ctx.settings.log_format)

    async def main() -> _T:
        services = await start_services(ctx.settings, ctx.pm, "cli")
        try:
            return await work(services)
        finally:
            await stop_services(services)

    return asyncio.run(main())


@click.group(epilog=examples("framework cleanup ls", "framework cleanup run --dry-run"))
def cleanup() -> None:
    """Run and list cleanup sweepers (expired tokens, stale uploads, old outbox mail, ...)."""


def _choose(sweepers: list[Sweeper], name: str | None) -> list[Sweeper]:
    if name is None:
        return sweepers
    chosen = [s for s in sweepers if s.name == name]
    if not chosen:
        known = ", ".join(s.name for s in sweepers) or "none"
        raise click.BadParameter(f"no enabled sweeper {name!r} (enabled: {known})", param_hint="SWEEPER")
    return chosen


def _print_report(report: SweepReport) -> None:
    verb = "would remove" if report.dry_run else "removed"
    status = "FAILED" if report.failed else "ok"
    click.echo(
        f"{report.sweeper}: {status}, {verb} {report.removed} ({format_bytes(report.bytes)}), "
        f"{len(report.errors)} error(s) in {report.duration:.2f}s"
    )
    for item in report.items:
        click.echo(f"  {item}")
    if report.removed > len(report.items):
        click.echo(f"  ... and {report.removed - len(report.items)} more")
    for error in report.errors:
        click.echo(f"  error: {error}")


@cleanup.command(
    "run",
    epilog=examples(
        "framework cleanup run", "framework cleanup run tmp --dry-run", "framework cleanup run tokens --json"
    ),
)
@click.argument("sweeper", required=False)
@click.option("--dry-run", is_flag=True, help="Only show what would be removed.")
@click.option("--json", "as_json", is_flag=True, help="Print the reports as JSON.")
@pass_cli
def run_command(ctx: CliContext, sweeper: str | None, dry_run: bool, as_json: bool) -> None:
    """Run SWEEPER (default: every enabled sweeper) now, in this process."""
    import msgspec  # noqa: PLC0415

    from framework_cleanup.config import load_config  # noqa: PLC0415
    from framework_cleanup.registry import collect_sweepers  # noqa: PLC0415
    from framework_cleanup.sweepers import run_sweepers  # noqa: PLC0415

    chosen = _choose(collect_sweepers(ctx.pm, ctx.settings), sweeper)
    claim_ttl = load_config(ctx.settings).claim_seconds

    async def work(services: Services) -> list[SweepReport]:
        return await run_sweepers(services, chosen, dry_run=dry_run, claim_ttl=claim_ttl)

    reports = _with_services(ctx, work)
    if as_json:
        click.echo(json.dumps(msgspec.to_builtins(reports), indent=2))
    else:
        for report in reports:
            _print_report(report)
    if any(r.failed for r in reports):
        raise click.exceptions.Exit(1)


def _last_run(report: SweepReport | None, now: float) -> str:
    if report is None:
        return "never"
    ago = format_seconds(max(0.0, now - report.time))
    text = f"{ago} ago: removed {report.removed} ({format_bytes(report.bytes)}), {len(report.errors)} error(s)"
    if report.dry_run:
        text += " [dry run]"
    if report.failed:
        text += " FAILED"
    return text


@cleanup.command("ls", epilog=examples("framework cleanup ls", "framework cleanup ls --json"))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_cli
def ls_command(ctx: CliContext, as_json: bool) -> None:
    """List every sweeper: schedule, grace period, source plugin and last result."""
    import msgspec  # noqa: PLC0415

    from framework_cleanup.config import load_config  # noqa: PLC0415
    from framework_cleanup.registry import collect_sweepers  # noqa: PLC0415
    from framework_cleanup.sweepers import last_results  # noqa: PLC0415

    sweepers = collect_sweepers(ctx.pm, ctx.settings, include_disabled=True)
    disabled = set(load_config(ctx.settings).disabled)

    async def work(services: Services) -> dict[str, SweepReport]:
        return await last_results(services.redis, services.schema)

    results = _with_services(ctx, work)
    rows: list[dict[str, Any]] = [
        {
            "name": s.name,
            "schedule": "disabled" if s.name in disabled else s.schedule,
            "grace": s.grace,
            "source": s.source,
            "description": s.description,
            "last": msgspec.to_builtins(results[s.name]) if s.name in results else None,
        }
        for s in sweepers
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    now = time.time()
    width = max([len(s.name) for s in sweepers] + [4])
    click.echo(f"{'NAME':<{width}}  {'SCHEDULE':<12}  {'GRACE':<6}  {'SOURCE':<10}  LAST RUN")
    for s, row in zip(sweepers, rows, strict=True):
        click.echo(
            f"{s.name:<{width}}  {row['schedule']!s:<12}  {format_seconds(s.grace):<6}  {s.source:<10}  "
            f"{_last_run(results.get(s.name), now)}"
        )
