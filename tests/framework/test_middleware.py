"""Middleware: the documented chain order, structlog binding, failures from middleware, and the built-in logger."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgspec
import pytest
import structlog
from structlog.testing import capture_logs

from framework.hookspecs import hookimpl
from framework.plugins.manager import get_plugin_manager
from framework.task import Run, TaskDef
from framework.worker.middleware import build_chain, logging_middleware
from framework.worker.worker import Worker
from tests.framework.worker_app import task_record, wait_until


class M(msgspec.Struct, frozen=True, kw_only=True):
    n: int = 0


def tracer(label: str, calls: list[str]) -> Any:
    def middleware(run: Run) -> Run:
        async def wrapped(ctx: Any, payload: Any) -> None:
            calls.append(f"{label}>")
            try:
                await run(ctx, payload)
            finally:
                calls.append(f"<{label}")

        return wrapped

    return middleware


async def test_build_chain_puts_the_first_middleware_outermost() -> None:
    calls: list[str] = []

    async def handler(ctx: Any, payload: Any) -> None:
        calls.append("handler")

    chain = build_chain(handler, [tracer("a", calls), tracer("b", calls)])
    await chain(None, None)
    assert calls == ["a>", "b>", "handler", "<b", "<a"]


@pytest.fixture
def worker_with(start: Any, settings: Any) -> Any:
    """Start a worker without entry-point plugins; each is stopped at the end of the test."""

    async def go(*tasks: TaskDef[Any], **kwargs: Any) -> Worker:
        worker: Worker = await start(*tasks, settings=settings.replace(load_plugins=[]), **kwargs)
        return worker

    return go


async def test_chain_order_logging_then_plugins_then_app_then_handler(
    worker_with: Any, client: Any, settings: Any
) -> None:
    calls: list[str] = []
    bound: list[dict[str, Any]] = []

    def binding_seen(run: Run) -> Run:
        async def wrapped(ctx: Any, payload: Any) -> None:
            bound.append(structlog.contextvars.get_contextvars())
            await run(ctx, payload)

        return wrapped

    class First:
        @hookimpl
        def register_middleware(self, settings: Any) -> list[Any]:
            return [binding_seen, tracer("p1", calls)]

    class Second:
        @hookimpl
        def register_middleware(self, settings: Any) -> list[Any]:
            return [tracer("p2", calls)]

    async def handle(ctx: Any, m: M) -> None:
        calls.append("handler")

    task = TaskDef("mw:order", M, handle)
    isolated = settings.replace(load_plugins=[])
    pm = get_plugin_manager(isolated, extra=[("first", First()), ("second", Second())])
    await worker_with(task, plugin_manager=pm, middleware=[tracer("app", calls)])
    info = await client.enqueue(task, M())

    async def finished() -> bool:
        return "<p1" in calls

    await wait_until(finished)
    assert calls == ["p1>", "p2>", "app>", "handler", "<app", "<p2", "<p1"]
    # the built-in logging middleware is outermost: the task is bound before any plugin middleware runs
    assert bound[0] == {"task_id": info.id, "type": "mw:order", "queue": "default", "retried": 0}


async def test_handler_logs_carry_the_task_binding(worker_with: Any, client: Any) -> None:
    async def handle(ctx: Any, m: M) -> None:
        structlog.get_logger("myapp").info("charging_card", amount=m.n)

    task = TaskDef("mw:bind", M, handle)
    await worker_with(task)
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        info = await client.enqueue(task, M(n=12))

        async def logged() -> bool:
            return any(e["event"] == "charging_card" for e in logs)

        await wait_until(logged)
    entry = next(e for e in logs if e["event"] == "charging_card")
    assert entry["task_id"] == info.id
    assert entry["type"] == "mw:bind"
    assert entry["amount"] == 12


async def test_a_failing_middleware_fails_the_task(worker_with: Any, client: Any, redis: Any, schema: Any) -> None:
    def reject(run: Run) -> Run:
        async def wrapped(ctx: Any, payload: Any) -> None:
            raise PermissionError("tenant suspended")

        return wrapped

    ran: list[int] = []

    async def handle(ctx: Any, m: M) -> None:
        ran.append(1)

    task = TaskDef("mw:reject", M, handle, retry_delay=lambda n, e: 60.0)
    with capture_logs() as logs:
        await worker_with(task, middleware=[reject])
        info = await client.enqueue(task, M())

        async def retrying() -> bool:
            return (await task_record(redis, schema, "default", info.id)).get("state") == "retry"

        await wait_until(retrying)
    assert ran == []
    msg = (await task_record(redis, schema, "default", info.id))["msg"]
    assert msg.error_msg == "PermissionError: tenant suspended"
    failed = next(e for e in logs if e["event"] == "task_failed")
    assert failed["error"] == "PermissionError: tenant suspended"
    assert failed["attempt"] == 1
    assert failed["duration_ms"] >= 0


async def test_logging_middleware_reports_success_at_debug() -> None:
    capture = structlog.testing.LogCapture()

    class Ctx:
        id, type, queue, retried, attempt = "t1", "x", "q", 0, 1
        logger = structlog.wrap_logger(
            structlog.PrintLogger(),
            processors=[structlog.processors.add_log_level, capture],
            wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        )

    async def ok(ctx: Any, payload: Any) -> None:
        await asyncio.sleep(0)

    await logging_middleware(ok)(Ctx(), None)
    assert capture.entries[-1]["event"] == "task_finished"
    assert capture.entries[-1]["outcome"] == "succeeded"
    assert capture.entries[-1]["log_level"] == "debug"
