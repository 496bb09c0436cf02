"""A Redis that may evict keys when full is named at a worker's start and by ``framework doctor``.

With ``maxmemory`` set and an eviction policy (managed services often default to ``volatile-lru``), a full
server drops keys instead of refusing writes: under ``allkeys-*`` a queued task's hash or list entry, and the task
is lost with no error anywhere; under ``volatile-*`` the keys with a time to live (uniqueness locks, cron tick
claims, in-flight records). Nothing said so.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest
from structlog.testing import capture_logs

from framework.embedded.process import start_test_server
from framework.settings import Settings
from framework.transport.connection import open_redis
from framework.worker.worker import Worker

if TYPE_CHECKING:
    from pathlib import Path


@pytest.mark.parametrize(
    ("maxmemory", "policy", "warned"),
    [
        ("100mb", "allkeys-lru", "tasks can be lost"),
        ("100mb", "volatile-lru", "a unique task or a cron tick can run twice"),
        ("100mb", "noeviction", None),
        ("0", "allkeys-lru", None),  # no limit: nothing is ever evicted
    ],
)
async def test_a_worker_warns_at_start_of_a_server_that_may_evict_and_so_does_doctor(
    tmp_path: Path, namespace: str, maxmemory: str, policy: str, warned: str | None
) -> None:
    server = start_test_server(tmp_path / "valkey")
    admin = open_redis(server.url)
    try:
        await admin.config_set("maxmemory", maxmemory)
        await admin.config_set("maxmemory-policy", policy)
        settings = Settings(redis_url=server.url, namespace=namespace, data_dir=str(tmp_path), load_plugins=[])
        with capture_logs() as logs:
            async with Worker(settings):
                pass
        warnings = [e for e in logs if e["event"] == "redis_may_evict"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEWORK_") and k != "REDIS_URL"}
        env.update(FRAMEWORK_REDIS_URL=server.url, FRAMEWORK_LOAD_PLUGINS="", PYTHONIOENCODING="utf-8")
        checked = subprocess.run(
            [sys.executable, "-m", "framework", "doctor"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        await admin.aclose()
        server.stop()
    assert checked.returncode == 0, checked.stderr  # a warning, not a failure
    line = next(line for line in checked.stdout.splitlines() if "redis eviction" in line)
    if warned is None:
        assert warnings == []
        assert line.startswith("✓ redis eviction")
    else:
        [warning] = warnings
        assert warning["log_level"] == "warning"
        assert warned in warning["detail"] and f"maxmemory-policy {policy}" in warning["detail"]
        assert "noeviction" in warning["fix"]
        assert line.startswith("! redis eviction") and warned in line
        assert "maxmemory-policy noeviction" in checked.stdout
