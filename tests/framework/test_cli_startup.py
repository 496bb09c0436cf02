"""Start-up faults in one or two lines, root options anywhere, and stopping: a second signal exits at once.

Every test runs the real ``framework`` command as a subprocess.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import pytest

from framework.cli import _hoist_root_options
from framework.client.client import Client
from tests.fixtures.cli import cli_env, run_framework
from tests.fixtures.smtp import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from framework.protocol.keys import Schema

_HOOKS = """
import msgspec
from framework import hookimpl


class Config(msgspec.Struct, frozen=True, kw_only=True):
    retries: int = 1


@hookimpl
def startup(services):
    services.settings.plugin_config("myapp", Config)
"""


@pytest.fixture
def env(redis_url: str, namespace: str, tmp_path: Path) -> dict[str, str]:
    return cli_env(redis_url, namespace, tmp_path / "data")


def _unreachable(env: dict[str, str]) -> dict[str, str]:
    """``env`` with REDIS_URL on a free loopback port nobody listens on."""
    url = f"redis://127.0.0.1:{free_port()}"
    return {**env, "REDIS_URL": url, "FRAMEWORK_REDIS_URL": url}


def _bad_plugin_setting(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """``env`` with an app hook module whose ``[plugins.myapp]`` section has a wrong value."""
    (tmp_path / "myhooks.py").write_text(_HOOKS)
    (tmp_path / "framework.toml").write_text('[plugins.myapp]\nretries = "many"\n')
    return {**env, "FRAMEWORK_APP": "myhooks"}


def _short(done: subprocess.CompletedProcess[str]) -> list[str]:
    """stderr's lines, checked to be a short report: no traceback, at most two lines, non-zero exit."""
    assert done.returncode != 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2, done.stderr
    assert lines[0].startswith("error: "), done.stderr
    return lines


@pytest.mark.parametrize("command", ["run", "web"])
def test_unreachable_redis_is_one_error_and_its_fix(command: str, env: dict[str, str], tmp_path: Path) -> None:
    done = run_framework(_unreachable(env), tmp_path, command, "--port", str(free_port()))
    lines = _short(done)
    assert "cannot reach Redis at redis://127.0.0.1:" in lines[0]
    assert lines[1].startswith("fix: ") and "REDIS_URL" in lines[1]
    assert "App:" not in done.stderr  # the banner comes once everything has started


@pytest.mark.parametrize("command", ["run", "web"])
def test_a_bad_plugin_setting_is_one_error_naming_the_setting(
    command: str, env: dict[str, str], tmp_path: Path
) -> None:
    done = run_framework(_bad_plugin_setting(env, tmp_path), tmp_path, command, "--port", str(free_port()))
    lines = _short(done)
    assert "plugins.myapp.retries='many' is invalid" in lines[0]


@pytest.mark.parametrize("command", ["run", "web"])
def test_a_port_in_use_is_one_error_suggesting_port_and_nothing_starts(
    command: str, env: dict[str, str], tmp_path: Path
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run_framework(env, tmp_path, command, "--port", str(port))
    lines = _short(done)
    assert lines[0] == f"error: port {port} on 127.0.0.1 is already in use"
    assert f"--port {port + 1}" in lines[1]
    assert not (tmp_path / "data").exists()  # no embedded Valkey, no worker, nothing


@pytest.mark.parametrize("debug", [("--debug",), ("web", "--debug"), ("FRAMEWORK_DEBUG=1",)])
def test_debug_shows_the_traceback(debug: tuple[str, ...], env: dict[str, str], tmp_path: Path) -> None:
    env = _unreachable(env)
    args = ["web", "--port", str(free_port())]
    if debug == ("FRAMEWORK_DEBUG=1",):
        env["FRAMEWORK_DEBUG"] = "1"
    elif debug == ("--debug",):
        args.insert(0, "--debug")
    else:
        args.append("--debug")
    done = run_framework(env, tmp_path, *args)
    assert done.returncode != 0
    assert "Traceback" in done.stderr
    assert "RedisUnavailable" in done.stderr
    assert done.stderr.count("error: cannot reach Redis") == 1


def test_worker_and_scheduler_report_the_same_fault_the_same_way(env: dict[str, str], tmp_path: Path) -> None:
    for command in ("worker", "scheduler"):
        lines = _short(run_framework(_unreachable(env), tmp_path, command))
        assert "cannot reach Redis" in lines[0]
        assert "REDIS_URL" in lines[1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--concurrency", "0"), "error: option --concurrency=0 is invalid: must be an integer >= 1"),
        (("-c", "-3"), "error: option --concurrency=-3 is invalid: must be an integer >= 1"),
        (("--processes", "0"), "error: option --processes=0 is invalid: must be an integer >= 1"),
        (("-q", "default=0"), "error: option --queue='default=0' is invalid: the weight must be an integer >= 1"),
        (("-q", "default=x"), "error: option --queue='default=x' is invalid: the weight must be an integer >= 1"),
    ],
)
def test_worker_rejects_counts_below_one(
    args: tuple[str, ...], message: str, env: dict[str, str], tmp_path: Path
) -> None:
    """``--concurrency 0`` is rejected as ``concurrency = 0`` in the TOML is, never silently ignored."""
    assert _short(run_framework(env, tmp_path, "worker", *args)) == [message]


