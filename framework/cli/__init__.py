"""The ``framework`` command line: the root group, shared context, and plugin-contributed commands.

The built-in commands load on demand (:class:`~framework.cli._lazy.LazyGroup`): ``run`` (run, web, worker,
scheduler), ``tasks`` (inspect and steer the queues), ``workflows`` (list, show, cancel, retry), ``cron``,
``generate`` (new, generate task, generate plugin), ``plugins`` and ``doctor``; ``--help`` lists them without
importing any. ``jobs`` and ``generate job``, their old names, still work and are not listed. Plugins add
commands through the ``register_commands`` hook, called only when the command line may need one (``--help``,
or a command that is not built in).
:func:`examples` gives a command's help the examples every command ends with.
"""

from __future__ import annotations

import gc
import os
import sys
from functools import cached_property
from typing import TYPE_CHECKING, Any

import click

from framework.cli._lazy import Lazy, LazyGroup
from framework.errors import FrameworkError, RedisUnavailable

if TYPE_CHECKING:
    import pluggy

    from framework.settings import Settings

__all__ = (
    "ALIASES",
    "BUILTIN_COMMANDS",
    "CliContext",
    "StartupError",
    "cli",
    "examples",
    "main",
    "pass_cli",
    "startup_over",
)

BUILTIN_COMMANDS: dict[str, Lazy] = {
    "run": Lazy(
        "framework.cli.run",
        "run",
        "Serve the app with a worker and the scheduler in the same process (development default).",
    ),
    "web": Lazy("framework.cli.run", "web", "Serve the web app only."),
    "worker": Lazy(
        "framework.cli.run", "worker", "Run worker processes until SIGTERM/SIGINT (a second signal exits at once)."
    ),
    "scheduler": Lazy(
        "framework.cli.run", "scheduler", "Run the cron scheduler alone (safe to run in any number of replicas)."
    ),
    "tasks": Lazy("framework.cli.tasks", "tasks", "Inspect and steer the task queues."),
    "workflows": Lazy("framework.cli.workflows", "workflows", "Inspect, cancel and retry workflows."),
    "cron": Lazy("framework.cli.cron", "cron", "Cron entries (from settings and plugins)."),
    "new": Lazy(
        "framework.cli.generate",
        "new",
        "Create the project APP: package, settings, an example task and route, and tests that pass.",
    ),
    "generate": Lazy("framework.cli.generate", "generate", "Add a task to an app, or start a plugin distribution."),
    "plugins": Lazy(
        "framework.cli.plugins",
        "plugins",
        "List every loaded plugin: distribution, version, hooks and what it contributes.",
    ),
    "doctor": Lazy(
        "framework.cli.doctor", "doctor", "Check settings, Redis, plugins and queued task types; say what to fix."
    ),
}
"""The built-in commands: where each is defined, and the summary ``framework --help`` lists it by."""
ALIASES = {"jobs": "tasks"}
"""Old names of built-in commands, kept so that scripts written for them still work; never listed."""
_ROOT_FLAGS = ("--debug",)
_ROOT_VALUED = ("--config",)
"""The root group's options; :func:`main` accepts them anywhere on the command line."""
_REDIS_FIX = (
    "start Redis at that address, or point REDIS_URL (setting redis_url) at one that runs; "
    "leave both unset to use the embedded Valkey"
)


class StartupError(FrameworkError):
    """A command cannot start; the message says what is wrong and ``fix`` what to do about it."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.fix = fix


class CliContext:
    """Lazily loaded settings and plugin manager shared by every command.

    Args:
        config: the ``--config`` TOML file, if given.
        debug: ``--debug`` (or ``FRAMEWORK_DEBUG``): show full tracebacks of start-up faults.
    """

    def __init__(self, config: str | None = None, *, debug: bool = False) -> None:
        self.config = config
        self.debug = debug

    @cached_property
    def settings(self) -> Settings:
        """The app's settings (TOML file and environment)."""
        from framework.settings import load_settings  # noqa: PLC0415

        return load_settings(self.config)

    @cached_property
    def pm(self) -> pluggy.PluginManager:
        """The plugin manager, with the app's own plugin (``FRAMEWORK_APP``) registered last."""
        from framework.plugins.manager import get_app_plugin_manager  # noqa: PLC0415

        return get_app_plugin_manager(self.settings)


