"""drain() while a scheduled task is forwarded to pending between its two looks at Redis.

Any worker's forwarder may move a due task from the scheduled set to the pending list, Go workers' and other
processes' included (without a wake-up for this one). A drain that looked at the pending list before the move
and at the scheduled set after it saw the task in neither, and returned with the task never run. The test puts
the worker's connections behind a TCP relay that runs that forward at exactly that moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

import msgspec

from framework.broker.broker import RedisBroker
from framework.clock import SimulatedClock
from framework.task import TaskDef
from framework.testing import drain
from framework.transport.connection import open_redis
from framework.worker.worker import Worker

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from framework.client.client import Client
    from framework.settings import Settings


class _Relay:
    """A TCP relay to Redis that, once armed, runs ``between`` after Redis answered an ``LLEN`` and before the
    answer reaches the client: as if that happened in Redis in the moment after the ``LLEN``. Once only."""

    def __init__(self, port: int, between: Callable[[], Awaitable[None]]) -> None:
        self.port = port
        self.between = between
        self.armed = False
        self.fired = False
        self.pipes: set[asyncio.Task[None]] = set()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        asked = asyncio.Event()
        for pipe in (self._up(reader, up_writer, asked), self._down(up_reader, writer, asked)):
            task = asyncio.create_task(pipe)
            self.pipes.add(task)
            task.add_done_callback(self.pipes.discard)

    async def _up(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, asked: asyncio.Event) -> None:
        try:
            while chunk := await reader.read(65536):
                if b"LLEN" in chunk and self.armed and not self.fired:
                    asked.set()
                writer.write(chunk)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def _down(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, asked: asyncio.Event) -> None:
        try:
            while chunk := await reader.read(65536):
                if asked.is_set() and not self.fired:
                    self.fired = True
                    await self.between()
                writer.write(chunk)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def _relay(port: int, between: Callable[[], Awaitable[None]]) -> AsyncIterator[tuple[_Relay, str]]:
    """A :class:`_Relay` to Redis on ``port``, and its own URL."""
    relay = _Relay(port, between)
    server = await asyncio.start_server(relay.serve, "127.0.0.1", 0)
    try:
        yield relay, f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        for pipe in list(relay.pipes):
            pipe.cancel()
        await asyncio.gather(*relay.pipes, return_exceptions=True)
        await server.wait_closed()


class Report(msgspec.Struct, frozen=True, kw_only=True):
    name: str


async def _report(ctx: Any, payload: Report) -> None:
    return None


REPORT = TaskDef("test:report", Report, _report, queue="default")


async def test_a_task_forwarded_between_the_drains_looks_is_still_run(settings: Settings, client: Client) -> None:
    info = await client.enqueue(REPORT, Report(name="monthly"), process_in=30)
    ahead = SimulatedClock(time.time() + 60)
    elsewhere = RedisBroker(client.redis, client.schema, ahead, wakeup=False, fast=False)

    async def forward_elsewhere() -> None:  # another process's forwarder, its clock a minute ahead: no wake-up
        assert await elsewhere.forward("default") == (1, None)

    port = int((settings.redis_url or "").rsplit(":", 1)[1])
    async with _relay(port, forward_elsewhere) as (relay, url):
        redis = open_redis(url)
        worker = Worker(settings.replace(queues={"default": 1}), tasks=[REPORT], redis=redis)
        # armed once the worker has settled: listening, its queue found empty, waiting for a wake-up
        asyncio.get_running_loop().call_later(0.3, setattr, relay, "armed", True)
        try:
            result = await drain(worker, due_within=60, timeout=10)
        finally:
            await redis.aclose()

    assert relay.fired
    assert result.succeeded == [info.id]
