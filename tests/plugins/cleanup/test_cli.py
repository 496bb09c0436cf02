"""``framework cleanup run|ls``, in-process and through the real ``framework`` command.

This module doubles as an app's hook module (``settings.app``): it contributes a ``broken`` sweeper.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from typing import TYPE_CHECKING, Any

import pytest
import structlog
from click.testing import CliRunner, Result
from framework_cleanup.cli import cleanup, format_bytes, format_seconds
from framework_cleanup.sweepers import SweepContext, Sweeper, SweepResult

from framework.cli import CliContext
from framework.hookspecs import hookimpl
from framework.plugins.manager import get_app_plugin_manager
from framework.storage import LocalStorage
from tests.fixtures.cli import run_framework

if TYPE_CHECKING:
    from pathlib import Path

    from framework.settings import Settings

BUILTIN = ["tokens", "tmp", "uploads", "outbox", "workflows"]


async def sweep_broken(ctx: SweepContext) -> SweepResult:
    raise PermissionError("bucket policy denies delete")


@hookimpl
def register_sweepers(settings: Settings) -> list[Sweeper]:
    """This module is the app: one sweeper that always fails."""
    return [Sweeper("broken", "@daily", sweep_broken)]


@pytest.fixture
def app_settings(settings: Settings) -> Settings:
    return settings.replace(load_plugins=["cleanup"], app=__name__)


@pytest.fixture
def invoke(app_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Run ``framework cleanup ARGS`` in this process with the test's settings; logs are captured."""
    monkeypatch.setattr("framework.logging._configured", True)  # keep the session's logging as it is

    def run(*args: str, settings: Settings = app_settings) -> Result:
        ctx = CliContext()
        ctx.__dict__.update(settings=settings, pm=get_app_plugin_manager(settings))  # the cached properties
        with structlog.testing.capture_logs():
            return CliRunner().invoke(cleanup, list(args), obj=ctx, catch_exceptions=False)

    return run


def seed_tmp(settings: Settings, key: str = "tmp/old.bin", data: bytes = b"12345", age: float = 2 * 86400) -> Path:
    storage = LocalStorage.from_settings(settings)
    asyncio.run(storage.put(key, data))
    path = storage.root / key
    t = time.time() - age
    os.utime(path, (t, t))
    return path


def test_ls_lists_sweepers_schedules_and_last_results(invoke: Any, app_settings: Settings) -> None:
    result = invoke("ls")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "SCHEDULE", "GRACE", "SOURCE", "LAST", "RUN"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert list(rows) == [*BUILTIN, "broken"]
    assert rows["tokens"].split()[1:5] == ["@hourly", "1m", "cleanup", "never"]
    assert "0 2 * * *" in rows["uploads"]
    assert rows["outbox"].split()[6] == "7d"
    assert rows["broken"].split()[1:5] == ["@daily", "0s", "app", "never"]

    seed_tmp(app_settings)
    assert invoke("run", "tmp").exit_code == 0
    after = {line.split()[0]: line for line in invoke("ls").stdout.splitlines()[1:]}
    assert "ago: removed 1 (5 B), 0 error(s)" in after["tmp"]


def test_ls_json_and_disabled(invoke: Any, app_settings: Settings) -> None:
    settings = app_settings.replace(plugins={"cleanup": {"disabled": ["outbox"]}})
    rows = json.loads(invoke("ls", "--json", settings=settings).stdout)
    by_name = {row["name"]: row for row in rows}
    assert by_name["outbox"]["schedule"] == "disabled"
    assert by_name["tmp"] == {
        "name": "tmp",
        "schedule": "30 * * * *",
        "grace": 86400.0,
        "source": "cleanup",
        "description": "temporary uploads",
        "last": None,
    }


def test_run_dry_run_shows_what_would_be_removed(invoke: Any, app_settings: Settings) -> None:
    path = seed_tmp(app_settings)
    result = invoke("run", "tmp", "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].startswith("tmp: ok, would remove 1 (5 B), 0 error(s) in ")
    assert "  tmp/old.bin" in result.stdout.splitlines()
    assert path.exists()


def test_run_removes_and_reports(invoke: Any, app_settings: Settings) -> None:
    path = seed_tmp(app_settings)
    young = seed_tmp(app_settings, "tmp/young.bin", age=60)
    result = invoke("run", "tmp", "--json")
    assert result.exit_code == 0, result.output
    (report,) = json.loads(result.stdout)
    assert {k: report[k] for k in ("sweeper", "removed", "bytes", "items", "errors", "dry_run", "failed")} == {
        "sweeper": "tmp",
        "removed": 1,
        "bytes": 5,
        "items": ["tmp/old.bin"],
        "errors": [],
        "dry_run": False,
        "failed": False,
    }
    assert not path.exists()
    assert young.exists()


def test_run_all_reports_a_failing_sweeper_and_runs_the_others(invoke: Any, app_settings: Settings) -> None:
    path = seed_tmp(app_settings)
    result = invoke("run")
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines if not line.startswith(" ")] == [*BUILTIN, "broken"]
    assert any(line.startswith("broken: FAILED, removed 0") for line in lines)
    assert "  error: PermissionError: bucket policy denies delete" in lines
    assert not path.exists()  # tmp ran before and regardless


def test_run_an_unknown_sweeper(invoke: Any) -> None:
    result = invoke("run", "nope")
    assert result.exit_code == 2
    assert "no enabled sweeper 'nope'" in result.output
    assert "tokens, tmp, uploads, outbox, workflows, broken" in result.output


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (5 * 1024**2, "5.0 MiB"), (3 * 1024**4, "3072.0 GiB")],
)
def test_format_bytes(size: int, text: str) -> None:
    assert format_bytes(size) == text


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (59.6, "1m"), (90, "1m30s"), (86400, "1d"), (93784, "1d2h3m4s")]
)
def test_format_seconds(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text


def test_the_framework_command_has_cleanup(settings: Settings, tmp_path: Path) -> None:
    seed_tmp(settings)
    env = {
        **os.environ,
        "REDIS_URL": settings.redis_url or "",
        "FRAMEWORK_NAMESPACE": settings.namespace,
        "FRAMEWORK_DATA_DIR": settings.data_dir,
        "FRAMEWORK_LOAD_PLUGINS": "cleanup",
    }
    for name in ("FRAMEWORK_APP", "FRAMEWORK_CONFIG"):
        env.pop(name, None)

    def framework(*args: str) -> subprocess.CompletedProcess[str]:
        return run_framework(env, tmp_path, *args)

    dry = framework("cleanup", "run", "tmp", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)[0]["items"] == ["tmp/old.bin"]
    assert "cleanup_swept" in dry.stderr  # logs go to stderr, the report to stdout
    listing = framework("cleanup", "ls")
    assert listing.returncode == 0, listing.stderr
    assert "[dry run]" in listing.stdout
    assert [line.split()[0] for line in listing.stdout.splitlines()[1:]] == BUILTIN
