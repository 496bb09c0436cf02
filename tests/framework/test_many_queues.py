"""A worker serving many queues: what it asks of Redis does not grow with the queues that have nothing.

Counted with Redis's own ``INFO commandstats`` over a window (Lua-internal calls included), against bounds
derived from what the processor promises (:mod:`framework.worker.processor`): after a task, the fetch
dequeues the queues named since it found them all empty, not every queue it serves; the idle check's
finding in one queue makes the worker look again at that queue, not at all of them; and the idle check is
made once for all the idle workers serving the same queues, not by each, and so is the forwarder's look at
every queue's scheduled and retry sets; a dead worker is looked for in every queue once, not at every
recoverer pass.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec

from framework.client.client import Client
from framework.embedded.process import start_test_server
from framework.protocol.keys import Schema
from framework.protocol.message import encode_message, new_message
from framework.settings import Settings
from framework.task import TaskDef
from framework.transport.connection import open_redis
from framework.worker.background.forwarder import CLAIM_SHARE
from framework.worker.background.recoverer import FORGET_DEAD_AFTER
from framework.worker.processor import CHECK_CLAIM
from framework.worker.worker import Worker
from tests.framework.worker_app import wait_until

QUEUES = 200
"""Queues the worker serves: enough that a cost per queue stands far above any bound below."""


class P(msgspec.Struct, frozen=True, kw_only=True):
    n: int = 0


RAN: list[tuple[str, int]] = []


async def _handle(ctx: Any, p: P) -> None:
    RAN.append((ctx.queue, p.n))


TASK = TaskDef("many:job", P, _handle)


def _settings(url: str, tmp_path: Path) -> Settings:
    # the janitor's and recoverer's sweeps (one call per queue, rare) stay out of the counted windows
    return Settings(
        redis_url=url,
        namespace="many",
        data_dir=str(tmp_path / "data"),
        queues={f"q{i:03d}": 1 for i in range(QUEUES)},
        janitor_interval=3600,
        recoverer_interval=3600,
        workflow_check_interval=3600,
    )


@asynccontextmanager
async def _idle_worker(
    tmp_path: Path, workers: int = 1, before: Callable[[Any], Awaitable[None]] | None = None, **overrides: Any
) -> AsyncIterator[tuple[Any, Client, Settings]]:
    """``workers`` workers on their own server, past their first passes over every queue (so idle).

    ``before`` is called with a Redis client before they start; ``overrides`` are settings.
    """
    server = start_test_server(tmp_path / "valkey")
    try:
        settings = _settings(server.url, tmp_path).replace(**overrides)
        redis = open_redis(server.url)
        client = Client(redis, schema=Schema("many"), settings=settings)
        started: list[Worker] = []
        try:
            if before is not None:
                await before(redis)
            for _ in range(workers):
                worker = Worker(settings, tasks=[TASK])
                await worker.start()
                started.append(worker)
            await asyncio.sleep(2.0)  # their start-up passes (every queue, once) are over
            yield redis, client, settings
        finally:
            for worker in started:
                await worker.stop()
            await client.close()
            await redis.aclose()
    finally:
        server.stop()


async def _calls(redis: Any) -> dict[str, int]:
    stats = await redis.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


async def test_a_task_to_an_idle_worker_costs_dequeues_of_its_queue_not_of_every_queue(tmp_path: Path) -> None:
    """Each task is handed to the idle worker; the fetch after it dequeues that queue again, not all 200."""
    RAN.clear()
    tasks = 10
    async with _idle_worker(tmp_path) as (redis, client, _):
        await redis.config_resetstat()
        for n in range(tasks):
            await client.enqueue(TASK, P(n=n), queue=f"q{(n * 37) % QUEUES:03d}")

            async def ran(n: int = n) -> bool:
                return len(RAN) > n

            await wait_until(ran)
            await asyncio.sleep(0.05)  # the fetch after the task is done
        calls = await _calls(redis)
    assert len(RAN) == tasks
    # dequeue.lua runs one RPOP per queue it looks at (and the worker registers as a waiter when it finds
    # nothing): the queue of each task, a couple of times at most; one per queue served would be 2,000 here
    assert calls.get("rpop", 0) <= 3 * tasks, calls


async def test_a_paused_queue_with_tasks_is_looked_at_alone_by_the_idle_check(tmp_path: Path) -> None:
    """The once-a-second check finds the paused queue's tasks: the worker looks at that queue, not at all 200."""
    RAN.clear()
    async with _idle_worker(tmp_path) as (redis, client, _):
        schema = Schema("many")
        await redis.set(schema.queue("q007").paused, "1")
        await client.enqueue(TASK, P(n=1), queue="q007")
        await asyncio.sleep(0.5)
        await redis.config_resetstat()
        seconds = 3.0
        await asyncio.sleep(seconds)
        calls = await _calls(redis)
    assert not RAN
    # per idle check (one a second, one LLEN per queue in its round trip): one dequeue of the paused queue,
    # which finds it paused; looking at every queue again would be 200 dequeues a second
    checks = seconds + 1
    assert calls.get("evalsha", 0) <= 2 * checks, calls
    assert calls.get("llen", 0) <= QUEUES * checks, calls


