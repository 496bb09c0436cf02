"""A worker with every installed plugin loaded imports only what its configuration uses before its first task.

The email plugin's backends package imported every backend's library (``resend`` with requests and httpx:
120 ms), and the images plugin's task module imported Pillow and its format plugins (45 ms), into every
worker's start-up, whatever it was configured to do. Now a backend's library loads when that backend is built
(the default ``outbox`` needs none) and Pillow with the first image processed.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from typing import TYPE_CHECKING

from framework.client.client import Client
from framework.protocol.keys import Schema
from tests.fixtures.cli import cli_env
from tests.framework.worker_app import wait_until

if TYPE_CHECKING:
    from pathlib import Path

    from redis.asyncio import Redis

APP = """
    import json
    import sys

    import msgspec

    from framework import TaskDef, hookimpl


    class Nothing(msgspec.Struct, frozen=True):
        pass


    async def report(ctx, payload):
        with open({out!r}, "w") as f:
            json.dump(sorted(sys.modules), f)


    modules = TaskDef("imports:report", Nothing, report)


    @hookimpl
    def register_task_types(settings):
        return [modules]
"""
HEAVY = ("resend", "requests", "httpx", "aiosmtplib", "PIL")
"""Libraries of backends and work this worker is not configured for, or has not done yet."""


async def test_a_worker_with_every_plugin_imports_no_backend_it_does_not_use(
    redis: Redis, redis_url: str, namespace: str, tmp_path: Path
) -> None:
    out = tmp_path / "modules.json"
    (tmp_path / "imports_app.py").write_text(textwrap.dedent(APP.format(out=str(out))))
    env = cli_env(redis_url, namespace, tmp_path / "data")
    del env["FRAMEWORK_LOAD_PLUGINS"]  # every installed plugin, as a user's worker has them
    env.update(FRAMEWORK_APP="imports_app", PYTHONPATH=str(tmp_path))
    log = tmp_path / "worker.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "framework", "worker", "--processes", "1"],
            cwd=tmp_path,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        client = Client(redis, schema=Schema(namespace))
        await client.enqueue("imports:report", {})

        async def reported() -> bool:
            assert proc.poll() is None, log.read_text()
            return out.exists() and out.stat().st_size > 0

        await wait_until(reported, timeout=60)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    loaded = set(json.loads(out.read_text()))
    assert {"framework_email.tasks", "framework_images.tasks", "framework_email.service"} <= loaded  # plugins on
    assert sorted(name for name in HEAVY if name in loaded) == []
