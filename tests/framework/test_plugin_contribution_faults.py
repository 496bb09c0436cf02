"""Broken contributions from plugins: the error names the plugin, and a start that fails leaves nothing open.

Covers the assembly hooks the worker, the web app and the command line call (``register_middleware``,
``register_routes``, ``register_static_dirs``, ``register_schema_guards``, ``register_commands``,
``register_cron_entries``), and what :meth:`Worker.start` and :func:`start_services` close when they fail
part-way: connections on the real Valkey (``CLIENT LIST``), the heartbeat thread, the worker's tasks and its
server record.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import msgspec
import pytest
from litestar import get
from redis.asyncio import Redis
from structlog.testing import capture_logs

from framework.cli._lazy import Lazy, LazyGroup
from framework.errors import PluginError
from framework.hookspecs import hookimpl
from framework.plugins.manager import collect_cron_entries, get_plugin_manager
from framework.plugins.templates import build_environment, template_search_path
from framework.protocol.keys import Schema
from framework.task import TaskDef
from framework.testing.faults import Faults
from framework.web.app import create_app, start_services
from framework.worker.background.aggregator import Aggregator
from framework.worker.worker import Worker
from tests.fixtures.cli import cli_env, run_framework
from tests.fixtures.plugins import Opened
from tests.framework.test_plugins import make_distribution

if TYPE_CHECKING:
    from collections.abc import Callable

    import pluggy

    from framework.settings import Settings


class M(msgspec.Struct, frozen=True, kw_only=True):
    n: int = 0


async def _handle(ctx: Any, m: M) -> None:
    pass


TASK = TaskDef("contrib:job", M, _handle)


def _pm(settings: Settings, **plugins: object) -> pluggy.PluginManager:
    return get_plugin_manager(settings, extra=list(plugins.items()))


def _framework_tasks() -> list[str]:
    """The worker's asyncio tasks still on the loop."""
    return [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("framework-") and not t.done()]


def _heartbeats() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "framework-heartbeat"]


# -- register_middleware ------------------------------------------------------------------------------


def _raises(settings: Any) -> list[Any]:
    raise RuntimeError("no licence")


def _bare(settings: Any) -> Any:
    def middleware(run: Any) -> Any:
        return run

    return middleware  # the list left out


@pytest.mark.parametrize(
    ("impl", "why"),
    [(_raises, "RuntimeError: no licence"), (_bare, "must return a list")],
    ids=["raises", "returns-a-function"],
)
async def test_a_broken_middleware_hook_stops_the_worker_naming_the_plugin_before_anything_opens(
    isolated: Settings, opened: Opened, impl: Callable[[Any], Any], why: str
) -> None:
    class Plugin:
        register_middleware = staticmethod(hookimpl(impl))

    worker = Worker(isolated, tasks=[TASK], plugin_manager=_pm(isolated, metrics=Plugin()))
    with pytest.raises(PluginError) as raised:
        await worker.start()
    message = str(raised.value)
    assert "plugin 'metrics'" in message
    assert "register_middleware" in message
    assert why in message
    assert await opened.settled() == []
    assert _framework_tasks() == []


async def test_a_middleware_hook_returning_none_contributes_nothing(isolated: Settings, opened: Opened) -> None:
    class Plugin:
        @hookimpl
        def register_middleware(self, settings: Any) -> None:
            return None

    worker = Worker(isolated, tasks=[TASK], plugin_manager=_pm(isolated, quiet=Plugin()))
    await worker.start()
    await worker.stop()
    assert await opened.settled() == []


# -- a start that fails part-way ---------------------------------------------------------------------


async def _servers(redis_url: str, settings: Settings) -> list[Any]:
    """The members of the namespace's server index (asynq's ``servers`` sorted set)."""
    redis = Redis.from_url(redis_url)
    try:
        members: list[Any] = await redis.zrange(Schema(settings.namespace).servers, 0, -1)
    finally:
        await redis.aclose()
    return members


async def test_a_redis_fault_after_connecting_leaves_no_connection_open(isolated: Settings, opened: Opened) -> None:
    faults = Faults()
    faults.fail("register_queues", error=ConnectionError)
    worker = Worker(isolated, tasks=[TASK], wrap_broker=faults.wrap)
    with pytest.raises(ConnectionError, match="register_queues"):
        await worker.start()
    assert await opened.settled() == []
    assert _framework_tasks() == []


