"""``framework run`` and friends on the embedded Valkey under faults: the server crashing or stopping under a
running command, two commands sharing one data directory, SIGTERM, and a data directory that cannot be used.

Every test runs the real CLI in a subprocess against a real ``valkey-server`` in a temporary directory, and
kills whatever it started (the commands, and any server left under that directory) at the end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import framework
from framework.embedded.errors import EmbeddedValkeyError
from framework.embedded.launch import free_port
from framework.embedded.server import EmbeddedValkey
from tests.fixtures.cli import clean_env, run_framework
from tests.fixtures.processes import alive, server_pid, valkey_pids, wait_for

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.timeout(120)

_ROOT = Path(framework.__file__).resolve().parents[1]


class _App:
    """One ``framework run`` process of the demo app, serving on a free port; output in ``log``."""

    def __init__(self, cwd: Path, data_dir: Path, log: Path) -> None:
        self.port = free_port()
        self.log = log
        env = clean_env(FRAMEWORK_LOAD_PLUGINS="", FRAMEWORK_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1")
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "framework", "run", "--port", str(self.port)],
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_up(self) -> None:
        def up() -> bool:
            assert self.proc.poll() is None, f"framework run exited:\n{self.output()}"
            try:
                return bool(_get(f"{self.base}/healthz") == {"status": "ok"})
            except OSError:
                return False

        wait_for(up, "framework run answering /healthz", 30)

    def try_enqueue(self) -> str | None:
        """Enqueue a demo task through the app; None when the app answers with an error."""
        request = urllib.request.Request(
            f"{self.base}/demo/tasks",
            data=b'{"name":"fault","work_seconds":0}',
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                task_id: str = json.loads(response.read())["id"]
                return task_id
        except (urllib.error.HTTPError, OSError):
            return None

    def run_a_task(self, timeout: float = 20.0) -> None:
        """Enqueue a task (retrying while the app fails) and wait until its worker has completed it."""
        task_id = wait_for(self.try_enqueue, f"an enqueue through the app\n{self.output()}", timeout)

        def completed() -> bool:
            try:
                return bool(_get(f"{self.base}/demo/tasks/{task_id}")["state"] == "completed")
            except OSError:
                return False

        wait_for(completed, f"task {task_id} completed\n{self.output()}", timeout)

    def stop(self, sig: signal.Signals = signal.SIGINT) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(30)


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


@pytest.fixture
def apps(tmp_path: Path) -> Iterator[list[_App]]:
    """The ``framework run`` processes a test starts; killed (with any server under ``tmp_path``) at the end."""
    started: list[_App] = []
    yield started
    for app in started:
        if app.proc.poll() is None:
            app.proc.kill()
        app.proc.wait()
    for pid in valkey_pids(tmp_path):
        os.kill(pid, signal.SIGKILL)


def _server_pid(data_dir: Path) -> int:
    return server_pid(data_dir / "valkey", 20.0)


@pytest.mark.parametrize("long_path", [False, True], ids=["unix-socket", "tcp-port"])
def test_run_restarts_its_crashed_valkey_and_goes_on_serving(apps: list[_App], tmp_path: Path, long_path: bool) -> None:
    """The server SIGKILLed mid-run comes back on the same socket (or port); enqueues and the worker resume."""
    data_dir = tmp_path / ("d" * 110 if long_path else "") / ".data"  # too long a path: TCP on 127.0.0.1
    app = _App(tmp_path, data_dir, tmp_path / "run.log")
    apps.append(app)
    app.wait_up()
    app.run_a_task()
    crashed = _server_pid(data_dir)
    assert (data_dir / "valkey" / "valkey.port").exists() == long_path

    os.kill(crashed, signal.SIGKILL)

    app.run_a_task()
    assert _server_pid(data_dir) != crashed
    assert "embedded_valkey_died" in app.output()
    assert app.stop() == 0, app.output()
    assert valkey_pids(tmp_path) == []


def test_second_run_in_the_same_directory_goes_on_when_the_first_stops(apps: list[_App], tmp_path: Path) -> None:
    """Two ``framework run`` share the first one's server; when the first stops, the second restarts it."""
    data_dir = tmp_path / ".data"
    first = _App(tmp_path, data_dir, tmp_path / "first.log")
    apps.append(first)
    first.wait_up()
    second = _App(tmp_path, data_dir, tmp_path / "second.log")
    apps.append(second)
    second.wait_up()
    second.run_a_task()
    shared = _server_pid(data_dir)

    assert first.stop() == 0, first.output()
    assert not alive(shared)  # the first one's server went with it

    second.run_a_task()
    assert second.stop() == 0, second.output()
    assert valkey_pids(tmp_path) == []
    assert not (data_dir / "valkey" / "valkey.pid").exists()


def test_sigterm_stops_run_and_its_valkey_cleanly(apps: list[_App], tmp_path: Path) -> None:
    """SIGTERM is a graceful stop as Ctrl-C is: status 0, the server stopped in order, its files removed."""
    data_dir = tmp_path / ".data"
    app = _App(tmp_path, data_dir, tmp_path / "run.log")
    apps.append(app)
    app.wait_up()
    server = _server_pid(data_dir)

    assert app.stop(signal.SIGTERM) == 0, app.output()

    assert "embedded_valkey_stopped" in app.output()
    assert not alive(server)
    assert not (data_dir / "valkey" / "valkey.pid").exists()
    assert (data_dir / "valkey" / "appendonlydir").is_dir()


def _cli(tmp_path: Path, data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = clean_env(FRAMEWORK_LOAD_PLUGINS="", FRAMEWORK_DATA_DIR=str(data_dir), PYTHONPATH=str(_ROOT))
    return run_framework(env, tmp_path, *args)


@pytest.mark.parametrize("command", ["worker", "scheduler", "doctor"])
def test_an_unusable_data_directory_is_one_error_naming_it(tmp_path: Path, command: str) -> None:
    """The server's directory is taken by a file: an error naming the directory and the fix, no traceback."""
    data_dir = tmp_path / ".data"
    data_dir.mkdir()
    (data_dir / "valkey").write_text("not a directory\n")

    done = _cli(tmp_path, data_dir, command)

    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "Traceback" not in out
    assert f"embedded Valkey cannot use its data directory {data_dir / 'valkey'}" in out
    assert "FRAMEWORK_DATA_DIR" in out
    assert "start Redis at that address" not in out  # the fix for an unreachable external Redis does not apply
    assert valkey_pids(tmp_path) == []


_HOLD_LOCK = """
import fcntl, sys
lock = open(sys.argv[1], "a")
fcntl.flock(lock, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()
"""


def test_a_lock_held_too_long_names_the_process_holding_it(tmp_path: Path) -> None:
    """Another process holds ``valkey.lock`` (hung while starting the server): the error says which one."""
    data_dir = tmp_path / "valkey"
    data_dir.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(data_dir / "valkey.lock")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"

        with pytest.raises(EmbeddedValkeyError) as caught:
            EmbeddedValkey(data_dir, lock_timeout=0.5).ensure()

        assert f"waiting for {data_dir / 'valkey.lock'}: process {holder.pid} (" in str(caught.value)
        assert valkey_pids(tmp_path) == []
    finally:
        holder.kill()
        holder.communicate()
