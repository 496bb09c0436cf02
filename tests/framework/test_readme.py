"""The README's examples work as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

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
