"""Plugins' ``startup`` and ``shutdown`` hooks when something goes wrong.

A ``startup`` that fails (raises, calls ``sys.exit``, or is cancelled) shuts down the plugins that had
started, in reverse order, then its error propagates naming the plugin; a ``shutdown`` that fails, with
any exception, is logged and the other plugins still shut down and Redis is closed. The connections a
start or a stop leaves open are counted on the session Valkey (``CLIENT LIST``). The last tests run the
``worker`` and ``scheduler`` commands, whose processes fire ``startup`` and ``shutdown`` once each.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from typing import TYPE_CHECKING, Any

import pytest
from litestar.testing import AsyncTestClient
from structlog.testing import capture_logs

from framework.errors import PluginError
from framework.hookspecs import hookimpl
from framework.plugins.manager import get_plugin_manager
from framework.web.app import create_app, start_services, stop_services
from tests.fixtures.cli import cli_env
from tests.fixtures.plugins import Opened
from tests.framework.worker_app import stop_process

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    import pluggy

    from framework.settings import Settings


def _pm(settings: Settings, *plugins: tuple[str, object]) -> pluggy.PluginManager:
    """A plugin manager with ``plugins`` registered in this order: pluggy calls ``startup`` last one first."""
    return get_plugin_manager(settings, extra=list(plugins))


class Recorder:
    """A plugin whose ``startup`` and ``shutdown`` append ``(hook, name)`` to ``events``."""

    def __init__(self, name: str, events: list[tuple[str, str]]) -> None:
        self.name = name
        self.events = events

    @hookimpl
    async def startup(self, services: Any) -> None:
        await asyncio.sleep(0)
        self.events.append(("startup", self.name))

    @hookimpl
    def shutdown(self, services: Any) -> None:
        self.events.append(("shutdown", self.name))


class Failing:
    """A plugin whose ``startup`` fails the way ``fail`` does, and whose ``shutdown`` must never run."""

    def __init__(self, fail: Callable[[], Any], events: list[tuple[str, str]]) -> None:
        self.fail = fail
        self.events = events

    @hookimpl
    def startup(self, services: Any) -> Any:
        self.events.append(("startup", "broken"))
        return self.fail()

    @hookimpl
    def shutdown(self, services: Any) -> None:
        self.events.append(("shutdown", "broken"))


def _raises() -> None:
    raise RuntimeError("no backend")


async def _raises_when_awaited() -> None:
    await asyncio.sleep(0)
    raise RuntimeError("no backend")


def _exits() -> None:
    sys.exit("no backend")


def _failures(logs: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(e["hook"], e["plugin"], e["error"]) for e in logs if e["event"] == "plugin_hook_failed"]


# -- a startup that fails ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fail", "why"),
    [
        (_raises, "RuntimeError: no backend"),
        (_raises_when_awaited, "RuntimeError: no backend"),
        (_exits, "SystemExit: no backend"),
    ],
    ids=["raises", "raises-when-awaited", "exits"],
)
async def test_a_failing_startup_shuts_down_the_plugins_that_started_in_reverse_order(
    isolated: Settings, opened: Opened, fail: Callable[[], Any], why: str
) -> None:
    """``first`` and ``second`` started before ``broken`` failed: they shut down, ``second`` first; ``later``
    never started and does not shut down; the error names ``broken``, and no connection is left open."""
    events: list[tuple[str, str]] = []
    pm = _pm(
        isolated,
        ("later", Recorder("later", events)),
        ("broken", Failing(fail, events)),
        ("second", Recorder("second", events)),
        ("first", Recorder("first", events)),
    )
    with pytest.raises(PluginError) as raised:
        await start_services(isolated, pm, "web")
    assert str(raised.value) == f"plugin 'broken' failed in startup: {why}"
    assert events == [
        ("startup", "first"),
        ("startup", "second"),
        ("startup", "broken"),
        ("shutdown", "second"),
        ("shutdown", "first"),
    ]
    assert await opened.settled() == []


async def test_a_shutdown_failing_while_undoing_a_failed_startup_is_logged_and_the_startup_error_propagates(
    isolated: Settings, opened: Opened
) -> None:
    events: list[tuple[str, str]] = []

    class StopsBadly(Recorder):
        @hookimpl
        def shutdown(self, services: Any) -> None:
            raise KeyboardInterrupt

    pm = _pm(
        isolated,
        ("broken", Failing(_raises, events)),
        ("second", StopsBadly("second", events)),
        ("first", Recorder("first", events)),
    )
    with capture_logs() as logs, pytest.raises(PluginError, match="plugin 'broken' failed in startup"):
        await start_services(isolated, pm, "web")
    assert events[-1] == ("shutdown", "first")  # after second's failed
    assert _failures(logs) == [("shutdown", "second", "KeyboardInterrupt")]
    assert await opened.settled() == []


async def test_a_startup_cancelled_part_way_shuts_down_the_plugins_that_started(
    isolated: Settings, opened: Opened
) -> None:
    """The process stopping while a plugin's ``startup`` still waits: the plugins started before it shut down."""
    events: list[tuple[str, str]] = []

    async def hangs() -> None:
        await asyncio.sleep(30)

    pm = _pm(isolated, ("broken", Failing(hangs, events)), ("first", Recorder("first", events)))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(start_services(isolated, pm, "web"), timeout=0.3)
    assert events == [("startup", "first"), ("startup", "broken"), ("shutdown", "first")]
    assert await opened.settled() == []


