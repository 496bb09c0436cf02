"""The ``framework`` entry point: which command modules a process loads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from framework.cli import _command_name

ROOT = Path(__file__).resolve().parents[2]

_PROBE = """
import json, sys
from framework.cli import _load_commands, cli
_load_commands(sys.argv[1:])
loaded = sorted(m for m in sys.modules if m.startswith(("framework.cli.", "framework.scaffold", "framework.inspector")))
print(json.dumps({"modules": loaded, "commands": sorted(cli.commands)}))
"""


def _load(*argv: str) -> dict[str, list[str]]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    result: dict[str, list[str]] = json.loads(done.stdout)
    return result


@pytest.mark.parametrize(
    ("argv", "name"),
    [
        (["worker", "-c", "5"], "worker"),
        (["--config", "app.toml", "worker"], "worker"),
        (["--config=app.toml", "web"], "web"),
        (["-h"], None),
        ([], None),
        (["jobs", "stats"], "jobs"),
    ],
)
def test_the_command_name_is_found_after_the_root_options(argv: list[str], name: str | None) -> None:
    assert _command_name(argv) == name


def test_a_worker_process_loads_only_the_process_commands() -> None:
    """Starting a worker imports no dashboard, scaffold or inspector code (a tenth of a second of start-up)."""
    loaded = _load("worker", "--processes", "2")
    assert loaded["modules"] == ["framework.cli.run"]
    assert loaded["commands"] == ["run", "scheduler", "web", "worker"]


def test_help_and_other_commands_load_every_command() -> None:
    for argv in ((), ("--help",), ("jobs", "stats")):
        loaded = _load(*argv)
        assert {"jobs", "cron", "new", "generate", "plugins", "doctor", "worker"} <= set(loaded["commands"]), argv
