"""Plugin loading: entry points, order and override, allow/block lists, failures, the listing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from framework.errors import PluginError
from framework.plugins.manager import collect_task_types, get_plugin_manager, get_plugins
from framework.registry import Registry

ROOT = Path(__file__).resolve().parents[2]


def make_distribution(where: Path, dist: str, module: str, body: str, ep_name: str | None = None) -> None:
    """Write an installed-looking distribution (package + .dist-info with an entry point) into ``where``.

    ``importlib.metadata`` finds it on ``sys.path`` exactly as it finds a pip-installed one.
    """
    pkg = where / module
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text('"""Test plugin."""\n')
    (pkg / "hooks.py").write_text(textwrap.dedent(body))
    info = where / f"{dist.replace('-', '_')}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[framework]\n{ep_name or module} = {module}.hooks\n")
    (info / "RECORD").write_text("")


TASK_PLUGIN = """
    import msgspec
    from framework.hookspecs import hookimpl
    from framework.task import TaskDef

    class P(msgspec.Struct, frozen=True):
        pass

    async def handle(ctx, p):
        pass

    TASK = TaskDef("{type}", P, handle)

    @hookimpl
    def register_task_types(settings):
        return [TASK]

    @hookimpl
    def retry_delay_for(ctx, error):
        return {delay}
"""


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    for name in list(sys.modules):
        if name.startswith(("fwtest_", "framework_fwtest")):
            del sys.modules[name]


def test_third_party_plugins_load_after_builtins_and_override_first_result_hooks(site: Path, settings: Any) -> None:
    make_distribution(site, "framework-fwtest-a", "fwtest_a", TASK_PLUGIN.format(type="a:task", delay=11.0))
    pm = get_plugin_manager(settings)
    names = [name for name, _ in pm.list_name_plugin()]
    assert "fwtest_a" in names
    for builtin in ("email",):
        if builtin in names:
            assert names.index(builtin) < names.index("fwtest_a")
    # the most recently registered (third-party) implementation answers a first-result hook
    assert pm.hook.retry_delay_for(ctx=None, error=None) == 11.0
    registry = Registry()
    collect_task_types(pm, settings, registry)
    assert registry.source("a:task") == "plugin 'fwtest_a'"


def test_allow_and_block_lists(site: Path, settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    make_distribution(site, "framework-fwtest-a", "fwtest_a", TASK_PLUGIN.format(type="a:task", delay=1))
    make_distribution(site, "framework-fwtest-b", "fwtest_b", TASK_PLUGIN.format(type="b:task", delay=2))

    def loaded(s: Any) -> set[str]:
        return {name for name, _ in get_plugin_manager(s).list_name_plugin()} & {"fwtest_a", "fwtest_b"}

    assert loaded(settings) == {"fwtest_a", "fwtest_b"}
    assert loaded(settings.replace(load_plugins=["fwtest_b"])) == {"fwtest_b"}
    assert loaded(settings.replace(block_plugins=["fwtest_b"])) == {"fwtest_a"}
    monkeypatch.setenv("FRAMEWORK_LOAD_PLUGINS", "fwtest_a")
    assert loaded(settings) == {"fwtest_a"}
    monkeypatch.setenv("FRAMEWORK_LOAD_PLUGINS", "")
    assert loaded(settings) == set()
    monkeypatch.delenv("FRAMEWORK_LOAD_PLUGINS")
    monkeypatch.setenv("FRAMEWORK_BLOCK_PLUGINS", "fwtest_a,fwtest_b")
    assert loaded(settings) == set()


def test_an_empty_allow_list_reads_no_distribution(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """No plugin may load, so the installed distributions' entry points are not even listed (start-up time)."""
    import importlib.metadata

    def unwanted(**_: Any) -> Any:
        raise AssertionError("entry points scanned")

    monkeypatch.setattr(importlib.metadata, "entry_points", unwanted)
    monkeypatch.setenv("FRAMEWORK_LOAD_PLUGINS", "")
    assert get_plugin_manager(settings).list_name_plugin() == []
    monkeypatch.delenv("FRAMEWORK_LOAD_PLUGINS")
    assert get_plugin_manager(settings.replace(load_plugins=[])).list_name_plugin() == []


