"""``enqueue_many`` when things go wrong: options that only look alike, a call Redis refuses, a link that drops.

Both paths are run where they differ: the bulk path (prepared plain tasks, merged script calls written as
they are built) and the general one (any option; here a type string). Against real servers: the session's
Valkey, a private one, and a TCP relay in front of it that cuts the link in the middle of a batch.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import msgspec
import pytest
import redis as redis_sync

from framework.client.client import Client, TaskCall, TaskInfo
from framework.embedded.process import start_test_server
from framework.errors import BatchInterrupted, EnqueueFailed, InvalidOption, TaskIdConflict, TaskUnconfirmed
from framework.protocol.keys import Schema
from framework.protocol.message import decode_message
from framework.task import TaskDef
from framework.transport.connection import open_redis

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from redis.asyncio import Redis


class Item(msgspec.Struct, frozen=True):
    n: int = 0


async def _noop(ctx: Any, payload: Any) -> None:
    return None


ITEM = TaskDef("faults:item", Item, _noop)
RAW = TaskDef("faults:raw", bytes, _noop)
PATHS = ["bulk", "general"]


def _task(path: str) -> Any:
    """The bulk path takes a TaskDef; a type string (raw bytes) takes the general one."""
    return RAW if path == "bulk" else "faults:untyped"


async def test_a_cached_option_set_does_not_let_a_bool_pass_for_an_int(client: Client) -> None:
    """``max_retry=True`` is refused on every path, also after ``max_retry=1`` was prepared (True == 1 in a dict)."""
    with pytest.raises(InvalidOption):
        await client.enqueue(RAW, b"x", max_retry=True)
    await client.enqueue_many([TaskCall(RAW, b"a", {"max_retry": 1})])
    for value in (True, 1.0):
        with pytest.raises(InvalidOption):
            await client.enqueue_many([TaskCall(RAW, b"b", {"max_retry": value})])


@pytest.mark.parametrize("path", PATHS)
async def test_a_call_redis_refuses_fails_its_own_tasks_and_the_others_are_reported(
    client: Client, redis: Redis, schema: Schema, path: str
) -> None:
    """One queue's key holds a string (WRONGTYPE): its task gets :class:`EnqueueFailed` in its place, and the
    tasks of the other calls, stored, are reported with their ids as usual."""
    await redis.set(schema.queue("bad").pending, "not a list")
    calls = [TaskCall(_task(path), b"a%d" % i) for i in range(3)]
    calls.append(TaskCall(_task(path), b"b", {"queue": "bad"}))
    calls.append(TaskCall(_task(path), b"c"))
    results = await client.enqueue_many(calls)
    assert isinstance(results[3], EnqueueFailed)
    assert "WRONGTYPE" in str(results[3])
    stored = [r for i, r in enumerate(results) if i != 3]
    assert all(isinstance(r, TaskInfo) for r in stored)
    pending = {p.decode() for p in await redis.lrange(schema.queue("default").pending, 0, -1)}
    assert pending == {r.id for r in stored}  # type: ignore[union-attr]
    assert await redis.type(schema.queue("bad").pending) == b"string"


async def test_a_call_that_kills_the_connection_is_failed_and_the_calls_before_it_reported(
    tmp_path: Path, namespace: str
) -> None:
    """The server answers the second call with a protocol error and closes the link (``proto-max-bulk-len`` at
    its minimum, 1 MB): the first call's 64 tasks are reported stored, the oversized one failed, and a later
    enqueue opens a new connection."""
    server = start_test_server(tmp_path / "valkey")
    direct = redis_sync.Redis(port=server.port)
    client = Client(open_redis(server.url), schema=Schema(namespace))
    try:
        direct.config_set("proto-max-bulk-len", 1024 * 1024)
        calls = [TaskCall(RAW, b"small") for _ in range(64)] + [TaskCall(RAW, b"x" * (2 * 1024 * 1024))]
        results = await client.enqueue_many(calls)
        assert all(isinstance(r, TaskInfo) for r in results[:64])
        assert isinstance(results[64], EnqueueFailed) and "Protocol error" in str(results[64])
        pending = {p.decode() for p in direct.lrange(Schema(namespace).queue("default").pending, 0, -1)}
        assert pending == {r.id for r in results[:64]}  # type: ignore[union-attr]
        await asyncio.sleep(0.2)  # the event loop reads the server's close (as it does for any idle connection)
        again = await client.enqueue(RAW, b"after")
        assert direct.lindex(Schema(namespace).queue("default").pending, 0) == again.id.encode()
    finally:
        await client.close()
        direct.close()
        server.stop()


class CuttingRelay:
    """A TCP relay to a Redis server that cuts the link when the client sends ``marker``.

    What came before the marker (less a few bytes: the command holding it arrives cut short, so the server
    never runs it) is passed on; the server's answers to what it ran are relayed until it has been quiet for
    a moment; then both sides are closed.
    """

    def __init__(self, host: str, port: int, marker: bytes) -> None:
        self.target = (host, port)
        self.marker = marker
        self.cuts = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(*self.target)
        quiet = asyncio.Event()

        async def down() -> None:  # server -> client
            while data := await server_r.read(65536):
                quiet.clear()
                client_w.write(data)
                await client_w.drain()
            quiet.set()

        relay = asyncio.create_task(down())
        seen = b""
        try:
            while data := await client_r.read(65536):
                at = (seen[-len(self.marker) :] + data).find(self.marker)
                if at < 0:
                    seen = data
                    server_w.write(data)
                    await server_w.drain()
                    continue
                server_w.write(data[: max(0, at - len(self.marker) - 8)])
                await server_w.drain()
                self.cuts += 1
                while True:  # let the answers to what the server ran through
                    quiet.set()
                    await asyncio.sleep(0.3)
                    if quiet.is_set():
                        break
                break
        finally:
            relay.cancel()
            for w in (client_w, server_w):
                w.close()
                with contextlib.suppress(Exception):
                    await w.wait_closed()


@pytest.fixture
async def relayed(redis_url: str) -> AsyncIterator[tuple[str, CuttingRelay]]:
    """A URL through a :class:`CuttingRelay` to the session Valkey, and the relay."""
    parts = urlsplit(redis_url)
    relay = CuttingRelay(parts.hostname or "127.0.0.1", parts.port or 6379, b"CUT-THE-LINK-HERE")
    port = await relay.start()
    try:
        yield parts._replace(netloc=f"127.0.0.1:{port}").geturl(), relay
    finally:
        await relay.stop()


@pytest.mark.parametrize("path", PATHS)
async def test_a_link_lost_mid_batch_reports_every_task_it_may_have_stored(
    relayed: tuple[str, CuttingRelay], redis: Redis, schema: Schema, path: str
) -> None:
    """The link drops in the middle of a batch: :class:`BatchInterrupted` names each task stored (TaskInfo) and
    each whose answer never came (:class:`TaskUnconfirmed` with the id it was sent with), so nothing stored goes
    unreported and sending the unconfirmed ones again with their ids stores each exactly once."""
    url, relay = relayed
    client = Client(open_redis(url), schema=schema, url=url)
    try:
        payloads = [b"task-%03d" % i for i in range(200)]
        payloads[100] = b"CUT-THE-LINK-HERE"
        with pytest.raises(BatchInterrupted) as caught:
            await client.enqueue_many([TaskCall(_task(path), p) for p in payloads])
        assert relay.cuts == 1
        results = caught.value.results
        assert len(results) == len(payloads)
        assert all(isinstance(r, TaskInfo | TaskUnconfirmed) for r in results)
        assert caught.value.unconfirmed and all(u.info is not None for u in caught.value.unconfirmed)
        if path == "bulk":  # the first call (64 tasks) was answered before the cut
            assert all(isinstance(r, TaskInfo) for r in results[:64])
        pending_key = schema.queue("default").pending
        stored = {p.decode() for p in await redis.lrange(pending_key, 0, -1)}
        reported = {r.id for r in results if isinstance(r, TaskInfo)}
        unconfirmed = {
            r.info.id: p for r, p in zip(results, payloads, strict=True) if isinstance(r, TaskUnconfirmed) and r.info
        }
        assert reported <= stored  # a TaskInfo means stored
        assert stored <= reported | set(unconfirmed)  # nothing stored goes unreported
    finally:
        await client.close()
    retry = Client(redis, schema=schema)
    for task_id, payload in unconfirmed.items():
        try:
            await retry.enqueue(_task(path), payload, task_id=task_id)
        except TaskIdConflict:
            assert task_id in stored
        else:
            assert task_id not in stored
    ids = [p.decode() for p in await redis.lrange(pending_key, 0, -1)]
    assert len(ids) == len(set(ids)) == len(payloads)  # each task stored exactly once


async def test_mixed_types_queues_and_options_are_stored_as_their_task_infos_say(
    client: Client, redis: Redis, schema: Schema
) -> None:
    """Runs that mix task types and option sets (the per-task ``bulk_args`` path), across queue changes and the
    first call's 64-task cut: every TaskInfo matches the stored message, and each queue keeps the call order."""
    kinds: list[tuple[Any, Any, dict[str, Any]]] = [
        (ITEM, Item(n=1), {}),
        (RAW, b"\x00raw", {"timeout": 5, "retention": 7}),
        (ITEM, Item(n=2), {"max_retry": 0}),
        (RAW, b"", {"queue": "low", "max_retry": 3}),
        (ITEM, Item(n=3), {"queue": "low"}),
    ]
    calls = []
    for i in range(300):
        task, payload, options = kinds[(i // 3) % len(kinds)] if i % 2 else kinds[i % len(kinds)]
        calls.append(TaskCall(task, payload, options))
    assert client._bulk.plan(calls) is not None  # the bulk path
    results = await client.enqueue_many(calls)
    assert all(isinstance(r, TaskInfo) for r in results) and len({r.id for r in results}) == len(calls)  # type: ignore[union-attr]
    infos: list[TaskInfo] = results  # type: ignore[assignment]
    for call, info in zip(calls, infos, strict=True):
        stored: Any = await redis.hgetall(schema.queue(info.queue).task(info.id))
        msg = decode_message(stored[b"msg"])
        assert (msg.id, msg.type, msg.queue, msg.payload) == (info.id, info.type, info.queue, info.payload)
        assert (msg.retry, msg.timeout, msg.deadline, msg.retention) == (
            info.max_retry,
            info.timeout,
            info.deadline,
            info.retention,
        )
        assert info.type == call.task.type and info.payload == call.task.encode(call.payload)
        assert info.queue == call.options.get("queue", "default")
        assert stored[b"state"] == b"pending"
    for queue in ("default", "low"):
        pending = [p.decode() for p in await redis.lrange(schema.queue(queue).pending, 0, -1)][::-1]
        assert pending == [i.id for i in infos if i.queue == queue]