def test_the_web_app_whose_plugin_startup_fails_shuts_down_the_plugins_that_started(isolated: Settings) -> None:
    events: list[tuple[str, str]] = []
    pm = _pm(isolated, ("broken", Failing(_raises, events)), ("first", Recorder("first", events)))
    app = create_app(isolated, plugin_manager=pm)

    async def serve() -> None:
        async with AsyncTestClient(app):
            pass

    with pytest.raises(BaseExceptionGroup) as raised:  # Litestar's lifespan raises it in a group
        asyncio.run(serve())
    assert raised.group_contains(PluginError, match="plugin 'broken' failed in startup: RuntimeError: no backend")
    assert events == [("startup", "first"), ("startup", "broken"), ("shutdown", "first")]


# -- a shutdown that fails ---------------------------------------------------------------------------


def _exit_now() -> None:
    sys.exit(3)


def _interrupt() -> None:
    raise KeyboardInterrupt


async def _cancelled_inside() -> None:
    """A ``CancelledError`` from something the hook awaited (not a cancellation of the process's stop)."""
    await asyncio.sleep(0)
    raise asyncio.CancelledError


@pytest.mark.parametrize(
    ("fail", "why"),
    [
        (_raises, "RuntimeError: no backend"),
        (_exit_now, "SystemExit: 3"),
        (_interrupt, "KeyboardInterrupt"),
        (_cancelled_inside, "CancelledError"),
    ],
    ids=["raises", "exits", "interrupts", "cancelled-inside"],
)
async def test_a_failing_shutdown_is_logged_and_the_others_still_shut_down_and_redis_closes(
    isolated: Settings, opened: Opened, fail: Callable[[], Any], why: str
) -> None:
    events: list[tuple[str, str]] = []

    class StopsBadly:
        @hookimpl
        def shutdown(self, services: Any) -> Any:
            return fail()

    pm = _pm(isolated, ("broken", StopsBadly()), ("fine", Recorder("fine", events)))
    services = await start_services(isolated, pm, "web")
    with capture_logs() as logs:
        await stop_services(services)
    assert events == [("startup", "fine"), ("shutdown", "fine")]
    assert _failures(logs) == [("shutdown", "broken", why)]
    assert await opened.settled() == []


# -- the worker and scheduler commands ---------------------------------------------------------------

_RECORDING_APP = """
    from pathlib import Path

    from framework import hookimpl


    def _record(event):
        with Path("events").open("a") as out:
            out.write(event + "\\n")


    @hookimpl
    def startup(services):
        _record("startup " + services.role)


    @hookimpl
    def shutdown(services):
        _record("shutdown " + services.role)
"""


@pytest.mark.parametrize(
    ("command", "started"),
    [("worker", ("worker_started",)), ("scheduler", ("scheduler_started", "scheduler_idle"))],
    ids=["worker", "scheduler"],
)
def test_the_worker_and_scheduler_commands_fire_startup_and_shutdown_once(
    redis_url: str, namespace: str, tmp_path: Path, command: str, started: tuple[str, ...]
) -> None:
    """``startup`` fires once per process (``services.role`` naming it), ``shutdown`` once when it stops."""
    (tmp_path / "lifecycle_app.py").write_text(textwrap.dedent(_RECORDING_APP))
    env = {**cli_env(redis_url, namespace, tmp_path / "data"), "FRAMEWORK_APP": "lifecycle_app"}
    with subprocess.Popen(
        [sys.executable, "-m", "framework", command],
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stderr is not None
            running = next((line for line in proc.stderr if any(event in line for event in started)), None)
        finally:
            status = stop_process(proc)  # type: ignore[arg-type]
    assert running is not None, f"the {command} did not start"
    assert status == 0
    events = tmp_path / "events"
    assert (events.read_text().splitlines() if events.exists() else []) == [f"startup {command}", f"shutdown {command}"]
