"""The ``framework`` command line: the root group, shared context, and plugin-contributed commands.

Each sub-module adds its commands: ``run`` (run, web, worker, scheduler), ``jobs`` (inspect and steer
queues), ``cron``, ``generate`` (new, generate job, generate plugin), ``plugins`` and ``doctor``.
Plugins add theirs through the ``register_commands`` hook.
"""

from __future__ import annotations

import importlib
import sys
from functools import cached_property
from typing import TYPE_CHECKING, Any

import click

from framework.errors import FrameworkError

if TYPE_CHECKING:
    import pluggy

    from framework.settings import Settings

__all__ = ("CliContext", "cli", "main", "pass_cli")

_SUBMODULES = ("run", "jobs", "cron", "generate", "plugins", "doctor")
_PROCESS_COMMANDS = {"run": "run", "web": "run", "worker": "run", "scheduler": "run"}
"""The long-running commands and their module: starting one loads no other built-in command."""


class CliContext:
    """Lazily loaded settings and plugin manager shared by every command.

    Args:
        config: the ``--config`` TOML file, if given.
    """

    def __init__(self, config: str | None = None) -> None:
        self.config = config

    @cached_property
    def settings(self) -> Settings:
        """The app's settings (TOML file and environment)."""
        from framework.settings import load_settings  # noqa: PLC0415

        return load_settings(self.config)

    @cached_property
    def pm(self) -> pluggy.PluginManager:
        """The plugin manager, with the app's own plugin (``FRAMEWORK_APP``) registered last."""
        from framework.plugins import get_app_plugin_manager  # noqa: PLC0415

        return get_app_plugin_manager(self.settings)


pass_cli = click.make_pass_decorator(CliContext, ensure=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", type=click.Path(dir_okay=False), default=None, help="Settings TOML file.")
@click.version_option(package_name="framework")
@click.pass_context
def cli(ctx: click.Context, config: str | None) -> None:
    """framework: web app, background jobs, cron and a jobs dashboard."""
    ctx.obj = CliContext(config)


def _load_commands(command: str | None) -> None:
    """Import the built-in command modules: all of them, or only that of a process command being started.

    A worker (or web, scheduler) process then imports no dashboard, scaffold or inspector code, about
    0.1 s of its start-up; ``--help`` and every other command see them all.
    """
    wanted = (_PROCESS_COMMANDS[command],) if command in _PROCESS_COMMANDS else _SUBMODULES
    for name in wanted:
        try:
            importlib.import_module(f"framework.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"framework.cli.{name}":
                raise


def _load_plugin_commands(ctx: CliContext) -> None:
    """Let plugins add commands; a broken plugin must not hide the built-in commands."""
    try:
        ctx.pm.hook.register_commands(cli=cli)
    except FrameworkError as exc:
        click.echo(f"warning: plugin commands not loaded: {exc}", err=True)


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


def main(argv: list[str] | None = None) -> Any:
    """Console-script entry point."""
    config, command = _root_options(sys.argv[1:] if argv is None else argv)
    ctx = CliContext(config)
    _configure_logging(ctx)
    _load_commands(command)
    _load_plugin_commands(ctx)
    try:
        return cli.main(args=argv, prog_name="framework")
    except FrameworkError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
