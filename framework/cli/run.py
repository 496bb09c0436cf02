"""``framework run`` (web + worker + scheduler in one process), ``web``, ``worker`` and ``scheduler``."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import click

from framework.cli import CliContext, cli, pass_cli
from framework.connection import redact_url
from framework.loop import run as run_loop

if TYPE_CHECKING:
    from framework.settings import Settings

__all__ = ("run", "scheduler", "web", "worker")


def _banner(ctx: CliContext, host: str, port: int, parts: str) -> None:
    settings = ctx.settings
    base = f"http://{host}:{port}"
    names = {name for name, _ in ctx.pm.list_name_plugin()}
    redis = (
        redact_url(settings.redis_url) if settings.redis_url else f"embedded Valkey in {settings.data_path / 'valkey'}"
    )
    lines = [
        f"framework {parts}",
        f"  App:        {base}/",
    ]
    if "admin" in names:
        lines.append(f"  Dashboard:  {base}/admin")
    lines += [f"  Data:       {settings.data_path}", f"  Redis:      {redis}", "  Stop with Ctrl-C."]
    click.echo("\n".join(lines), err=True)


def _serve(ctx: CliContext, host: str | None, port: int | None, *, worker: bool, scheduler: bool, label: str) -> None:
    import uvicorn  # noqa: PLC0415

    from framework.app import create_app  # noqa: PLC0415

    settings = ctx.settings
    host = host or settings.host
    port = port or settings.port
    app = create_app(settings, plugin_manager=ctx.pm, run_worker=worker, run_scheduler=scheduler)
    _banner(ctx, host, port, label)
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", lifespan="on", access_log=False, loop=settings.event_loop
    )
    try:
        uvicorn.Server(config).run()
    except KeyboardInterrupt:
        # uvicorn re-raises the signal after its graceful shutdown has finished
        click.echo("stopped", err=True)


@cli.command()
@click.option("--host", default=None, help="Address to bind (default: settings host, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port to bind (default: settings port, 8000).")
@click.option("--no-worker", is_flag=True, help="Do not run a worker in this process.")
@click.option("--no-scheduler", is_flag=True, help="Do not run the cron scheduler in this process.")
@pass_cli
def run(ctx: CliContext, host: str | None, port: int | None, no_worker: bool, no_scheduler: bool) -> None:
    """Serve the app with a worker and the scheduler in the same process (development default)."""
    parts = ["web"] + (["worker"] if not no_worker else []) + (["scheduler"] if not no_scheduler else [])
    _serve(ctx, host, port, worker=not no_worker, scheduler=not no_scheduler, label="run: " + " + ".join(parts))


@cli.command()
@click.option("--host", default=None, help="Address to bind.")
@click.option("--port", type=int, default=None, help="Port to bind.")
@pass_cli
def web(ctx: CliContext, host: str | None, port: int | None) -> None:
    """Serve the web app only."""
    _serve(ctx, host, port, worker=False, scheduler=False, label="web")


def _worker_settings(settings: Settings, concurrency: int | None, queues: tuple[str, ...]) -> Settings:
    changes: dict[str, object] = {}
    if concurrency:
        changes["concurrency"] = concurrency
    if queues:
        weights: dict[str, int] = {}
        for spec in queues:
            name, _, weight = spec.partition("=")
            weights[name] = int(weight) if weight else 1
        changes["queues"] = weights
    return settings.replace(**changes) if changes else settings


@cli.command()
@click.option("--processes", "-p", type=int, default=1, show_default=True, help="Worker processes to run.")
@click.option("--concurrency", "-c", type=int, default=None, help="Handlers at once per process.")
@click.option("--queue", "-q", "queues", multiple=True, help="Queue to serve, as NAME or NAME=WEIGHT (repeatable).")
@click.option(
    "--scheduler/--no-scheduler",
    default=False,
    show_default=True,
    help="Also run the cron scheduler in this process (safe in every replica: each tick fires once).",
)
@pass_cli
def worker(ctx: CliContext, processes: int, concurrency: int | None, queues: tuple[str, ...], scheduler: bool) -> None:
    """Run worker processes until SIGTERM/SIGINT (a second signal exits at once)."""
    settings = _worker_settings(ctx.settings, concurrency, queues)
    if processes < 1:
        raise click.BadParameter("must be at least 1", param_hint="--processes")
    configure(settings)
    if processes > 1:
        from framework.supervisor import supervise  # noqa: PLC0415

        raise SystemExit(supervise(settings, processes, scheduler=scheduler))
    from framework.worker import Worker  # noqa: PLC0415

    parts: list[object] = [Worker(settings, plugin_manager=ctx.pm)]
    if scheduler:
        from framework.scheduler import Scheduler  # noqa: PLC0415

        parts.append(Scheduler(settings, plugin_manager=ctx.pm))
    run_loop(_run_parts(parts), settings.event_loop)


async def _run_parts(parts: list[object]) -> None:
    """Start every part, wait for SIGTERM/SIGINT, stop them in reverse order; a second signal exits at once.

    A worker left with handlers that ignore cancellation then ends the process
    (:meth:`~framework.worker.Worker.exit_if_abandoned`).
    """
    import os  # noqa: PLC0415
    import signal  # noqa: PLC0415

    for part in parts:
        await part.start()  # type: ignore[attr-defined]
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            os._exit(130)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    try:
        await stop.wait()
    finally:
        for part in reversed(parts):
            await part.stop()  # type: ignore[attr-defined]
    for part in parts:  # a worker whose handlers ignore cancellation ends the process (asyncio.run would wait)
        exit_if_abandoned = getattr(part, "exit_if_abandoned", None)
        if exit_if_abandoned is not None:
            exit_if_abandoned()


def configure(settings: Settings) -> None:
    """Set up logging for a command."""
    from framework.logging import configure_logging  # noqa: PLC0415

    configure_logging(settings.log_level, settings.log_format)


@cli.command()
@pass_cli
def scheduler(ctx: CliContext) -> None:
    """Run the cron scheduler alone (safe to run in any number of replicas)."""
    from framework.scheduler import Scheduler  # noqa: PLC0415

    configure(ctx.settings)
    run_loop(_run_parts([Scheduler(ctx.settings, plugin_manager=ctx.pm)]), ctx.settings.event_loop)