async def test_a_start_failing_after_the_heartbeat_began_stops_it_and_removes_the_record(
    isolated: Settings, opened: Opened, redis_url: str
) -> None:
    """Two aggregators for one group are refused once the heartbeat runs: it stops, and its record goes."""

    def aggregate(group: str, tasks: list[Any]) -> Any:
        return TASK, M(n=len(tasks))

    twice = [Aggregator(aggregate, group="orders"), Aggregator(aggregate, group="orders")]
    worker = Worker(isolated, tasks=[TASK], aggregators=twice)
    with pytest.raises(PluginError, match="two aggregators"):
        await worker.start()
    assert await opened.settled() == []
    assert _heartbeats() == []
    assert _framework_tasks() == []
    assert not [m for m in await _servers(redis_url, isolated) if worker.identity.server_id.encode() in m]


async def test_a_start_cancelled_part_way_closes_what_it_opened(isolated: Settings, opened: Opened) -> None:
    faults = Faults()
    faults.delay("register_queues", 30.0)
    worker = Worker(isolated, tasks=[TASK], wrap_broker=faults.wrap)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(worker.start(), timeout=0.5)
    assert await opened.settled() == []


async def test_a_worker_whose_start_failed_can_start_again(isolated: Settings, opened: Opened) -> None:
    faults = Faults()
    faults.fail("register_queues", error=ConnectionError)
    worker = Worker(isolated, tasks=[TASK], wrap_broker=faults.wrap)
    with pytest.raises(ConnectionError):
        await worker.start()
    await worker.start()  # the fault was for one call
    try:
        assert _heartbeats() == ["framework-heartbeat"]
    finally:
        await worker.stop()
    assert await opened.settled() == []


async def test_start_services_failing_in_a_plugin_hook_leaves_no_connection_open(
    isolated: Settings, opened: Opened
) -> None:
    class Plugin:
        @hookimpl
        def register_task_types(self, settings: Any) -> list[Any]:
            raise KeyError("jobs")

    with pytest.raises(PluginError, match="plugin 'jobs'"):
        await start_services(isolated, _pm(isolated, jobs=Plugin()), "web")
    assert await opened.settled() == []


# -- the web app's hooks -----------------------------------------------------------------------------


@get("/fine", sync_to_thread=False)
def _fine() -> str:
    return "fine"


def _undecorated() -> str:
    return "never mounted"


async def _guard(connection: Any, handler: Any) -> None:
    pass


def _app_plugin(hook: str, result: Callable[[], Any]) -> object:
    """A plugin whose ``hook`` gives what ``result`` gives (or raises what it raises)."""

    def impl(settings: Any, plugin_manager: Any) -> Any:
        return result()

    return type("Plugin", (), {hook: staticmethod(hookimpl(impl))})()


def _boom() -> Any:
    raise ValueError("bad config")


def _exits() -> Any:
    sys.exit("no licence")


_HERE = Path(__file__)
"""A file: not a folder."""

_MISSING = _HERE.parent / "no-such-folder"


@pytest.mark.parametrize(
    ("hook", "result", "why"),
    [
        ("register_routes", _boom, "failed in register_routes: ValueError: bad config"),
        ("register_routes", _exits, "failed in register_routes: SystemExit: no licence"),
        ("register_routes", lambda: _fine, "must return a list"),
        ("register_routes", lambda: [_fine, _undecorated], "not a route handler"),
        ("register_schema_guards", _boom, "failed in register_schema_guards: ValueError: bad config"),
        ("register_schema_guards", lambda: ["admin-only"], "not a guard"),
        ("register_static_dirs", _boom, "failed in register_static_dirs: ValueError: bad config"),
        ("register_static_dirs", lambda: ("/assets", Path(".")), "not a (url_path, folder) pair"),
        (
            "register_static_dirs",
            lambda: [("/assets", None)],
            "contributed None to register_static_dirs, not a folder path",
        ),
        (
            "register_static_dirs",
            lambda: [("/assets", _HERE)],
            f"contributed {str(_HERE)!r} to register_static_dirs, which is not a folder",
        ),
        ("register_template_dirs", _boom, "failed in register_template_dirs: ValueError: bad config"),
        ("register_template_dirs", lambda: "templates", "register_template_dirs must return a list"),
        ("register_template_dirs", lambda: _HERE.parent, "register_template_dirs must return a list"),
        ("register_template_dirs", lambda: [42], "contributed 42 to register_template_dirs, not a folder path"),
        (
            "register_template_dirs",
            lambda: [_HERE],
            f"contributed {str(_HERE)!r} to register_template_dirs, which is not a folder",
        ),
        ("prepare_jinja2_environment", _boom, "failed in prepare_jinja2_environment: ValueError: bad config"),
    ],
    ids=[
        "routes-raise",
        "routes-exit",
        "routes-not-a-list",
        "routes-undecorated",
        "guards-raise",
        "guards-not-callable",
        "static-raise",
        "static-one-pair",
        "static-folder-none",
        "static-folder-a-file",
        "templates-raise",
        "templates-a-string",
        "templates-one-path",
        "templates-not-a-path",
        "templates-a-file",
        "jinja-raise",
    ],
)
def test_a_broken_web_hook_fails_building_the_app_naming_the_plugin(
    isolated: Settings, hook: str, result: Callable[[], Any], why: str
) -> None:
    pm = _pm(isolated, fine=_app_plugin("register_routes", lambda: [_fine]), shop=_app_plugin(hook, result))
    with pytest.raises(PluginError) as raised:
        create_app(isolated, plugin_manager=pm)
    assert "plugin 'shop'" in str(raised.value)
    assert why in str(raised.value)


