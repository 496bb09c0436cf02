"""Broken plugins and middleware: a task is never marked done unrun, the worker survives, errors name the culprit."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from structlog.testing import capture_logs

from framework.errors import PluginError
from framework.hookspecs import hookimpl
from framework.plugins.manager import get_plugin_manager
from framework.task import Run, TaskDef
from framework.worker.worker import Worker
from tests.fixtures.cli import cli_env, run_framework
from tests.framework.test_plugins import make_distribution
from tests.framework.worker_app import JOB, ROOT, Job, env_for, stop_process, task_record, wait_until


class M(msgspec.Struct, frozen=True, kw_only=True):
    n: int = 0


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on ``sys.path`` where tests install distributions; their modules are forgotten afterwards."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    for name in list(sys.modules):
        if name.startswith("fwfault_"):
            del sys.modules[name]


async def _state(redis: Any, schema: Any, task_id: str) -> str | None:
    state: str | None = (await task_record(redis, schema, "default", task_id)).get("state")
    return state


# -- event hooks ------------------------------------------------------------------------------------


async def test_event_hooks_that_exit_or_interrupt_do_not_end_the_worker_process(
    settings: Any, client: Any, redis: Any, tmp_path: Path
) -> None:
    """``sys.exit`` in ``task_succeeded`` and ``KeyboardInterrupt`` in ``task_retried`` are logged; work goes on."""
    log = tmp_path / "worker.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.framework.plugin_faults_app"],
            cwd=ROOT,
            env=env_for(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    done_key = f"{settings.namespace}:test:done"

    async def finished(task_id: str) -> None:
        async def done() -> bool:
            return task_id.encode() in await redis.lrange(done_key, 0, -1)

        await wait_until(done, timeout=30)

    try:
        first = await client.enqueue(JOB, Job())
        await finished(first.id)  # its task_succeeded exits
        flaky = await client.enqueue(JOB, Job(fail="once", fail_runs=1))
        await finished(flaky.id)  # retried once (task_retried interrupts), then done
        last = await client.enqueue(JOB, Job())
        await finished(last.id)
        await asyncio.sleep(0.3)
        assert proc.poll() is None, log.read_text()
    finally:
        stop_process(proc)
    text = log.read_text()
    assert "plugin_hook_failed" in text
    assert "exiting" in text
    assert "SystemExit: 3" in text
    assert "KeyboardInterrupt" in text


async def test_an_event_hooks_own_cancellation_or_base_exception_is_logged_naming_the_plugin(
    start: Any, isolated: Any, client: Any
) -> None:
    class Abort(BaseException):
        """A library's own ``BaseException`` subclass."""

    class Cancelling:
        @hookimpl
        async def task_succeeded(self, ctx: Any) -> None:
            raise asyncio.CancelledError  # from something it awaited that another part cancelled

    class Aborting:
        @hookimpl
        def task_succeeded(self, ctx: Any) -> None:
            raise Abort("plugin gave up")

    seen: list[str] = []

    class Fine:
        @hookimpl
        def task_succeeded(self, ctx: Any) -> None:
            seen.append(ctx.id)

    async def handle(ctx: Any, m: M) -> None:
        pass

    task = TaskDef("faults:events", M, handle)
    pm = get_plugin_manager(isolated, extra=[("fine", Fine()), ("aborting", Aborting()), ("cancelling", Cancelling())])
    with capture_logs() as logs:
        await start(task, settings=isolated, plugin_manager=pm)
        first = await client.enqueue(task, M())
        second = await client.enqueue(task, M())

        async def both() -> bool:
            return len(seen) == 2

        await wait_until(both)
    assert sorted(seen) == sorted([first.id, second.id])
    failures = [(e["plugin"], e["error"]) for e in logs if e["event"] == "plugin_hook_failed"]
    assert sorted(set(failures)) == [("aborting", "Abort: plugin gave up"), ("cancelling", "CancelledError")]


# -- middleware -------------------------------------------------------------------------------------