def test_a_settings_error_is_printed_once(env: dict[str, str], tmp_path: Path) -> None:
    done = run_framework({**env, "FRAMEWORK_CONCURRENCY": "0"}, tmp_path, "worker")
    assert _short(done) == [
        "error: setting concurrency=0 is invalid: must be an integer >= 1 (from FRAMEWORK_CONCURRENCY)"
    ]


# Root options anywhere ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "hoisted"),
    [
        (["worker", "--config", "a.toml"], ["--config", "a.toml", "worker"]),
        (["tasks", "stats", "--config=a.toml", "--debug"], ["--config=a.toml", "--debug", "tasks", "stats"]),
        (["--debug", "run", "--port", "1"], ["--debug", "run", "--port", "1"]),
        (["tasks", "enqueue", "t", "--", "--debug"], ["tasks", "enqueue", "t", "--", "--debug"]),
    ],
)
def test_root_options_move_before_the_command(argv: list[str], hoisted: list[str]) -> None:
    assert _hoist_root_options(argv) == hoisted


def test_config_is_accepted_before_and_after_the_command(env: dict[str, str], tmp_path: Path) -> None:
    config = tmp_path / "app.toml"
    config.write_text('[[cron]]\nname = "nightly"\nspec = "@every 1h"\ntask = "demo:hello"\n')
    before = run_framework(env, tmp_path, "--config", str(config), "cron", "ls", "--json")
    after = run_framework(env, tmp_path, "cron", "ls", "--json", "--config", str(config))
    assert before.returncode == after.returncode == 0, before.stderr + after.stderr
    assert [entry["name"] for entry in json.loads(after.stdout)] == ["nightly"]
    assert json.loads(before.stdout) == json.loads(after.stdout)
    missing = [
        run_framework(env, tmp_path, *argv)
        for argv in (("--config", "nope.toml", "worker"), ("worker", "--config", "nope.toml"))
    ]
    assert missing[0].stderr == missing[1].stderr
    assert "nope.toml" in _short(missing[0])[0]


