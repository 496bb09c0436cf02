"""The README's examples work as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import click

from framework.cli import ALIASES, cli

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_starts_with_the_two_commands() -> None:
    blocks = re.findall(r"```bash\n(.*?)```", README, re.DOTALL)
    assert blocks[0].strip() == "scripts/install && .venv/bin/framework run"
    assert blocks[1].strip() == "scripts/test"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "scripts/test" in ci


def test_enqueue_your_first_task_runs_as_written(tmp_path: Path, redis_url: str) -> None:
    section = README.split("## Enqueue your first task", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert code is not None
    script = tmp_path / "first_task.py"
    script.write_text(code.group(1))
    env: dict[str, Any] = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEWORK_")}
    env["REDIS_URL"] = redis_url
    env["FRAMEWORK_NAMESPACE"] = f"readme{os.getpid()}"
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "enqueued " in done.stdout
    assert "Hello, Ann! (task " in done.stdout
    assert "Hello, Bob! (task " in done.stdout
    # info by default, on stderr: no task's debug line (task_finished, tasks_forwarded), no log on stdout
    assert "[debug" not in done.stderr and "task_finished" not in done.stderr, done.stderr
    assert "worker_started" in done.stderr, done.stderr
    assert "worker_" not in done.stdout and "[info" not in done.stdout, done.stdout


PLUGIN_COMMANDS = {"cleanup"}
"""Commands the README names that an installed plugin adds, not the core."""


def _command(*path: str) -> click.Command | None:
    command: click.Command | None = cli
    with click.Context(cli) as ctx:
        for name in path:
            command = command.get_command(ctx, name) if isinstance(command, click.Group) else None
    return command


def test_every_command_it_names_exists() -> None:
    named = re.findall(r"`framework ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?", README)
    assert len(named) > 10
    for words in named:
        path = [w for w in words if w]
        if path[0] in PLUGIN_COMMANDS:
            continue
        command = _command(path[0])
        assert command is not None, path
        if len(path) > 1 and isinstance(command, click.Group):
            assert _command(*path) is not None, path


def test_the_tasks_row_lists_every_tasks_command() -> None:
    row = re.search(r"\| `framework tasks ([^`]*)`", README)
    assert row is not None
    listed = {name.strip() for name in row.group(1).split("\\|")}
    group = _command("tasks")
    assert isinstance(group, click.Group)
    with click.Context(cli) as ctx:
        assert listed == set(group.list_commands(ctx))


def test_the_old_command_names_are_mentioned_once() -> None:
    """``framework jobs`` and ``framework generate job`` still work but are named once, as kept for compatibility."""
    for old in [*ALIASES, "generate job"]:
        assert README.count(f"`framework {old} ") == 1, old
    assert "kept for compatibility" in README
