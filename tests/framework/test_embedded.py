"""framework.embedded.server against real valkey-server processes: start, reuse, crash cleanup, owner death, AOF."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import redis

import framework
from framework.embedded.binary import find_server_binary
from framework.embedded.errors import EmbeddedValkeyError
from framework.embedded.launch import free_port
from framework.embedded.process import ValkeyProcess, start_test_server
from framework.embedded.server import EmbeddedValkey
from tests.fixtures.processes import alive, valkey_pids

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.timeout(60)

_ROOT = Path(framework.__file__).resolve().parents[1]

# A second process of the same app: waits for the go file (so several start at once), ensures the
# server, reports, then (in "hold" mode) stays alive until its stdin is closed.
_CHILD = """
import json, os, sys, time
from pathlib import Path
from framework.embedded.server import EmbeddedValkey
data_dir, go, mode = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
while go and not Path(go).exists():
    time.sleep(0.002)
ev = EmbeddedValkey(data_dir)
url = ev.ensure()
print("RESULT " + json.dumps({"url": url, "owned": ev.owned, "pid": ev.pid}), flush=True)
if mode == "hold":
    sys.stdin.read()
"""


def _wait_gone(pid: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while alive(pid):
        assert time.monotonic() < deadline, f"process {pid} still alive after {timeout}s"
        time.sleep(0.02)


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True, socket_timeout=5)


class _Processes:
    """Everything a test starts, torn down by the ``procs`` fixture even when the test fails."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.embedded: list[EmbeddedValkey] = []
        self.servers: list[ValkeyProcess] = []
        self.children: list[subprocess.Popen[str]] = []

    def valkey(self, data_dir: Path) -> EmbeddedValkey:
        ev = EmbeddedValkey(data_dir)
        self.embedded.append(ev)
        return ev

    def test_server(self, directory: Path, **kwargs: Any) -> ValkeyProcess:
        server = start_test_server(directory, **kwargs)
        self.servers.append(server)
        return server

    def child(self, data_dir: Path, *, go: Path | None = None, hold: bool = False) -> subprocess.Popen[str]:
        env = {**os.environ, "PYTHONPATH": str(_ROOT)}
        args = [sys.executable, "-c", _CHILD, str(data_dir), str(go or ""), "hold" if hold else "once"]
        proc = subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=self.tmp_path,
        )
        self.children.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.children:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
        for ev in self.embedded:
            ev.stop()
        for server in self.servers:
            server.kill()
        for pid in valkey_pids(self.tmp_path):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[_Processes]:
    registry = _Processes(tmp_path)
    yield registry
    registry.close()