pass_cli = click.make_pass_decorator(CliContext, ensure=True)


def examples(*commands: str) -> str:
    """A command's help epilog listing example invocations, kept line by line (click's no-rewrap marker).

    Every command's ``--help`` ends with at least one: ``@click.command(epilog=examples("framework x --y"))``.
    """
    return "\b\nExamples:\n" + "\n".join(f"  {c}" for c in commands)


@click.group(
    cls=LazyGroup,
    lazy=BUILTIN_COMMANDS,
    aliases=ALIASES,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=examples("framework run", "framework tasks stats", "framework --config prod.toml doctor"),
)
@click.option("--config", type=click.Path(dir_okay=False), default=None, help="Settings TOML file.")
@click.option(
    "--debug",
    is_flag=True,
    envvar="FRAMEWORK_DEBUG",
    help="Show full tracebacks of errors (also FRAMEWORK_DEBUG=1).",
)
@click.version_option(package_name="framework")
@click.pass_context
def cli(ctx: click.Context, config: str | None, debug: bool) -> None:
    """framework: web app, background jobs, cron and a task dashboard.

    --config and --debug are accepted before or after the command.
    """
    ctx.obj = CliContext(config, debug=debug)


def _load_plugin_commands(ctx: CliContext) -> list[FrameworkError]:
    """Let each plugin add its commands; a broken plugin must not hide the built-in commands or the others'.

    Returns the errors that kept commands out, each naming its plugin: :func:`main` reports each once, after
    the command. A plugin whose ``register_commands`` raises keeps whatever it added before; a command whose
    name a built-in command or an earlier plugin's command has is refused.
    """
    try:
        pm = ctx.pm
    except FrameworkError as exc:
        return [exc]
    from framework.plugins.calls import PLUGIN_FAILURES, plugin_callers, plugin_failed  # noqa: PLC0415 - with the pm only

    errors: list[FrameworkError] = []
    for plugin, call in plugin_callers(pm, "register_commands"):
        try:
            with cli.adding_for(plugin):
                call(cli=cli)
        except FrameworkError as exc:
            errors.append(exc)
        except PLUGIN_FAILURES as exc:  # reported as one line naming the plugin
            errors.append(plugin_failed(plugin, "register_commands", exc))
    return errors


def _configure_logging(ctx: CliContext) -> None:
    """Send every command's log lines to stderr, at the app's ``log_level`` and ``log_format``.

    Done before any command runs, so nothing (the embedded Valkey starting, a plugin loading) logs
    through structlog's unconfigured default, which prints to stdout: stdout carries only what the
    command itself prints, and the output of ``--json`` is JSON alone. Settings that do not load leave
    the defaults; the command reports the error itself.
    """
    from framework.logging import configure_logging  # noqa: PLC0415

    try:
        settings = ctx.settings
    except FrameworkError:
        configure_logging()
    else:
        configure_logging(settings.log_level, settings.log_format)


_HELP_FLAGS = frozenset({"-h", "--help"})
_HELP_WORDS = _HELP_FLAGS | {"--version"}


def _root_options(argv: list[str]) -> tuple[str | None, str | None]:
    """(the ``--config`` file, the sub-command) that ``argv`` names, before click parses it; None when absent."""
    config = command = None
    args = iter(argv)
    for arg in args:
        if arg == "--config" or arg.startswith("--config="):
            value = next(args, None) if arg == "--config" else arg.split("=", 1)[1]
            config = value if config is None else config
        elif command is None and not arg.startswith("-"):
            command = arg
    return config, command


def _hoist_root_options(argv: list[str]) -> list[str]:
    """``argv`` with the root options (``--config FILE``, ``--debug``) moved before the sub-command.

    So they are accepted anywhere: ``framework worker --config app.toml`` is ``framework --config app.toml
    worker``. Nothing after ``--`` moves.
    """
    root: list[str] = []
    rest: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg == "--":
            rest += [arg, *args]
        elif arg in _ROOT_FLAGS or arg.split("=", 1)[0] in _ROOT_VALUED:
            root.append(arg)
            value = next(args, None) if arg in _ROOT_VALUED else None
            if value is not None:
                root.append(value)
        else:
            rest.append(arg)
    return root + rest


