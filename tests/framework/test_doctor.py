"""``framework doctor`` as a user runs it: a subprocess against the test Valkey."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from framework.broker.broker import RedisBroker
from framework.cli.doctor import MIN_REDIS, _version
from framework.clock import SystemClock
from framework.embedded.launch import free_port
from framework.protocol.message import encode_message, new_message
from tests.framework.golden import load_golden

if TYPE_CHECKING:
    from pathlib import Path

    from redis.asyncio import Redis

    from framework.protocol.keys import Schema

Result = subprocess.CompletedProcess[str]


def doctor(redis_url: str, namespace: str, tmp_path: Path, *extra: str, **env_changes: str) -> Result:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEWORK_") and k != "REDIS_URL"}
    env.update(
        FRAMEWORK_REDIS_URL=redis_url,
        FRAMEWORK_NAMESPACE=namespace,
        FRAMEWORK_LOAD_PLUGINS="",  # only the built-in demo plugin (demo:hello)
        FRAMEWORK_DATA_DIR=str(tmp_path / "data"),
        PYTHONIOENCODING="utf-8",
    )
    env.update(env_changes)
    return subprocess.run(
        [sys.executable, "-m", "framework", "doctor", *extra],
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def side_by_side(*calls: tuple[tuple[str, ...], dict[str, str]], base: tuple[str, str, Path]) -> list[Result]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda call: doctor(*base, *call[0], **call[1]), calls))


async def _enqueue(redis: Redis, schema: Schema, queue: str, task_type: str, task_id: str) -> None:
    msg = new_message(type=task_type, payload=b"{}", id=task_id, queue=queue, retry=3, timeout=60, deadline=0)
    broker = RedisBroker(redis, schema, SystemClock(), wakeup=False)
    assert await broker.enqueue(queue, task_id, encode_message(msg)) == 1


async def test_healthy_with_a_warning(
    redis: Redis, schema: Schema, redis_url: str, namespace: str, tmp_path: Path
) -> None:
    await _enqueue(redis, schema, "default", "demo:hello", "handled")
    await _enqueue(redis, schema, "go-only", "go:thing", "elsewhere")  # a queue this app's workers do not serve
    result = doctor(redis_url, namespace, tmp_path)
    assert result.returncode == 0, (result.stdout, result.stderr)
    lines = result.stdout.splitlines()
    assert lines[0] == f"✓ settings: namespace {namespace!r}, queues critical=6, default=3, low=1"
    assert lines[1].startswith("✓ redis: Valkey ")
    assert redis_url in lines[1]
    assert "✓ plugins: 1 loaded: demo" in lines
    assert "✓ task types: 1 registered: demo:hello" in lines
    assert "✓ plugin settings: no loaded plugin has settings to check" in lines
    assert "✓ queues: every task type and cron entry uses a served queue" in lines
    assert "! queued task types: 'go:thing' tasks wait in 'go-only' pending (1) (sampled)" in result.stdout
    assert "another worker fleet" in result.stdout
    assert "demo:hello" not in "".join(line for line in lines if line.startswith("!"))
    assert lines[-1] == "all good"


async def test_unhandled_types_in_served_queues(redis: Redis, redis_url: str, namespace: str, tmp_path: Path) -> None:
    await load_golden(redis, namespace)  # Go's tasks: email:send, report:generate, ... which nothing here handles
    text, data = side_by_side(((), {}), (("--json",), {}), base=(redis_url, namespace, tmp_path))
    assert text.returncode == 1
    assert "✗ queued task types: 'email:send' tasks wait in 'default' pending (2) (sampled)" in text.stdout
    assert "✗ queued task types: 'digest:weekly' tasks wait in 'default' scheduled (1)" in text.stdout
    assert "delete-all" not in text.stdout  # only the unhandled tasks are named, never a whole state
    assert "set just these tasks aside: `framework tasks archive default golden-plain`" in text.stdout
    assert "! queued task types: 'fail:retry' tasks wait in 't_retry' retry (1)" in text.stdout
    assert text.stdout.splitlines()[-1] == "some checks failed"
    assert data.returncode == 1
    report = json.loads(data.stdout)
    assert report["ok"] is False
    failing = {c["detail"].split("'")[1] for c in report["checks"] if c["status"] == "fail"}
    assert failing == {"email:send", "digest:weekly", "report:generate", "blob:raw"}  # pending, scheduled, retry
    assert all(c["fix"] for c in report["checks"] if c["status"] != "ok")


async def test_broken_settings_redis_and_plugins(redis_url: str, namespace: str, tmp_path: Path) -> None:
    settings, unreachable, plugin = side_by_side(
        ((), {"FRAMEWORK_CONCURRENCY": "0"}),
        ((), {"FRAMEWORK_REDIS_URL": f"redis://127.0.0.1:{free_port()}"}),
        ((), {"FRAMEWORK_APP": "no_such_module_for_doctor"}),
        base=(redis_url, namespace, tmp_path),
    )
    assert settings.returncode == 1
    assert "✗ settings: setting concurrency=0 is invalid" in settings.stdout
    assert "fix: correct that setting" in settings.stdout
    assert unreachable.returncode == 1
    assert "✗ redis: cannot reach Redis at redis://127.0.0.1:" in unreachable.stdout
    assert "fix: start Redis" in unreachable.stdout
    assert plugin.returncode == 1
    assert "✗ plugins: the app module 'no_such_module_for_doctor'" in plugin.stdout
    assert "✓ redis" in plugin.stdout


_APP = """
import msgspec