def test_a_contributed_folder_that_does_not_exist_is_skipped_with_a_warning_naming_the_plugin(
    isolated: Settings, tmp_path: Path
) -> None:
    """An empty ``static`` or ``templates`` folder is not kept by git: a fresh checkout of a working plugin may lack
    it. The app starts without it, and the log says which plugin named it."""
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "page.html").write_text("kept")
    pm = _pm(
        isolated,
        fine=_app_plugin("register_routes", lambda: [_fine]),
        shop=_app_plugin("register_static_dirs", lambda: [("/assets", _MISSING)]),
        theme=_app_plugin("register_template_dirs", lambda: [str(_MISSING), kept]),
    )
    with capture_logs() as logs:
        app = create_app(isolated, plugin_manager=pm)
        _, search = template_search_path(isolated, pm)
    assert "/fine" in {route.path for route in app.routes}
    assert not any(route.path.startswith("/assets") for route in app.routes)
    assert _MISSING not in search and kept in search
    missing = [(e["plugin"], e["hook"]) for e in logs if e["event"] == "plugin_folder_missing"]
    assert ("shop", "register_static_dirs") in missing and ("theme", "register_template_dirs") in missing
    assert all(e["folder"] == str(_MISSING) for e in logs if e["event"] == "plugin_folder_missing")


def test_web_hooks_returning_none_contribute_nothing(isolated: Settings) -> None:
    pm = _pm(
        isolated,
        fine=_app_plugin("register_routes", lambda: [_fine]),
        quiet=type(
            "Quiet",
            (),
            {
                name: staticmethod(hookimpl(_nothing()))
                for name in (
                    "register_routes",
                    "register_schema_guards",
                    "register_static_dirs",
                    "register_template_dirs",
                )
            },
        )(),
    )
    app = create_app(isolated, plugin_manager=pm)
    assert "/fine" in {route.path for route in app.routes}


def _nothing() -> Callable[..., None]:
    def impl(settings: Any) -> None:
        return None

    return impl


def test_template_folders_of_later_loaded_plugins_come_first(isolated: Settings, tmp_path: Path) -> None:
    """The folders ``register_template_dirs`` gives, checked one plugin at a time, keep pluggy's order."""
    folders = {}
    for name in ("base", "theme"):
        folders[name] = tmp_path / name
        folders[name].mkdir()
        (folders[name] / "page.html").write_text(name)
    pm = _pm(
        isolated,
        base=_app_plugin("register_template_dirs", lambda: [folders["base"]]),
        theme=_app_plugin("register_template_dirs", lambda: [str(folders["theme"])]),
    )
    _, search = template_search_path(isolated, pm)
    assert search[:2] == [folders["theme"], folders["base"]]
    assert build_environment(isolated, pm).get_template("page.html").render() == "theme"


# -- register_cron_entries ---------------------------------------------------------------------------


def test_a_cron_hook_giving_something_else_than_cron_entries_is_refused_naming_the_plugin(isolated: Settings) -> None:
    class Plugin:
        @hookimpl
        def register_cron_entries(self, settings: Any) -> list[Any]:
            return ["*/5 * * * * contrib:job"]

    with pytest.raises(PluginError, match=r"plugin 'nightly'.*not a CronEntry"):
        collect_cron_entries(_pm(isolated, nightly=Plugin()), isolated)


# -- register_commands -------------------------------------------------------------------------------


