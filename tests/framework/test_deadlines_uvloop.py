"""Deadlines hold on uvloop, the loop ``framework worker`` runs on, when many tasks time out together.

For a time less than a millisecond away, uvloop's ``call_at`` returns a plain ``Handle``, which has no
``when()``. The deadline timer read that of the handle it had armed: once the earliest deadline left was that
close (tasks started in one batch expire microseconds apart), arming the timer again failed the task being
started with ``AttributeError``, and the timer's own pass crashed, so the handlers past their deadline were
not cancelled: they ran on to the end and succeeded.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from framework.client.client import Client
from framework.client.values import TaskCall
from framework.loop import run
from framework.protocol.keys import Schema
from framework.protocol.message import decode_message
from framework.settings import Settings
from framework.task import TaskDef
from framework.transport.connection import open_redis
from framework.worker.worker import Worker
from tests.framework.worker_app import wait_until

TASKS = 200


class Nap(msgspec.Struct, frozen=True):
    seconds: float


async def nap(ctx: Any, payload: Nap) -> None:
    await asyncio.sleep(payload.seconds)


NAP = TaskDef("deadlines:nap", Nap, nap, max_retry=0)


async def _time_out_together(settings: Settings, schema: Schema) -> list[str]:
    redis = open_redis(settings.redis_url or "")
    client = Client(redis, schema=schema, settings=settings)
    worker = Worker(settings.replace(load_plugins=[], concurrency=TASKS), tasks=[NAP])
    try:
        # stored before the worker starts: its first dequeues take them in batches, started microseconds apart
        calls = [TaskCall(NAP, Nap(5.0), {"timeout": 1, "retention": 60}) for _ in range(TASKS)]
        infos = await client.enqueue_many(calls)
        await worker.start()
        qk = schema.queue("default")

        async def all_finished() -> bool:
            return int(await redis.zcard(qk.archived)) + int(await redis.zcard(qk.completed)) == TASKS

        await wait_until(all_finished)
        errors = []
        for info in infos:
            assert not isinstance(info, Exception)
            raw = await redis.hget(qk.task(info.id), "msg")
            assert isinstance(raw, bytes)
            errors.append(decode_message(raw).error_msg)
        return errors
    finally:
        await worker.stop()
        await client.close()


def test_tasks_timing_out_together_on_uvloop_all_time_out(settings: Settings, schema: Schema) -> None:
    errors = run(_time_out_together(settings, schema), "uvloop")
    assert errors == ["TimeoutError: task timed out after 1s"] * TASKS
