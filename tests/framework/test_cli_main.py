"""The ``framework`` entry point: which command modules a process loads, and where its logs go."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
import pytest

from framework.cli import _load_commands, _root_options, cli
from framework.client.client import Client
from framework.embedded.datadir import read_int
from framework.embedded.launch import terminate_pid
from framework.embedded.probe import pid_alive
from framework.embedded.server import EmbeddedValkey
from framework.logging import StderrLogger
from tests.fixtures.cli import run_framework

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parents[2]

_PROBE = """
import json, sys
from framework.cli import _load_commands, _root_options, cli
_load_commands(_root_options(sys.argv[1:])[1])
loaded = sorted(m for m in sys.modules if m.startswith(("framework.cli.", "framework.inspector")))
print(json.dumps({"modules": loaded, "commands": sorted(cli.commands)}))
"""


def _load(*argv: str) -> dict[str, list[str]]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    result: dict[str, list[str]] = json.loads(done.stdout)
    return result


@pytest.mark.parametrize(
    ("argv", "config", "name"),
    [
        (["worker", "-c", "5"], None, "worker"),
        (["--config", "app.toml", "worker"], "app.toml", "worker"),
        (["--config=app.toml", "web"], "app.toml", "web"),
        (["-h"], None, None),
        ([], None, None),
        (["jobs", "stats"], None, "jobs"),
        (["--config", "a.toml", "--config", "b.toml", "run"], "a.toml", "run"),
    ],
)
def test_the_config_and_command_are_found_before_click_parses(
    argv: list[str], config: str | None, name: str | None
) -> None:
    assert _root_options(argv) == (config, name)


def test_a_worker_process_loads_only_the_process_commands() -> None:
    """Starting a worker imports no dashboard, scaffold or inspector code (a tenth of a second of start-up)."""
    loaded = _load("worker", "--processes", "2")
    assert loaded["modules"] == ["framework.cli.run"]
    assert loaded["commands"] == ["run", "scheduler", "web", "worker"]


def test_help_and_other_commands_load_every_command() -> None:
    for argv in ((), ("--help",), ("jobs", "stats")):
        loaded = _load(*argv)
        assert {"jobs", "cron", "new", "generate", "plugins", "doctor", "worker"} <= set(loaded["commands"]), argv


# Logs on stderr, only the command's output on stdout ---------------------------------------------


def _json_commands() -> dict[str, click.Command]:
    """Every built-in command with a ``--json`` option, by its path (``jobs stats``), from the click tree."""
    _load_commands(None)
    found: dict[str, click.Command] = {}

    def walk(command: click.Command, path: tuple[str, ...]) -> None:
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                walk(sub, (*path, name))
        elif any(isinstance(p, click.Option) and "--json" in p.opts for p in command.params):
            found[" ".join(path)] = command

    walk(cli, ())
    return dict(sorted(found.items()))


JSON_COMMANDS = _json_commands()

# The arguments a command needs to succeed on the seeded data: pending task p1 and scheduled task s1 of
# queue "default". A new --json command with required arguments fails below until it is listed here.
JSON_ARGS: dict[str, tuple[str, ...]] = {
    "jobs archive": ("default", "p1"),
    "jobs archive-all": ("default", "pending", "--yes"),
    "jobs cancel": ("p1",),
    "jobs delete": ("default", "p1"),
    "jobs delete-all": ("default", "pending", "--yes"),
    "jobs delete-queue": ("default", "--force", "--yes"),
    "jobs enqueue": ("demo:hello",),
    "jobs ls": ("default", "pending"),
    "jobs pause": ("default",),
    "jobs retry": ("default", "s1"),
    "jobs run-all": ("default", "scheduled"),
    "jobs show": ("default", "p1"),
    "jobs unpause": ("default",),
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


async def _seed(url: str) -> None:
    client = Client.from_url(url)
    try:
        await client.enqueue("demo:hello", {"name": "Ann"}, task_id="p1")
        await client.enqueue("demo:hello", {"name": "Bob"}, task_id="s1", process_in=3600)
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
    assert {"jobs stats", "jobs ls", "cron ls", "plugins", "doctor"} <= set(JSON_COMMANDS)


STARTING = ("jobs stats", "cron ls", "doctor")
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


@pytest.mark.parametrize("argv", [(), ("--help",), ("jobs", "--help"), ("worker", "-h"), ("--version",)])
def test_help_alone_configures_no_logging(argv: tuple[str, ...], tmp_path: Path) -> None:
    """Help prints without importing structlog (about a fifth of the CLI's start-up)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEWORK_") and k != "REDIS_URL"}
    done = subprocess.run(
        [sys.executable, "-c", _MAIN_PROBE, *argv], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.stderr.endswith("-"), done.stderr
    assert "framework" in done.stdout + done.stderr  # no arguments: click prints the help to stderr