def _listed(eps: Any) -> list[tuple[str, str, str, str]]:
    return [(ep.name, ep.value, ep.dist.name, ep.dist.version) for ep in eps]


@pytest.mark.parametrize("group", ["framework", "console_scripts", "pytest11"])
def test_entry_points_are_listed_as_importlib_metadata_lists_them(site: Path, group: str) -> None:
    """The lean listing (no ``importlib.metadata`` import) finds what ``importlib.metadata`` finds, in its order."""
    import importlib.metadata

    from framework.plugins import entry_points

    make_distribution(site, "framework-fwtest-a", "fwtest_a", TASK_PLUGIN.format(type="a:task", delay=1))
    (site / "framework_fwtest_a-1.2.3.dist-info" / "entry_points.txt").write_text(
        "# a comment\n[console_scripts]\nfwtest-a = fwtest_a.hooks:main\n\n[framework]\n"
        "fwtest_a = fwtest_a.hooks\n  fwtest_extra=fwtest_a.hooks:TASK.handler [x]  \n"
    )
    # a second copy of the same distribution, later on sys.path: importlib.metadata takes the first only
    later = site.parent / "later"
    make_distribution(later, "framework-fwtest-a", "fwtest_a", "")
    sys.path.append(str(later))
    try:
        assert entry_points._lean_search_applies()
        lean = entry_points.entry_points(group)
        assert _listed(lean) == _listed(importlib.metadata.entry_points(group=group))
    finally:
        sys.path.remove(str(later))
    if group == "framework":
        extra = next(ep for ep in lean if ep.name == "fwtest_extra")
        assert extra.load() is sys.modules["fwtest_a.hooks"].TASK.handler
        assert ("fwtest_a", "fwtest_a.hooks", "framework-fwtest-a", "1.2.3") in _listed(lean)


def test_entry_points_are_left_to_importlib_metadata_where_it_finds_more(monkeypatch: pytest.MonkeyPatch) -> None:
    """A finder of distributions of its own, or a zip on ``sys.path``: ``importlib.metadata`` lists them."""
    import importlib.metadata

    from framework.plugins import entry_points

    asked: list[str] = []

    def listing(**params: Any) -> list[Any]:
        asked.append(params["group"])
        return []

    monkeypatch.setattr(importlib.metadata, "entry_points", listing)

    class Finder:
        def find_spec(self, *_: Any) -> None:
            return None

        def find_distributions(self, *_: Any) -> list[Any]:
            return []

    monkeypatch.setattr(sys, "meta_path", [*sys.meta_path, Finder()])
    assert entry_points.entry_points("framework") == []
    monkeypatch.undo()
    monkeypatch.setattr(importlib.metadata, "entry_points", listing)
    monkeypatch.setattr(sys, "path", [*sys.path, __file__])  # a file: a zip, to importlib.metadata
    assert entry_points.entry_points("framework") == []
    assert asked == ["framework", "framework"]


def test_a_plugin_that_fails_to_import_stops_startup_naming_it(site: Path, settings: Any) -> None:
    make_distribution(site, "framework-fwtest-broken", "fwtest_broken", "import no_such_module_anywhere\n")
    with pytest.raises(PluginError) as info:
        get_plugin_manager(settings)
    message = str(info.value)
    assert "framework-fwtest-broken" in message
    assert "No module named 'no_such_module_anywhere'" in message


def test_a_plugin_with_a_misspelt_hook_is_rejected(site: Path, settings: Any) -> None:
    body = """
        from framework.hookspecs import hookimpl

        @hookimpl
        def register_task_typez(settings):
            return []
    """
    make_distribution(site, "framework-fwtest-typo", "fwtest_typo", body)
    with pytest.raises(PluginError, match="register_task_typez"):
        get_plugin_manager(settings)


def test_duplicate_task_type_names_both_plugins(site: Path, settings: Any) -> None:
    make_distribution(site, "framework-fwtest-a", "fwtest_a", TASK_PLUGIN.format(type="same:type", delay=1))
    make_distribution(site, "framework-fwtest-b", "fwtest_b", TASK_PLUGIN.format(type="same:type", delay=2))
    pm = get_plugin_manager(settings)
    with pytest.raises(PluginError) as info:
        collect_task_types(pm, settings, Registry())
    assert "'same:type'" in str(info.value)
    assert "fwtest_a" in str(info.value)
    assert "fwtest_b" in str(info.value)


