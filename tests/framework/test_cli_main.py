"""The ``framework`` entry point: which command modules a process loads, and where its logs go."""

from __future__ import annotations

import asyncio
import gc
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import msgspec
import pytest

from framework.cli import ALIASES, BUILTIN_COMMANDS, _needs_plugin_commands, _root_options, cli, main, startup_over
from framework.cli._lazy import Lazy, LazyGroup
from framework.client.client import Client
from framework.embedded.datadir import read_int
from framework.embedded.launch import terminate_pid
from framework.embedded.probe import pid_alive
from framework.embedded.server import EmbeddedValkey
from framework.errors import PluginError
from framework.logging import StderrLogger
from framework.task import TaskDef
from framework.workflow import chain
from tests.fixtures.cli import run_framework

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parents[2]

_PROBE = """
import contextlib, io, json, sys
from framework.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out), contextlib.suppress(SystemExit):
    main(sys.argv[1:])
watched = ("framework.inspector", "framework.plugins.manager", "jinja2", "croniter", "rich", "redis", "asyncio",
    "importlib.metadata", "structlog", "PIL", "minio", "resend")
loaded = [m for m in watched if m in sys.modules]
cli = sorted(m for m in sys.modules if m.startswith("framework.cli."))
print(json.dumps({"modules": cli, "loaded": loaded, "output": out.getvalue()}))
"""
_HEAVY = ("framework.inspector", "jinja2", "croniter", "rich")
"""What ``--help`` and a worker never need: the inspector (redis, protobuf), the scaffold, cron parsing, tables."""
_NOT_FOR_HELP = ("redis", "asyncio", "importlib.metadata", "structlog", "PIL", "minio", "resend")
"""What ``framework --help`` never imports, even with every installed plugin loaded: a plugin's module that adds
commands imports what they run with when one runs (redis-py and asyncio were 110 ms of help, Pillow, read by the
images plugin's settings for one constant, 37 ms), and the entry points are listed without ``importlib.metadata``
(30-50 ms to import)."""


def _load(*argv: str) -> dict[str, Any]:
    """Run ``framework ARGV`` in a fresh process: the ``framework.cli`` modules and packages it loaded, its output.

    Only ``--help`` runs here, of a command or of the root group: a command is loaded exactly as when it runs.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEWORK_") and k != "REDIS_URL"}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.mark.parametrize(
    ("argv", "config", "name"),
    [
        (["worker", "-c", "5"], None, "worker"),
        (["--config", "app.toml", "worker"], "app.toml", "worker"),
        (["--config=app.toml", "web"], "app.toml", "web"),
        (["-h"], None, None),
        ([], None, None),
        (["tasks", "stats"], None, "tasks"),
        (["--config", "a.toml", "--config", "b.toml", "run"], "a.toml", "run"),
    ],
)
def test_the_config_and_command_are_found_before_click_parses(
    argv: list[str], config: str | None, name: str | None
) -> None:
    assert _root_options(argv) == (config, name)


def test_a_worker_starts_with_the_collector_off_and_turns_it_back_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """``framework worker`` (and help) starts without the cyclic collector; it is on again once started or ended."""
    seen: list[bool] = []
    monkeypatch.setattr(cli, "main", lambda **_: seen.append(gc.isenabled()))
    monkeypatch.setattr("framework.cli._configure_logging", lambda _ctx: None)
    main(["worker"])
    main(["tasks", "stats"])
    main(["tasks", "--help"])  # prints and ends: no collector needed at all
    assert seen == [False, True, False]
    assert gc.isenabled()

    frozen = gc.get_freeze_count()
    startup_over()  # the collector is on: nothing to do, nothing frozen
    assert gc.isenabled()
    assert gc.get_freeze_count() == frozen
    gc.disable()
    try:
        startup_over()
        assert gc.isenabled()
        assert gc.get_freeze_count() > frozen
    finally:
        gc.enable()
        gc.unfreeze()


def test_a_worker_process_loads_only_the_process_commands() -> None:
    """Starting a worker imports no dashboard, scaffold or inspector code (a tenth of a second of start-up)."""
    loaded = _load("worker", "--processes", "2", "--help")
    assert loaded["modules"] == ["framework.cli._lazy", "framework.cli.run"]
    assert not set(_HEAVY) & set(loaded["loaded"]), loaded["loaded"]


def test_help_lists_every_command_and_loads_none() -> None:
    """``framework --help`` lists the built-in commands by their summaries, and the plugins' commands."""
    for argv in ((), ("--help",), ("-h", "tasks")):
        loaded = _load(*argv)
        assert loaded["modules"] == ["framework.cli._lazy"], argv
        # an installed plugin's settings may parse durations (cleanup's): croniter still waits for a schedule
        assert not set(_HEAVY) & set(loaded["loaded"]), (argv, loaded["loaded"])
        assert not set(_NOT_FOR_HELP) & set(loaded["loaded"]), (argv, loaded["loaded"])
        listed = [
            line.split()[0]
            for line in loaded["output"].split("Commands:")[1].split("Examples:")[0].splitlines()
            if line.strip()
        ]
        assert set(BUILTIN_COMMANDS) | {"cleanup"} <= set(listed), listed  # cleanup: an entry-point plugin's
        assert not set(ALIASES) & set(listed)


