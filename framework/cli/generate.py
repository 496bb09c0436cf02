"""``framework new`` and ``framework generate task|plugin``: start a project, add a task, start a plugin.

The commands read the command line and the disk (which folder, which app); naming rules, rendering and
the refusal to overwrite live in :mod:`framework.cli.scaffold`. Names are checked and cron specs parsed
before anything is written. ``framework generate job``, the old name of ``generate task``, still works.
"""

from __future__ import annotations

import re
import shlex
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import click

from framework.cli import examples
from framework.cli._lazy import LazyGroup
from framework.cli.scaffold import (
    BUILTIN_PLUGINS,
    FileToWrite,
    Kind,
    Names,
    ScaffoldError,
    TaskSpec,
    apply,
    check_name,
    find_app,
    find_source,
    plan,
)

__all__ = ("generate", "generate_plugin", "generate_task", "new")

EXAMPLE_TASK = "greet"
PLUGIN_TASK = "hello"
_QUEUE = re.compile(r"[A-Za-z0-9_.-]{1,50}")
_DEFAULT_QUEUES = ("critical", "default", "low")
_INSTALL = ("python3 -m venv .venv", ".venv/bin/python -m pip install -r requirements.txt -e '.[dev]'")
"""How a generated project installs into its own venv (its README says the same)."""


def _framework_version() -> str:
    try:
        return version("framework")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0.1.0"


def _name(value: str, kind: Kind, param: str) -> str:
    try:
        return check_name(value, kind)
    except ScaffoldError as exc:
        raise click.BadParameter(str(exc), param_hint=param) from exc


def _require_empty(folder: Path) -> None:
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise click.ClickException(f"{folder} is not empty: choose a new folder")


def _write(files: list[FileToWrite]) -> None:
    try:
        written = apply(files)
    except ScaffoldError as exc:
        raise click.ClickException(str(exc)) from exc
    cwd = Path.cwd().resolve()
    for path in written:
        full = path.resolve()
        click.echo(f"  created {full.relative_to(cwd) if full.is_relative_to(cwd) else full}")


def _next(names: Names, *commands: str) -> None:
    """Say how to install and run the project, and which framework distribution pip will not find."""
    source = names.source
    for name in source.missing:
        click.echo(
            f"note: {name} is not installed here nor found beside framework ({source.summary}): "
            f"build it and add `{name} @ <its wheel's file:// URL>` to {names.root / 'requirements.txt'}",
            err=True,
        )
    if source.requirements:
        click.echo(f"\nrequirements.txt installs framework from {source.summary}.")
    lines = [f"cd {shlex.quote(str(names.root))}", *_INSTALL, ".venv/bin/python -m pytest", *commands]
    click.echo("\nNext:\n" + "".join(f"  {line}\n" for line in lines), nl=False)


def _plugins(value: str) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(p.strip() for p in value.split(",") if p.strip()))
    unknown = [p for p in chosen if p not in BUILTIN_PLUGINS]
    if unknown:
        raise click.BadParameter(
            f"unknown plugin {', '.join(unknown)}: choose from {','.join(BUILTIN_PLUGINS)} (or '' for none)",
            param_hint="--plugins",
        )
    return chosen


@click.command(
    epilog=examples(
        "framework new shop", "framework new shop --plugins email,cleanup", "framework new tiny --plugins ''"
    )
)
@click.argument("app")
@click.option(
    "--plugins",
    default=",".join(BUILTIN_PLUGINS),
    show_default=True,
    help="Built-in plugins the app depends on, comma-separated ('' for none).",
)
def new(app: str, plugins: str) -> None:
    """Create the project APP: package, settings, an example task and route, and tests that pass.

    APP is a folder to create (or an empty one); its name is the package name.
    """
    target = Path(app)
    package = _name(target.resolve().name, "app", "APP")
    chosen = _plugins(plugins)
    _require_empty(target)
    names = Names(
        root=target,
        package=package,
        plugins=chosen,
        task=TaskSpec(module=EXAMPLE_TASK, prefix=package),
        framework_version=_framework_version(),
        source=find_source(["framework", *(f"framework-{p}" for p in chosen)]),
    )
    click.echo(f"Creating {package} in {target}")
    _write(sorted(plan("app", names) + plan("task", names), key=lambda f: f.path.as_posix()))
    _next(names, ".venv/bin/framework run")


