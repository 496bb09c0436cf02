"""The ``framework`` entry point: which command modules a process loads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from framework.cli import _root_options

ROOT = Path(__file__).resolve().parents[2]

_PROBE = """
import json, sys
from framework.cli import _load_commands, _root_options, cli
_load_commands(_root_options(sys.argv[1:])[1])
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
