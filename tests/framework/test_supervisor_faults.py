"""``framework worker --processes N`` under faults: worker processes crashing beside the embedded Valkey, a
shutdown while tasks run on it, and a SIGTERM that arrives while the supervisor is still starting its children.

Real supervisors, workers and ``valkey-server`` processes; every test kills what it started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis as redis_sync

from framework.client.client import Client
from framework.embedded.server import EmbeddedValkey
from framework.protocol.keys import Schema
from framework.settings import Settings
from tests.fixtures.processes import alive, server_pid, valkey_pids, wait_for
from tests.fixtures.processes import parent as parent_of
from tests.framework.worker_app import JOB, ROOT, Job, env_for, stop_process

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.timeout(120)

_WAIT = 30.0
"""Seconds each step of a test may take (workers starting, a task running)."""


def _worker_children(parent: int) -> set[int]:
    """The live child processes of ``parent`` that are not a valkey-server."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if "valkey" not in comm and parent_of(pid) == parent and alive(pid):
            found.add(pid)
    return found


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Settings]:
    """Settings without a Redis URL (the embedded Valkey in ``tmp_path``); servers left there are killed after."""
    yield Settings(namespace=f"t{uuid.uuid4().hex[:12]}", data_dir=str(tmp_path / "data"), shutdown_timeout=8.0)
    for pid in valkey_pids(tmp_path):
        os.kill(pid, signal.SIGKILL)


def _supervise(settings: Settings, processes: int, log: Path) -> subprocess.Popen[bytes]:
    """``framework worker -p N`` serving the test worker program's task types."""
    env = env_for(settings, FRAMEWORK_APP="tests.framework.worker_app")
    env.pop("REDIS_URL", None)
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "framework", "worker", "--processes", str(processes)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _started_workers(log: Path) -> int:
    return log.read_text(errors="replace").count("worker_started")


def _server_pid(settings: Settings) -> int:
    return server_pid(settings.data_path / "valkey", _WAIT)


def test_worker_processes_crashing_leave_the_embedded_valkey_running(embedded: Settings, tmp_path: Path) -> None:
    """Each child SIGKILLed in turn is replaced, and the one server the children share stays up throughout."""
    log = tmp_path / "supervisor.log"
    supervisor = _supervise(embedded, 2, log)
    try:
        wait_for(lambda: _started_workers(log) >= 2, f"two workers started\n{log.read_text()}", _WAIT)
        server = _server_pid(embedded)
        children = _worker_children(supervisor.pid)
        assert len(children) == 2

        for started, victim in enumerate(sorted(children), start=3):
            os.kill(victim, signal.SIGKILL)
            wait_for(
                lambda started=started: _started_workers(log) >= started, f"a replacement\n{log.read_text()}", _WAIT
            )
            assert alive(server), f"the server went down with worker process {victim}\n{log.read_text()}"

        assert _server_pid(embedded) == server
        assert stop_process(supervisor) == 0
        assert not alive(server)
    finally:
        stop_process(supervisor)
    assert "embedded_valkey_stopped" in log.read_text()


async def test_every_worker_process_writes_its_outcome_before_the_embedded_valkey_stops(
    embedded: Settings, tmp_path: Path
) -> None:
    """SIGTERM while both children run a task: each completes it on the server, whichever child ends first."""
    settings = embedded.replace(concurrency=1)
    log = tmp_path / "supervisor.log"
    supervisor = _supervise(settings, 2, log)
    ns = settings.namespace
    try:
        wait_for(lambda: _started_workers(log) >= 2, f"two workers started\n{log.read_text()}", _WAIT)
        url = f"unix://{settings.data_path / 'valkey' / 'valkey.sock'}"
        sync = redis_sync.Redis.from_url(url, decode_responses=True)
        async with Client.from_url(url, schema=Schema(ns), settings=settings) as client:
            first = await client.enqueue(JOB, Job(sleep=3.0))
            runner = int(wait_for(lambda: sync.hget(f"{ns}:test:pid", first.id), "the first task running", _WAIT))
            # the child whose task ends first must not take the server of the other one away: make the
            # server's parent (if a child) finish first
            owner_runs_first = parent_of(_server_pid(settings)) == runner
            second = await client.enqueue(JOB, Job(sleep=5.0 if owner_runs_first else 1.5))
            wait_for(lambda: sync.hget(f"{ns}:test:pid", second.id), "the second task running", _WAIT)
        runners = {int(sync.hget(f"{ns}:test:pid", t.id) or 0) for t in (first, second)}
        sync.close()
        assert runners == _worker_children(supervisor.pid)  # one task in each child

        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(30) == 0, log.read_text()
    finally:
        stop_process(supervisor)

    with EmbeddedValkey(settings.data_path / "valkey") as valkey:  # the AOF the supervisor's server left
        check = redis_sync.Redis.from_url(valkey.url, decode_responses=True)
        done = check.lrange(f"{ns}:test:done", 0, -1)
        runs = check.hgetall(f"{ns}:test:runs")
        check.close()
    assert sorted(done) == sorted([first.id, second.id]), log.read_text()
    assert runs == {first.id: "1", second.id: "1"}


_SIGTERM_AT_FIRST_FORK = """
import os, signal, sys
from framework.worker.supervisor import main

forked = []


def sigterm_once() -> None:
    if not forked:
        forked.append(True)
        os.kill(os.getpid(), signal.SIGTERM)


os.register_at_fork(after_in_parent=sigterm_once)
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_while_the_children_start_stops_every_one_of_them_promptly(settings: Settings, tmp_path: Path) -> None:
    """A SIGTERM as the first child is forked: no further child starts, and the started ones stop at once."""
    fast = settings.replace(shutdown_timeout=1.0, cancel_grace=1.0)  # the drain would give up after 17 s
    log = tmp_path / "supervisor.log"
    args = ["--processes", "3", "--factory", "tests.framework.worker_app:make_worker"]
    with log.open("ab") as out:
        supervisor = subprocess.Popen(
            [sys.executable, "-c", _SIGTERM_AT_FIRST_FORK, *args],
            cwd=ROOT,
            env=env_for(fast),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        started = time.monotonic()
        assert supervisor.wait(30) == 0, log.read_text()
        took = time.monotonic() - started
    finally:
        stop_process(supervisor)
    text = log.read_text()
    assert "supervisor_stopping" in text
    assert "worker_process_kill" not in text, text
    assert took < 10.0, text
    assert text.count("worker_process_started") == 1, text