def test_a_builtin_command_loads_its_own_module_and_no_plugin() -> None:
    loaded = _load("tasks", "stats", "--help")
    assert {m.rsplit(".", 1)[0] for m in loaded["modules"]} == {"framework.cli", "framework.cli.tasks"}
    assert "framework.plugins.manager" not in loaded["loaded"]  # no entry-point scan for plugin commands
    assert "jinja2" not in loaded["loaded"] and "croniter" not in loaded["loaded"]
    assert "Usage: framework tasks stats" in loaded["output"]


def test_the_old_group_name_is_a_hidden_alias() -> None:
    loaded = _load("jobs", "stats", "--help")
    assert "Usage: framework jobs stats" in loaded["output"]
    assert "Counts, throughput today" in loaded["output"]
    with click.Context(cli) as ctx:
        assert cli.get_command(ctx, "jobs") is cli.get_command(ctx, "tasks")
        assert "jobs" not in cli.list_commands(ctx)


@pytest.mark.parametrize("name", sorted(BUILTIN_COMMANDS))
def test_each_summary_is_the_commands_own(name: str) -> None:
    """The summary ``--help`` lists a command by before loading it is what the command itself would show."""
    with click.Context(cli) as ctx:
        command = cli.get_command(ctx, name)
    assert command is not None
    assert command.name == name
    summary = click.Command(name, help=BUILTIN_COMMANDS[name].summary)
    for limit in (30, 45, 70, 200):
        assert summary.get_short_help_str(limit) == command.get_short_help_str(limit), limit


@pytest.mark.parametrize(
    ("argv", "needed"),
    [
        ([], True),
        (["--help"], True),
        (["--version"], False),
        (["--config", "a.toml", "-h"], True),
        (["-h", "tasks"], True),  # the root group's help
        (["tasks", "stats"], False),
        (["tasks", "--help"], False),
        (["jobs", "ls", "default", "pending"], False),
        (["--config", "a.toml", "worker"], False),
        (["cleanup", "run"], True),  # not built in: a plugin's, or a typo
        (["nope"], True),
    ],
)
def test_plugins_are_scanned_for_commands_only_when_one_may_be_needed(argv: list[str], needed: bool) -> None:
    assert _needs_plugin_commands(argv, _root_options(argv)[1]) is needed


def test_a_plugin_cannot_take_a_builtin_name() -> None:
    group = LazyGroup(lazy={"tasks": Lazy("framework.cli.tasks", "tasks", "Tasks.")}, aliases={"jobs": "tasks"})
    for name in ("tasks", "jobs"):
        with pytest.raises(PluginError, match=f"the command name {name!r} is taken by a built-in command"):
            group.add_command(click.Command(name))
    group.add_command(click.Command("greet"))
    with click.Context(group) as ctx:
        assert group.list_commands(ctx) == ["greet", "tasks"]


def test_a_mistyped_command_is_refused_with_a_suggestion(tmp_path: Path) -> None:
    done = _framework(tmp_path, "taks", "stats")
    assert done.returncode == 2
    assert "No such command 'taks'. Did you mean 'tasks'?" in done.stderr


# Logs on stderr, only the command's output on stdout ---------------------------------------------


def _json_commands() -> dict[str, click.Command]:
    """Every built-in command with a ``--json`` option, by its path (``tasks stats``), from the click tree."""
    found: dict[str, click.Command] = {}

    def walk(command: click.Command | None, path: tuple[str, ...], ctx: click.Context) -> None:
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                walk(command.get_command(ctx, name), (*path, name), ctx)
        elif command is not None and any(isinstance(p, click.Option) and "--json" in p.opts for p in command.params):
            found[" ".join(path)] = command

    with click.Context(cli) as ctx:
        walk(cli, (), ctx)
    return dict(sorted(found.items()))


JSON_COMMANDS = _json_commands()

# The arguments a command needs to succeed on the seeded data: pending task p1 and scheduled task s1 of
# queue "default", and workflow w1 (running: no worker runs its steps). A new --json command with required
# arguments fails below until it is listed here.
JSON_ARGS: dict[str, tuple[str, ...]] = {
    "tasks archive": ("default", "p1"),
    "tasks archive-all": ("default", "pending", "--yes"),
    "tasks cancel": ("p1",),
    "tasks delete": ("default", "p1"),
    "tasks delete-all": ("default", "pending", "--yes"),
    "tasks delete-queue": ("default", "--force", "--yes"),
    "tasks enqueue": ("demo:hello",),
    "tasks ls": ("default", "pending"),
    "tasks pause": ("default",),
    "tasks retry": ("default", "s1"),
    "tasks run-all": ("default", "scheduled"),
    "tasks show": ("default", "p1"),
    "tasks unpause": ("default",),
    "workflows cancel": ("w1",),
    "workflows retry": ("w1",),
    "workflows show": ("w1",),
}
NO_REDIS = {"plugins"}
"""Commands that never connect to Redis, so never start or reuse the embedded Valkey."""

