"""One test per hook: each hook's contributions take effect in a real app, worker or CLI."""

from __future__ import annotations

import asyncio
import inspect
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jinja2
import msgspec
import pytest
from litestar import Router, get
from litestar.exceptions import PermissionDeniedException
from litestar.openapi.config import OpenAPIConfig
from litestar.response import Template
from litestar.testing import AsyncTestClient
from structlog.testing import capture_logs

from framework.errors import SkipRetry
from framework.hookspecs import hookimpl
from framework.logging import get_logger
from framework.plugins.events import fire_event
from framework.plugins.manager import check_plugin_configs, collect_cron_entries, collect_task_types, get_plugin_manager
from framework.registry import Registry
from framework.task import CronEntry, TaskDef
from framework.web.app import create_app
from framework.worker.worker import Worker

ROOT = Path(__file__).resolve().parents[2]


class N(msgspec.Struct, frozen=True, kw_only=True):
    n: int = 0


def pm_with(settings: Any, *plugins: object) -> Any:
    return get_plugin_manager(settings, extra=[(f"p{i}", p) for i, p in enumerate(plugins)])


async def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def run_worker(settings: Any, pm: Any, until: Any) -> None:
    worker = Worker(settings, plugin_manager=pm)
    await worker.start()
    try:
        await wait_for(until)
    finally:
        await worker.stop()


async def test_hook_register_task_types(isolated: Any, client: Any) -> None:
    seen: list[int] = []

    async def handle(ctx: Any, p: N) -> None:
        seen.append(p.n)

    task = TaskDef("hooks:count", N, handle)

    class Plugin:
        @hookimpl
        def register_task_types(self, settings: Any) -> list[Any]:
            return [task]

    pm = pm_with(isolated, Plugin())
    await client.enqueue(task, N(n=7))
    await run_worker(isolated, pm, lambda: seen == [7])


def test_hook_register_cron_entries(isolated: Any) -> None:
    class Plugin:
        @hookimpl
        def register_cron_entries(self, settings: Any) -> list[CronEntry]:
            return [CronEntry(name="nightly", spec="@daily", task="hooks:count")]

    entries = collect_cron_entries(pm_with(isolated, Plugin()), isolated)
    assert [(e.name, e.spec, e.source) for e in entries] == [("nightly", "@daily", "p0")]


def test_assembly_hooks_get_the_plugin_manager_when_they_name_it(isolated: Any) -> None:
    """A plugin asks the others for what they contribute, through the manager calling it (argument opt-in)."""

    class Source:
        @hookimpl
        def register_task_types(self, settings: Any) -> list[Any]:
            return [TaskDef("hooks:source", N, _noop)]

    class Follower:
        @hookimpl
        def register_cron_entries(self, settings: Any, plugin_manager: Any) -> list[CronEntry]:
            found = plugin_manager.hook.register_task_types(settings=settings, plugin_manager=plugin_manager)
            names = [task.type for tasks in found for task in tasks]
            return [CronEntry(name=f"{name}:nightly", spec="@daily", task=name) for name in names]

    entries = collect_cron_entries(pm_with(isolated, Source(), Follower()), isolated)
    assert [(e.name, e.source) for e in entries] == [("hooks:source:nightly", "p1")]


async def _noop(ctx: Any, p: N) -> None:
    return None


async def test_hook_register_middleware(isolated: Any, client: Any) -> None:
    calls: list[str] = []

    def tracer(label: str) -> Any:
        def middleware(run: Any) -> Any:
            async def wrapped(ctx: Any, payload: Any) -> None:
                calls.append(f"{label}>")
                await run(ctx, payload)
                calls.append(f"<{label}")

            return wrapped

        return middleware

    async def handle(ctx: Any, p: N) -> None:
        calls.append("handler")

    task = TaskDef("hooks:mw", N, handle)

    class First:
        @hookimpl
        def register_task_types(self, settings: Any) -> list[Any]:
            return [task]

        @hookimpl
        def register_middleware(self, settings: Any) -> list[Any]:
            return [tracer("a"), tracer("b")]

    class Second:
        @hookimpl
        def register_middleware(self, settings: Any) -> list[Any]:
            return [tracer("c")]

    pm = pm_with(isolated, First(), Second())
    await client.enqueue(task, N())
    await run_worker(isolated, pm, lambda: "<a" in calls)
    # plugins in registration order, each plugin's list in order, handler innermost
    assert calls == ["a>", "b>", "c>", "handler", "<c", "<b", "<a"]


