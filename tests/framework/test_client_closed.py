"""A closed client says so: every call after ``close()`` raises at once and stores nothing.

A closed :class:`Client` must not quietly open new connections (and a new Pub/Sub listener nobody would close)
and go on storing tasks; a closed :class:`SyncClient` must not fail with ``Event loop is closed`` or a bare
connection error, leaving a coroutine never awaited.
"""

from __future__ import annotations

import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import pytest

from framework.client.client import Client, TaskCall
from framework.client.sync import SyncClient
from framework.errors import FrameworkError
from framework.protocol.keys import Schema
from framework.task import TaskDef


class Ping(msgspec.Struct, frozen=True, kw_only=True):
    n: int = 0


async def pong(ctx: Any, p: Ping) -> None:
    return None


PING = TaskDef("closed:ping", Ping, pong)


async def test_a_closed_client_refuses_every_call(redis_url: str, redis: Any, schema: Schema) -> None:
    client = Client.from_url(redis_url, schema=schema)
    await client.enqueue(PING, Ping())  # the prepared fast path is open
    await client.enqueue(PING, Ping(), queue="low")
    await client.close()
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: client.enqueue(PING, Ping()),
        lambda: client.enqueue(PING, Ping(), queue="low"),
        lambda: client.enqueue("closed:raw", {"n": 1}),
        lambda: client.enqueue_many([TaskCall(PING, Ping())]),
        lambda: client.wait("some-id", timeout=1),
        lambda: client.apply(PING, Ping(), wait_timeout=1),
        lambda: client.cancel("some-id"),
        lambda: client.wait_workflow("wf", timeout=1),
        lambda: client.cancel_workflow("wf"),
        lambda: client.retry_workflow("wf"),
    ]
    for call in calls:
        with pytest.raises(FrameworkError, match="was closed: make a new one"):
            await call()
    await client.close()  # closing twice is harmless
    assert await redis.llen(schema.queue("default").pending) == 1
    assert await redis.llen(schema.queue("low").pending) == 1
    assert client.waiters._pubsub is None  # no listener was started again


def test_a_closed_sync_client_refuses_every_call(redis_url: str, schema: Schema) -> None:
    sync = SyncClient(redis_url, schema=schema)
    sync.enqueue(PING, Ping())
    sync.close()
    calls: list[Callable[[], Any]] = [
        lambda: sync.enqueue(PING, Ping()),  # the calling thread's own socket
        lambda: sync.enqueue(PING, Ping(), queue="low"),  # through the loop
        lambda: sync.enqueue_many([TaskCall(PING, Ping())]),
        lambda: sync.wait("some-id", timeout=1),
        lambda: sync.apply(PING, Ping(), wait_timeout=1),
        lambda: sync.cancel("some-id"),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a coroutine made and never awaited would warn
        for call in calls:
            with pytest.raises(FrameworkError, match="was closed: make a new one"):
                call()
        sync.close()  # closing twice is harmless
