"""The generator: naming rules, plans (file sets and content), apply's refusal, finding the app, templates.

The generated projects themselves (their tests, ruff and mypy) are checked in test_cli_generate.py. The
last test builds the core wheel and runs ``framework new`` from it, away from the source tree.
"""

from __future__ import annotations

import ast
import importlib.resources
import os
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from framework.cli.scaffold import (
    FileToWrite,
    Names,
    ScaffoldError,
    Source,
    TaskSpec,
    apply,
    check_name,
    find_app,
    find_source,
    plan,
    suggest_name,
    template_root,
)
from tests.fixtures.cli import clean_env

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

ROOT = Path(__file__).resolve().parents[2]


def overlay_venv(path: Path, *, editables: bool = True) -> Path:
    """A fresh venv that also sees this test venv's packages, after its own: installs go into it alone.

    With ``editables`` the test venv's ``.pth`` files run too (the editable framework and plugins are
    importable); without, only its site-packages folder is on the path (the source tree is not).
    Returns the new venv's python.
    """
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    parent = sysconfig.get_path("purelib")
    line = f"import site; site.addsitedir({parent!r})" if editables else parent
    (Path(purelib) / "_overlay_parent.pth").write_text(line + "\n")
    return python


def rel(files: list[FileToWrite], root: Path) -> set[str]:
    return {f.path.relative_to(root).as_posix() for f in files}


def app_names(root: Path, package: str = "shop") -> Names:
    return Names(root=root, package=package, plugins=("email", "admin"), task=TaskSpec("greet", package))


# -- naming ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["shop", "my_app", "a1", "web2py_clone", "x" * 30])
def test_valid_app_names_are_kept(name: str) -> None:
    assert check_name(name, "app") == name


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("my-app", "my_app"),
        ("1app", "app_1app"),
        ("class", "class_app"),
        ("my app", "my_app"),
        ("MyApp", "my_app"),
        ("email", "email_app"),  # a standard-library module
        ("tests", "tests_app"),
        ("framework", "framework_app"),
        ("helpers", "helpers_app"),  # the generated tests' helper module
        ("match", "match_app"),  # a soft keyword
        ("__init__", "init"),
        ("café", "cafe"),
        ("", "my_app"),
        ("x" * 31, "x" * 30),
    ],
)
def test_invalid_app_names_are_refused_with_a_valid_suggestion(name: str, suggestion: str) -> None:
    with pytest.raises(ScaffoldError, match=f"try '{suggestion}'") as info:
        check_name(name, "app")
    assert str(info.value).startswith(f"{name!r} is not a valid Python package name: ")
    assert check_name(suggestion, "app") == suggestion


@pytest.mark.parametrize(
    ("name", "snake"), [("send_report", "send_report"), ("send-report", "send_report"), ("v2-sync", "v2_sync")]
)
def test_task_names_accept_hyphens(name: str, snake: str) -> None:
    assert check_name(name, "task") == snake


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("SendReport", "send_report"),
        ("list", "list_task"),  # a builtin: the enqueue helper would shadow it
        ("json", "json_task"),  # a standard-library module: ruff A005
        ("import", "import_task"),
        ("9lives", "task_9lives"),
        ("client", "client_task"),  # the helper's own parameter
        ("task_def", "task_def_task"),  # its payload would be TaskDef
        ("send report", "send_report"),
    ],
)
def test_invalid_task_names_are_refused_with_a_valid_suggestion(name: str, suggestion: str) -> None:
    with pytest.raises(ScaffoldError, match=f"is not a valid task name: .*; try '{suggestion}'"):
        check_name(name, "task")
    assert check_name(suggestion, "task") == suggestion


def test_plugin_names() -> None:
    assert check_name("acme-notify", "plugin") == "acme_notify"
    assert check_name("json", "plugin") == "json"  # its package is framework_json
    for builtin in ("email", "images", "cleanup", "admin", "app", "demo"):
        with pytest.raises(ScaffoldError, match=f"try '{builtin}_plugin'"):
            check_name(builtin, "plugin")
    with pytest.raises(ScaffoldError, match="try 'slack'"):
        check_name("Slack", "plugin")


def test_suggestions_are_always_valid() -> None:
    for raw in ["", "---", "9", "def", "Send Report!", "ÉCOLE", "a" * 90, "9" * 50, "sys", "print", "x-y_Z"]:
        for kind in ("app", "task", "job", "plugin"):
            suggestion = suggest_name(raw, kind)
            assert check_name(suggestion, kind) == suggestion, (raw, kind)