async def test_a_middleware_that_calls_the_handler_without_awaiting_it_fails_the_task_instead_of_marking_it_done(
    start: Any, isolated: Any, client: Any, redis: Any, schema: Any
) -> None:
    def forgetful(run: Run) -> Run:
        async def wrapped(ctx: Any, payload: Any) -> None:
            run(ctx, payload)  # the missing ``await``

        return wrapped

    ran: list[int] = []

    async def handle(ctx: Any, m: M) -> None:
        ran.append(1)

    task = TaskDef("faults:forgetful", M, handle, retry_delay=lambda n, e: 60.0)
    await start(task, settings=isolated, middleware=[forgetful])
    info = await client.enqueue(task, M())

    async def retrying() -> bool:
        return await _state(redis, schema, info.id) == "retry"

    await wait_until(retrying)
    await asyncio.sleep(0.1)
    assert ran == []
    error = (await task_record(redis, schema, "default", info.id))["msg"].error_msg
    assert "without awaiting it" in error
    assert "forgetful" in error


async def test_a_plain_function_run_must_return_what_the_next_run_returns(
    start: Any, isolated: Any, client: Any, redis: Any, schema: Any
) -> None:
    """A run that is a plain function works when it returns the next run's awaitable, fails naming it when not."""

    def plain(run: Run) -> Run:
        def wrapped(ctx: Any, payload: Any) -> Any:
            awaitable = run(ctx, payload)
            return awaitable if ctx.type == "faults:passed" else None

        return wrapped

    ran: list[str] = []

    async def handle(ctx: Any, m: M) -> None:
        ran.append(ctx.type)

    passed = TaskDef("faults:passed", M, handle)
    dropped = TaskDef("faults:dropped", M, handle, retry_delay=lambda n, e: 60.0)
    await start(passed, dropped, settings=isolated, middleware=[plain])
    await client.enqueue(passed, M())
    info = await client.enqueue(dropped, M())

    async def settled() -> bool:
        return ran == ["faults:passed"] and await _state(redis, schema, info.id) == "retry"

    await wait_until(settled)
    await asyncio.sleep(0.1)
    assert ran == ["faults:passed"]
    error = (await task_record(redis, schema, "default", info.id))["msg"].error_msg
    assert "plain" in error
    assert "not an awaitable" in error


def _returns_nothing(run: Run) -> Run:
    return None  # type: ignore[return-value]


async def _async_factory(run: Run) -> Run:
    return run


async def _handler_shaped(ctx: Any, payload: Any) -> None:
    pass


@pytest.mark.parametrize(
    ("middleware", "why"),
    [
        (_returns_nothing, "returned None"),
        (_async_factory, "is an async function"),
        (_handler_shaped, "failed when given the next run"),
        ("not a function", "is not callable"),
    ],
)
async def test_a_middleware_that_gives_no_run_stops_the_worker_from_starting_naming_it(
    isolated: Any, client: Any, redis: Any, schema: Any, middleware: Any, why: str
) -> None:
    async def handle(ctx: Any, m: M) -> None:
        pass

    task = TaskDef("faults:nomw", M, handle)
    info = await client.enqueue(task, M())
    worker = Worker(isolated, tasks=[task], middleware=[middleware], redis=redis)
    with pytest.raises(PluginError) as raised:
        await worker.start()
    assert why in str(raised.value)
    if callable(middleware):
        assert middleware.__qualname__ in str(raised.value)
    assert await _state(redis, schema, info.id) == "pending"  # nothing ran, nothing was spent


# -- loading plugins --------------------------------------------------------------------------------


def test_a_hook_implementation_with_an_argument_the_hook_lacks_stops_startup_naming_the_plugin(
    site: Path, settings: Any
) -> None:
    body = """
        from framework.hookspecs import hookimpl

        @hookimpl
        def task_succeeded(ctx, attempt_count):
            pass
    """
    make_distribution(site, "framework-fwfault-args", "fwfault_args", body)
    with pytest.raises(PluginError) as raised:
        get_plugin_manager(settings)
    message = str(raised.value)
    assert "'fwfault_args'" in message
    assert "framework-fwfault-args" in message
    assert "attempt_count" in message


