"""``framework tasks|workflows|cron`` when Redis fails or holds what it should not: a clear error, never a traceback.

A Redis that is stopped (``SIGSTOP``: the kernel still accepts connections, nothing answers) is an error within
seconds; one that goes away in the middle of a command is ``error: lost Redis ...`` and exit status 1. ``cron ls``
lists the entries even when their last runs cannot be read.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import pytest
import redis as redis_sync
from click.testing import CliRunner, Result

from framework.embedded.process import ValkeyProcess, start_test_server
from tests.fixtures.cli import cli_env, run_framework

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from framework.protocol.keys import Schema
    from tests.fixtures.cli import Cli


@pytest.fixture
def own_valkey(tmp_path: Path) -> Iterator[ValkeyProcess]:
    """A Valkey of this test's own, so stopping or killing it disturbs no other test."""
    server = start_test_server(tmp_path / "valkey")
    try:
        yield server
    finally:
        if server.running:
            os.kill(server.pid, signal.SIGCONT)
        server.stop()


@pytest.fixture
def own_cli(own_valkey: ValkeyProcess, namespace: str, tmp_path: Path) -> Cli:
    """``framework`` against :func:`own_valkey`."""
    env = cli_env(own_valkey.url, namespace, tmp_path / "data")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return run_framework(env, tmp_path, *args, timeout=60)

    return run


def one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("error: "), result.stderr
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)


def test_a_stopped_redis_is_a_one_line_error_not_a_hang(own_valkey: ValkeyProcess, own_cli: Cli) -> None:
    """A server that accepts but never answers (SIGSTOP): the command's connect timeout ends it (the run's own
    timeout would fail the test on a hang)."""
    os.kill(own_valkey.pid, signal.SIGSTOP)
    one_line_error(own_cli("tasks", "stats"), "cannot reach Redis at redis://127.0.0.1:")


def test_redis_going_away_in_the_middle_of_a_command_is_a_one_line_error(
    own_valkey: ValkeyProcess, own_cli: Cli, namespace: str, tmp_path: Path
) -> None:
    """The command's PING is answered; the server is killed while the command's write waits to be served."""
    assert own_cli("tasks", "enqueue", "demo:hello", "--payload", "{}").returncode == 0
    env = cli_env(own_valkey.url, namespace, tmp_path / "data")
    with redis_sync.Redis.from_url(own_valkey.url) as r:
        r.execute_command("CLIENT", "PAUSE", "30000", "WRITE")  # reads (the PING) are served, writes wait
        proc = subprocess.Popen(
            [sys.executable, "-m", "framework", "tasks", "pause", "default"],
            env=env,
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 30
            while b"cmd=setnx" not in r.execute_command("CLIENT", "LIST") and time.monotonic() < deadline:
                time.sleep(0.05)  # until the command's PING was answered and its write is held by the pause
        finally:
            own_valkey.kill()
        out, err = proc.communicate(timeout=60)
    one_line_error(subprocess.CompletedProcess(proc.args, proc.returncode, out, err), "Redis")


def _cron_ls(tmp_path: Path, redis_url: str, namespace: str) -> Result:
    import framework.cli.cron  # noqa: F401 - registers the command group
    from framework.cli import cli

    config = tmp_path / "framework.toml"
    config.write_text(
        f'redis_url = "{redis_url}"\nnamespace = "{namespace}"\nload_plugins = []\n'
        f'data_dir = "{tmp_path / "data"}"\n\n'
        '[[cron]]\nname = "nightly"\nspec = "30 2 * * *"\ntask = "demo:hello"\n'
    )
    return CliRunner().invoke(cli, ["--config", str(config), "cron", "ls", "--json"], env={"COLUMNS": "200"})


def test_cron_ls_lists_the_entries_when_their_last_runs_cannot_be_read(
    tmp_path: Path, redis_url: str, namespace: str, schema: Schema
) -> None:
    ids = [row["id"] for row in json.loads(_cron_ls(tmp_path, redis_url, namespace).stdout)]
    with redis_sync.Redis.from_url(redis_url) as r:
        r.hset(schema.cron_last, ids[0], "not a time")  # written by something else
        result = _cron_ls(tmp_path, redis_url, namespace)
        assert result.exit_code == 0, result.output
        assert [row["last_run"] for row in json.loads(result.stdout)] == [None]

        r.delete(schema.cron_last)
        r.set(schema.cron_last, "a string, not a hash")  # WRONGTYPE for HMGET
        result = _cron_ls(tmp_path, redis_url, namespace)
    assert result.exit_code == 0, result.output
    assert [row["name"] for row in json.loads(result.stdout)] == ["nightly"]
    assert "warning: last runs unknown" in result.stderr and "WRONGTYPE" in result.stderr