def test_task_names_are_derived_consistently() -> None:
    task = TaskSpec("send_report", "shop")
    assert (task.type, task.payload, task.constant) == ("shop:send_report", "SendReport", "SEND_REPORT")
    assert TaskSpec("v2_sync", "shop").payload == "V2Sync"
    assert TaskSpec("archive", "shop", cron="@daily").exports == [
        "ARCHIVE",
        "Archive",
        "archive",
        "archive_cron",
        "archive_task",
        "handle_archive",
    ]
    names = Names(root=Path("x"), package="framework_acme_notify", plugin="acme_notify")
    assert (names.distribution, names.title) == ("framework-acme-notify", "Acme Notify")


# -- plans ----------------------------------------------------------------------------------------


def test_app_plan_file_set(tmp_path: Path) -> None:
    names = app_names(tmp_path / "shop")
    assert rel(plan("app", names), names.root) == {
        ".env.example",
        ".gitignore",
        "README.md",
        "framework.toml",
        "pyproject.toml",
        "requirements.txt",
        "shop/__init__.py",
        "shop/app.py",
        "shop/hooks.py",
        "shop/tasks/__init__.py",
        "shop/py.typed",
        "shop/routes.py",
        "shop/templates/shop/index.html",
        "tests/conftest.py",
        "tests/helpers.py",
        "tests/test_app.py",
    }
    assert rel(plan("task", names), names.root) == {"shop/tasks/greet.py", "tests/test_task_greet.py"}
    # "job", the old name of the kind, plans the same; an app with the old jobs/ package gets its old names
    assert plan("job", names) == plan("task", names)
    old = replace(names, tasks_package="jobs")
    assert rel(plan("task", old), names.root) == {"shop/jobs/greet.py", "tests/test_job_greet.py"}
    assert "from shop.jobs.greet import GREET, Greet, greet, greet_task\n" in plan("task", old)[1].content


def test_plans_are_pure(tmp_path: Path) -> None:
    names = app_names(tmp_path / "nowhere")
    files = plan("app", names) + plan("task", names)
    assert not (tmp_path / "nowhere").exists()
    assert plan("app", names) + plan("task", names) == files  # same input, same output
    for f in files:
        if f.path.suffix == ".py":
            ast.parse(f.content, filename=str(f.path))


def test_app_plan_content(tmp_path: Path) -> None:
    files = {k: f.content for f in plan("app", app_names(tmp_path)) for k in [f.path.relative_to(tmp_path).as_posix()]}
    pyproject = files["pyproject.toml"]
    assert 'name = "shop"' in pyproject
    assert '"framework-email",\n    "framework-admin",\n]' in pyproject
    assert "framework-images" not in pyproject
    assert "[tool.mypy]\nstrict = true" in pyproject
    assert 'app = "shop.hooks"' in files["framework.toml"]
    assert 'templates_dir = "shop/templates"' in files["framework.toml"]
    assert "[plugins.email]" in files["framework.toml"]
    assert "MAIL_FROM=" in files[".env.example"]
    assert "FRAMEWORK_ADMIN_TOKEN=" in files[".env.example"]
    assert "AWS_ACCESS_KEY_ID" not in files[".env.example"]
    assert (
        "```sh\npython3 -m venv .venv\n.venv/bin/python -m pip install -r requirements.txt -e '.[dev]'\n"
        in (files["README.md"])
    )
    assert "Framework and its plugins install from your package index." in files["README.md"]
    assert requirement_lines(files["requirements.txt"]) == []
    assert "from shop import tasks\n" in files["shop/hooks.py"]
    assert "pkgutil.iter_modules(tasks.__path__)" in files["shop/hooks.py"]
    assert "from shop.tasks.greet import Greet, greet" in files["shop/routes.py"]
    assert "from shop.tasks.greet import GREET, greet_task" in files["tests/test_app.py"]
    assert "jobs" not in "".join(files.values())
    bare = Names(root=tmp_path, package="shop", task=TaskSpec("greet", "shop"))
    none = {f.path.name: f.content for f in plan("app", bare)}
    assert "framework-" not in none["pyproject.toml"]
    assert "[plugins.email]" not in none["framework.toml"]


def task_module(tmp_path: Path, task: TaskSpec) -> str:
    files = plan("task", Names(root=tmp_path, package="shop", task=task))
    return next(f.content for f in files if f.path.name == f"{task.module}.py")