def test_two_distributions_declaring_the_same_plugin_name_stop_startup_naming_both(site: Path, settings: Any) -> None:
    """The second is not silently dropped: its task types would never be served."""
    body = """
        from framework.hookspecs import hookimpl

        @hookimpl
        def register_task_types(settings):
            return []
    """
    make_distribution(site, "framework-fwfault-one", "fwfault_one", body, ep_name="fwfault")
    make_distribution(site, "framework-fwfault-two", "fwfault_two", body, ep_name="fwfault")
    with pytest.raises(PluginError) as raised:
        get_plugin_manager(settings)
    message = str(raised.value)
    assert "'fwfault'" in message
    assert "framework-fwfault-one" in message
    assert "framework-fwfault-two" in message


def test_one_module_under_two_plugin_names_stops_startup_naming_it(site: Path, settings: Any) -> None:
    body = """
        from framework.hookspecs import hookimpl

        @hookimpl
        def register_task_types(settings):
            return []
    """
    make_distribution(site, "framework-fwfault-alias", "fwfault_alias", body)
    info = next(site.glob("framework_fwfault_alias-*.dist-info"))
    (info / "entry_points.txt").write_text(
        "[framework]\nfwfault_alias = fwfault_alias.hooks\nfwfault_old = fwfault_alias.hooks\n"
    )
    with pytest.raises(PluginError) as raised:
        get_plugin_manager(settings)
    assert "framework-fwfault-alias" in str(raised.value)
    assert "already registered" in str(raised.value)


def test_a_plugin_that_exits_while_importing_stops_startup_naming_it(site: Path, settings: Any) -> None:
    body = """
        import sys

        sys.exit("missing licence key")
    """
    make_distribution(site, "framework-fwfault-exit", "fwfault_exit", body)
    with pytest.raises(PluginError) as raised:
        get_plugin_manager(settings)
    message = str(raised.value)
    assert "'fwfault_exit'" in message
    assert "framework-fwfault-exit" in message
    assert "SystemExit: missing licence key" in message


def test_an_app_module_that_cannot_be_registered_leaves_the_built_in_commands_usable(
    redis_url: str, namespace: str, tmp_path: Path
) -> None:
    """``framework --help`` lists the commands and names the plugin in one warning, without a traceback."""
    (tmp_path / "fwfault_app.py").write_text(
        textwrap.dedent(
            """
            from framework.hookspecs import hookimpl

            @hookimpl
            def task_archived(ctx, error, reason):
                pass
            """
        )
    )
    env = cli_env(redis_url, namespace, tmp_path / "data")
    env["FRAMEWORK_APP"] = "fwfault_app"
    result = run_framework(env, tmp_path, "--help")
    assert result.returncode == 0, result.stderr
    assert "worker" in result.stdout
    assert "Traceback" not in result.stderr
    assert "plugin 'app' cannot be registered" in result.stderr
    assert "reason" in result.stderr


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ('raise RuntimeError("no database url")', "RuntimeError: no database url (at "),
        ('import sys\nsys.exit("missing licence key")', "SystemExit: missing licence key (at "),
        ("x = (", "SyntaxError: '(' was never closed"),
    ],
)
def test_an_app_module_whose_own_code_fails_stops_the_worker_naming_it_without_a_traceback(
    redis_url: str, namespace: str, tmp_path: Path, body: str, error: str
) -> None:
    """Only an app module that could not be found was named; one whose code raised printed a raw traceback."""
    (tmp_path / "fwfault_broken.py").write_text(body + "\n")
    env = cli_env(redis_url, namespace, tmp_path / "data")
    env["FRAMEWORK_APP"] = "fwfault_broken"
    result = run_framework(env, tmp_path, "worker")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"error: the app module 'fwfault_broken' (setting app) failed while importing: {error}" in result.stderr
    assert "fwfault_broken.py" in result.stderr  # where: the file (and line) of the user's code
    debug = run_framework(env, tmp_path, "--debug", "worker")
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr  # the whole story on request
