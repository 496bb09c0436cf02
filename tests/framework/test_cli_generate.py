"""``framework new`` and ``framework generate task|plugin`` end to end, and every refusal.

One module-scoped project (an app with a task per ``generate task`` option, and a plugin) is written
through the command line, checked with ruff and mypy, installed into a throwaway venv layered over
this one (so the shared venv is never modified), and its own test suite is run as a subprocess.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner

from framework.cli import cli
from tests.fixtures.cli import clean_env
from tests.framework.test_scaffold import ROOT, overlay_venv

if TYPE_CHECKING:
    from pathlib import Path

    from click.testing import Result

APP = "acme_shop"
PLUGIN = "acme-notify"
PLUGIN_NAME = "acme_notify"
PLUGIN_DIST = "framework-acme-notify"
# One task per option of `generate task`, and one with all of them.
TASKS = {
    "send_report": ["send-report", "--queue", "reports"],
    "retry_me": ["retry_me", "--max-retry", "5"],
    "quick": ["quick", "--timeout", "2.5"],
    "dedupe": ["dedupe", "--unique", "300"],
    "tick": ["tick", "--cron", "*/5 * * * *"],
    "nightly": [
        *("nightly", "--queue", "low", "--max-retry", "1", "--timeout", "30", "--unique", "60"),
        *("--cron", "@daily", "--tz", "Europe/Berlin"),
    ],
}
LONG = "x" * 30  # the longest name allowed: the generated code must still be formatted and lint-clean


def run(cwd: Path, *args: str) -> Result:
    """Invoke the command line in ``cwd``, in this process."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def ok(cwd: Path, *args: str) -> Result:
    result = run(cwd, *args)
    assert result.exit_code == 0, result.output
    return result


