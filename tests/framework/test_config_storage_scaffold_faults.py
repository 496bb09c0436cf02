"""Bad input at the edges of settings, local storage and the task generator is refused clearly and for good.

Settings: a non-finite number (``nan``, ``inf``) is refused wherever a setting is range-checked, naming the
setting and where it came from (``asyncio.sleep(nan)`` returns at once, so a NaN interval would spin); a
settings file that is not UTF-8, or cannot be read, is a ``ConfigError`` naming the file, which the CLI
prints as one ``error: ...`` line. Local storage: a key the file system cannot hold is ``InvalidKey``
(permanent), never ``StorageUnavailable`` (retried until archived). The generator: a task name whose
generated identifiers would clash with the names its templates use is refused, naming the clash; names
that no longer clash produce an app whose own tests and ruff pass. Real processes, files and a real
Valkey (through the generated app's tests); nothing is mocked.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from framework.cli import cli
from framework.cli.scaffold import ScaffoldError, check_name
from framework.errors import ConfigError
from framework.settings import Settings, load_settings
from framework.storage.base import InvalidKey, StorageUnavailable
from framework.storage.local import LocalStorage
from tests.fixtures.cli import clean_env

# -- settings: non-finite numbers -----------------------------------------------------------------------

FLOAT_SETTINGS = (
    "shutdown_timeout",
    "cancel_grace",
    "loop_block_threshold",
    "heartbeat_interval",
    "forward_interval",
    "janitor_interval",
    "recoverer_interval",
    "workflow_check_interval",
    "unknown_type_wait",
)


@pytest.mark.parametrize("raw", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("setting", FLOAT_SETTINGS)
def test_a_non_finite_number_from_the_environment_is_refused_naming_the_variable(setting: str, raw: str) -> None:
    variable = f"FRAMEWORK_{setting.upper()}"
    with pytest.raises(ConfigError, match=rf"setting {setting}=.*is not a finite number \(from {variable}\)"):
        load_settings(environ={variable: raw})


@pytest.mark.parametrize("literal", ["nan", "inf", "+inf", "-nan"])
def test_a_non_finite_number_in_the_settings_file_is_refused_naming_the_file(tmp_path: Path, literal: str) -> None:
    toml = tmp_path / "framework.toml"
    toml.write_text(f"heartbeat_interval = {literal}\n")
    with pytest.raises(ConfigError, match="heartbeat_interval") as info:
        load_settings(toml, environ={})
    assert f"(from {toml})" in str(info.value)


@pytest.mark.parametrize("field", ["timeout", "retention"])
def test_a_non_finite_queue_default_is_refused(tmp_path: Path, field: str) -> None:
    toml = tmp_path / "framework.toml"
    toml.write_text(f"[queue_defaults.low]\n{field} = nan\n")
    with pytest.raises(ConfigError, match=rf"queue_defaults\['low'\]\.{field}=nan .*\(from {toml}\)"):
        load_settings(toml, environ={})


def test_settings_built_in_code_refuse_non_finite_numbers_too() -> None:
    with pytest.raises(ConfigError, match="cancel_grace=nan"):
        Settings(cancel_grace=math.nan)
    with pytest.raises(ConfigError, match="janitor_interval=inf"):
        Settings().replace(janitor_interval=math.inf)


def test_finite_numbers_at_the_edges_are_still_accepted() -> None:
    settings = load_settings(
        environ={"FRAMEWORK_LOOP_BLOCK_THRESHOLD": "0", "FRAMEWORK_UNKNOWN_TYPE_WAIT": "0"},
        heartbeat_interval=14.9,
    )
    assert (settings.loop_block_threshold, settings.unknown_type_wait, settings.heartbeat_interval) == (0, 0, 14.9)


# -- settings: the file cannot be read as TOML text -----------------------------------------------------


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("port = 1\n".encode("utf-16"), "is UTF-16 text, not UTF-8"),
        ("# café\nport = 1\n".encode("latin-1"), r"is not UTF-8 text \(byte b'\\xe9' at offset 5\)"),
    ],
)
def test_a_settings_file_that_is_not_utf8_is_a_config_error_naming_the_file(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    toml = tmp_path / "framework.toml"
    toml.write_bytes(content)
    with pytest.raises(ConfigError, match=rf"settings file .*framework\.toml {problem}"):
        load_settings(toml, environ={})


@pytest.mark.skipif(not Path("/proc/self/mem").is_file(), reason="needs Linux /proc (a file whose read fails)")
def test_a_settings_file_that_cannot_be_read_is_a_config_error_naming_the_file() -> None:
    # /proc/self/mem is a regular file whose first page is never mapped: reading it fails with EIO.
    with pytest.raises(ConfigError, match=r"settings file /proc/self/mem cannot be read: "):
        load_settings("/proc/self/mem", environ={})


def test_a_settings_path_that_is_a_folder_is_not_reported_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a file"):
        load_settings(tmp_path, environ={})


def _framework(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "framework", *args],
        cwd=cwd,
        env=clean_env(FRAMEWORK_DATA_DIR=str(cwd / "data")),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_a_settings_file_that_is_not_utf8_is_one_line_on_the_command_line(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_bytes("port = 1\n".encode("utf-16"))
    done = _framework(tmp_path, "--config", "bad.toml", "plugins")
    assert done.returncode == 1
    assert done.stderr == "error: settings file bad.toml is UTF-16 text, not UTF-8: TOML is UTF-8; save it as UTF-8\n"


def test_doctor_reports_a_settings_file_that_is_not_utf8_as_a_failed_check(tmp_path: Path) -> None:
    """Doctor reports every settings problem as its ``settings`` check, not as the CLI's ``error:`` line."""
    (tmp_path / "bad.toml").write_bytes("port = 1\n".encode("utf-16"))
    done = _framework(tmp_path, "--config", "bad.toml", "doctor")
    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    assert "✗ settings: settings file bad.toml is UTF-16 text, not UTF-8" in done.stdout