def test_task_plan_renders_each_option(tmp_path: Path) -> None:
    plain = task_module(tmp_path, TaskSpec("send_report", "shop"))
    assert 'SEND_REPORT = "shop:send_report"' in plain
    assert "class SendReport(msgspec.Struct, frozen=True, kw_only=True):" in plain
    assert "async def send_report(client: Client, payload: SendReport, **options: Any) -> TaskInfo:" in plain
    assert "async def handle_send_report(ctx: TaskContext, payload: SendReport) -> None:" in plain
    assert "raise SkipRetry(" in plain
    assert 'queue="default",\n    description=' in plain
    assert "CronEntry" not in plain
    full = task_module(
        tmp_path, TaskSpec("send_report", "shop", "reports", 5, 2.5, 300, "*/5 * * * *", "Europe/Berlin")
    )
    assert 'queue="reports",\n    max_retry=5,\n    timeout=2.5,\n    unique=300,\n' in full
    assert "from framework import CronEntry, SkipRetry, TaskDef" in full
    assert 'send_report_cron = CronEntry(\n    name="shop:send_report",\n    spec="*/5 * * * *",' in full
    assert 'tz="Europe/Berlin",' in full
    assert "DuplicateTask" in full


def test_task_test_plan_checks_the_options(tmp_path: Path) -> None:
    files = plan("task", Names(root=tmp_path, package="shop", task=TaskSpec("sync", "shop", max_retry=0, unique=60)))
    test = next(f.content for f in files if f.path.name == "test_task_sync.py")
    assert "assert sync_task.max_retry == 0\n    assert sync_task.timeout is None\n" in test
    assert "with pytest.raises(DuplicateTask):" in test
    assert "load_entries" not in test


def test_plugin_plan(tmp_path: Path) -> None:
    names = Names(
        root=tmp_path, package="framework_acme_notify", plugin="acme_notify", task=TaskSpec("hello", "acme_notify")
    )
    files = plan("plugin", names)
    assert rel(files, tmp_path) == {
        ".gitignore",
        "README.md",
        "pyproject.toml",
        "requirements.txt",
        "framework_acme_notify/__init__.py",
        "framework_acme_notify/config.py",
        "framework_acme_notify/hooks.py",
        "framework_acme_notify/py.typed",
        "framework_acme_notify/tasks.py",
        "framework_acme_notify/templates/acme_notify/hello.txt",
        "tests/conftest.py",
        "tests/helpers.py",
        "tests/test_hooks.py",
        "tests/test_tasks.py",
    }
    content = {f.path.relative_to(tmp_path).as_posix(): f.content for f in files}
    assert '[project.entry-points.framework]\nacme_notify = "framework_acme_notify.hooks"' in content["pyproject.toml"]
    assert 'name = "framework-acme-notify"' in content["pyproject.toml"]
    assert 'HELLO = "acme_notify:hello"' in content["framework_acme_notify/tasks.py"]
    assert 'get_template("acme_notify/hello.txt")' in content["framework_acme_notify/tasks.py"]
    assert content["framework_acme_notify/templates/acme_notify/hello.txt"] == "Hello, {{ name }}!\n"
    # the built-in plugins' shape: config.py with PLUGIN_NAME and load_config(settings), checked by check_config
    config = content["framework_acme_notify/config.py"]
    assert 'PLUGIN_NAME = "acme_notify"' in config
    assert "def load_config(settings: Settings) -> AcmeNotifyConfig:" in config
    assert "def check_config(settings: Settings) -> None:" in content["framework_acme_notify/hooks.py"]


def requirement_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_the_source_goes_into_requirements_and_the_readme(tmp_path: Path) -> None:
    lines = ("-e file:///src/fw", "-e file:///src/fw/plugins/email")
    source = Source("checkout", "/src/fw", lines, ("framework-admin",))
    files = {f.path.name: f.content for f in plan("app", replace(app_names(tmp_path), source=source))}
    assert requirement_lines(files["requirements.txt"]) == list(lines)
    assert "# framework-admin was not found beside framework" in files["requirements.txt"]
    assert "no package index serves: the framework checkout at /src/fw." in files["README.md"]
    task = TaskSpec("hello", "x")
    plugin = Names(root=tmp_path, package="framework_x", plugin="x", task=task, source=Source("vcs", "git+u", ("l",)))
    files = {f.path.name: f.content for f in plan("plugin", plugin)}
    assert requirement_lines(files["requirements.txt"]) == ["l"]
    assert "pip where to find framework, which no package index serves: the repository git+u." in files["README.md"]


def fake_installed(table: Mapping[str, Mapping[str, object]]) -> Callable[[str], Mapping[str, object] | None]:
    """What :func:`find_source` reads: each distribution's direct_url.json ({}: from an index; absent: not here)."""
    return table.get