def snapshot(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def tool(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env or clean_env(), capture_output=True, text=True, timeout=120)


class Generated:
    """The module's project: the app, its files right after ``new``, the task runs, and the plugin.

    ``tick`` is written through ``generate job``, the command's old name: it must write the same.
    """

    def __init__(self, base: Path) -> None:
        self.base = base
        self.new = ok(base, "new", APP)
        self.app = base / APP
        self.after_new = snapshot(self.app)
        self.tasks = {
            module: ok(self.app, "generate", "job" if module == "tick" else "task", *args)
            for module, args in TASKS.items()
        }
        self.plugin_run = ok(base, "generate", "plugin", PLUGIN)
        self.plugin = base / PLUGIN_DIST
        self.long = base / "long"
        self.long.mkdir()
        ok(self.long, "new", LONG, "--plugins", "")
        ok(self.long / LONG, "generate", "task", LONG, "--queue", "q" * 50, "--max-retry", "3", "--timeout", "9.5")
        cron = ("--cron", "0 * * * *", "--tz", "Asia/Kolkata")
        ok(self.long / LONG, "generate", "task", "y" * 30, "--unique", "5", *cron)
        ok(self.long, "generate", "plugin", "z" * 30)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Generated:
    return Generated(tmp_path_factory.mktemp("generated"))


@pytest.fixture(scope="module")
def venv(generated: Generated, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway venv over this one with the generated app and plugin installed, editable.

    Installing there rather than into the test venv leaves the shared venv untouched (other test runs
    never see the plugin's entry point) and needs no uninstall: the venv goes with the temporary folder.
    """
    python = overlay_venv(tmp_path_factory.mktemp("venv") / "v")
    install = [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    done = tool(generated.base, *install, "-e", str(generated.app), "-e", str(generated.plugin))
    assert done.returncode == 0, done.stderr
    return python


# -- what the commands write ----------------------------------------------------------------------


def test_new_writes_a_project(generated: Generated) -> None:
    assert set(generated.after_new) == {
        ".env.example",
        ".gitignore",
        "README.md",
        "framework.toml",
        "pyproject.toml",
        "requirements.txt",
        f"{APP}/__init__.py",
        f"{APP}/app.py",
        f"{APP}/hooks.py",
        f"{APP}/tasks/__init__.py",
        f"{APP}/tasks/greet.py",
        f"{APP}/py.typed",
        f"{APP}/routes.py",
        f"{APP}/templates/{APP}/index.html",
        "tests/conftest.py",
        "tests/helpers.py",
        "tests/test_app.py",
        "tests/test_task_greet.py",
    }
    out = generated.new.output
    assert f"created {APP}/{APP}/hooks.py" in out
    assert f"Next:\n  cd {APP}\n  python3 -m venv .venv\n" in out
    assert "  .venv/bin/python -m pip install -r requirements.txt -e '.[dev]'\n  .venv/bin/python -m pytest\n" in out
    checkout = ROOT.as_uri()  # the test venv has the framework and its plugins editable from this checkout
    assert f"-e {checkout}\n-e {checkout}/plugins/email\n" in generated.after_new["requirements.txt"]
    assert f"-e {checkout}/plugins/admin\n" in generated.after_new["requirements.txt"]
    pyproject = generated.after_new["pyproject.toml"]
    for plugin in ("email", "images", "cleanup", "admin"):
        assert f'"framework-{plugin}",' in pyproject
    assert 'name = "acme-shop"' in pyproject


def test_generate_task_adds_two_files_and_edits_none(generated: Generated) -> None:
    now = snapshot(generated.app)
    assert {k: v for k, v in now.items() if k in generated.after_new} == generated.after_new
    added = set(now) - set(generated.after_new)
    assert added == {f"{APP}/tasks/{m}.py" for m in TASKS} | {f"tests/test_task_{m}.py" for m in TASKS}
    assert generated.tasks["send_report"].output.startswith(f"  created {APP}/tasks/send_report.py\n")


def test_generate_job_is_a_hidden_alias_of_generate_task(tmp_path: Path) -> None:
    listed = ok(tmp_path, "generate", "--help").output
    assert "task " in listed.split("Commands:")[1]
    assert "job" not in listed
    assert "Write the task NAME into the app" in ok(tmp_path, "generate", "job", "--help").output


def test_generate_task_renders_each_option(generated: Generated) -> None:
    def module(name: str) -> str:
        return (generated.app / APP / "tasks" / f"{name}.py").read_text()

    assert f'SEND_REPORT = "{APP}:send_report"' in module("send_report")
    assert 'queue="reports",\n    description=' in module("send_report")
    assert "max_retry=5," in module("retry_me")
    assert "timeout=2.5," in module("quick")
    assert "unique=300," in module("dedupe")
    assert 'spec="*/5 * * * *",' in module("tick")
    assert "CronEntry" not in module("dedupe")
    nightly = module("nightly")
    for line in ('queue="low",', "max_retry=1,", "timeout=30.0,", "unique=60,", 'spec="@daily",'):
        assert line in nightly
    assert 'tz="Europe/Berlin",' in nightly


def test_a_queue_missing_from_the_settings_gets_a_note(generated: Generated) -> None:
    assert "note: queue 'reports' is not in [queues]" in generated.tasks["send_report"].output
    assert "note:" not in generated.tasks["nightly"].output  # low is a default queue


def test_generate_plugin_writes_a_distribution(generated: Generated) -> None:
    files = snapshot(generated.plugin)
    package = f"framework_{PLUGIN_NAME}"
    assert set(files) == {
        ".gitignore",
        "README.md",
        "pyproject.toml",
        "requirements.txt",
        f"{package}/__init__.py",
        f"{package}/config.py",
        f"{package}/hooks.py",
        f"{package}/py.typed",
        f"{package}/tasks.py",
        f"{package}/templates/{PLUGIN_NAME}/hello.txt",
        "tests/conftest.py",
        "tests/helpers.py",
        "tests/test_hooks.py",
        "tests/test_tasks.py",
    }
    assert f'[project.entry-points.framework]\n{PLUGIN_NAME} = "{package}.hooks"' in files["pyproject.toml"]
    assert f"Creating the plugin {PLUGIN_NAME} ({PLUGIN_DIST})" in generated.plugin_run.output


# -- quality of the output ------------------------------------------------------------------------


def test_the_output_is_ruff_clean_and_formatted(generated: Generated) -> None:
    projects = [generated.app, generated.plugin, generated.long / LONG, generated.long / f"framework-{'z' * 30}"]
    for project in projects:
        for args in (["check", "--no-cache", "."], ["format", "--check", "--no-cache", "."]):
            done = tool(project, sys.executable, "-m", "ruff", *args)
            assert done.returncode == 0, f"ruff {args[0]} in {project}:\n{done.stdout}{done.stderr}"


@pytest.mark.slow
def test_the_output_passes_mypy_strict(generated: Generated, tmp_path: Path) -> None:
    projects = [generated.app, generated.plugin, generated.long / LONG, generated.long / f"framework-{'z' * 30}"]
    for project in projects:
        done = tool(project, sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "mypy"))
        assert done.returncode == 0, f"mypy in {project}:\n{done.stdout}{done.stderr}"
        assert "Success: no issues found" in done.stdout


# -- the generated test suites, installed ---------------------------------------------------------


def passed(done: subprocess.CompletedProcess[str]) -> int:
    assert done.returncode == 0, done.stdout + done.stderr
    summary = done.stdout.strip().splitlines()[-1]
    assert "skipped" not in summary
    assert "failed" not in summary
    return int(summary.split(" passed")[0].split()[-1])


@pytest.mark.slow
def test_the_apps_own_tests_pass(generated: Generated, venv: Path) -> None:
    done = tool(generated.app, str(venv), "-m", "pytest", "-q", "-p", "no:cacheprovider")
    assert passed(done) >= 3 + 4 * (1 + len(TASKS))


@pytest.mark.slow
def test_the_framework_finds_the_app_through_its_settings(generated: Generated, venv: Path) -> None:
    env = clean_env(FRAMEWORK_LOAD_PLUGINS="")
    done = tool(generated.app, str(venv), "-m", "framework", "plugins", "--json", env=env)
    assert done.returncode == 0, done.stderr
    rows = {row["name"]: row for row in json.loads(done.stdout)}
    assert "demo" not in rows
    contributes = rows["app"]["contributes"]
    assert sorted(contributes["task_types"]) == sorted(f"{APP}:{m}" for m in [*TASKS, "greet"])
    assert sorted(contributes["cron_entries"]) == [f"{APP}:nightly (@daily)", f"{APP}:tick (*/5 * * * *)"]
    assert "POST /greetings" in contributes["routes"]


@pytest.mark.slow
def test_the_plugin_is_listed_and_its_own_tests_pass(generated: Generated, venv: Path) -> None:
    env = clean_env(FRAMEWORK_LOAD_PLUGINS=PLUGIN_NAME)
    done = tool(generated.base, str(venv), "-m", "framework", "plugins", "--json", env=env)
    assert done.returncode == 0, done.stderr
    row = {row["name"]: row for row in json.loads(done.stdout)}[PLUGIN_NAME]
    assert (row["distribution"], row["version"], row["builtin"]) == (PLUGIN_DIST, "0.1.0", False)
    assert row["contributes"]["task_types"] == [f"{PLUGIN_NAME}:hello"]
    assert row["templates"] == str(generated.plugin / f"framework_{PLUGIN_NAME}" / "templates")
    assert passed(tool(generated.plugin, str(venv), "-m", "pytest", "-q", "-p", "no:cacheprovider")) >= 9


@pytest.mark.slow
def test_the_plugin_wheel_carries_its_entry_point_and_templates(generated: Generated, tmp_path: Path) -> None:
    wheel_cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path)]
    done = tool(generated.plugin, *wheel_cmd, ".")
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("framework_acme_notify-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert f"framework_{PLUGIN_NAME}/templates/{PLUGIN_NAME}/hello.txt" in names
    assert f"framework_{PLUGIN_NAME}/py.typed" in names
    python = overlay_venv(tmp_path / "v")
    assert tool(tmp_path, str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)).returncode == 0
    listed = tool(
        tmp_path,
        str(python),
        "-m",
        "framework",
        "plugins",
        "--json",
        env=clean_env(FRAMEWORK_LOAD_PLUGINS=PLUGIN_NAME),
    )
    row = {row["name"]: row for row in json.loads(listed.stdout)}[PLUGIN_NAME]
    assert row["templates"].startswith(str(tmp_path / "v"))
    assert row["contributes"]["task_types"] == [f"{PLUGIN_NAME}:hello"]


# -- refusals and validation ----------------------------------------------------------------------


@pytest.fixture
def app(tmp_path: Path) -> Path:
    ok(tmp_path, "new", "shop", "--plugins", "email")
    return tmp_path / "shop"


def test_new_refuses_a_folder_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "notes.txt").write_text("mine")
    result = run(tmp_path, "new", "shop")
    assert result.exit_code == 1
    assert "shop is not empty: choose a new folder" in result.output
    assert [p.name for p in (tmp_path / "shop").iterdir()] == ["notes.txt"]
    (tmp_path / "file").write_text("x")
    assert "is not empty" in run(tmp_path, "new", "file").output


def test_new_accepts_an_empty_folder_and_a_path(tmp_path: Path) -> None:
    (tmp_path / "shop").mkdir()
    ok(tmp_path, "new", "shop")
    ok(tmp_path, "new", str(tmp_path / "deep" / "blog"))
    assert (tmp_path / "deep" / "blog" / "blog" / "hooks.py").is_file()
    (tmp_path / "cafe").mkdir()
    ok(tmp_path / "cafe", "new", ".")
    assert (tmp_path / "cafe" / "cafe" / "app.py").is_file()


@pytest.mark.parametrize(
    ("name", "suggestion"), [("my-app", "my_app"), ("1app", "app_1app"), ("class", "class_app"), ("my app", "my_app")]
)
def test_new_refuses_invalid_package_names_and_proposes_one(tmp_path: Path, name: str, suggestion: str) -> None:
    result = run(tmp_path, "new", name)
    assert result.exit_code == 2
    assert f"Invalid value for APP: {name!r} is not a valid Python package name" in result.output
    assert f"try {suggestion!r}" in result.output
    assert list(tmp_path.iterdir()) == []


def test_new_plugins_option(tmp_path: Path) -> None:
    result = run(tmp_path, "new", "shop", "--plugins", "email,mail")
    assert result.exit_code == 2
    assert "unknown plugin mail: choose from email,images,cleanup,admin" in result.output
    ok(tmp_path, "new", "bare", "--plugins", "")
    assert "framework-" not in (tmp_path / "bare" / "pyproject.toml").read_text()
    ok(tmp_path, "new", "two", "--plugins", " admin,email,admin ")
    assert '"framework-admin",\n    "framework-email",\n]' in (tmp_path / "two" / "pyproject.toml").read_text()


def test_generate_task_needs_an_app(tmp_path: Path) -> None:
    result = run(tmp_path, "generate", "task", "ping")
    assert result.exit_code == 1
    assert "no framework.toml in" in result.output
    (tmp_path / "framework.toml").write_text("concurrency = 4\n")
    assert "has no `app` setting" in run(tmp_path, "generate", "task", "ping").output


def test_generate_task_works_below_the_app_root(app: Path) -> None:
    ok(app / "shop" / "templates", "generate", "task", "deep")
    assert (app / "shop" / "tasks" / "deep.py").is_file()
    assert (app / "tests" / "test_task_deep.py").is_file()


def test_generate_task_refuses_to_overwrite(app: Path) -> None:
    before = snapshot(app)
    result = run(app, "generate", "task", "greet", "--max-retry", "1")
    assert result.exit_code == 1
    assert "refusing to overwrite existing files" in result.output
    assert snapshot(app) == before
    (app / "tests" / "test_task_solo.py").write_text("# mine\n")
    assert run(app, "generate", "task", "solo").exit_code == 1
    assert not (app / "shop" / "tasks" / "solo.py").exists()  # nothing is written when one file exists


def make_old_layout(app: Path, package: str) -> None:
    """Turn a new app into one generated before the rename: its tasks in ``jobs/``, their tests ``test_job_*``."""
    (app / package / "tasks").rename(app / package / "jobs")
    for test in (app / "tests").glob("test_task_*.py"):
        test.rename(test.with_name(test.name.replace("test_task_", "test_job_")))
    renames = {
        f"{package}.tasks": f"{package}.jobs",
        f"from {package} import tasks": f"from {package} import jobs",
        "tasks.__": "jobs.__",
        "task_modules": "job_modules",
    }
    for path in sorted(app.rglob("*.py")):
        text = path.read_text()
        for current, old in renames.items():
            text = text.replace(current, old)
        path.write_text(text)
    code = "".join(snapshot(app).values())
    assert f"{package}.tasks" not in code
    assert "import tasks" not in code


@pytest.mark.slow
def test_generate_task_in_an_app_with_the_old_jobs_package(tmp_path: Path) -> None:
    ok(tmp_path, "new", "shop", "--plugins", "")
    app = tmp_path / "shop"
    make_old_layout(app, "shop")
    before = snapshot(app)
    ok(app / "shop", "generate", "task", "report", "--cron", "@daily")
    ok(app, "generate", "job", "ping", "--unique", "60")
    now = snapshot(app)
    assert {k: v for k, v in now.items() if k in before} == before
    assert set(now) - set(before) == {
        "shop/jobs/ping.py",
        "shop/jobs/report.py",
        "tests/test_job_ping.py",
        "tests/test_job_report.py",
    }
    assert (
        "from shop.jobs.report import REPORT, Report, report, report_cron, report_task\n"
        in now["tests/test_job_report.py"]
    )
    # the app's own hooks.py collects the new modules from jobs/: their tests run them on a worker
    done = tool(app, sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider")
    assert passed(done) >= 3 + 4 + 5 + 5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cron", "61 * * * *"], "invalid schedule '61 * * * *': minute field '61' is invalid"),
        (["--cron", "@sometimes"], "unknown macro '@sometimes'"),
        (["--cron", "@daily", "--tz", "Mars/Olympus"], "unknown time zone 'Mars/Olympus'"),
        (["--tz", "Europe/Paris"], "--tz only applies with --cron"),
        (["--queue", "a b"], "'a b': use up to 50 letters, digits"),
        (["--queue", "{x}"], "'{x}': use up to 50 letters, digits"),
        (["--max-retry", "-1"], "-1 is not in the range x>=0"),
        (["--timeout", "0"], "0 is not in the range x>0"),
        (["--unique", "0"], "0 is not in the range x>=1"),
    ],
)
def test_generate_task_validates_options_before_writing(app: Path, args: list[str], message: str) -> None:
    before = snapshot(app)
    result = run(app, "generate", "task", "report", *args)
    assert result.exit_code == 2
    assert message in result.output
    assert snapshot(app) == before


@pytest.mark.parametrize(
    ("name", "suggestion"), [("SendReport", "send_report"), ("list", "list_task"), ("2fa", "task_2fa")]
)
def test_generate_task_refuses_invalid_names(app: Path, name: str, suggestion: str) -> None:
    result = run(app, "generate", "task", name)
    assert result.exit_code == 2
    assert f"{name!r} is not a valid task name" in result.output
    assert f"try {suggestion!r}" in result.output


def test_generate_plugin_where_and_refusals(tmp_path: Path) -> None:
    ok(tmp_path, "generate", "plugin", "slack", "--dir", "plugins/slack")
    assert (tmp_path / "plugins" / "slack" / "framework_slack" / "hooks.py").is_file()
    ok(tmp_path, "generate", "plugin", "slack")
    assert (tmp_path / "framework-slack" / "pyproject.toml").is_file()
    result = run(tmp_path, "generate", "plugin", "slack")
    assert result.exit_code == 1
    assert "framework-slack is not empty" in result.output
    result = run(tmp_path, "generate", "plugin", "email")
    assert result.exit_code == 2
    assert "'email' is not a valid plugin name" in result.output
    assert "try 'email_plugin'" in result.output
    assert "try 'web_hooks'" in run(tmp_path, "generate", "plugin", "web hooks").output


@pytest.mark.parametrize("name", ["framework-acme", "framework_acme"])
def test_generate_plugin_drops_a_framework_prefix(tmp_path: Path, name: str) -> None:
    assert "Creating the plugin acme (framework-acme)" in ok(tmp_path, "generate", "plugin", name).output
    assert (tmp_path / "framework-acme" / "framework_acme" / "hooks.py").is_file()
    assert not (tmp_path / "framework-framework-acme").exists()
