"""``framework run`` (web + worker + scheduler in one process), ``web``, ``worker`` and ``scheduler``."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import math
import os
import signal
import socket
from typing import TYPE_CHECKING, Any

import click

from framework.cli import CliContext, StartupError, examples, pass_cli, startup_over
from framework.errors import ConfigError
from framework.loop import run as run_loop
from framework.settings import redact_url  # not framework.transport.connection: that loads redis

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import pluggy
    import uvicorn

    from framework.services import Services
    from framework.settings import Settings

__all__ = ("run", "scheduler", "web", "worker")

EXIT_NOW = 130
"""Exit status after a second SIGTERM/SIGINT: no graceful shutdown (the worker's ``EXIT_SECOND_SIGNAL``)."""
_QUIT_NOW = "press Ctrl-C again to quit now"


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


def _say(line: str) -> None:
    """Write ``line`` to stderr from a signal handler (an unbuffered write: never a re-entrant one)."""
    os.write(2, f"{line}\n".encode())


def _stopping_message(settings: Settings, worker: Any, idle: str = "stopping") -> str:
    """What a first SIGTERM/SIGINT waits for (``worker``'s running tasks, else ``idle``), and how to skip it."""
    if worker is None:
        return f"{idle}; {_QUIT_NOW}"
    running = len(worker.processor.inflight) if worker.processor is not None else 0
    tasks = f"{running} running task" + ("" if running == 1 else "s")
    return f"stopping: waiting up to {settings.shutdown_timeout:g} s for {tasks}; {_QUIT_NOW}"


def _bind(host: str, port: int, command: str) -> socket.socket:
    """A socket bound to ``host:port`` for the server, or a one-line error naming the port and ``--port``.

    Bound before anything starts (the worker, the scheduler, the embedded Valkey), and handed to the server
    as is: no other process can take the port in between.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(
                f"port {port} on {host} is already in use",
                f"stop what listens there, or choose another port: framework {command} --port {port + 1}",
            ) from exc
        raise StartupError(
            f"cannot listen on {host}:{port}: {reason}",
            f"choose another address or port: framework {command} --host 127.0.0.1 --port {port}",
        ) from exc
    sock.set_inheritable(True)
    return sock


@contextlib.contextmanager
def _embedded_valkey(settings: Settings) -> Iterator[None]:
    """Without a ``redis_url``: start (or find) the data directory's Valkey and keep it up while the command runs.

    Started here, before the app, so that this command owns it and stops it after the app has stopped; if
    its process dies meanwhile (a crash, or it was another command's, which stopped), it is started again
    on the same socket and the app's connections reconnect (:mod:`framework.embedded.keeper`).
    """
    if settings.redis_url:
        yield
        return
    from framework.embedded.keeper import kept  # noqa: PLC0415 - only without an external Redis

    with kept(settings.data_path / "valkey"):
        yield


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Make SIGTERM end the server as SIGINT does: a ``KeyboardInterrupt`` once its graceful shutdown is over.

    uvicorn re-raises the signal that stopped it; SIGTERM's default action would then end the process at
    once, skipping every ``finally`` and exit handler (the embedded Valkey's orderly stop among them) and
    reporting the graceful stop as status 143.
    """
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _server(config: uvicorn.Config, stopping: Callable[[], str]) -> uvicorn.Server:
    """A uvicorn server whose first SIGTERM/SIGINT says what it waits for and whose second exits at once.

    uvicorn's own second Ctrl-C still waits for the lifespan's shutdown (the worker's ``shutdown_timeout``).
    """
    import uvicorn  # noqa: PLC0415

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            if self.should_exit:
                _say("stopped at once (second signal)")
                os._exit(EXIT_NOW)
            _say(stopping())
            super().handle_exit(sig, frame)

    return Server(config)


def _serve(ctx: CliContext, host: str | None, port: int | None, *, worker: bool, scheduler: bool, label: str) -> None:
    """Serve the app; start-up faults (busy port, Redis, plugins) raise, to be reported in one or two lines."""
    settings = ctx.settings
    host = host or settings.host
    port = settings.port if port is None else port
    sock = _bind(host, port, label.partition(":")[0])
    try:
        with _sigterm_as_interrupt(), _embedded_valkey(settings):
            startup_error = _serve_app(ctx, sock, host, port, worker=worker, scheduler=scheduler, label=label)
    finally:
        sock.close()
    if startup_error is not None:  # raised here, not in the except clause: its own traceback and cause
        raise startup_error


def _serve_app(
    ctx: CliContext, sock: socket.socket, host: str, port: int, *, worker: bool, scheduler: bool, label: str
) -> BaseException | None:
    """Build the app and serve it on ``sock`` until it stops; returns the lifespan's start-up failure, if any."""
    import logging  # noqa: PLC0415

    import uvicorn  # noqa: PLC0415

    from framework.web.app import FrameworkPlugin, create_app  # noqa: PLC0415

    settings = ctx.settings
    app = create_app(settings, plugin_manager=ctx.pm, run_worker=worker, run_scheduler=scheduler)
    plugin = app.plugins.get(FrameworkPlugin)
    plugin.on_started = lambda: _banner(ctx, host, sock.getsockname()[1], label)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        lifespan="on",
        access_log=False,
        loop=settings.event_loop,
        # open requests (an event stream follows its task for up to ten minutes, a long poll for its wait) get
        # shutdown_timeout seconds, then are closed: browsers reconnect to another replica
        timeout_graceful_shutdown=max(1, math.ceil(settings.shutdown_timeout)),
    )
    server = _server(config, lambda: _stopping_message(settings, plugin.worker, "stopping: waiting for open requests"))
    # the lifespan's failure is reported by main() (its traceback with --debug), not logged by uvicorn as
    # Litestar's exception group
    uvicorn_log = logging.getLogger("uvicorn.error")

    def quiet(_record: logging.LogRecord) -> bool:
        return plugin.startup_error is None

    uvicorn_log.addFilter(quiet)
    try:
        server.run(sockets=[sock])
    except SystemExit:
        if plugin.startup_error is None:
            raise
    except KeyboardInterrupt:
        # uvicorn re-raises the signal (SIGINT, or SIGTERM, see _sigterm_as_interrupt) after its graceful shutdown
        click.echo("stopped", err=True)
    finally:
        uvicorn_log.removeFilter(quiet)
    error: BaseException | None = plugin.startup_error
    return error


@click.command(epilog=examples("framework run", "framework run --port 8080 --no-scheduler"))
@click.option("--host", default=None, help="Address to bind (default: settings host, 127.0.0.1).")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=None, help="Port to bind (default: settings port, 8000)."
)
@click.option("--no-worker", is_flag=True, help="Do not run a worker in this process.")
@click.option("--no-scheduler", is_flag=True, help="Do not run the cron scheduler in this process.")
@pass_cli
def run(ctx: CliContext, host: str | None, port: int | None, no_worker: bool, no_scheduler: bool) -> None:
    """Serve the app with a worker and the scheduler in the same process (development default)."""
    parts = ["web"] + (["worker"] if not no_worker else []) + (["scheduler"] if not no_scheduler else [])
    _serve(ctx, host, port, worker=not no_worker, scheduler=not no_scheduler, label="run: " + " + ".join(parts))