async def test_hook_register_routes(isolated: Any) -> None:
    @get("/hello", sync_to_thread=False)
    def hello() -> dict[str, str]:
        return {"hello": "plugin"}

    class Plugin:
        @hookimpl
        def register_routes(self, settings: Any) -> list[Any]:
            return [hello]

    app = create_app(isolated, plugin_manager=pm_with(isolated, Plugin()))
    async with AsyncTestClient(app) as tc:
        assert (await tc.get("/hello")).json() == {"hello": "plugin"}


def _template_plugin(folder: Path) -> Any:
    @get("/page", sync_to_thread=False)
    def page() -> Template:
        return Template(template_name="hooktest/page.html", context={"name": "<b>Ann</b>"})

    class Plugin:
        @hookimpl
        def register_routes(self, settings: Any) -> list[Any]:
            return [page]

        @hookimpl
        def register_template_dirs(self, settings: Any) -> list[Path]:
            return [folder]

    return Plugin()


async def test_hook_register_template_dirs(isolated: Any, tmp_path: Path) -> None:
    (tmp_path / "hooktest").mkdir()
    (tmp_path / "hooktest" / "page.html").write_text("<p>Hi {{ name }}</p>")
    app = create_app(isolated, plugin_manager=pm_with(isolated, _template_plugin(tmp_path)))
    async with AsyncTestClient(app) as tc:
        assert (await tc.get("/page")).text == "<p>Hi &lt;b&gt;Ann&lt;/b&gt;</p>"


async def test_app_templates_override_and_extend_plugin_templates(isolated: Any, tmp_path: Path) -> None:
    plugin_dir, app_dir = tmp_path / "plugin", tmp_path / "app"
    (plugin_dir / "hooktest").mkdir(parents=True)
    (app_dir / "hooktest").mkdir(parents=True)
    (plugin_dir / "hooktest" / "page.html").write_text("<p>{% block body %}plugin {{ name }}{% endblock %}</p>")
    (app_dir / "hooktest" / "page.html").write_text(
        '{% extends "default:hooktest/page.html" %}{% block body %}app, then {{ super() }}{% endblock %}'
    )
    settings = isolated.replace(templates_dir=str(app_dir))
    app = create_app(settings, plugin_manager=pm_with(settings, _template_plugin(plugin_dir)))
    async with AsyncTestClient(app) as tc:
        assert (await tc.get("/page")).text == "<p>app, then plugin &lt;b&gt;Ann&lt;/b&gt;</p>"


async def test_hook_register_static_dirs(isolated: Any, tmp_path: Path) -> None:
    (tmp_path / "app.css").write_text("body{}")

    class Plugin:
        @hookimpl
        def register_static_dirs(self, settings: Any) -> list[tuple[str, Path]]:
            return [("/assets", tmp_path)]

    app = create_app(isolated, plugin_manager=pm_with(isolated, Plugin()))
    async with AsyncTestClient(app) as tc:
        response = await tc.get("/assets/app.css")
        assert response.status_code == 200
        assert response.text == "body{}"


async def test_hook_prepare_jinja2_environment(isolated: Any, tmp_path: Path) -> None:
    (tmp_path / "hooktest").mkdir()
    (tmp_path / "hooktest" / "page.html").write_text("{{ name | shout }}")
    base = _template_plugin(tmp_path)

    class Filters:
        @hookimpl
        def prepare_jinja2_environment(self, env: jinja2.Environment, settings: Any) -> None:
            env.filters["shout"] = lambda value: str(value).upper() + "!"

    app = create_app(isolated, plugin_manager=pm_with(isolated, base, Filters()))
    async with AsyncTestClient(app) as tc:
        assert (await tc.get("/page")).text == "&lt;B&gt;ANN&lt;/B&gt;!"