from framework.hookspecs import hookimpl
from framework.task import TaskDef


class Report(msgspec.Struct):
    name: str = "daily"


async def handle(ctx, payload):
    return None


report = TaskDef("report:build", Report, handle, queue="reports")


@hookimpl
def register_task_types(settings):
    return [report]
"""

_BROKEN = """
[plugins.email]
backend = "smtpp"

[plugins.emial]
app_name = "Acme"

[[cron]]
name = "nightly-report"
spec = "@daily"
task = "report:build"
queue = "nightly"
"""


async def test_plugin_settings_and_unserved_queues(redis_url: str, namespace: str, tmp_path: Path) -> None:
    (tmp_path / "doctor_app.py").write_text(_APP, encoding="utf-8")
    (tmp_path / "framework.toml").write_text(_BROKEN, encoding="utf-8")
    smtp = tmp_path / "smtp.toml"
    smtp.write_text('[plugins.email]\nbackend = "smtp"\n\n[plugins.email.smtp]\nhots = "mail.test"\n', "utf-8")
    env = {"FRAMEWORK_LOAD_PLUGINS": "email", "FRAMEWORK_APP": "doctor_app", "PYTHONPATH": str(tmp_path)}
    text, data, unknown_key = side_by_side(
        ((), env),
        (("--json",), env),
        ((), {**env, "FRAMEWORK_CONFIG": str(smtp)}),
        base=(redis_url, namespace, tmp_path),
    )
    assert text.returncode == 1, (text.stdout, text.stderr)
    assert "✗ plugin settings: email: setting [plugins.email] backend='smtpp' is invalid" in text.stdout
    assert "did you mean [plugins.email]?" in text.stdout
    assert "✗ queues: task type 'report:build' uses queue 'reports', which no worker serves" in text.stdout
    assert "✗ queues: cron entry 'nightly-report' uses queue 'nightly'" in text.stdout
    assert "FRAMEWORK_QUEUES=critical=6,default=3,low=1,nightly=1" in text.stdout
    assert text.stdout.splitlines()[-1] == "some checks failed"
    report = json.loads(data.stdout)
    assert data.returncode == 1
    assert report["ok"] is False
    assert {c["name"] for c in report["checks"] if c["status"] == "fail"} == {"plugin settings", "queues"}
    assert unknown_key.returncode == 1
    assert "✗ plugin settings: email: setting plugins.email.smtp" in unknown_key.stdout
    assert "unknown field `hots`" in unknown_key.stdout
    assert "✓ queues" not in unknown_key.stdout  # the app's 'reports' queue is still unserved


def test_server_version_parsing() -> None:
    assert _version({"redis_version": "7.2.4", "valkey_version": "9.1.2"}) == (
        "Valkey 9.1.2 (Redis 7.2.4 compatible)",
        (7, 2),
    )
    label, version = _version({"redis_version": "6.0.16"})
    assert label == "Redis 6.0.16"
    assert version < MIN_REDIS
    assert _version({"redis_version": "6.2.0"})[1] >= MIN_REDIS