_EVENTS = {"started": "embedded_valkey_started", "reused": "embedded_valkey_reused"}


def _app_dir(tmp_path: Path) -> Path:
    """An app folder whose ``framework.toml`` sets the data dir, debug logs and a cron entry (cron ls reads Redis)."""
    (tmp_path / "framework.toml").write_text(
        f"data_dir = {json.dumps(str(tmp_path / 'data'))}\n"
        'log_level = "debug"\n'
        "load_plugins = []\n"
        "[[cron]]\n"
        'name = "hello"\n'
        'spec = "@every 1h"\n'
        'task = "demo:hello"\n'
    )
    return tmp_path


class _Name(msgspec.Struct, frozen=True):
    name: str = ""


_HELLO = TaskDef("demo:hello", _Name, lambda ctx, p: p.name, result=str)


async def _seed(url: str) -> None:
    client = Client.from_url(url)
    try:
        await client.enqueue("demo:hello", {"name": "Ann"}, task_id="p1")
        await client.enqueue("demo:hello", {"name": "Bob"}, task_id="s1", process_in=3600)
        await client.start_workflow(chain(_HELLO.step(_Name("Cy")), _HELLO.step(_Name("Di"))), workflow_id="w1")
    finally:
        await client.redis.aclose()


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[EmbeddedValkey]:
    """The embedded Valkey of the app's data dir, seeded and running; stopped at the end with any server left."""
    valkey = EmbeddedValkey(_app_dir(tmp_path) / "data" / "valkey")
    try:
        asyncio.run(_seed(valkey.ensure()))
        yield valkey
    finally:
        valkey.stop()
        pid = read_int(valkey.pid_file)
        if pid is not None and pid_alive(pid):  # a server a command left behind
            terminate_pid(pid, 10.0)


def _framework(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``framework ARGS`` as a user runs it in ``cwd``: settings from its framework.toml, no REDIS_URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEWORK_") and k != "REDIS_URL"}
    env.update(COLUMNS="200", PYTHONIOENCODING="utf-8", NO_COLOR="1")
    return run_framework(env, cwd, *args)


def test_the_json_commands_are_found() -> None:
    assert {"tasks stats", "tasks ls", "cron ls", "plugins", "doctor", "workflows ls", "workflows show"} <= set(
        JSON_COMMANDS
    )


STARTING = ("tasks stats", "cron ls", "doctor")
"""Commands also run with no server up (they start the embedded one): every command reaches it the same way."""


@pytest.mark.parametrize(
    ("command", "server"),
    [(c, "reused") for c in JSON_COMMANDS] + [(c, "started") for c in STARTING],
)
def test_json_output_is_json_alone_and_logs_go_to_stderr(
    command: str, server: str, embedded: EmbeddedValkey, tmp_path: Path
) -> None:
    """``--json`` prints only JSON on stdout; the embedded Valkey's log lines go to stderr.

    ``started``: no server runs, the command starts its own (and stops it). ``reused``: the command
    finds the running one; that line is logged at debug, which the settings turn on.
    """
    required = [p.name for p in JSON_COMMANDS[command].params if p.required]
    if required and command not in JSON_ARGS:
        pytest.fail(f"{command!r} needs {required}: add its arguments to JSON_ARGS")
    if server == "started":
        embedded.stop()
    done = _framework(tmp_path, *command.split(), *JSON_ARGS.get(command, ()), "--json")
    assert done.returncode == 0, (done.stdout, done.stderr)
    json.loads(done.stdout)
    if command not in NO_REDIS:
        assert _EVENTS[server] in done.stderr, done.stderr
    assert "embedded_valkey" not in done.stdout


def test_the_stderr_logger_writes_to_the_current_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stream is looked up at every line: a later redirection of sys.stderr is followed."""
    logger = StderrLogger()
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    logger.info("one")
    monkeypatch.setattr(sys, "stderr", second)
    logger.error("two")
    assert (first.getvalue(), second.getvalue()) == ("one\n", "two\n")


_MAIN_PROBE = """
import sys
from framework.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
sys.stderr.write("structlog" if "structlog" in sys.modules else "-")
"""


@pytest.mark.parametrize(
    "argv", [(), ("--help",), ("tasks", "--help"), ("jobs", "--help"), ("worker", "-h"), ("--version",)]
)
def test_help_alone_configures_no_logging(argv: tuple[str, ...], tmp_path: Path) -> None:
    """Help prints without importing structlog (about a fifth of the CLI's start-up)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEWORK_") and k != "REDIS_URL"}
    done = subprocess.run(
        [sys.executable, "-c", _MAIN_PROBE, *argv], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.stderr.endswith("-"), done.stderr
    assert "framework" in done.stdout + done.stderr  # no arguments: click prints the help to stderr