async def test_idle_workers_on_the_same_queues_share_one_look_at_the_queues(tmp_path: Path) -> None:
    """Four idle workers, 200 queues: one idle check and one forwarder pass for them all; Go and due tasks run."""
    RAN.clear()
    async with _idle_worker(tmp_path, workers=4) as (redis, client, settings):
        await redis.config_resetstat()
        seconds = 3.0
        await asyncio.sleep(seconds)
        calls = await _calls(redis)
        # a task as a Go client writes it (no wake-up published): the check finds it and wakes the workers
        msg = new_message(type=TASK.type, payload=b'{"n":7}', id="go-1", queue="q123", retry=3, timeout=0, deadline=0)
        qk = Schema("many").queue("q123")
        await redis.hset(qk.task("go-1"), mapping={"msg": encode_message(msg), "state": "pending"})
        await redis.lpush(qk.pending, "go-1")
        # and a scheduled one: a forwarder pass sees it, and the pass at its due time forwards it
        await client.enqueue(TASK, P(n=8), queue="q045", process_in=0.5)

        async def ran() -> bool:
            return len(RAN) == 2

        await wait_until(ran)
    assert sorted(RAN) == [("q045", 8), ("q123", 7)]
    # one check (one LLEN per queue) and one forwarder pass (two ZRANGEs per queue) per claim period for the
    # fleet, a period more for the window's edges; each worker looking for itself would be four times a second
    checks = seconds / CHECK_CLAIM + 1
    passes = seconds / (settings.forward_interval * CLAIM_SHARE) + 1
    assert calls.get("llen", 0) <= QUEUES * checks, calls
    assert calls.get("zrange", 0) <= 2 * QUEUES * passes, calls


async def test_a_dead_worker_settled_is_not_looked_for_in_every_queue_again(tmp_path: Path) -> None:
    """A worker killed while idle: the recoverer takes it out of the 200 queues' waiters once, not every pass."""

    async def killed_while_idle(redis: Any) -> None:
        # its last beat 20 s ago: dead (silent past dead_after), and not yet to be forgotten
        assert FORGET_DEAD_AFTER > 60
        await redis.zadd(Schema("many").alive, {"gone-worker": time.time() - 20})

    async with _idle_worker(tmp_path, before=killed_while_idle, recoverer_interval=0.1) as (redis, _, _):
        await redis.config_resetstat()
        await asyncio.sleep(2.0)  # some twenty recoverer passes
        calls = await _calls(redis)
        still_listed = await redis.zscore(Schema("many").alive, "gone-worker")
    assert still_listed is not None  # kept until every recoverer had its chance
    # one LREM per queue for its waiters, and one SMEMBERS per queue for its in-flight sets, at its first
    # look (before the window, or straddling its start); at every pass it would be twenty times that
    assert calls.get("lrem", 0) <= QUEUES, calls
