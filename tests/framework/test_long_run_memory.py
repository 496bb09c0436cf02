"""What a long-running process keeps in memory comes back to its baseline, whatever the outcomes it saw.

Each test drives one situation many times against the test Valkey and counts, through the objects' own
attributes, what a process that lives for weeks would otherwise keep once per task, per type or per name:

* a worker meeting tasks of many types it has no handler for (a type per tenant, a deploy that renames many)
  remembered when it last logged each (type, queue), for ever;
* a web process answering for tasks of queues named by its callers kept the keys of every queue name it was
  ever asked about;
* a connection that broke while a command waited for it to connect kept that command, unanswered, at the head
  of its replies (and handed it the next connection's first reply).
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from framework.client.client import Client
from framework.client.values import TaskCall
from framework.errors import TaskNotFound
from framework.protocol.keys import Schema
from framework.transport.lean.connection import RespConnection
from tests.framework.worker_app import wait_until

TYPES = 768
"""Unknown task types met by one worker: three times as many as it may remember."""


async def test_a_worker_meeting_many_unknown_types_remembers_a_bounded_number(
    start: Any, client: Client, redis: Any, schema: Schema, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("framework.worker.outcomes.UNKNOWN_TYPE_DELAYS", (600, 600))  # no task comes round again
    worker = await start(settings=settings.replace(load_plugins=[]))
    await client.enqueue_many([TaskCall(f"tenant:{n}:report", b"{}") for n in range(TYPES)])
    retry = schema.queue("default").retry

    async def all_put_back() -> bool:
        return int(await redis.zcard(retry)) == TYPES

    await wait_until(all_put_back)
    remembered = worker.processor.outcomes._unknown_lines
    assert 0 < len(remembered) <= TYPES // 3  # bounded, not one entry per type met


QUEUES = 600
"""Queue names a web process is asked about (a status route whose queue is part of its URL)."""


async def test_waiting_on_tasks_of_many_queue_names_keeps_a_bounded_number_of_queue_keys(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("framework.protocol.keys.QUEUE_KEYS_CACHE", 64)  # a small bound: a fast test
    for n in range(QUEUES):
        with pytest.raises(TaskNotFound):
            await client.wait("no-such-task", queue=f"asked-{n}", timeout=0)
    assert len(client.schema._queues) <= 64
    assert not client.waiters._watches


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("redis://").split("/")[0].rsplit(":", 1)
    return host, int(port)


ROUNDS = 200
"""Connections broken just as a command waiting for them to connect was about to be sent."""


async def test_a_command_sent_after_its_connection_broke_fails_and_leaves_nothing_behind(redis_url: str) -> None:
    for n in range(ROUNDS):
        conn = RespConnection(_address(redis_url), spin=False)
        try:
            first = asyncio.ensure_future(conn.execute("ECHO", f"first-{n}"))
            await asyncio.sleep(0)  # the first command is connecting
            connecting = conn._connecting
            assert connecting is not None
            second = asyncio.ensure_future(conn.execute("ECHO", f"second-{n}"))
            await asyncio.sleep(0)  # the second waits for the same connect

            def cut(_: object, conn: RespConnection = conn) -> None:
                # the link goes as the connect completes (a server at maxclients, a restart): the event loop
                # finds the socket closed, and runs the connection's read callback, before the second command,
                # woken by the connect, is sent
                if conn._sock is not None:
                    conn._sock.shutdown(socket.SHUT_RDWR)
                while conn.connected:  # what was read before the close, then the close
                    conn._on_readable()

            connecting.add_done_callback(cut)
            results = await asyncio.wait_for(asyncio.gather(first, second, return_exceptions=True), 5)
            assert results[0] == f"first-{n}".encode() or isinstance(results[0], RedisConnectionError), results
            assert isinstance(results[1], RedisConnectionError), results  # sent on no connection: not answered
            assert not conn._waiting  # nothing left waiting for a reply that will never come
            assert await conn.execute("ECHO", f"after-{n}") == f"after-{n}".encode()  # replies match again
        finally:
            conn.close()
