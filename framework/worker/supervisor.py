"""Multi-process mode: one supervisor runs N worker processes, restarts a crashed one and stops them together.

:func:`run_worker` is what ``framework worker --processes N`` calls: one process runs the worker in
place; more start :func:`supervise`. Each child builds its worker with a *factory* (default: the app's
plugins, as the ``worker`` command does) from the supervisor's settings (command-line overrides included)
and runs :meth:`Worker.run <framework.worker.worker.Worker.run>`.

* **Start.** The supervisor imports the framework, the app, its plugins and the event loop once, then
  forks each child from that state: a child is ready in tens of milliseconds instead of the half second
  a fresh interpreter spends importing, which is most of a short run (and of a restart after a crash).
  The supervisor runs no thread and no event loop, so the fork copies nothing half-done; each child makes
  its own loop and connections. ``FRAMEWORK_PROCESS_START=spawn`` (and platforms without ``fork``)
  start each child as a fresh interpreter instead (``python -m framework.worker.supervisor --child``, settings
  passed as JSON): for an app whose import starts threads, which a fork would not carry over.

* **Crashes.** A child that exits while the supervisor is not stopping (killed, out of memory, a
  handler that called ``os._exit``) is logged and started again after a back-off that grows from 1 s
  to 30 s while it keeps dying within 10 s of starting. Its tasks are recovered by the other workers
  (see :mod:`framework.worker.background.recoverer`). After 20 quick deaths in a row of the same child
  slot the supervisor gives up, stops the rest and exits with status 1.
* **Signals.** Each child runs in its own process group, so a Ctrl-C in the terminal reaches only the
  supervisor. The first SIGTERM/SIGINT is passed to every child as SIGTERM (each shuts down gracefully:
  requeue after ``shutdown_timeout``), including a child started while the signal arrived (during
  start-up, or a restart), and no child starts after it; a second one SIGKILLs them all and exits at
  once (status 130).
  A child that outlives ``shutdown_timeout + cancel_grace + 15`` s is killed (a child ends within
  ``shutdown_timeout + cancel_grace`` and a few seconds, even with handlers that ignore cancellation).
* **Scheduler.** With ``scheduler=True`` the first child also runs the cron scheduler (any number of
  schedulers fire each tick once, so one per supervisor is enough; it restarts with its child).
* **Supervisor death.** Children ask the kernel (Linux ``PR_SET_PDEATHSIG``) for a SIGTERM when the
  supervisor dies, so a SIGKILLed supervisor does not leave orphaned workers behind.
* **Embedded Valkey.** Without a ``redis_url`` the supervisor starts (or finds) the data directory's
  Valkey before the children and stops it after the last child has exited: a child's crash or restart
  does not take its siblings' Redis away, and at shutdown every child can still write its outcomes and
  requeue its tasks. If the server's process dies, the supervisor starts it again on the same socket
  (:class:`~framework.embedded.keeper.ValkeyKeeper`); the children reconnect.

Run it directly with ``python -m framework.worker.supervisor --processes N [--factory module:function]``
(settings from ``framework.toml`` and the environment).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib
import os
import signal
import subprocess
import sys
import time
import traceback
from typing import TYPE_CHECKING, Protocol

import msgspec

from framework.logging import configure_logging, flush_streams, get_logger
from framework.loop import loop_factory
from framework.loop import run as run_loop
from framework.settings import Settings, load_settings

if TYPE_CHECKING:
    from collections.abc import Callable

    import pluggy

    from framework.embedded.keeper import ValkeyKeeper
    from framework.embedded.server import EmbeddedValkey
    from framework.worker.worker import Worker

__all__ = ("default_factory", "main", "run_worker", "supervise")

_SETTINGS_ENV = "FRAMEWORK_SUPERVISOR_SETTINGS"
_PARENT_ENV = "FRAMEWORK_SUPERVISOR_PID"
_START_ENV = "FRAMEWORK_PROCESS_START"
_DEFAULT_FACTORY = "framework.worker.supervisor:default_factory"
_QUICK_DEATH = 10.0
_GIVE_UP_AFTER = 20
_POLL = 0.1
_EXIT_SECOND_SIGNAL = 130


def default_factory(settings: Settings) -> Worker:
    """The worker the ``worker`` command runs: task types, middleware and aggregators from the app's plugins."""
    from framework.plugins.manager import app_plugins, get_plugin_manager  # noqa: PLC0415
    from framework.worker.worker import Worker  # noqa: PLC0415

    pm: pluggy.PluginManager = get_plugin_manager(settings, extra=app_plugins(settings))
    return Worker(settings, plugin_manager=pm)


