"""The waiting benchmark's tasks and its small web app (see :mod:`bench.wait`).

The worker under test loads the tasks through ``FRAMEWORK_APP=bench.wait_app``; uvicorn serves ``app``
(``REDIS_URL`` names the server). Both tasks are no-ops returning a small typed result that carries the
time the handler started, so the caller can split a round trip at the handler.
"""

from __future__ import annotations

import os
import time
from typing import Any

import msgspec
from litestar import Litestar, get

from framework import TaskDef, hookimpl
from framework.client.client import Client
from framework.transport.connection import open_redis


class Ping(msgspec.Struct, frozen=True):
    n: int = 0


class Pong(msgspec.Struct, frozen=True):
    n: int
    started: float


async def handle(ctx: Any, payload: Ping) -> Pong:
    """Start time, and the payload's number back."""
    return Pong(n=payload.n, started=time.time())


ping = TaskDef("bench:ping", Ping, handle, result=Pong, queue="default")
"""No retention: the record goes at once, the result travels in the announcement (``apply``)."""
ping_kept = TaskDef("bench:ping-kept", Ping, handle, result=Pong, queue="default", retention=60)
"""Kept a minute: ``enqueue`` then ``wait`` cannot miss it (the waiter reads the record)."""


@hookimpl
def register_task_types(settings: Any) -> list[Any]:
    """The benchmark tasks."""
    return [ping, ping_kept]


# -- the web app: one route that enqueues and waits, one that does not ---------------------------------

_client: list[Client] = []


async def _open() -> None:
    _client.append(Client(open_redis(os.environ["REDIS_URL"])))


async def _close() -> None:
    for client in _client:
        await client.close()


@get("/apply")
async def apply_route() -> dict[str, Any]:
    """Enqueue a ping and wait for its result."""
    pong = await _client[0].apply(ping, Ping(n=1), wait_timeout=10)
    return {"n": pong.n}


@get("/plain")
async def plain_route() -> dict[str, Any]:
    """The same answer without the queue: what HTTP and the framework cost alone."""
    return {"n": 1}


app = Litestar([apply_route, plain_route], on_startup=[_open], on_shutdown=[_close], debug=False)