def _words(argv: list[str]) -> list[str]:
    """``argv`` up to ``--`` (what follows is a command's own arguments)."""
    return argv[: argv.index("--")] if "--" in argv else argv


def _only_help(argv: list[str], command: str | None) -> bool:
    """Whether the command line only asks for help or the version (nothing runs, so nothing logs)."""
    return command is None or any(w in _HELP_WORDS for w in _words(argv))


def _needs_plugin_commands(argv: list[str], command: str | None) -> bool:
    """Whether the command line may need a plugin's command: the root group's help, or a command not built in.

    A built-in command runs without the plugins' entry points being scanned for commands (the command
    itself may still load plugins, for their task types say), and ``--version`` needs none.
    """
    words = _words(argv)
    if command is None:
        return "--version" not in words
    before = words[: words.index(command)] if command in words else []
    return any(w in _HELP_FLAGS for w in before) or not cli.builtin(command)


def _debug(argv: list[str]) -> bool:
    """Whether ``--debug`` or ``FRAMEWORK_DEBUG`` asks for full tracebacks."""
    env = os.environ.get("FRAMEWORK_DEBUG", "").strip().lower()
    return "--debug" in argv or env in {"1", "true", "yes", "on"}


def _redis_fix(exc: RedisUnavailable) -> str | None:
    """What to do about Redis not answering; nothing more for the embedded server, whose errors say it."""
    from framework.embedded.errors import EmbeddedValkeyError  # noqa: PLC0415 - only on this error

    return None if isinstance(exc, EmbeddedValkeyError) else _REDIS_FIX


def _report(exc: FrameworkError, *, debug: bool) -> None:
    """Print ``exc`` as ``error: ...`` and, when known, ``fix: ...``; its traceback first with ``--debug``."""
    if debug:
        import traceback  # noqa: PLC0415

        traceback.print_exception(exc)
    click.echo(f"error: {exc}", err=True)
    fix = exc.fix if isinstance(exc, StartupError) else _redis_fix(exc) if isinstance(exc, RedisUnavailable) else None
    if fix:
        click.echo(f"fix: {fix}", err=True)


_COLLECTOR_OFF = frozenset({"worker"})
"""Commands that start with the cyclic garbage collector off, until :func:`startup_over` (help and the version,
which end as soon as they have printed, run without it).

A worker's start-up allocates hundreds of thousands of objects that live as long as the process (modules,
classes, functions) and next to no garbage, yet the collector walks them again and again: about a hundred
young passes and one full pass, 40-60 ms of a 300 ms start on a 2-CPU machine, for a few hundred objects
freed.
"""


def startup_over() -> None:
    """Turn the collector back on after a start-up that turned it off; else nothing.

    What the start-up built is frozen first (:func:`gc.freeze`): it stays for the life of the process, and the
    collector's full passes no longer walk it (the few cycles of garbage among it are kept too).
    """
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def main(argv: list[str] | None = None) -> Any:
    """Console-script entry point.

    A :class:`~framework.errors.FrameworkError` (settings, Redis, plugins, a busy port) is reported in one
    or two lines (:func:`_report`), with its traceback only under ``--debug``; the error that kept plugin
    commands out is reported once, after the command, unless the command failed of it.
    """
    args = _hoist_root_options(sys.argv[1:] if argv is None else argv)
    config, command = _root_options(args)
    collector_off = (command in _COLLECTOR_OFF or _only_help(args, command)) and gc.isenabled()
    if collector_off:
        gc.disable()  # on again once the command has started (startup_over), or when it ends
    try:
        return _main(args, config, command)
    finally:
        if collector_off:
            gc.enable()


def _main(args: list[str], config: str | None, command: str | None) -> Any:
    debug = _debug(args)
    ctx = CliContext(config, debug=debug)
    if not _only_help(args, command):  # help alone skips structlog's import (a fifth of the start-up)
        _configure_logging(ctx)
    plugin_errors = _load_plugin_commands(ctx) if _needs_plugin_commands(args, command) else []
    failure: FrameworkError | None = None
    try:
        return cli.main(args=args, prog_name="framework")
    except FrameworkError as exc:
        failure = exc
        _report(exc, debug=debug)
        sys.exit(1)
    finally:
        for error in plugin_errors:
            if str(error) != str(failure):
                click.echo(f"warning: plugin commands not loaded: {error}", err=True)