def _load_factory(path: str) -> Callable[[Settings], Worker]:
    module, _, name = path.partition(":")
    if not module or not name:
        raise ValueError(f"a worker factory must be 'module:function', got {path!r}")
    factory: Callable[[Settings], Worker] = getattr(importlib.import_module(module), name)
    return factory


def run_worker(settings: Settings, processes: int = 1, *, factory: str | None = None, scheduler: bool = False) -> int:
    """Run workers until SIGTERM/SIGINT; returns the exit status.

    Args:
        settings: the settings (already including command-line overrides).
        processes: worker processes; 1 runs the worker in this process, more start a supervisor.
        factory: ``module:function`` building a worker from settings (default :func:`default_factory`).
        scheduler: also run the cron scheduler (in this process, or in the first child).
    """
    if processes < 1:
        raise ValueError(f"processes={processes} must be at least 1")
    if processes > 1:
        return supervise(settings, processes, factory=factory, scheduler=scheduler)
    configure_logging(settings.log_level, settings.log_format)
    run_loop(_run_one(_load_factory(factory or _DEFAULT_FACTORY)(settings), scheduler=scheduler), settings.event_loop)
    return 0


async def _run_one(worker: Worker, *, scheduler: bool) -> None:
    """Run ``worker`` (it handles the signals) and, if asked, a scheduler beside it until the worker stops.

    Handlers given up on at shutdown (they ignore cancellation) end the process once everything stopped
    (:meth:`~framework.worker.worker.Worker.exit_if_abandoned`); ``asyncio.run`` would wait for them forever.
    """
    if not scheduler:
        await worker.run()
        return
    from framework.scheduler.scheduler import Scheduler  # noqa: PLC0415

    cron = Scheduler(worker.settings, plugin_manager=worker.pm, registry=worker.registry)
    await cron.start()
    try:
        await worker.run(hard_exit=False)
    finally:
        await cron.stop()
    worker.exit_if_abandoned()  # after the scheduler withdrew its records


def start_method() -> str:
    """How children start: ``fork`` (default, where the platform has it) or ``spawn`` (``$FRAMEWORK_PROCESS_START``)."""
    choice = os.environ.get(_START_ENV, "").strip().lower() or "fork"
    if choice not in ("fork", "spawn"):
        raise ValueError(f"{_START_ENV}={choice!r}: use 'fork' or 'spawn'")
    return choice if hasattr(os, "fork") else "spawn"


class _Process(Protocol):
    """What the supervisor needs of a child process (``subprocess.Popen`` has it; so has :class:`_Forked`)."""

    pid: int
    returncode: int | None

    def poll(self) -> int | None: ...
    def wait(self) -> int: ...
    def send_signal(self, sig: int) -> None: ...


class _Forked:
    """A child made by ``os.fork``, waited for with ``waitpid``."""

    __slots__ = ("pid", "returncode")

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def _reaped(self, flags: int) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, flags)
            except ChildProcessError:  # reaped elsewhere: its status is lost
                self.returncode = 1
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def poll(self) -> int | None:
        return self._reaped(os.WNOHANG)

    def wait(self) -> int:
        code = self._reaped(0)
        assert code is not None
        return code

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)


class _Child:
    """One worker slot: its current process and its crash history."""

    __slots__ = ("index", "proc", "quick_deaths", "restart_at", "started")

    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: _Process | None = None
        self.started = 0.0
        self.quick_deaths = 0
        self.restart_at = 0.0