class _Render(msgspec.Struct, frozen=True):
    name: str


async def test_a_worker_builds_its_jinja_environment_when_a_handler_first_reads_it(
    isolated: Any, tmp_path: Path
) -> None:
    """A worker that renders nothing never builds (or imports) Jinja; one that does gets the prepared one."""
    (tmp_path / "hooktest").mkdir()
    (tmp_path / "hooktest" / "page.html").write_text("{{ name | shout }}")
    prepared: list[jinja2.Environment] = []
    rendered: list[str] = []

    class Filters:
        @hookimpl
        def prepare_jinja2_environment(self, env: jinja2.Environment, settings: Any) -> None:
            env.filters["shout"] = lambda value: str(value).upper() + "!"
            prepared.append(env)

    async def render(ctx: Any, payload: _Render) -> None:
        rendered.append(ctx.services.jinja.get_template("hooktest/page.html").render(name=payload.name))

    task = TaskDef("hooks:render", _Render, render)
    worker = Worker(isolated, tasks=[task], plugin_manager=pm_with(isolated, _template_plugin(tmp_path), Filters()))
    async with worker:
        await asyncio.sleep(0.2)
        assert prepared == []  # started, nothing rendered: not built
        await worker._services.client.enqueue(task, _Render(name="<b>Ann</b>"))
        await wait_for(lambda: bool(rendered))
        await worker._services.client.enqueue(task, _Render(name="Bo"))
        await wait_for(lambda: len(rendered) == 2)
    assert rendered == ["&lt;B&gt;ANN&lt;/B&gt;!", "BO!"]
    assert len(prepared) == 1  # built once, shared by every task