def test_two_plugins_adding_one_command_name_are_refused_naming_both() -> None:
    group = LazyGroup(lazy={"tasks": Lazy("framework.cli.tasks", "tasks", "Tasks.")})
    with group.adding_for("first"):
        group.add_command(click.Command("greet", help="first"))
    with group.adding_for("second"), pytest.raises(PluginError) as raised:
        group.add_command(click.Command("greet", help="second"))
    message = str(raised.value)
    assert "plugin 'second'" in message
    assert "plugin 'first'" in message
    assert "'greet'" in message
    assert group.commands["greet"].help == "first"
    with group.adding_for("first"):  # a plugin adding its own command again replaces it
        group.add_command(click.Command("greet", help="first, again"))
    assert group.commands["greet"].help == "first, again"
    with group.adding_for("third"), pytest.raises(PluginError, match="plugin 'third': the command name 'tasks'"):
        group.add_command(click.Command("tasks"))


_DIST_COMMAND = """
    import click
    from framework.hookspecs import hookimpl

    @hookimpl
    def register_commands(cli):
        @cli.command()
        def greet():
            \"\"\"Greet from the distribution.\"\"\"
            click.echo("hello from fwcmd_one")
"""


def _cli_env(redis_url: str, namespace: str, tmp_path: Path, app: str, *, dist: bool = True) -> dict[str, str]:
    """The ``framework`` environment with app module ``app`` and, when ``dist``, the ``fwcmd_one`` plugin."""
    (tmp_path / "fwcmd_app.py").write_text(textwrap.dedent(app))
    env = cli_env(redis_url, namespace, tmp_path / "data")
    env["FRAMEWORK_APP"] = "fwcmd_app"
    if dist:
        site = tmp_path / "site"
        make_distribution(site, "framework-fwcmd-one", "fwcmd_one", _DIST_COMMAND)
        env["PYTHONPATH"] = str(site)
        env["FRAMEWORK_LOAD_PLUGINS"] = "fwcmd_one"
    return env


def _warnings(done: subprocess.CompletedProcess[str]) -> list[str]:
    assert "Traceback" not in done.stderr, done.stderr
    return [line for line in done.stderr.splitlines() if line.startswith("warning: ")]


@pytest.mark.parametrize(
    ("raising", "error"),
    [('raise RuntimeError("no licence")', "RuntimeError: no licence"), ('sys.exit("no licence")', "SystemExit")],
    ids=["raises", "exits"],
)
def test_a_register_commands_hook_that_raises_leaves_the_other_commands_usable(
    redis_url: str, namespace: str, tmp_path: Path, raising: str, error: str
) -> None:
    """``framework --help`` lists the built-in commands and the other plugin's, and one warning names the app."""
    app = f"""
        import sys
        from framework.hookspecs import hookimpl

        @hookimpl
        def register_commands(cli):
            {raising}
    """
    done = run_framework(_cli_env(redis_url, namespace, tmp_path, app), tmp_path, "--help")
    assert done.returncode == 0, done.stderr
    assert "worker" in done.stdout
    assert "greet" in done.stdout  # the other plugin's command
    warnings = _warnings(done)
    assert len(warnings) == 1, done.stderr
    assert f"plugin 'app' failed in register_commands: {error}" in warnings[0]


def test_a_command_name_two_plugins_add_keeps_the_first_and_warns_naming_both(
    redis_url: str, namespace: str, tmp_path: Path
) -> None:
    app = """
        import click
        from framework.hookspecs import hookimpl

        @hookimpl
        def register_commands(cli):
            @cli.command()
            def greet():
                \"\"\"Greet from the app.\"\"\"
                click.echo("hello from the app")
    """
    done = run_framework(_cli_env(redis_url, namespace, tmp_path, app), tmp_path, "greet")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "hello from fwcmd_one"  # load order: the distribution's came first
    warnings = _warnings(done)
    assert len(warnings) == 1, done.stderr
    assert "plugin 'app'" in warnings[0]
    assert "plugin 'fwcmd_one'" in warnings[0]
    assert "'greet'" in warnings[0]


def test_a_plugin_command_taking_a_built_in_name_is_refused_naming_the_plugin(
    redis_url: str, namespace: str, tmp_path: Path
) -> None:
    app = """
        import click
        from framework.hookspecs import hookimpl

        @hookimpl
        def register_commands(cli):
            @cli.command()
            def worker():
                \"\"\"Not the built-in worker.\"\"\"
    """
    done = run_framework(_cli_env(redis_url, namespace, tmp_path, app), tmp_path, "--help")
    assert done.returncode == 0, done.stderr
    assert "greet" in done.stdout  # the other plugin's command still loads
    assert "Run worker processes" in done.stdout  # the built-in keeps its name
    warnings = _warnings(done)
    assert len(warnings) == 1, done.stderr
    assert "plugin 'app': the command name 'worker' is taken by a built-in command" in warnings[0]