def test_get_plugins_reports_distribution_version_hooks_and_assets(site: Path, settings: Any) -> None:
    make_distribution(site, "framework-fwtest-a", "fwtest_a", TASK_PLUGIN.format(type="a:task", delay=1))
    (site / "fwtest_a" / "templates").mkdir()
    infos = {i.name: i for i in get_plugins(get_plugin_manager(settings))}
    info = infos["fwtest_a"]
    assert info.distribution == "framework-fwtest-a"
    assert info.version == "1.2.3"
    assert info.hooks == ["register_task_types", "retry_delay_for"]
    assert info.templates_dir == str((site / "fwtest_a" / "templates").resolve())
    assert not info.builtin


@pytest.mark.slow
def test_a_throwaway_plugin_wheel_installed_with_pip_is_picked_up(tmp_path: Path, settings: Any) -> None:
    src = tmp_path / "src"
    pkg = src / "framework_fwwheel"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text('"""A throwaway plugin."""\n')
    (pkg / "hooks.py").write_text(textwrap.dedent(TASK_PLUGIN.format(type="wheel:task", delay=3)))
    (src / "pyproject.toml").write_text(
        textwrap.dedent(
            """
            [build-system]
            requires = ["hatchling"]
            build-backend = "hatchling.build"

            [project]
            name = "framework-fwwheel"
            version = "0.0.1"

            [project.entry-points.framework]
            fwwheel = "framework_fwwheel.hooks"

            [tool.hatch.build.targets.wheel]
            packages = ["framework_fwwheel"]
            """
        )
    )
    # installed into a folder of its own, on the listing process's path only: installed into the environment
    # the suite runs in, it was a plugin of every test process running meanwhile (its retry_delay_for answered
    # their workers' retries)
    target = tmp_path / "installed"
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "install", "--no-deps", "--no-build-isolation", "--target", str(target), str(src)],
        check=True,
        timeout=180,
    )
    env = {**os.environ, "FRAMEWORK_REDIS_URL": settings.redis_url}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), env.get("PYTHONPATH", "")]))
    listed = subprocess.run(
        [sys.executable, "-m", "framework", "plugins", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert rows["fwwheel"]["distribution"] == "framework-fwwheel"
    assert rows["fwwheel"]["version"] == "0.0.1"
    assert rows["fwwheel"]["contributes"]["task_types"] == ["wheel:task"]


CONFIG_PLUGIN = """
    import msgspec
    from framework.hookspecs import hookimpl

    class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
        channel: str = "#general"

    @hookimpl
    def check_config(settings):
        settings.plugin_config("fwtest_conf", Config)
"""


def test_hook_check_config(site: Path, settings: Any) -> None:
    """Each plugin checks its own settings section, as its start-up would decode it."""
    from framework.plugins.manager import check_plugin_configs

    make_distribution(site, "framework-fwtest-conf", "fwtest_conf", CONFIG_PLUGIN)
    good = settings.replace(plugins={"fwtest_conf": {"channel": "#ops"}, "email": {"backend": "smtp"}})
    bad = settings.replace(plugins={"fwtest_conf": {"chanel": "#ops"}, "email": {"backend": "smtpp"}})
    results = dict(check_plugin_configs(get_plugin_manager(good), good))
    assert results["fwtest_conf"] is None
    assert "sender" in (results["email"] or "")  # smtp needs mail_from, as start-up would say
    problems = dict(check_plugin_configs(get_plugin_manager(bad), bad))
    assert "unknown field `chanel`" in (problems["fwtest_conf"] or "")
    assert "backend='smtpp' is invalid: choose one of outbox, resend, smtp" in (problems["email"] or "")


def test_the_listing_summarises_routers_once_per_prefix() -> None:
    from litestar import Router, get, post

    from framework.cli.plugins import _route_labels

    @get("/")
    async def page() -> str:
        return ""

    @post("/act")
    async def act() -> str:
        return ""

    @get("/metrics")
    async def metrics() -> str:
        return ""

    public = Router(path="/admin", route_handlers=[act])
    guarded = Router(path="/admin", route_handlers=[page])
    assert _route_labels([public, guarded, metrics, metrics]) == ["/admin/* (2 routes)", "GET /metrics"]