# Stopping: the first signal says what it waits for, the second exits at once ----------------------


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Any]:
    """``spawn(env, *args)`` starts ``framework ARGS`` with stderr to a file; every one is killed at the end."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(env: dict[str, str], *args: str) -> tuple[subprocess.Popen[bytes], Path]:
        log = tmp_path / f"stderr-{len(procs)}.log"
        with log.open("wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "framework", *args],
                env=env,
                cwd=tmp_path,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        procs.append(proc)
        return proc, log

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _wait_for(check: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


async def _running_task(redis_url: str, redis: Any, schema: Schema, proc: subprocess.Popen[bytes]) -> str:
    """Enqueue a ten-second demo task and wait until a worker runs it.

    Its first progress report is the sign: the task is on the active list as soon as Redis hands it out,
    a moment before the worker holds it (and counts it as running).
    """
    client = Client.from_url(redis_url, schema=schema)
    try:
        info = await client.enqueue("demo:hello", {"name": "slow", "work_seconds": 10})
    finally:
        await client.redis.aclose()
    deadline = time.monotonic() + 30
    while not await redis.exists(schema.queue("default").progress(info.id)):
        assert proc.poll() is None, "the command exited"
        assert time.monotonic() < deadline, "the task did not start"
        await asyncio.sleep(0.05)
    return info.id


async def _second_signal_exits_at_once(
    proc: subprocess.Popen[bytes], log: Path, waiting_for: str, redis: Any, schema: Schema, task_id: str
) -> str:
    proc.send_signal(signal.SIGINT)
    _wait_for(lambda: "press Ctrl-C again to quit now" in log.read_text(), "the stopping message")
    proc.send_signal(signal.SIGINT)
    status = proc.wait(30)
    assert status == 130, log.read_text()
    # it did not wait for the ten-second task: that is still running (active) in Redis, not finished
    state = await redis.hget(schema.queue("default").task(task_id), "state")
    assert state == b"active", (state, log.read_text())
    text = log.read_text()
    assert waiting_for in text, text
    return text


@pytest.mark.parametrize("args", [("worker",), ("worker", "--scheduler"), ("worker", "--processes", "2")])
async def test_worker_second_sigint_exits_at_once(
    args: tuple[str, ...], spawn: Any, env: dict[str, str], redis_url: str, redis: Any, schema: Schema
) -> None:
    proc, log = spawn({**env, "FRAMEWORK_SHUTDOWN_TIMEOUT": "60"}, *args)
    task_id = await _running_task(redis_url, redis, schema, proc)
    if "--processes" in args:
        waiting_for = "stopping: waiting up to 60 s for 2 worker processes"
    else:
        waiting_for = "stopping: waiting up to 60 s for 1 running task;"
    await _second_signal_exits_at_once(proc, log, waiting_for, redis, schema, task_id)


async def test_run_second_sigint_exits_at_once(
    spawn: Any, env: dict[str, str], redis_url: str, redis: Any, schema: Schema
) -> None:
    port = free_port()
    proc, log = spawn({**env, "FRAMEWORK_SHUTDOWN_TIMEOUT": "60"}, "run", "--port", str(port))
    _wait_for(lambda: f"App:        http://127.0.0.1:{port}/" in log.read_text() or proc.poll() is not None, "start")
    task_id = await _running_task(redis_url, redis, schema, proc)
    await _second_signal_exits_at_once(
        proc, log, "stopping: waiting up to 60 s for 1 running task;", redis, schema, task_id
    )


def test_scheduler_and_web_say_what_stopping_waits_for(spawn: Any, env: dict[str, str]) -> None:
    port = free_port()

    def scheduler_started(log: Path) -> bool:  # it has no banner: its start is logged (idle: the demo has no cron)
        text = log.read_text()
        return "scheduler_idle" in text or "scheduler_started" in text

    for args, message in (
        (("scheduler",), "stopping the scheduler; press Ctrl-C again to quit now"),
        (("web", "--port", str(port)), "stopping: waiting for open requests; press Ctrl-C again to quit now"),
    ):
        proc, log = spawn(env, *args)
        if args[0] == "web":
            _wait_for(lambda log=log: "App:" in log.read_text(), "the banner")
        else:
            _wait_for(lambda log=log: scheduler_started(log), "the scheduler's start")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0, log.read_text()
        assert message in log.read_text()


def test_web_stops_within_the_shutdown_timeout_with_a_progress_stream_open(spawn: Any, env: dict[str, str]) -> None:
    """uvicorn waits for open requests before the app shuts down, and an event stream on a task nobody runs stays
    open for its whole timeout (ten minutes): SIGTERM left the server up that long. Open requests now get
    ``shutdown_timeout`` seconds."""
    import httpx

    port = free_port()
    proc, log = spawn({**env, "FRAMEWORK_SHUTDOWN_TIMEOUT": "1"}, "web", "--port", str(port))
    _wait_for(lambda: "App:" in log.read_text(), "the banner")
    base = f"http://127.0.0.1:{port}"
    accepted = httpx.post(f"{base}/demo/greetings", json={"wait_seconds": 0}, timeout=10)
    assert accepted.status_code == 202, accepted.text  # enqueued; no worker runs here
    task_id = accepted.json()["id"]
    with httpx.stream("GET", f"{base}/demo/tasks/{task_id}/events", timeout=30) as stream:
        assert stream.status_code == 200
        proc.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        with contextlib.suppress(httpx.HTTPError):
            for _ in stream.iter_raw():
                pass
        status = proc.wait(30)
    assert status == 0, log.read_text()
    # the 1 s shutdown timeout (and room for a loaded machine), not the stream's ten minutes
    assert time.monotonic() - stopped < 1 + 10, log.read_text()