def test_hook_register_commands(settings: Any) -> None:
    env = {
        **os.environ,
        "FRAMEWORK_APP": "tests.framework.hook_app",
        "FRAMEWORK_REDIS_URL": settings.redis_url,
        "FRAMEWORK_LOAD_PLUGINS": "",
    }
    done = subprocess.run(
        [sys.executable, "-m", "framework", "greet", "Ann"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "hello Ann from a plugin command"
    listed = subprocess.run(
        [sys.executable, "-m", "framework", "--help"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert "greet" in listed.stdout


async def test_hook_startup_and_shutdown_fire_once_with_services(isolated: Any) -> None:
    events: list[tuple[str, str]] = []

    class Plugin:
        @hookimpl
        async def startup(self, services: Any) -> None:
            await asyncio.sleep(0)
            events.append(("startup", services.role))

        @hookimpl
        def shutdown(self, services: Any) -> None:
            events.append(("shutdown", services.role))

    app = create_app(isolated, plugin_manager=pm_with(isolated, Plugin()))
    async with AsyncTestClient(app):
        assert events == [("startup", "web")]
    assert events == [("startup", "web"), ("shutdown", "web")]


def test_hook_startup(isolated: Any) -> None:
    """A failing startup hook stops start-up with an error naming the plugin."""

    class Broken:
        @hookimpl
        def startup(self, services: Any) -> None:
            raise RuntimeError("no backend")

    app = create_app(isolated, plugin_manager=pm_with(isolated, Broken()))

    async def start() -> None:
        async with AsyncTestClient(app):
            pass

    with pytest.raises(BaseException) as info:
        asyncio.run(start())
    assert "plugin 'p0' failed in startup: RuntimeError: no backend" in _messages(info.value)


def _messages(exc: BaseException) -> str:
    """Every message in an exception, its causes and the members of exception groups."""
    out = [str(exc)]
    for inner in getattr(exc, "exceptions", ()):
        out.append(_messages(inner))
    if exc.__cause__ is not None:
        out.append(_messages(exc.__cause__))
    return "\n".join(out)


def test_hook_shutdown(isolated: Any) -> None:
    """An error in one shutdown hook is logged and the other plugins still shut down."""
    events: list[str] = []

    class Broken:
        @hookimpl
        def shutdown(self, services: Any) -> None:
            raise RuntimeError("boom")

    class Fine:
        @hookimpl
        def shutdown(self, services: Any) -> None:
            events.append("fine")

    app = create_app(isolated, plugin_manager=pm_with(isolated, Broken(), Fine()))

    async def cycle() -> None:
        async with AsyncTestClient(app):
            pass

    asyncio.run(cycle())
    assert events == ["fine"]


class EventRecorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    @hookimpl
    def task_succeeded(self, ctx: Any) -> None:
        self.events.append(("succeeded", ctx.type, ""))

    @hookimpl
    async def task_retried(self, ctx: Any, error: BaseException) -> None:
        self.events.append(("retried", ctx.type, str(error)))

    @hookimpl
    def task_archived(self, ctx: Any, error: BaseException) -> None:
        self.events.append(("archived", ctx.type, str(error)))


class BrokenEvents:
    @hookimpl
    def task_succeeded(self, ctx: Any) -> None:
        raise RuntimeError("event hook bug")

    @hookimpl
    def task_retried(self, ctx: Any, error: BaseException) -> None:
        raise RuntimeError("event hook bug")

    @hookimpl
    def task_archived(self, ctx: Any, error: BaseException) -> None:
        raise RuntimeError("event hook bug")


async def _events_for(isolated: Any, client: Any, behaviour: str) -> list[tuple[str, str, str]]:
    async def handle(ctx: Any, p: N) -> None:
        if behaviour == "fail":
            raise ValueError("try again")
        if behaviour == "skip":
            raise SkipRetry("permanent")

    task = TaskDef(f"hooks:{behaviour}", N, handle, max_retry=3)
    recorder = EventRecorder()

    class Tasks:
        @hookimpl
        def register_task_types(self, settings: Any) -> list[Any]:
            return [task]

    pm = pm_with(isolated, Tasks(), BrokenEvents(), recorder)
    await client.enqueue(task, N())
    await run_worker(isolated, pm, lambda: bool(recorder.events))
    return recorder.events


async def test_hook_task_succeeded(isolated: Any, client: Any) -> None:
    assert await _events_for(isolated, client, "ok") == [("succeeded", "hooks:ok", "")]


async def test_hook_task_retried(isolated: Any, client: Any) -> None:
    assert await _events_for(isolated, client, "fail") == [("retried", "hooks:fail", "try again")]


async def test_hook_task_archived(isolated: Any, client: Any) -> None:
    assert await _events_for(isolated, client, "skip") == [("archived", "hooks:skip", "permanent")]


async def test_hook_retry_delay_for(isolated: Any, client: Any, redis: Any, schema: Any) -> None:
    async def handle(ctx: Any, p: N) -> None:
        raise ValueError("later")

    task = TaskDef("hooks:delay", N, handle)

    class Policy:
        @hookimpl
        def register_task_types(self, settings: Any) -> list[Any]:
            return [task]

        @hookimpl
        def retry_delay_for(self, ctx: Any, error: BaseException) -> float | None:
            return 1000.0 if isinstance(error, ValueError) else None

    pm = pm_with(isolated, Policy())
    info = await client.enqueue(task, N())
    retry_key = schema.queue("default").retry

    async def scheduled() -> float | None:
        score: float | None = await redis.zscore(retry_key, info.id)
        return score

    worker = Worker(isolated, plugin_manager=pm)
    await worker.start()
    try:
        deadline = time.monotonic() + 10
        score = None
        while score is None and time.monotonic() < deadline:
            score = await scheduled()
            await asyncio.sleep(0.02)
    finally:
        await worker.stop()
    assert score is not None
    assert 995 <= score - time.time() <= 1001


def test_hook_register_aggregators(isolated: Any) -> None:
    marker = object()

    class Plugin:
        @hookimpl
        def register_aggregators(self, settings: Any) -> list[Any]:
            return [marker]

    pm = pm_with(isolated, Plugin())
    assert pm.hook.register_aggregators(settings=isolated, plugin_manager=pm) == [[marker]]


async def _docs_pass(connection: Any, _: Any) -> None:
    if connection.headers.get("x-docs") != "yes":
        raise PermissionDeniedException("no docs for you")


@get("/hello", sync_to_thread=False)
def _hello() -> str:
    return "hello"


class _SchemaGuard:
    @hookimpl
    def register_schema_guards(self, settings: Any) -> list[Any]:
        return [_docs_pass]

    @hookimpl
    def register_routes(self, settings: Any) -> list[Any]:
        return [_hello]


async def test_hook_register_schema_guards(isolated: Any) -> None:
    async with AsyncTestClient(create_app(isolated, plugin_manager=pm_with(isolated))) as tc:
        assert (await tc.get("/schema/openapi.json")).status_code == 200  # no guard contributed: public
    app = create_app(isolated, plugin_manager=pm_with(isolated, _SchemaGuard()))
    async with AsyncTestClient(app) as tc:
        for path in ("/schema/openapi.json", "/schema", "/schema/elsewhere"):
            assert (await tc.get(path)).status_code == 403, path
        allowed = await tc.get("/schema/openapi.json", headers={"X-Docs": "yes"})
        assert allowed.status_code == 200 and "/hello" in allowed.json()["paths"]
        assert (await tc.get("/hello")).text == "hello"  # other routes are not guarded


async def test_schema_guards_apply_to_an_apps_own_openapi_router(isolated: Any) -> None:
    config = OpenAPIConfig(title="mine", version="1", path="/docs", openapi_router=Router("/docs", route_handlers=[]))
    app = create_app(isolated, plugin_manager=pm_with(isolated, _SchemaGuard()), openapi_config=config)
    async with AsyncTestClient(app) as tc:
        assert (await tc.get("/docs/openapi.json")).status_code == 403
        assert (await tc.get("/docs/openapi.json", headers={"X-Docs": "yes"})).json()["info"]["title"] == "mine"
    off = create_app(isolated, plugin_manager=pm_with(isolated, _SchemaGuard()), openapi_config=None)
    async with AsyncTestClient(off) as tc:
        assert (await tc.get("/schema/openapi.json")).status_code == 404


class Wrapping:
    """Wraps a hook of each phase (``wrapper=True``) and records every call it wrapped, with its results."""

    def __init__(self) -> None:
        self.wrapped: list[tuple[str, list[Any]]] = []

    def _record(self, name: str) -> Any:
        results = yield
        self.wrapped.append((name, results))
        return results

    @hookimpl(wrapper=True)
    def register_task_types(self, settings: Any) -> Any:
        return (yield from self._record("register_task_types"))

    @hookimpl(wrapper=True)
    def check_config(self, settings: Any) -> Any:
        return (yield from self._record("check_config"))

    @hookimpl(wrapper=True)
    def startup(self, services: Any) -> Any:
        return (yield from self._record("startup"))

    @hookimpl(wrapper=True)
    def shutdown(self, services: Any) -> Any:
        return (yield from self._record("shutdown"))

    @hookimpl(wrapper=True)
    def task_succeeded(self, ctx: Any) -> Any:
        return (yield from self._record("task_succeeded"))


async def test_wrappers_wrap_and_tracing_traces_every_hook_call(
    isolated: Any, client: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Hooks called one plugin at a time still go through the manager: wrapped and traced, each phase."""
    done: list[str] = []

    async def handle(ctx: Any, p: N) -> None:
        done.append(ctx.id)

    task = TaskDef("hooks:wrapped", N, handle)

    class Plugin:
        @hookimpl
        def register_task_types(self, settings: Any) -> list[Any]:
            return [task]

        @hookimpl
        def check_config(self, settings: Any) -> None:
            return None

        @hookimpl
        async def startup(self, services: Any) -> None:
            return None

        @hookimpl
        def shutdown(self, services: Any) -> None:
            return None

        @hookimpl
        async def task_succeeded(self, ctx: Any) -> None:
            done.append("event")

    monkeypatch.setenv("FRAMEWORK_TRACE_PLUGINS", "1")
    wrapping = Wrapping()
    pm = pm_with(isolated, Plugin(), wrapping)
    registry = Registry()
    collect_task_types(pm, isolated, registry)  # assembly
    assert registry.source("hooks:wrapped") == "plugin 'p0'"
    assert check_plugin_configs(pm, isolated) == [("p0", None)]
    async with AsyncTestClient(create_app(isolated, plugin_manager=pm)):  # lifecycle
        pass
    await client.enqueue(task, N())
    await run_worker(isolated, pm, lambda: "event" in done)  # the task event, fired by the worker
    wrapped = dict(wrapping.wrapped)
    assert wrapped["register_task_types"] == [[task]]
    assert wrapped["check_config"] == []
    for name in ("startup", "task_succeeded"):  # async implementations: a wrapper sees what they return
        assert len(wrapped[name]) == 1 and inspect.iscoroutine(wrapped[name][0]), name
    assert wrapped["shutdown"] == []
    trace = capsys.readouterr().err
    for name in ("register_task_types", "check_config", "startup", "shutdown", "task_succeeded"):
        assert f"{name} [hook]" in trace, name
        assert f"finish {name} -->" in trace, name


async def test_event_hooks_fail_one_plugin_at_a_time(isolated: Any) -> None:
    """A plugin raising (when called or when awaited) is logged by name; the others still run."""
    called: list[str] = []

    class RaisesWhenCalled:
        @hookimpl
        def task_succeeded(self, ctx: Any) -> None:
            raise RuntimeError("at once")

    class RaisesWhenAwaited:
        @hookimpl
        async def task_succeeded(self, ctx: Any) -> None:
            raise ValueError("later")

    class Fine:
        @hookimpl
        async def task_succeeded(self, ctx: Any) -> None:
            called.append("fine")

    pm = get_plugin_manager(
        isolated, extra=[("fine", Fine()), ("late", RaisesWhenAwaited()), ("now", RaisesWhenCalled())]
    )
    for plugins in (pm, pm.hook):  # the manager, or the relay of one the framework built
        called.clear()
        with capture_logs() as logs:
            await fire_event(plugins, "task_succeeded", get_logger("test"), ctx=None)
        assert called == ["fine"]
        failures = [(e["plugin"], e["error"]) for e in logs if e["event"] == "plugin_hook_failed"]
        assert failures == [("now", "RuntimeError: at once"), ("late", "ValueError: later")]


async def test_event_hooks_through_the_relay_of_a_manager_built_elsewhere() -> None:
    """Without the manager at hand the hook is called once; a failure names every implementing plugin."""
    import pluggy

    from framework import hookspecs

    called: list[str] = []

    class Fine:
        @hookimpl
        def task_succeeded(self, ctx: Any) -> None:
            called.append("fine")

    class Broken:
        @hookimpl
        def task_succeeded(self, ctx: Any) -> None:
            raise RuntimeError("boom")

    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(Broken(), name="broken")
    pm.register(Fine(), name="fine")
    with capture_logs() as logs:
        await fire_event(pm.hook, "task_succeeded", get_logger("test"), ctx=None)
    assert called == ["fine"]  # pluggy's order: the last registered first
    [failure] = [e for e in logs if e["event"] == "plugin_hook_failed"]
    assert failure["plugin"] == "fine, broken"
    called.clear()
    with capture_logs() as logs:
        await fire_event(pm, "task_succeeded", get_logger("test"), ctx=None)  # the manager: one plugin at a time
    assert called == ["fine"]
    assert [e["plugin"] for e in logs if e["event"] == "plugin_hook_failed"] == ["broken"]
