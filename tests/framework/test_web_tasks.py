"""Routes that run a task for a request (framework.web.tasks), served for real with a worker in the process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest
from litestar import Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import ServerSentEvent
from playwright.async_api import async_playwright

from framework import enqueue_and_wait, progress_events, task_status
from framework.client.client import Client
from framework.context import TaskContext
from framework.errors import SkipRetry
from framework.hookspecs import hookimpl
from framework.plugins.manager import app_plugins, get_plugin_manager
from framework.protocol.keys import Schema
from framework.protocol.message import encode_message, new_message
from framework.task import TaskDef
from framework.transport.connection import open_redis
from framework.web.app import create_app
from tests.fixtures.web import read_events, serve


class Boom(msgspec.Struct, frozen=True, kw_only=True):
    """Payload of the failing test task."""

    why: str = "no luck"


async def _boom(ctx: TaskContext, p: Boom) -> None:
    await ctx.progress(0.5, "half way")
    raise SkipRetry(p.why)


BOOM = TaskDef("webtasks:boom", Boom, _boom, retention=3600)


@post("/boom")
async def boom(client: NamedDependency[Client]) -> Response[Any]:
    return await enqueue_and_wait(client, BOOM, Boom(why="secret detail"), wait_timeout=10, status_url="/boom/{id}")


@post("/boom/exposed")
async def boom_exposed(client: NamedDependency[Client]) -> Response[Any]:
    return await enqueue_and_wait(client, BOOM, Boom(), wait_timeout=10, expose_errors=True)


@get("/boom/{task_id:str}")
async def boom_status(task_id: FromPath[str], client: NamedDependency[Client]) -> Response[Any]:
    return await task_status(client, task_id, taskdef=BOOM, expose_errors=True)


@get("/boom/{task_id:str}/events")
async def boom_events(task_id: FromPath[str], client: NamedDependency[Client]) -> ServerSentEvent:
    return progress_events(client, task_id, taskdef=BOOM, expose_errors=True)


class Plugin:
    """The failing task type and its routes, beside the demo."""

    @hookimpl
    def register_task_types(self, settings: Any) -> list[Any]:
        return [BOOM]

    @hookimpl
    def register_routes(self, settings: Any) -> list[Any]:
        return [boom, boom_exposed, boom_status, boom_events]


@pytest.fixture
async def base(settings: Any) -> AsyncIterator[str]:
    """The demo app with the test plugin and a worker, served by uvicorn; yields its base URL."""
    isolated = settings.replace(load_plugins=[])
    pm = get_plugin_manager(isolated, extra=[*app_plugins(isolated), ("webtasks", Plugin())])
    async with serve(create_app(isolated, plugin_manager=pm, run_worker=True)) as url:
        yield url


async def _events(http: httpx.AsyncClient, url: str) -> list[tuple[str, Any]]:
    """Read a server-sent event stream to its end: (event, decoded data) pairs, comments left out."""
    events: list[tuple[str, Any]] = []
    async with http.stream("GET", url) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        await read_events(response, events)
    return events


async def test_enqueue_and_wait_answers_200_with_the_result(base: str) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=20) as http:
        r = await http.post("/demo/greetings", json={"name": "Ann", "work_seconds": 0.1, "wait_seconds": 10})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body == {
            "id": body["id"],
            "queue": "default",
            "state": "completed",
            "result": {"greeting": "Hello, Ann!", "attempt": 1},
        }
        again = await http.get(f"/demo/tasks/{body['id']}")  # kept (retention): the status URL answers too
        assert (again.status_code, again.json()) == (200, body)


async def test_enqueue_and_wait_answers_202_with_a_working_status_url(base: str) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=20) as http:
        r = await http.post("/demo/greetings", json={"name": "Bob", "work_seconds": 1.5, "wait_seconds": 0.2})
        assert r.status_code == 202, r.text
        body = r.json()
        task_id = body["id"]
        assert body["state"] in {"pending", "active"}
        assert body["status_url"] == r.headers["location"] == f"/demo/tasks/{task_id}"
        deadline = time.monotonic() + 15
        while (status := await http.get(body["status_url"])).status_code == 202:
            assert status.json()["id"] == task_id
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        assert status.status_code == 200
        assert status.json()["result"] == {"greeting": "Hello, Bob!", "attempt": 1}
        missing = await http.get("/demo/tasks/nope")
        assert (missing.status_code, missing.json()["state"]) == (404, "not_found")


async def test_a_failed_task_answers_500_without_its_error_unless_exposed(base: str) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=20) as http:
        r = await http.post("/boom")
        assert r.status_code == 500, r.text
        body = r.json()
        assert body == {
            "id": body["id"],
            "queue": "default",
            "state": "failed",
            "error": "the task failed",
            "retried": 0,
        }
        status = await http.get(f"/boom/{body['id']}")  # this route exposes the error text
        assert status.status_code == 500
        assert status.json()["error"] == "SkipRetry: secret detail"
        exposed = await http.post("/boom/exposed")
        assert (exposed.status_code, exposed.json()["error"]) == (500, "SkipRetry: no luck")


async def test_progress_events_stream_progress_then_the_result(base: str) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=20) as http:
        created = await http.post("/demo/tasks", json={"name": "Eve", "work_seconds": 1.2})
        assert created.status_code == 202
        info = created.json()
        assert info["events_url"] == f"/demo/tasks/{info['id']}/events"
        events = await _events(http, info["events_url"])
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "result"
    assert set(kinds[:-1]) == {"progress"}
    progress = [data for kind, data in events if kind == "progress"]
    assert len(progress) >= 3, progress
    assert [p["fraction"] for p in progress] == sorted(p["fraction"] for p in progress)
    assert {"finding the words", "polishing"} <= {p["message"] for p in progress}
    assert progress[-1] == {"fraction": 1.0, "percent": 100, "message": "done", "attempt": 1}
    assert events[-1][1] == {
        "id": info["id"],
        "queue": "default",
        "state": "completed",
        "result": {"greeting": "Hello, Eve!", "attempt": 1},
    }


async def test_progress_events_end_with_the_failure(base: str) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=20) as http:
        r = await http.post("/boom")
        events = await _events(http, f"/boom/{r.json()['id']}/events")  # finished already: the outcome at once
        assert events[-1] == (
            "failure",
            {
                "id": r.json()["id"],
                "queue": "default",
                "state": "failed",
                "error": "SkipRetry: secret detail",
                "retried": 0,
            },
        )
        unknown = await _events(http, "/boom/nope/events")
        assert unknown == [
            ("failure", {"id": "nope", "queue": "default", "state": "not_found", "error": "no such task"})
        ]


async def test_a_browser_leaving_the_stream_releases_its_subscriptions(base: str, settings: Any) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=20) as http:
        info = (await http.post("/demo/tasks", json={"name": "Max", "work_seconds": 3})).json()
        qk = Schema(settings.namespace).queue("default")
        channels = [qk.outcome_channel(info["id"]), qk.progress_channel(info["id"])]
        conn = open_redis(settings.redis_url)
        try:
            async with http.stream("GET", info["events_url"]) as response:
                async for line in response.aiter_lines():
                    if line.startswith("event: progress"):
                        assert all(n == 1 for _, n in await conn.pubsub_numsub(*channels))
                        break  # the browser goes away mid-task
            deadline = time.monotonic() + 2  # well before the task ends
            while any(n for _, n in await conn.pubsub_numsub(*channels)):
                assert time.monotonic() < deadline, "the stream kept its subscriptions"
                await asyncio.sleep(0.05)
        finally:
            await conn.aclose()


async def test_the_demo_page_shows_progress_then_the_greeting_in_chromium(base: str) -> None:
    errors: list[str] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        try:
            page = await browser.new_page()
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            await page.goto(base + "/")
            await page.fill("#name", "Chromium")
            await page.click("#submit")
            row = page.locator("#tasks tr").first
            await row.locator(".step").filter(has_text="%").wait_for(timeout=10_000)  # a progress report arrived
            assert 0 <= int(await row.locator("progress").get_attribute("value") or "0") <= 100
            await page.wait_for_selector("#tasks tr[data-state=completed]", timeout=15_000)
            assert await row.locator("td").nth(2).inner_text() == "Hello, Chromium!"
            assert await row.locator(".step").inner_text() == "100% done"
            assert await row.locator("progress").evaluate("el => el.value") == 100
        finally:
            await browser.close()
    assert errors == []


async def test_the_status_url_of_a_record_with_a_garbled_state_answers_202(base: str, redis: Any, schema: Any) -> None:
    """A record another client wrote with a state that is not UTF-8 is reported as it is, not as a 500."""
    msg = new_message(type="demo:hello", payload=b"{}", id="garbled", queue="default", retry=0, timeout=60, deadline=0)
    await redis.hset(schema.queue("default").task("garbled"), mapping={"msg": encode_message(msg), "state": b"\xff"})
    async with httpx.AsyncClient(base_url=base, timeout=20) as http:
        status = await http.get("/demo/tasks/garbled")
    assert status.status_code == 202, status.text
    assert status.json()["state"] == "\ufffd"