def test_find_source_from_a_checkout() -> None:
    checkout = ROOT.as_uri()
    editable = {"url": checkout, "dir_info": {"editable": True}}
    # Plugins not installed here are found under plugins/<name>; an installed one says where it came from.
    installed = {"framework": editable, "framework-email": {"url": "file:///elsewhere", "dir_info": {}}}
    source = find_source(["framework", "framework-email", "framework-admin"], fake_installed(installed))
    assert (source.origin, source.location, source.missing) == ("checkout", str(ROOT), ())
    assert source.requirements == (
        f"-e {checkout}",
        "framework-email @ file:///elsewhere",
        f"-e {checkout}/plugins/admin",
    )
    assert source.summary == f"the framework checkout at {ROOT}"
    plain = find_source(
        ["framework", "framework-images"], fake_installed({"framework": {"url": checkout, "dir_info": {}}})
    )
    assert plain.requirements == (f"framework @ {checkout}", f"framework-images @ {checkout}/plugins/images")
    nowhere = find_source(["framework", "framework-slack"], fake_installed(installed))
    assert nowhere.missing == ("framework-slack",)  # no plugins/slack in the checkout


def test_find_source_from_wheels(tmp_path: Path) -> None:
    dist = tmp_path / "my dist"
    dist.mkdir()
    for name in ("framework-0.1.0-py3-none-any.whl", "framework_email-0.1.0-py3-none-any.whl"):
        (dist / name).write_bytes(b"")
    newer = dist / "framework_email-0.2.0-py3-none-any.whl"
    newer.write_bytes(b"")
    os.utime(newer, (2e9, 2e9))
    wheel = {"url": (dist / "framework-0.1.0-py3-none-any.whl").as_uri(), "archive_info": {"hashes": {}}}
    source = find_source(["framework", "framework-email", "framework-admin"], fake_installed({"framework": wheel}))
    assert source.origin == "archive"
    assert source.summary == f"the wheels in {dist}"
    assert source.requirements == (f"framework @ {wheel['url']}", f"framework-email @ {newer.as_uri()}")
    assert "%20" in source.requirements[0]  # a URL: pip reads it whatever the path holds
    assert source.missing == ("framework-admin",)


def test_find_source_from_a_repository_or_an_index() -> None:
    vcs = {"url": "https://example.org/fw.git", "vcs_info": {"vcs": "git", "commit_id": "abc123"}}
    source = find_source(["framework", "framework-admin"], fake_installed({"framework": vcs}))
    assert (source.origin, source.location) == ("vcs", "git+https://example.org/fw.git")
    assert source.requirements == (
        "framework @ git+https://example.org/fw.git@abc123",
        "framework-admin @ git+https://example.org/fw.git@abc123#subdirectory=plugins/admin",
    )
    from_index: list[dict[str, dict[str, object]]] = [{"framework": {}, "framework-admin": {}}, {"framework": {}}, {}]
    for installed in from_index:
        source = find_source(["framework", "framework-admin"], fake_installed(installed))
        assert source == Source() and source.summary == "your package index"


def test_task_and_plugin_plans_need_a_task(tmp_path: Path) -> None:
    for kind in ("task", "job", "plugin"):
        with pytest.raises(ScaffoldError, match=r"needs names\.task"):
            plan(kind, Names(root=tmp_path, package="shop"))


# -- apply ----------------------------------------------------------------------------------------


def test_apply_writes_and_refuses_to_overwrite(tmp_path: Path) -> None:
    files = [FileToWrite(tmp_path / "a" / "b.py", "b\n"), FileToWrite(tmp_path / "c.txt", "c\n")]
    assert apply(files) == [f.path for f in files]
    assert (tmp_path / "a" / "b.py").read_text() == "b\n"
    (tmp_path / "c.txt").write_text("mine\n")
    (tmp_path / "a" / "b.py").unlink()
    with pytest.raises(ScaffoldError, match=r"refusing to overwrite existing files: .*c\.txt"):
        apply(files)
    assert not (tmp_path / "a" / "b.py").exists()  # nothing is written when one file is refused
    assert (tmp_path / "c.txt").read_text() == "mine\n"
    apply(files, force=True)
    assert (tmp_path / "c.txt").read_text() == "c\n"


# -- finding the app ------------------------------------------------------------------------------


def make_app(root: Path, toml: str = 'app = "shop.hooks"\n', tasks_package: str = "tasks") -> Path:
    (root / "shop" / tasks_package).mkdir(parents=True)
    (root / "shop" / tasks_package / "__init__.py").write_text("")
    (root / "framework.toml").write_text(toml)
    return root