@click.command(epilog=examples("framework web", "framework web --host 0.0.0.0 --port 8000"))
@click.option("--host", default=None, help="Address to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="Port to bind.")
@pass_cli
def web(ctx: CliContext, host: str | None, port: int | None) -> None:
    """Serve the web app only."""
    _serve(ctx, host, port, worker=False, scheduler=False, label="web")


def _at_least_one(value: int | None, option: str) -> None:
    """Reject a count below 1 in one line naming ``option``, as the settings reject ``concurrency = 0``.

    0 is a value, not "unset": ``--concurrency 0`` is an error, never the settings' concurrency.
    """
    if value is not None and value < 1:
        raise ConfigError(f"option {option}={value!r} is invalid: must be an integer >= 1")


def _worker_settings(settings: Settings, concurrency: int | None, queues: tuple[str, ...]) -> Settings:
    changes: dict[str, object] = {}
    _at_least_one(concurrency, "--concurrency")
    if concurrency is not None:
        changes["concurrency"] = concurrency
    if queues:
        weights: dict[str, int] = {}
        for spec in queues:
            name, _, weight = spec.partition("=")
            try:
                weights[name] = int(weight) if weight else 1
            except ValueError:
                raise ConfigError(f"option --queue={spec!r} is invalid: the weight must be an integer >= 1") from None
            if weights[name] < 1:
                raise ConfigError(f"option --queue={spec!r} is invalid: the weight must be an integer >= 1")
        changes["queues"] = weights
    return settings.replace(**changes) if changes else settings


@click.command(
    epilog=examples(
        "framework worker",
        "framework worker -p 4 -c 20",
        "framework worker -q critical=6 -q default=3 -q low=1 --scheduler",
    )
)
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
    _at_least_one(processes, "--processes")
    settings = _worker_settings(ctx.settings, concurrency, queues)
    configure(settings)
    if processes > 1:
        from framework.worker.supervisor import supervise  # noqa: PLC0415

        startup_over()  # before the children fork: each runs with the collector on
        raise SystemExit(supervise(settings, processes, scheduler=scheduler))
    from framework.worker.worker import Worker  # noqa: PLC0415

    runner = Worker(settings, plugin_manager=ctx.pm)
    runner.owns_process = True  # a handler that holds the event loop for good ends this process
    parts: list[object] = [runner]
    if scheduler:
        from framework.scheduler.scheduler import Scheduler  # noqa: PLC0415

        parts.append(Scheduler(settings, plugin_manager=ctx.pm))
    with _embedded_valkey(settings):
        run_loop(_run_parts(parts, lambda: _stopping_message(settings, parts[0])), settings.event_loop)


class _PluginLifecycle:
    """The process's services and its plugins' ``startup``/``shutdown``, as the first part of :func:`_run_parts`.

    For a process whose other parts do not fire the hooks themselves (``framework scheduler``; a worker that
    builds its own services fires them in its start).
    """

    def __init__(self, settings: Settings, pm: pluggy.PluginManager | None, role: str) -> None:
        self.settings, self.pm, self.role = settings, pm, role
        self.services: Services | None = None

    async def start(self) -> None:
        from framework.plugins.lifecycle import start_services  # noqa: PLC0415

        self.services = await start_services(self.settings, self.pm, self.role)

    async def stop(self) -> None:
        from framework.plugins.lifecycle import stop_services  # noqa: PLC0415

        services, self.services = self.services, None
        if services is not None:
            await stop_services(services)


async def _run_parts(parts: list[object], stopping: Callable[[], str]) -> None:
    """Start every part, wait for SIGTERM/SIGINT, stop them in reverse order; a second signal exits at once.

    The first signal prints ``stopping()``: what the stop waits for, and that a second signal skips it.

    A worker left with handlers that ignore cancellation then ends the process
    (:meth:`~framework.worker.worker.Worker.exit_if_abandoned`).
    """
    import signal  # noqa: PLC0415

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            _say("stopped at once (second signal)")
            os._exit(EXIT_NOW)
        _say(stopping())
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):  # before the parts start: a signal meanwhile is a clean stop
        loop.add_signal_handler(sig, on_signal)
    started: list[object] = []
    try:
        for part in parts:
            await part.start()  # type: ignore[attr-defined]
            started.append(part)
        startup_over()
        await stop.wait()
    finally:
        for part in reversed(started):
            await part.stop()  # type: ignore[attr-defined]
    for part in parts:  # a worker whose handlers ignore cancellation ends the process (asyncio.run would wait)
        exit_if_abandoned = getattr(part, "exit_if_abandoned", None)
        if exit_if_abandoned is not None:
            exit_if_abandoned()


def configure(settings: Settings) -> None:
    """Set up logging for a command."""
    from framework.logging import configure_logging  # noqa: PLC0415

    configure_logging(settings.log_level, settings.log_format)


@click.command(epilog=examples("framework scheduler", "framework --config prod.toml scheduler"))
@pass_cli
def scheduler(ctx: CliContext) -> None:
    """Run the cron scheduler alone (safe to run in any number of replicas)."""
    from framework.scheduler.scheduler import Scheduler  # noqa: PLC0415

    configure(ctx.settings)
    parts: list[object] = [
        _PluginLifecycle(ctx.settings, ctx.pm, "scheduler"),
        Scheduler(ctx.settings, plugin_manager=ctx.pm),
    ]
    stopping = _stopping_message(ctx.settings, None, "stopping the scheduler")
    with _embedded_valkey(ctx.settings):
        run_loop(_run_parts(parts, lambda: stopping), ctx.settings.event_loop)