def _result(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
            return result
    _, err = proc.communicate()
    pytest.fail(f"child exited with {proc.returncode} without a result:\n{err}")


def _release(proc: subprocess.Popen[str]) -> None:
    """Let a holding child exit normally and wait for it."""
    proc.communicate(timeout=20)
    assert proc.returncode == 0


# EmbeddedValkey ----------------------------------------------------------------------------------


def test_ensure_starts_a_unix_socket_server(procs: _Processes, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    ev = procs.valkey(data_dir)

    url = ev.ensure()

    assert url == f"unix://{data_dir}/valkey.sock"
    assert ev.url == url
    assert ev.owned
    assert ev.pid is not None
    assert alive(ev.pid)
    assert (data_dir / "valkey.pid").read_text().strip() == str(ev.pid)
    assert not (data_dir / "valkey.port").exists()
    with _client(url) as client:
        assert client.ping()
        assert client.info("server")["process_id"] == ev.pid
        assert client.config_get("port") == {"port": "0"}  # no TCP listener at all
        assert client.config_get("bind") == {"bind": "127.0.0.1"}
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("protected-mode") == {"protected-mode": "yes"}
        assert client.config_get("databases") == {"databases": "16"}


def test_socket_and_data_dir_are_private(procs: _Processes, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    procs.valkey(data_dir).ensure()

    assert stat.S_ISSOCK((data_dir / "valkey.sock").stat().st_mode)
    assert stat.S_IMODE((data_dir / "valkey.sock").stat().st_mode) == 0o700
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700


def test_ensure_again_is_cheap_and_idempotent(procs: _Processes, tmp_path: Path) -> None:
    ev = procs.valkey(tmp_path / "data")
    url = ev.ensure()
    pid = ev.pid

    started = time.monotonic()
    for _ in range(20):
        assert ev.ensure() == url
    assert time.monotonic() - started < 5  # no start-up wait in any of them
    assert ev.pid == pid
    assert valkey_pids(tmp_path) == [pid]


def test_stop_stops_the_owned_server_and_removes_its_files(procs: _Processes, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    ev = procs.valkey(data_dir)
    ev.ensure()
    pid = ev.pid
    assert pid is not None

    ev.stop()

    _wait_gone(pid)
    assert not ev.owned
    assert ev.pid is None
    assert not (data_dir / "valkey.pid").exists()
    assert not (data_dir / "valkey.sock").exists()
    with pytest.raises(EmbeddedValkeyError, match="ensure"):
        _ = ev.url


def test_context_manager_starts_and_stops(tmp_path: Path, procs: _Processes) -> None:
    with EmbeddedValkey(tmp_path / "data") as ev:
        pid = ev.pid
        assert pid is not None
        with _client(ev.url) as client:
            assert client.ping()
    _wait_gone(pid)


def test_second_process_reuses_the_running_server(procs: _Processes, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    ev = procs.valkey(data_dir)
    url = ev.ensure()

    child = procs.child(data_dir)
    result = _result(child)
    _release(child)

    assert result == {"url": url, "owned": False, "pid": ev.pid}
    assert valkey_pids(tmp_path) == [ev.pid]  # the reuser's exit does not stop the server
    assert ev.owned


def test_reuser_stop_leaves_the_server_running(procs: _Processes, tmp_path: Path) -> None:
    owner = procs.valkey(tmp_path / "data")
    reuser = procs.valkey(tmp_path / "data")
    url = owner.ensure()

    assert reuser.ensure() == url
    assert not reuser.owned
    assert reuser.pid == owner.pid
    reuser.stop()

    with _client(url) as client:
        assert client.ping()


def test_concurrent_start_from_several_processes_starts_one_server(procs: _Processes, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    go = tmp_path / "go"
    children = [procs.child(data_dir, go=go, hold=True) for _ in range(3)]
    time.sleep(0.3)  # let the interpreters start, so they race for the lock
    go.touch()

    results = [_result(child) for child in children]

    assert sum(result["owned"] for result in results) == 1
    assert len({result["pid"] for result in results}) == 1
    assert len({result["url"] for result in results}) == 1
    assert valkey_pids(tmp_path) == [results[0]["pid"]]
    for child in children:
        _release(child)
    _wait_gone(results[0]["pid"])  # the owner stopped it on exit


def test_owner_sigkill_stops_the_server(procs: _Processes, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    owner = procs.child(data_dir, hold=True)
    result = _result(owner)
    assert result["owned"]
    with _client(result["url"]) as client:
        client.set("job", "queued")

    owner.kill()
    owner.wait()

    _wait_gone(result["pid"])
    ev = procs.valkey(data_dir)  # the next process restarts it on the same AOF
    ev.ensure()
    assert ev.owned
    with _client(ev.url) as client:
        assert client.get("job") == "queued"


def test_reuser_restarts_the_server_after_the_owner_dies(procs: _Processes, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    owner = procs.child(data_dir, hold=True)
    first = _result(owner)
    ev = procs.valkey(data_dir)
    url = ev.ensure()
    assert not ev.owned
    assert ev.pid == first["pid"]
    with _client(url) as client:
        client.set("job", "queued")

        owner.kill()
        owner.wait()
        _wait_gone(first["pid"])
        with pytest.raises(redis.ConnectionError):
            client.ping()

        assert ev.ensure() == url  # what a reconnect does
        assert ev.owned
        assert ev.pid != first["pid"]
        assert client.get("job") == "queued"


def test_ensure_started_from_a_short_lived_thread_outlives_the_thread(procs: _Processes, tmp_path: Path) -> None:
    ev = procs.valkey(tmp_path / "data")
    thread = threading.Thread(target=ev.ensure)
    thread.start()
    thread.join()
    pid = ev.pid
    assert pid is not None

    time.sleep(0.5)  # PDEATHSIG would have fired by now if it were tied to that thread

    assert alive(pid)
    assert ev.ensure() == ev.url
    assert ev.pid == pid


def test_crash_leftovers_are_cleaned_up(procs: _Processes, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    crashed = procs.valkey(data_dir)
    crashed.ensure()
    old_pid = crashed.pid
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)
    _wait_gone(old_pid)
    assert (data_dir / "valkey.pid").exists()  # stale leftovers of the crash
    assert (data_dir / "valkey.sock").exists()

    ev = procs.valkey(data_dir)
    url = ev.ensure()

    assert ev.owned
    assert ev.pid != old_pid
    assert (data_dir / "valkey.pid").read_text().strip() == str(ev.pid)
    with _client(url) as client:
        assert client.ping()
    assert crashed.ensure() == url  # the crashed owner now reuses the new server
    assert not crashed.owned
    assert crashed.pid == ev.pid


def test_ensure_restarts_its_own_crashed_server(procs: _Processes, tmp_path: Path) -> None:
    ev = procs.valkey(tmp_path / "data")
    url = ev.ensure()
    old_pid = ev.pid
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)
    _wait_gone(old_pid)

    assert ev.ensure() == url
    assert ev.owned
    assert ev.pid != old_pid
    assert valkey_pids(tmp_path) == [ev.pid]


def test_stale_pid_and_socket_files_are_replaced(procs: _Processes, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    gone = subprocess.Popen([sys.executable, "-c", ""])  # its pid is dead once it exits
    gone.wait()
    (data_dir / "valkey.pid").write_text(f"{gone.pid}\n")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(data_dir / "valkey.sock"))  # a socket file nobody listens on

    ev = procs.valkey(data_dir)
    url = ev.ensure()

    assert ev.owned
    with _client(url) as client:
        assert client.ping()
    assert (data_dir / "valkey.pid").read_text().strip() == str(ev.pid)


def test_unrelated_process_in_pid_file_is_left_alone(procs: _Processes, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (data_dir / "valkey.pid").write_text(f"{bystander.pid}\n")

        ev = procs.valkey(data_dir)
        ev.ensure()

        assert ev.owned
        assert ev.pid != bystander.pid
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_aof_survives_a_server_sigkill(procs: _Processes, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    ev = procs.valkey(data_dir)
    with _client(ev.ensure()) as client:
        client.set("job", "queued")
        client.bgrewriteaof()  # forces the data to disk instead of waiting for the everysec fsync
        deadline = time.monotonic() + 10
        while True:
            info = client.info("persistence")
            if not info["aof_rewrite_in_progress"] and not info["aof_rewrite_scheduled"]:
                break
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert info["aof_last_bgrewrite_status"] == "ok"
    assert ev.pid is not None
    os.kill(ev.pid, signal.SIGKILL)
    _wait_gone(ev.pid)

    with _client(ev.ensure()) as client:
        assert client.get("job") == "queued"
    assert (data_dir / "appendonlydir").is_dir()


def test_aof_survives_a_clean_stop(procs: _Processes, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    ev = procs.valkey(data_dir)
    with _client(ev.ensure()) as client:
        client.rpush("jobs", "a", "b")
    ev.stop()

    with _client(procs.valkey(data_dir).ensure()) as client:
        assert client.lrange("jobs", 0, -1) == ["a", "b"]


def test_long_data_dir_falls_back_to_a_loopback_port(procs: _Processes, tmp_path: Path) -> None:
    data_dir = tmp_path / ("d" * 60) / ("e" * 60)
    assert len(str(data_dir / "valkey.sock")) > 107
    ev = procs.valkey(data_dir)

    url = ev.ensure()

    port = int((data_dir / "valkey.port").read_text())
    assert url == f"redis://127.0.0.1:{port}"
    assert not (data_dir / "valkey.sock").exists()
    with _client(url) as client:
        assert client.config_get("bind") == {"bind": "127.0.0.1"}
        assert client.config_get("port") == {"port": str(port)}
        assert client.config_get("unixsocket") == {"unixsocket": ""}
    child = procs.child(data_dir)
    assert _result(child) == {"url": url, "owned": False, "pid": ev.pid}
    _release(child)

    ev.stop()
    assert not (data_dir / "valkey.port").exists()


def test_recorded_port_of_another_server_is_not_reused(procs: _Processes, tmp_path: Path) -> None:
    other = procs.test_server(tmp_path / "other")
    with _client(other.url) as client:
        client.set("owner", "other")
    data_dir = tmp_path / ("d" * 60) / ("e" * 60)
    data_dir.mkdir(parents=True)
    (data_dir / "valkey.port").write_text(f"{other.port}\n")

    ev = procs.valkey(data_dir)
    url = ev.ensure()

    assert ev.owned
    assert url != other.url
    assert ev.pid != other.pid
    assert other.running
    with _client(url) as client:
        assert client.get("owner") is None


def test_find_server_binary_returns_an_executable() -> None:
    binary = find_server_binary()
    assert binary.is_file()
    assert os.access(binary, os.X_OK)


# ValkeyProcess / start_test_server ------------------------------------------------------------


def test_test_server_restart_keeps_aof_data(procs: _Processes, tmp_path: Path) -> None:
    server = procs.test_server(tmp_path / "valkey", appendonly=True)
    assert server.url == f"redis://127.0.0.1:{server.port}"
    with _client(server.url) as client:
        client.set("k", "v")
        assert client.config_get("bind") == {"bind": "127.0.0.1"}
    first_pid = server.pid

    server.restart()

    assert server.pid != first_pid
    assert server.url == f"redis://127.0.0.1:{server.port}"
    with _client(server.url) as client:
        assert client.get("k") == "v"
        client.set("k2", "v2")

    server.kill()  # a crash: appendfsync always has every write on disk already
    assert not server.running
    server.restart()

    with _client(server.url) as client:
        assert client.mget("k", "k2") == ["v", "v2"]


def test_test_server_without_aof_forgets_on_restart(procs: _Processes, tmp_path: Path) -> None:
    server = procs.test_server(tmp_path / "valkey")
    with _client(server.url) as client:
        client.set("k", "v")
    server.restart()
    with _client(server.url) as client:
        assert client.get("k") is None
    server.stop()
    assert not server.running
    _wait_gone(server.pid)


def test_test_server_on_a_given_port(procs: _Processes, tmp_path: Path) -> None:
    port = free_port()
    server = procs.test_server(tmp_path / "a", port=port)
    assert server.port == port

    with pytest.raises(EmbeddedValkeyError, match="already in use"):
        procs.test_server(tmp_path / "b", port=port)


def test_start_failure_reports_the_log_tail(tmp_path: Path) -> None:
    server = ValkeyProcess(tmp_path, free_port(), appendonly=True, appendfsync="sometimes")
    with pytest.raises(EmbeddedValkeyError, match="exited with code") as excinfo:
        server.start()
    assert "appendfsync" in str(excinfo.value)
    assert not server.running
