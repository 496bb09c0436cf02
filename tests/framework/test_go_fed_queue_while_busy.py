"""A queue fed by Go clients (no wake-up) is served while the worker is busy with another queue.

A worker that found every queue empty leaves them aside until a wake-up names them again; Go clients
publish none, and the once-a-second pending check that finds their tasks ran only while the worker was idle.
So a worker kept busy by one queue never looked at another whose tasks came from Go: they waited until the
busy queue drained, whatever the weights said.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import msgspec

from framework.client.client import Client
from framework.protocol.message import encode_message, new_message
from framework.task import TaskDef
from framework.worker.worker import Worker
from tests.framework.worker_app import wait_until

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from framework.protocol.keys import Schema
    from framework.settings import Settings


class P(msgspec.Struct, frozen=True):
    n: int = 0


started: list[str] = []


async def _slow(ctx: Any, p: P) -> None:
    started.append(ctx.queue)
    await asyncio.sleep(0.02)


SLOW = TaskDef("gofed:slow", P, _slow)


async def test_a_go_fed_queue_gets_its_turn_while_another_keeps_the_worker_busy(
    settings: Settings, redis: Redis, schema: Schema
) -> None:
    started.clear()
    s = settings.replace(queues={"busy": 1, "gofed": 1}, concurrency=1, load_plugins=[])
    worker = Worker(s, tasks=[SLOW], redis=redis)
    await worker.start()
    try:

        async def idle() -> bool:  # both queues found empty: the worker waits for wake-ups
            return worker.processor is not None and worker.processor.running == 0

        await wait_until(idle)

        async def both_left_aside() -> bool:  # a pass found every queue empty: they wait for wake-ups
            return worker.processor is not None and {"busy", "gofed"} <= worker.processor._known_empty

        await wait_until(both_left_aside)
        client = Client(redis, schema=schema)
        for n in range(2000):
            await client.enqueue(SLOW, P(n), queue="busy")

        async def busy() -> bool:
            return "busy" in started

        await wait_until(busy)
        assert worker.processor is not None
        assert "gofed" in worker.processor._known_empty  # nothing named it since
        # as Go's client enqueues (asynq's enqueue script): the task and the pending list, no wake-up, no hand-off
        msg = new_message(
            type=SLOW.type, payload=b'{"n":0}', id="from-go", queue="gofed", retry=0, timeout=60, deadline=0
        )
        qk = schema.queue("gofed")
        record = {"msg": encode_message(msg), "state": "pending", "pending_since": 1}
        await redis.hset(qk.task("from-go"), mapping=record)
        await redis.lpush(qk.pending, "from-go")

        async def go_task_started() -> bool:
            return "gofed" in started

        await wait_until(go_task_started, timeout=30)
        left = await redis.llen(schema.queue("busy").pending)
        assert left > 1000, f"the go-fed task waited until the busy queue nearly drained ({left} left)"
    finally:
        await worker.stop()