# -- local storage: keys the file system cannot hold ----------------------------------------------------


async def test_a_key_segment_longer_than_a_file_name_is_invalid_for_every_method(tmp_path: Path) -> None:
    """S3 takes such a key (validate_key allows 1024 bytes); a file name cannot be that long, and no retry
    changes that, so the local backend must not say StorageUnavailable, the retryable error."""
    storage = LocalStorage(tmp_path / "storage")
    segment = "a" * 256
    key = f"uploads/{segment}"
    calls = {
        "put": lambda: storage.put(key, b"x"),
        "get": lambda: storage.get(key),
        "stat": lambda: storage.stat(key),
        "delete": lambda: storage.delete(key),
        "url": lambda: storage.url(key),
    }
    for method, call in calls.items():
        with pytest.raises(InvalidKey, match=r"segment 'a{20}'\.\.\. is 256 bytes") as info:
            await call()
        assert not isinstance(info.value, StorageUnavailable), method
        assert key in str(info.value), method
    assert not (tmp_path / "storage" / "uploads").exists()


async def test_a_segment_is_measured_in_utf8_bytes(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "storage")
    longest = "x" + "é" * 127  # 255 bytes: the longest file name
    await storage.put(f"uploads/{longest}", b"fits")
    assert await storage.get(f"uploads/{longest}") == b"fits"
    with pytest.raises(InvalidKey, match="is 256 bytes"):
        await storage.put(f"uploads/{'é' * 128}", b"too long")


async def test_a_path_too_long_for_the_file_system_is_invalid_not_unavailable(tmp_path: Path) -> None:
    """Each segment fits, but root and key together pass PATH_MAX: the file system's ENAMETOOLONG is about
    this key in this folder, which no retry fixes."""
    root = tmp_path
    while len(os.fsencode(root)) < 3400:
        root /= "d" * 200
    root.mkdir(parents=True)
    storage = LocalStorage(root)
    await storage.put("fits", b"x")
    key = "/".join(["k" * 250] * 4)  # 1003 bytes: a valid key, too long below this root
    with pytest.raises(InvalidKey, match="too long for the file system") as info:
        await storage.put(key, b"x")
    assert not isinstance(info.value, StorageUnavailable)
    assert key in str(info.value)


# -- the task generator: names that would clash ---------------------------------------------------------