@click.group(
    cls=LazyGroup,
    aliases={"job": "task"},
    epilog=examples("framework generate task send_invoice", "framework generate plugin acme"),
)
def generate() -> None:
    """Add a task to an app, or start a plugin distribution."""


@generate.command(
    "task",
    epilog=examples(
        "framework generate task send_invoice",
        "framework generate task nightly_report --queue low --max-retry 2 --cron '0 3 * * *' --tz Europe/Paris",
        "framework generate task sync_user --unique 300 --timeout 30",
    ),
)
@click.argument("name")
@click.option("--queue", default="default", show_default=True, help="The queue its tasks go to.")
@click.option(
    "--max-retry", type=click.IntRange(min=0), default=None, help="Retries before a failing task is archived."
)
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None, help="Seconds one run may take.")
@click.option(
    "--unique",
    type=click.IntRange(min=1),
    default=None,
    metavar="SECONDS",
    help="Refuse a task whose payload is already queued or running, for up to SECONDS.",
)
@click.option("--cron", default=None, metavar="SPEC", help="Also enqueue it on a schedule: '0 * * * *', '@daily'.")
@click.option("--tz", default="UTC", show_default=True, help="The time zone the --cron spec is read in.")
def generate_task(
    name: str,
    queue: str,
    max_retry: int | None,
    timeout: float | None,
    unique: int | None,
    cron: str | None,
    tz: str,
) -> None:
    """Write the task NAME into the app around the current folder, with its test.

    The module <package>/tasks/NAME.py holds the five parts (type constant, payload, enqueue helper,
    handler, task definition); the app's hooks.py finds it without an edit. An app generated with a
    <package>/jobs/ package instead gets it there, as its hooks.py expects.
    """
    module = _name(name, "task", "NAME")
    if not _QUEUE.fullmatch(queue):
        raise click.BadParameter(f"{queue!r}: use up to 50 letters, digits, '_', '-' and '.'", param_hint="--queue")
    if cron is not None:
        from framework.scheduler.cron import CronSpecError, parse_schedule  # noqa: PLC0415 - croniter: only for --cron

        try:
            cron = parse_schedule(cron, tz).spec
        except CronSpecError as exc:
            raise click.BadParameter(str(exc), param_hint="--cron/--tz") from exc
    elif tz != "UTC":
        raise click.BadParameter("--tz only applies with --cron", param_hint="--tz")
    try:
        app = find_app(Path.cwd())
    except ScaffoldError as exc:
        raise click.ClickException(str(exc)) from exc
    task = TaskSpec(module, app.package, queue, max_retry, timeout, unique, cron, tz)
    _write(plan("task", Names(root=app.root, package=app.package, task=task, tasks_package=app.tasks_package)))
    if queue not in (app.queues or _DEFAULT_QUEUES):
        click.echo(
            f"note: queue {queue!r} is not in [queues] of {app.root / 'framework.toml'}: "
            f"add `{queue} = 1` there, or no worker serves it",
            err=True,
        )


@generate.command(
    "plugin",
    epilog=examples("framework generate plugin acme", "framework generate plugin acme --dir ../framework-acme"),
)
@click.argument("name")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The folder to create (default: ./framework-NAME).",
)
def generate_plugin(name: str, directory: Path | None) -> None:
    """Start the plugin distribution framework-NAME: entry point, hooks, one task, templates, tests.

    Hyphens in NAME become underscores in the plugin's name (its entry point, settings section and
    template folder) and its package, framework_NAME. A leading framework- or framework_ is dropped:
    framework-acme and acme both make framework-acme.
    """
    bare = name[len("framework-") :] if name.startswith(("framework-", "framework_")) else name
    plugin = _name(bare, "plugin", "NAME")
    package = f"framework_{plugin}"
    target = directory if directory is not None else Path(package.replace("_", "-"))
    _require_empty(target)
    names = Names(
        root=target,
        package=package,
        plugin=plugin,
        task=TaskSpec(module=PLUGIN_TASK, prefix=plugin),
        framework_version=_framework_version(),
        source=find_source(["framework"]),
    )
    click.echo(f"Creating the plugin {plugin} ({package.replace('_', '-')}) in {target}")
    _write(plan("plugin", names))
    _next(names, ".venv/bin/framework plugins")
