"""A generated app and plugin install into fresh venvs of their own with the commands the generator prints.

No package index serves the framework distributions: ``framework new`` and ``framework generate plugin``
write a ``requirements.txt`` saying where they are (here: this checkout, as the test venv has them
editable), and the "Next:" lines must be all a user runs. The venvs are plain (nothing layered over
the test venv, no system site-packages), so a framework distribution pip cannot find fails the
install; third-party packages come from pip's configured index. The generated test suites then run
in those venvs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.fixtures.cli import clean_env
from tests.framework.test_scaffold import ROOT

if TYPE_CHECKING:
    from collections.abc import Iterator

BIN = Path(sys.executable).parent
STEP_TIMEOUT = 240


@pytest.fixture
def work() -> Iterator[Path]:
    """A folder removed when the test ends (the venvs are large: pytest's retention would keep them)."""
    folder = Path(tempfile.mkdtemp(prefix="generated-install-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def environment(work: Path) -> dict[str, str]:
    # `python3` is this interpreter (its venv makes plain venvs of the base Python); the generated
    # suites' own pytest keeps its temporary files in `work`.
    return clean_env(PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", PYTEST_ADDOPTS=f"--basetemp={work / 'tmp'}")


def shell(line: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run one printed command as a user would, then end anything it left running."""
    proc = subprocess.Popen(
        line,
        shell=True,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=STEP_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"`{line}` took more than {STEP_TIMEOUT}s:\n{out}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(line, proc.returncode, out, "")


def generate_and_install(work: Path, *args: str) -> tuple[Path, dict[str, str]]:
    """Run the real CLI in ``work``, then every printed "Next:" command but ``framework run``.

    Returns the project folder and each command's output.
    """
    env = environment(work)
    done = subprocess.run(
        [str(BIN / "framework"), *args], cwd=work, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "note:" not in done.stderr, done.stderr
    lines = [line.strip() for line in done.stdout.split("\nNext:\n", 1)[1].splitlines() if line.strip()]
    cd, *commands = lines
    assert cd.startswith("cd ")
    project = work / cd.removeprefix("cd ")
    outputs = {}
    for line in commands:
        if line.endswith("framework run"):  # serves until stopped: the tests cover the app
            continue
        ran = shell(line, project, env)
        assert ran.returncode == 0, f"`{line}` in {project} failed:\n{ran.stdout}"
        outputs[line] = ran.stdout
    return project, outputs


def requirements(project: Path) -> list[str]:
    text = (project / "requirements.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def passed(output: str) -> int:
    summary = output.strip().splitlines()[-1]
    assert "failed" not in summary and "skipped" not in summary, output
    return int(summary.split(" passed")[0].split()[-1])


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_generated_app_and_plugin_install_into_venvs_of_their_own_and_pass_their_tests(work: Path) -> None:
    """Both at once (two users on two projects): each install is mostly waiting on pip, so the pair takes about as
    long as one."""
    (work / "app").mkdir()
    (work / "plugin").mkdir()
    with ThreadPoolExecutor(2) as pool:
        app_run = pool.submit(generate_and_install, work / "app", "new", "shop", "--plugins", "email,admin")
        plugin_run = pool.submit(generate_and_install, work / "plugin", "generate", "plugin", "acme-notify")
        (project, outputs), (plugin, plugin_outputs) = app_run.result(), plugin_run.result()

    checkout = ROOT.as_uri()
    assert requirements(project) == [f"-e {checkout}", f"-e {checkout}/plugins/email", f"-e {checkout}/plugins/admin"]
    assert list(outputs)[:2] == [
        "python3 -m venv .venv",
        ".venv/bin/python -m pip install -r requirements.txt -e '.[dev]'",
    ]
    assert passed(outputs[".venv/bin/python -m pytest"]) >= 7
    # Its venv is its own: the framework and the plugins come from the checkout, nothing from the test venv.
    where = shell(
        ".venv/bin/python -c 'import framework_admin, sys; print(sys.prefix, framework_admin.__file__)'",
        project,
        environment(work / "app"),
    )
    prefix, admin = where.stdout.split()
    assert Path(prefix) == project / ".venv"
    assert Path(admin).is_relative_to(ROOT / "plugins" / "admin")

    assert requirements(plugin) == [f"-e {ROOT.as_uri()}"]
    assert passed(plugin_outputs[".venv/bin/python -m pytest"]) >= 9
    assert "acme_notify" in plugin_outputs[".venv/bin/framework plugins"]