def _new_app(base: Path) -> Path:
    runner = CliRunner()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(base)
        done = runner.invoke(cli, ["new", "shop", "--plugins", ""], catch_exceptions=False)
    assert done.exit_code == 0, done.output
    return base / "shop"


def _generate_task(app: Path, name: str) -> tuple[int, str]:
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(app)
        done = CliRunner().invoke(cli, ["generate", "task", name], catch_exceptions=False)
    return done.exit_code, done.output


@pytest.mark.parametrize(
    ("name", "clash"),
    [
        ("run_tasks", "function run_tasks, which clashes with the import run_tasks"),
        ("app_settings", "function app_settings, which clashes with the parameter app_settings"),
        ("seeder", "class Seeder, which clashes with the import Seeder"),
        ("harness", "class Harness, which clashes with the import Harness"),
        ("duplicate_task", "class DuplicateTask, which clashes with the import DuplicateTask"),
        ("type_checking", "variable TYPE_CHECKING, which clashes with the import TYPE_CHECKING"),
        ("payload", "function payload, which clashes with the parameter payload"),
        ("queued", "function queued, which clashes with the variable queued"),
        ("a", "both a class and a variable A"),  # constant A and payload class A
        ("none", "class None, a name Python already has"),
        ("value_error", "class ValueError, a name Python already has"),
        ("testing", "pytest would collect its enqueue helper testing"),
    ],
)
def test_a_task_name_whose_generated_identifiers_clash_is_refused_naming_the_clash(name: str, clash: str) -> None:
    with pytest.raises(ScaffoldError, match=f"is not a valid task name: .*{clash}") as info:
        check_name(name, "task")
    suggestion = str(info.value).rsplit("try ", 1)[1].strip("'")
    assert check_name(suggestion, "task") == suggestion


def test_generate_task_refuses_a_clashing_name_and_writes_nothing(tmp_path: Path) -> None:
    app = _new_app(tmp_path)
    before = sorted(p.relative_to(app).as_posix() for p in app.rglob("*"))
    code, output = _generate_task(app, "seeder")
    assert code != 0
    assert "which clashes with the import Seeder" in output
    assert sorted(p.relative_to(app).as_posix() for p in app.rglob("*")) == before


ACCEPTED = ("info", "task", "run", "result", "data", "entries")
"""Names the generated test used for its own locals; they no longer clash, so they are accepted."""


def test_generated_tasks_named_like_former_template_locals_pass_ruff_and_their_own_tests(tmp_path: Path) -> None:
    app = _new_app(tmp_path)
    for name in ACCEPTED:
        code, output = _generate_task(app, name)
        assert code == 0, output
    lint = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "."],
        cwd=app,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=app,
        env=clean_env(PYTHONPATH=str(app)),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert tests.returncode == 0, tests.stdout[-4000:] + tests.stderr[-2000:]


def test_a_storage_folder_taken_by_a_file_is_one_error_naming_it(tmp_path: Path) -> None:
    """The web app's local storage folder cannot be made: a ConfigError naming it (one line from the CLI)."""
    from framework.web.app import create_app

    settings = Settings(data_dir=str(tmp_path / ".data"), load_plugins=[])
    folder = settings.data_path / settings.storage.local_dir
    folder.parent.mkdir(parents=True)
    folder.write_text("a file where the storage folder goes\n")
    with pytest.raises(ConfigError, match=f"local storage cannot use its folder {folder}"):
        create_app(settings)


def test_a_queue_named_twice_in_the_environment_is_refused() -> None:
    with pytest.raises(ConfigError, match="names 'a' twice"):
        load_settings(environ={"FRAMEWORK_QUEUES": "a=1,b=2,a=5"})


@pytest.mark.parametrize("namespace", ["", "  ", "app{1}", "a}b"])
def test_a_blank_namespace_or_one_with_braces_is_refused(namespace: str) -> None:
    """Braces in the namespace would become the hash tag of every key: all queues in one Cluster slot."""
    with pytest.raises(ConfigError, match=r"setting namespace=.* must be a non-blank name without \{ or \}"):
        load_settings(environ={"FRAMEWORK_NAMESPACE": namespace})
    with pytest.raises(ConfigError, match="namespace"):
        Settings(namespace=namespace)
