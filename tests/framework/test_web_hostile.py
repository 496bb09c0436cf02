"""The web bridge (framework.web.tasks, tokens, rate limits) under hostile clients, bad data and Redis faults.

The routes are served for real by uvicorn; an in-process worker runs the tasks each test defines. Streams
follow tasks through routes of their own, beside the demo's.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest
from litestar import Response, get
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import ServerSentEvent

from framework import progress_events, task_status
from framework.client.client import Client
from framework.context import TaskContext
from framework.errors import InvalidOption
from framework.hookspecs import hookimpl
from framework.inspector import Inspector
from framework.plugins.manager import app_plugins, get_plugin_manager
from framework.protocol.keys import Schema
from framework.task import TaskDef
from framework.web.app import create_app
from framework.web.ratelimit import RateLimit
from framework.web.tokens import MAX_TOKEN_TTL, Tokens
from tests.fixtures.web import read_events, serve
from tests.framework.worker_app import wait_until

PARKED = "parked"
"""A queue no worker of these tests serves: its tasks stay pending."""


class P(msgspec.Struct, frozen=True, kw_only=True):
    """Payload of the test tasks."""

    text: str = ""


@get("/follow/{queue:str}/{task_id:str}")
async def follow(queue: FromPath[str], task_id: FromPath[str], client: NamedDependency[Client]) -> ServerSentEvent:
    return progress_events(client, task_id, queue=queue, timeout=20)


@get("/status/{task_id:str}")
async def status(
    task_id: FromPath[str], client: NamedDependency[Client], wait: FromQuery[float] = 0.0
) -> Response[Any]:
    return await task_status(client, task_id, queue=PARKED, wait=wait)  # the query parameter as it came


class Routes:
    """The routes above, beside the demo."""

    @hookimpl
    def register_routes(self, settings: Any) -> list[Any]:
        return [follow, status]


@pytest.fixture
async def base(settings: Any) -> AsyncIterator[str]:
    """The app with the routes above, served by uvicorn (no worker: each test starts its own)."""
    isolated = settings.replace(load_plugins=[])
    pm = get_plugin_manager(isolated, extra=[*app_plugins(isolated), ("hostile", Routes())])
    async with serve(create_app(isolated, plugin_manager=pm)) as url:
        yield url


async def _until(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def _subscriptions(redis: Any, channel: str) -> int:
    """How many connections are subscribed to ``channel``."""
    [(_, count)] = await redis.pubsub_numsub(channel)
    return int(count)


def _progress(events: list[tuple[str, Any]]) -> list[Any]:
    return [data for kind, data in events if kind == "progress"]


async def test_many_open_streams_share_one_connection_and_each_gets_progress(
    base: str, start: Any, client: Client, redis: Any, schema: Schema
) -> None:
    """A stream per pooled connection let a hundred streams exhaust the pool: every later one got no progress."""
    gate = asyncio.Event()

    async def handle(ctx: TaskContext, p: P) -> str:
        await ctx.progress(0.5, "halfway")
        await gate.wait()
        return "ok"

    task = TaskDef("hostile:gated", P, handle, retention=60)
    await start(task)
    info = await client.enqueue(task, P())
    streams = 120
    limits = httpx.Limits(max_connections=streams + 10)
    async with httpx.AsyncClient(base_url=base, timeout=20, limits=limits) as http:
        logs: list[list[tuple[str, Any]]] = [[] for _ in range(streams)]

        async def one(events: list[tuple[str, Any]]) -> None:
            async with http.stream("GET", f"/follow/default/{info.id}") as response:
                await read_events(response, events)

        readers = [asyncio.ensure_future(one(events)) for events in logs]
        try:
            await _until(lambda: all(_progress(events) for events in logs), timeout=5)
            channel = schema.queue("default").progress_channel(info.id)
            assert await _subscriptions(redis, channel) == 1  # not one connection per stream
            gate.set()
            await asyncio.wait_for(asyncio.gather(*readers), 10)
        finally:
            gate.set()
            for reader in readers:
                reader.cancel()
    for events in logs:
        assert _progress(events)[0] == {"fraction": 0.5, "percent": 50, "message": "halfway", "attempt": 1}
        assert events[-1][0] == "result"


async def test_progress_goes_on_after_redis_cut_the_streams_connection(
    base: str, start: Any, client: Client, redis: Any
) -> None:
    """Before, the first connection fault ended the progress silently: the page froze until the outcome."""
    gate = asyncio.Event()

    async def handle(ctx: TaskContext, p: P) -> str:
        await ctx.progress(0.25, "before the cut")
        await gate.wait()
        await ctx.progress(0.75, "after the cut")
        return "ok"

    task = TaskDef("hostile:cut", P, handle, retention=60)
    await start(task)
    info = await client.enqueue(task, P())
    events: list[tuple[str, Any]] = []
    async with (
        httpx.AsyncClient(base_url=base, timeout=20) as http,
        http.stream("GET", f"/follow/default/{info.id}") as response,
    ):
        reader = asyncio.ensure_future(read_events(response, events))
        try:
            await _until(lambda: bool(_progress(events)))
            assert await redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub") >= 1  # as a restart does
            gate.set()
            await asyncio.wait_for(reader, 10)
        finally:
            reader.cancel()
    assert [p["message"] for p in _progress(events)] == ["before the cut", "after the cut"]
    assert events[-1] == ("result", {"id": info.id, "queue": "default", "state": "completed", "result": "ok"})


async def test_reports_no_worker_writes_are_left_out_and_the_stream_goes_on(
    base: str, client: Client, redis: Any, schema: Schema
) -> None:
    """A stored fraction of NaN ended the progress (its percentage raised); framing survives any message text."""
    info = await client.enqueue("hostile:parked", b"{}", queue=PARKED)
    qk = schema.queue(PARKED)
    now = time.time()
    stored = {"fraction": "nan", "message": "stored", "updated_at": repr(now), "attempt": 1, "ended": 0}
    await redis.hset(qk.progress(info.id), mapping=stored)
    hostile = 'line\r\nevent: result\ndata: {"forged": true}\r\n\r\nend'
    report = {"fraction": 0.5, "message": hostile, "updated_at": now + 1, "attempt": 1, "ended": False}
    published = [
        b"not json",
        b'{"fraction": 2.5, "message": "too far", "updated_at": 1, "attempt": 1, "ended": false}',
        b'{"fraction": 0.5, "message": "no time", "updated_at": 1e400, "attempt": 1, "ended": false}',
        msgspec.json.encode(report),
    ]
    events: list[tuple[str, Any]] = []
    channel = qk.progress_channel(info.id)
    async with (
        httpx.AsyncClient(base_url=base, timeout=20) as http,
        http.stream("GET", f"/follow/{PARKED}/{info.id}") as response,
    ):
        reader = asyncio.ensure_future(read_events(response, events))
        try:
            deadline = time.monotonic() + 5
            while not await _subscriptions(redis, channel):
                assert time.monotonic() < deadline, "the stream does not follow the progress channel"
                await asyncio.sleep(0.02)
            for data in published:
                await redis.publish(channel, data)
            with contextlib.suppress(AssertionError):
                await _until(lambda: bool(_progress(events)), timeout=2)
            await client.cancel(info.id, queue=PARKED)
            await asyncio.wait_for(reader, 10)
        finally:
            reader.cancel()
    assert [kind for kind, _ in events] == ["progress", "failure"]
    assert events[0][1] == {"fraction": 0.5, "percent": 50, "message": hostile, "attempt": 1}
    assert events[1][1]["state"] == "cancelled"


async def test_a_page_that_reads_slowly_gets_the_newest_report_not_a_backlog(start: Any, client: Client) -> None:
    """Every report waited for a browser that did not read: memory without bound, and a page behind the task."""
    gate = asyncio.Event()

    async def handle(ctx: TaskContext, p: P) -> str:
        for step in range(1, 6):
            await ctx.progress(step / 10, f"step {step}")
            await asyncio.sleep(0.25)
        await gate.wait()
        return "ok"

    task = TaskDef("hostile:steps", P, handle, retention=60)
    await start(task)
    info = await client.enqueue(task, P())
    chunks = progress_events(client, info).iterator.__aiter__()
    try:
        first = await asyncio.wait_for(chunks.__anext__(), 5)
        assert b"step 1" in first
        inspector = Inspector(client.redis, client.schema)

        async def reported() -> bool:  # the page does not read while the task reports four more times
            stored = await inspector.progress("default", info.id)
            return stored is not None and stored.message == "step 5"

        await wait_until(reported, timeout=30)
        await asyncio.sleep(0.5)  # and the stream, in this process, has the last one a few loop turns later
        assert b"step 5" in await asyncio.wait_for(chunks.__anext__(), 5)
        gate.set()
        rest = [chunk async for chunk in chunks]
    finally:
        gate.set()
    assert b"event: result" in rest[-1]


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("ping", 0),
        ("ping", -1),
        ("ping", math.nan),
        ("ping", math.inf),
        ("timeout", -1),
        ("timeout", math.nan),
        ("timeout", "10"),
    ],
)
def test_progress_events_refuses_a_ping_or_timeout_that_is_no_time(client: Client, option: str, value: object) -> None:
    """A ping of 0 sent nothing but keep-alive comments, as fast as it could; a bad timeout ended as "unknown"."""
    with pytest.raises(InvalidOption, match=option):
        progress_events(client, "some-task", **{option: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("timeout", [0, 2.5, math.inf, None])
def test_progress_events_takes_any_time_from_zero(client: Client, timeout: float | None) -> None:
    assert isinstance(progress_events(client, "some-task", timeout=timeout), ServerSentEvent)


@pytest.mark.parametrize("wait", ["nan", "NaN", "-5", "0"])
async def test_a_status_wait_that_is_no_time_answers_at_once(base: str, client: Client, wait: str) -> None:
    """``?wait=nan`` reached ``Client.wait`` as NaN and answered 500."""
    info = await client.enqueue("hostile:parked", b"{}", queue=PARKED)
    async with httpx.AsyncClient(base_url=base, timeout=20) as http:
        started = time.monotonic()
        answer = await http.get(f"/status/{info.id}", params={"wait": wait})
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"id": info.id, "queue": PARKED, "state": "pending"}
    assert time.monotonic() - started < 4  # not the five seconds "-5" would be, taken as a wait


@pytest.mark.parametrize("ttl", [MAX_TOKEN_TTL + 1, 1e16, 2**62, 1e300])
async def test_a_token_ttl_redis_cannot_keep_is_invalid(redis: Any, schema: Schema, ttl: float) -> None:
    """Redis refused these expiries with its own error, where the docs promise ``ValueError``."""
    with pytest.raises(ValueError, match="invalid token ttl"):
        await Tokens(redis, schema).issue("password-reset", "u", ttl=ttl)
    token = await Tokens(redis, schema).issue("password-reset", "u", ttl=MAX_TOKEN_TTL)
    assert await Tokens(redis, schema).consume("password-reset", token) is not None


@pytest.mark.parametrize(
    ("limit", "window"),
    [(1, math.nan), (1, math.inf), (1, 1e300), (math.nan, 10), (1.5, 10), (True, 10)],
)
def test_a_rate_limit_that_could_not_hold_is_refused(redis: Any, schema: Schema, limit: Any, window: Any) -> None:
    """A NaN or endless window was taken, then every take raised (or Redis refused it and nothing was limited)."""
    with pytest.raises(ValueError, match="rate limit 'uploads'"):
        RateLimit(redis, schema, "uploads", limit=limit, window=window)


async def test_the_demo_routes_asked_about_a_task_of_another_type_answer_not_found(
    base: str, start: Any, client: Client
) -> None:
    """Its result did not decode into the route's type: the status route answered 500, the stream "unknown"."""

    async def handle(ctx: TaskContext, p: P) -> str:
        return "not a greeting"

    task = TaskDef("hostile:other", P, handle, retention=60)
    await start(task)
    info = await client.enqueue(task, P())
    assert await client.wait(info, timeout=10) == "not a greeting"
    async with httpx.AsyncClient(base_url=base, timeout=20) as http:
        answer = await http.get(f"/demo/tasks/{info.id}")
        assert (answer.status_code, answer.json()) == (404, {"id": info.id, "queue": "default", "state": "not_found"})
        events: list[tuple[str, Any]] = []
        async with http.stream("GET", f"/demo/tasks/{info.id}/events") as response:
            await asyncio.wait_for(read_events(response, events), 10)
    assert events == [("failure", {"id": info.id, "queue": "default", "state": "not_found", "error": "no such task"})]
