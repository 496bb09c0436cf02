"""The ``cleanup:run`` task: enqueue helper, handler outcomes, and a real worker running it."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import pytest
from framework_cleanup.sweepers import SweepContext, Sweeper, SweepFailed, SweepResult, last_results
from framework_cleanup.tasks import CleanupRun, cleanup_task, handle_cleanup_run, run_cleanup

from framework.context import TaskContext
from framework.errors import SkipRetry
from framework.hookspecs import hookimpl
from framework.logging import get_logger
from framework.plugins.manager import get_app_plugin_manager
from framework.worker.worker import Worker

if TYPE_CHECKING:
    from framework.client.client import Client
    from framework.services import Services
    from framework.settings import Settings


async def sweep_fine(ctx: SweepContext) -> SweepResult:
    ctx.result.add("fine/1", 3)
    return ctx.result


async def sweep_broken(ctx: SweepContext) -> SweepResult:
    raise OSError("no space left")


@hookimpl
def register_sweepers(settings: Settings) -> list[Sweeper]:
    """This module is the app: two sweepers of its own."""
    return [Sweeper("fine", "@daily", sweep_fine), Sweeper("broken", "@daily", sweep_broken)]


@pytest.fixture
def app_settings(settings: Settings) -> Settings:
    return settings.replace(load_plugins=["cleanup"], app=__name__)


def task_context(services: Services) -> TaskContext:
    return TaskContext(
        id="t1",
        type="cleanup:run",
        queue="low",
        retried=0,
        max_retry=1,
        deadline=time.time() + 60,
        headers={},
        logger=get_logger("test"),
        services=services,
    )


def test_payload_is_the_sweeper_name() -> None:
    assert cleanup_task.encode(CleanupRun(sweeper="tokens")) == b'{"sweeper":"tokens"}'
    assert cleanup_task.decode(b'{"sweeper":"tmp","dry_run":true}') == CleanupRun(sweeper="tmp", dry_run=True)


async def test_enqueue_helper_uses_the_low_queue(client: Client, services: Services) -> None:
    info = await run_cleanup(client, "tokens")
    assert (info.type, info.queue, info.max_retry) == ("cleanup:run", "low", 1)
    assert info.payload == b'{"sweeper":"tokens"}'
    pending = await services.redis.lrange(services.schema.queue("low").pending, 0, -1)
    assert pending == [info.id.encode()]


async def test_the_handler_runs_the_sweeper_and_keeps_the_report(app_settings: Settings, services: Services) -> None:
    services.plugin_manager = get_app_plugin_manager(app_settings)
    await handle_cleanup_run(task_context(services), CleanupRun(sweeper="fine"))
    report = (await last_results(services.redis, services.schema))["fine"]
    assert (report.removed, report.bytes, report.dry_run) == (1, 3, False)


async def test_the_handler_passes_dry_run(app_settings: Settings, services: Services) -> None:
    services.plugin_manager = get_app_plugin_manager(app_settings)
    await handle_cleanup_run(task_context(services), CleanupRun(sweeper="fine", dry_run=True))
    assert (await last_results(services.redis, services.schema))["fine"].dry_run


async def test_an_unknown_sweeper_is_not_retried(app_settings: Settings, services: Services) -> None:
    services.plugin_manager = get_app_plugin_manager(app_settings)
    with pytest.raises(SkipRetry, match="unknown or disabled sweeper 'nope'"):
        await handle_cleanup_run(task_context(services), CleanupRun(sweeper="nope"))


async def test_a_failing_sweeper_fails_the_task(app_settings: Settings, services: Services) -> None:
    services.plugin_manager = get_app_plugin_manager(app_settings)
    with pytest.raises(SweepFailed, match="sweeper 'broken' failed: OSError: no space left"):
        await handle_cleanup_run(task_context(services), CleanupRun(sweeper="broken"))
    assert (await last_results(services.redis, services.schema))["broken"].failed


async def test_a_worker_runs_cleanup_tasks(app_settings: Settings, client: Client, services: Services) -> None:
    pm = get_app_plugin_manager(app_settings)
    await run_cleanup(client, "fine")
    await run_cleanup(client, "tokens")
    worker = Worker(app_settings, plugin_manager=pm)
    await worker.start()
    try:
        deadline = time.monotonic() + 10
        results: dict[str, Any] = {}
        while set(results) != {"fine", "tokens"}:
            assert time.monotonic() < deadline, f"cleanup tasks did not run: {results}"
            await asyncio.sleep(0.05)
            results = await last_results(services.redis, services.schema)
    finally:
        await worker.stop()
    assert results["fine"].removed == 1
    assert not results["tokens"].failed