class _Supervisor:
    def __init__(self, settings: Settings, processes: int, factory: str, *, scheduler: bool) -> None:
        self.settings = settings
        self.factory = factory
        self.scheduler = scheduler
        self.start = start_method()
        self.children = [_Child(i) for i in range(processes)]
        self.log = get_logger("framework.worker.supervisor")
        self.signals = 0
        self.failed = False
        self.valkey: EmbeddedValkey | None = None
        self.keeper: ValkeyKeeper | None = None

    def _spawn(self, child: _Child) -> None:
        scheduler = self.scheduler and child.index == 0
        child.proc = self._fork(scheduler) if self.start == "fork" else self._exec(scheduler)
        child.started = time.monotonic()
        self.log.info("worker_process_started", slot=child.index, pid=child.proc.pid, start=self.start)

    def _exec(self, scheduler: bool) -> _Process:
        env = dict(os.environ)
        env[_SETTINGS_ENV] = msgspec.json.encode(self.settings).decode()
        env[_PARENT_ENV] = str(os.getpid())
        cmd = [sys.executable, "-m", "framework.worker.supervisor", "--child", "--factory", self.factory]
        if scheduler:
            cmd.append("--scheduler")
        return subprocess.Popen(cmd, env=env, process_group=0)

    def _fork(self, scheduler: bool) -> _Process:
        """Fork a child that runs one worker and exits; it never returns here."""
        parent = os.getpid()
        flush_streams()  # nothing buffered is written twice
        blocked = {signal.SIGTERM, signal.SIGINT}
        signal.pthread_sigmask(signal.SIG_BLOCK, blocked)  # no signal reaches the child with our handlers
        try:
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the child (its effects are what the tests check)
                _forked_child(self.settings, self.factory, parent, blocked, scheduler=scheduler)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)
        with contextlib.suppress(OSError):  # also set by the child; whichever runs first wins the race
            os.setpgid(pid, pid)
        return _Forked(pid)

    def _on_signal(self, signum: int, _frame: object) -> None:
        """First signal: only noted (the main loop passes it on); second: kill everything and exit at once.

        The children get their SIGTERM from the main loop, not from here: a handler running between a
        fork and the recording of its child would miss that child, which would then run until the
        drain's deadline.
        """
        self.signals += 1
        if self.signals == 1:
            self.log.info("supervisor_stopping", signal=signal.Signals(signum).name, processes=len(self.children))
            running = sum(1 for c in self.children if c.proc is not None and c.proc.poll() is None)
            os.write(  # unbuffered: a signal handler must not re-enter a buffered stderr write
                2,
                f"stopping: waiting up to {self.settings.shutdown_timeout:g} s for {running} worker "
                f"process{'' if running == 1 else 'es'} to finish their running tasks; "
                "press Ctrl-C again to quit now\n".encode(),
            )
        else:
            self.log.warning("supervisor_exit_now", signal=signal.Signals(signum).name)
            self._send(signal.SIGKILL)
            os._exit(_EXIT_SECOND_SIGNAL)

    def _send(self, sig: signal.Signals) -> None:
        for child in self.children:
            if child.proc is not None and child.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(sig)

    def _reap(self, child: _Child, now: float) -> None:
        """A child exited while we are not stopping: schedule its restart."""
        if child.proc is None:
            return
        code = child.proc.returncode
        lived = now - child.started
        child.quick_deaths = child.quick_deaths + 1 if lived < _QUICK_DEATH else 0
        delay = min(30.0, 2.0 ** max(0, child.quick_deaths - 1)) if child.quick_deaths else 0.5
        self.log.error("worker_process_died", slot=child.index, pid=child.proc.pid, status=code, restart_in=delay)
        child.proc = None
        child.restart_at = now + delay
        if child.quick_deaths >= _GIVE_UP_AFTER:
            self.log.error("worker_process_crash_loop", slot=child.index, deaths=child.quick_deaths, note="giving up")
            self.failed = True

    def _tick(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.proc is not None and child.proc.poll() is not None:
                self._reap(child, now)
            if child.proc is None and not self.signals and not self.failed and now >= child.restart_at:
                self._spawn(child)

    def _drain(self) -> None:
        """Wait for every child to exit after SIGTERM; kill the ones that take too long."""
        deadline = time.monotonic() + self.settings.shutdown_timeout + self.settings.cancel_grace + 15.0
        while any(c.proc is not None and c.proc.poll() is None for c in self.children):
            if time.monotonic() > deadline:
                self.log.error("worker_process_kill", note="did not stop in time")
                self._send(signal.SIGKILL)
                break
            self._keep_valkey()  # the children finishing their tasks still need it
            time.sleep(_POLL)
        for child in self.children:
            if child.proc is not None:
                child.proc.wait()

    def _start_valkey(self) -> None:
        """Without a ``redis_url``: start (or find) the embedded Valkey, before the children and to outlive them."""
        if self.settings.redis_url:
            return
        from framework.embedded.keeper import ValkeyKeeper  # noqa: PLC0415 - only without an external Redis
        from framework.embedded.server import EmbeddedValkey  # noqa: PLC0415

        self.valkey = EmbeddedValkey(self.settings.data_path / "valkey")
        self.valkey.ensure()
        self.keeper = ValkeyKeeper(self.valkey)

    def _keep_valkey(self) -> None:
        if self.keeper is not None:
            self.keeper.check()

    def run(self) -> int:
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self._start_valkey()
            for child in self.children:
                if self.signals:
                    break
                self._spawn(child)
            while not self.signals and not self.failed:
                self._tick()
                self._keep_valkey()
                time.sleep(_POLL)
            self._send(signal.SIGTERM)  # every child started so far, also one started as the signal came
            self._drain()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if self.valkey is not None:
                self.valkey.stop()  # after the children: they wrote their outcomes and requeued their tasks
        self.log.info("supervisor_stopped")
        return 1 if self.failed else 0


def supervise(settings: Settings, processes: int, *, factory: str | None = None, scheduler: bool = False) -> int:
    """Run ``processes`` worker processes until SIGTERM/SIGINT; returns the exit status (see the module doc).

    Args:
        settings: the settings every child runs with.
        processes: how many worker processes.
        factory: ``module:function`` building a worker from settings (default :func:`default_factory`).
        scheduler: the first child also runs the cron scheduler.
    """
    configure_logging(settings.log_level, settings.log_format)
    factory = factory or _DEFAULT_FACTORY
    build = _load_factory(factory)  # fail here, once, rather than in every child
    if scheduler:
        _check_cron(build(settings))
    supervisor = _Supervisor(settings, processes, factory, scheduler=scheduler)
    if supervisor.start == "fork":
        _preload(settings, factory, scheduler=scheduler)
    return supervisor.run()


def _check_cron(worker: Worker) -> None:
    """Load and check the cron entries as the first child's scheduler will, before any child starts.

    A bad entry (a spec that does not parse, an unknown task type, a name used twice) raises its
    ``ConfigError`` here, once, and the command ends; in the child it would kill that child at every restart
    while the others serve, a crash loop instead of an error.
    """
    from framework.scheduler.loader import load_entries  # noqa: PLC0415

    load_entries(worker.settings, worker.pm, worker.registry)


def _preload(settings: Settings, factory: str, *, scheduler: bool) -> None:
    """Import what every forked child needs, once: the worker, the app and its plugins, the event loop."""
    import framework.worker.worker  # noqa: PLC0415

    if scheduler:
        import framework.scheduler.scheduler  # noqa: F401, PLC0415
    if factory == _DEFAULT_FACTORY:  # a plugin that fails to import fails here, once, rather than in every child
        from framework.plugins.manager import get_app_plugin_manager  # noqa: PLC0415

        get_app_plugin_manager(settings)
    loop_factory(settings.event_loop)
    import gc  # noqa: PLC0415

    gc.freeze()  # what was imported stays shared with the children: no collection touches (copies) it


def _forked_child(
    settings: Settings, factory: str, parent: int, blocked: set[signal.Signals], *, scheduler: bool
) -> None:  # pragma: no cover - runs in the child
    """The body of a forked child: its own process group and signals, one worker, then ``os._exit``."""
    code = 1
    try:
        with contextlib.suppress(OSError):
            os.setpgid(0, 0)  # a Ctrl-C in the terminal reaches only the supervisor
        for sig in blocked:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)
        _die_with_parent(parent)
        code = _run_child(settings, factory, scheduler=scheduler)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - reported, then the child exits (the supervisor restarts it)
        traceback.print_exc()
    finally:
        flush_streams()
        os._exit(code)