def test_find_app_from_the_root_or_below(tmp_path: Path) -> None:
    make_app(tmp_path, 'app = "shop.hooks"\n[queues]\nreports = 2\n')
    (tmp_path / "shop" / "deep").mkdir()
    for start in (tmp_path, tmp_path / "shop" / "deep"):
        found = find_app(start)
        assert (found.root, found.package, found.queues) == (tmp_path.resolve(), "shop", ("reports",))
        assert found.tasks_package == "tasks"
    make_app(tmp_path / "other")
    assert find_app(tmp_path / "other").queues is None


def test_find_app_tells_an_app_with_the_old_jobs_package(tmp_path: Path) -> None:
    make_app(tmp_path, tasks_package="jobs")
    assert find_app(tmp_path).tasks_package == "jobs"
    (tmp_path / "shop" / "tasks").mkdir()  # a folder that is not a package does not count
    assert find_app(tmp_path).tasks_package == "jobs"
    (tmp_path / "shop" / "tasks" / "__init__.py").write_text("")
    assert find_app(tmp_path).tasks_package == "tasks"


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (None, "no framework.toml in .* or its parents"),
        ("app = [", "is not valid TOML"),
        ('templates_dir = "x"\n', "has no `app` setting"),
        ('app = "other.hooks"\n', r"other/tasks is not a package"),
    ],
)
def test_find_app_failures(tmp_path: Path, toml: str | None, message: str) -> None:
    make_app(tmp_path / "app")
    config = tmp_path / "app" / "framework.toml"
    if toml is None:
        config.unlink()
    else:
        config.write_text(toml)
    with pytest.raises(ScaffoldError, match=message):
        find_app(tmp_path / "app")


# -- templates ------------------------------------------------------------------------------------


def test_an_editable_install_reads_the_source_trees_templates() -> None:
    root = template_root()
    assert Path(str(root)) == ROOT / "scaffold"
    assert {entry.name for entry in root.iterdir() if entry.is_dir()} == {"_shared", "app", "plugin", "task"}


def test_packaged_templates_win(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "framework" / "_scaffold").mkdir(parents=True)
    monkeypatch.setattr(importlib.resources, "files", lambda package: tmp_path / package)
    assert Path(str(template_root())) == tmp_path / "framework" / "_scaffold"
    (tmp_path / "framework" / "_scaffold").rmdir()
    with pytest.raises(ScaffoldError, match="templates are missing"):
        template_root()


@pytest.mark.slow
def test_the_core_wheel_ships_the_templates_and_new_works_from_it(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist), str(ROOT)],
        check=True,
    )
    (wheel,) = dist.glob("framework-*.whl")
    shipped = {n.removeprefix("framework/_scaffold/") for n in zipfile.ZipFile(wheel).namelist() if "/_scaffold/" in n}
    expected = {p.relative_to(ROOT / "scaffold").as_posix() for p in (ROOT / "scaffold").rglob("*") if p.is_file()}
    assert shipped == expected
    assert "app/.env.example.jinja" in shipped
    assert "task/{{package}}/{{tasks_package}}/{{task.module}}.py.jinja" in shipped

    # A venv that has the wheel's framework and sees this venv's dependencies, but not the source tree.
    python = overlay_venv(tmp_path / "venv", editables=False)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed", str(wheel)],
        check=True,
        env=clean_env(),
    )
    work = tmp_path / "work"
    work.mkdir()
    env = clean_env(FRAMEWORK_LOAD_PLUGINS="")
    where = subprocess.run(
        [str(python), "-c", "import framework.cli.scaffold as s; print(s.__file__); print(s.template_root())"],
        cwd=work,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    site = str(tmp_path / "venv")
    assert where[0].startswith(site)
    assert where[1].startswith(site)
    assert where[1].endswith("framework/_scaffold")
    done = subprocess.run(
        [str(tmp_path / "venv" / "bin" / "framework"), "new", "from_wheel", "--plugins", "email"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    project = work / "from_wheel"
    assert (project / "from_wheel" / "tasks" / "greet.py").is_file()
    assert 'app = "from_wheel.hooks"' in (project / "framework.toml").read_text()
    assert '"framework-email",\n]' in (project / "pyproject.toml").read_text()
    # framework came from the wheel; framework-email is installed editable in the venv underneath
    assert requirement_lines((project / "requirements.txt").read_text()) == [
        f"framework @ {wheel.as_uri()}",
        f"-e {(ROOT / 'plugins' / 'email').as_uri()}",
    ]
    assert f"framework from the wheels in {dist}" in done.stdout