def _die_with_parent(parent: int) -> None:
    """Ask for SIGTERM when the supervisor dies (Linux); exit if it is already gone."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    if parent and os.getppid() != parent:
        raise SystemExit(0)


def _child_main(factory: str, *, scheduler: bool) -> int:
    _die_with_parent(int(os.environ.get(_PARENT_ENV, "0") or 0))
    settings = msgspec.json.decode(os.environ[_SETTINGS_ENV].encode(), type=Settings)
    return _run_child(settings, factory, scheduler=scheduler)


def _run_child(settings: Settings, factory: str, *, scheduler: bool) -> int:
    configure_logging(settings.log_level, settings.log_format)
    run_loop(_run_one(_load_factory(factory)(settings), scheduler=scheduler), settings.event_loop)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m framework.worker.supervisor``: a supervisor (default) or, with ``--child``, one worker process."""
    parser = argparse.ArgumentParser(prog="python -m framework.worker.supervisor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", "-p", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--factory", default=_DEFAULT_FACTORY, help="module:function building a Worker from settings")
    parser.add_argument("--scheduler", action="store_true", help="also run the cron scheduler (in the first child)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child_main(args.factory, scheduler=args.scheduler)
    return run_worker(load_settings(), args.processes, factory=args.factory, scheduler=args.scheduler)


if __name__ == "__main__":
    sys.exit(main())
