"""Queue selection: asynq's weighted order (pure), and weights, strict priority, pauses and limits in a worker."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from framework.client.client import TaskCall
from framework.settings import QueueLimit
from framework.task import TaskDef
from framework.worker.queues import order_queues
from framework.worker.worker import Worker
from tests.framework.worker_app import wait_until

WEIGHTS = {"critical": 6, "default": 3, "low": 1}


def test_first_place_follows_the_weights() -> None:
    rng = random.Random(7)
    firsts = Counter(order_queues(WEIGHTS, False, rng)[0] for _ in range(20_000))
    assert abs(firsts["critical"] / 20_000 - 0.6) < 0.02
    assert abs(firsts["default"] / 20_000 - 0.3) < 0.02
    assert abs(firsts["low"] / 20_000 - 0.1) < 0.02


def test_every_queue_appears_once() -> None:
    rng = random.Random(1)
    for _ in range(100):
        order = order_queues(WEIGHTS, False, rng)
        assert sorted(order) == sorted(WEIGHTS)


def test_strict_and_single_queue_orders() -> None:
    assert order_queues(WEIGHTS, True) == ["critical", "default", "low"]
    assert order_queues({"b": 2, "a": 2, "c": 5}, True) == ["c", "a", "b"]
    assert order_queues({"only": 1}, False) == ["only"]


class Q(msgspec.Struct, frozen=True, kw_only=True):
    i: int = 0
    sleep: float = 0.0


@pytest.fixture
async def worker_for(settings: Any) -> AsyncIterator[Any]:
    workers: list[Worker] = []

    async def start(task: TaskDef[Any], **changes: Any) -> Worker:
        worker = Worker(settings.replace(**changes), tasks=[task], rng=random.Random(42))
        await worker.start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        await worker.stop()


async def fill(client: Any, task: TaskDef[Any], queues: dict[str, int], **payload: Any) -> None:
    calls = [TaskCall(task, Q(i=i, **payload), {"queue": q}) for q, n in queues.items() for i in range(n)]
    await client.enqueue_many(calls)


async def test_weighted_selection_over_many_tasks(worker_for: Any, client: Any) -> None:
    order: list[str] = []

    async def handle(ctx: Any, q: Q) -> None:
        order.append(ctx.queue)

    task = TaskDef("q:w", Q, handle)
    await fill(client, task, {"critical": 400, "default": 400, "low": 400})
    await worker_for(task, concurrency=1)

    async def enough() -> bool:
        return len(order) >= 300

    await wait_until(enough, timeout=30)
    share = Counter(order[:300])
    assert abs(share["critical"] / 300 - 0.6) < 0.1, share
    assert abs(share["default"] / 300 - 0.3) < 0.08, share
    assert abs(share["low"] / 300 - 0.1) < 0.06, share


async def test_strict_priority_drains_higher_weights_first(worker_for: Any, client: Any) -> None:
    order: list[str] = []

    async def handle(ctx: Any, q: Q) -> None:
        order.append(ctx.queue)

    task = TaskDef("q:s", Q, handle)
    await fill(client, task, {"low": 20, "default": 20, "critical": 20})
    await worker_for(task, concurrency=1, strict_priority=True)

    async def all_done() -> bool:
        return len(order) == 60

    await wait_until(all_done)
    assert order == ["critical"] * 20 + ["default"] * 20 + ["low"] * 20


async def test_paused_queues_are_skipped(worker_for: Any, client: Any, redis: Any, schema: Any) -> None:
    seen: list[str] = []

    async def handle(ctx: Any, q: Q) -> None:
        seen.append(ctx.queue)

    task = TaskDef("q:p", Q, handle)
    await redis.set(schema.queue("critical").paused, int(time.time()))
    await fill(client, task, {"critical": 3, "low": 3})
    await worker_for(task)

    async def low_done() -> bool:
        return seen.count("low") == 3

    await wait_until(low_done)
    await asyncio.sleep(0.3)
    assert "critical" not in seen
    assert await redis.llen(schema.queue("critical").pending) == 3
    await redis.delete(schema.queue("critical").paused)

    async def critical_done() -> bool:
        return seen.count("critical") == 3

    await wait_until(critical_done, timeout=30)  # found by the idle check, unpausing publishes nothing


class Peaks:
    def __init__(self) -> None:
        self.running: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()
        self.done: Counter[str] = Counter()

    async def handle(self, ctx: Any, q: Q) -> None:
        self.running[ctx.queue] += 1
        self.peak[ctx.queue] = max(self.peak[ctx.queue], self.running[ctx.queue])
        await asyncio.sleep(q.sleep)
        self.running[ctx.queue] -= 1
        self.done[ctx.queue] += 1


async def test_queue_max_caps_its_share_of_the_slots(worker_for: Any, client: Any) -> None:
    peaks = Peaks()
    task = TaskDef("q:max", Q, peaks.handle)
    await fill(client, task, {"low": 6, "default": 6}, sleep=0.15)
    await worker_for(task, concurrency=4, queues={"default": 1, "low": 1}, queue_limits={"low": QueueLimit(max=1)})

    async def all_done() -> bool:
        return peaks.done["low"] == 6 and peaks.done["default"] == 6

    await wait_until(all_done)
    assert peaks.peak["low"] == 1
    assert peaks.peak["default"] >= 3  # the cap is on low only


async def test_reserved_slots_are_kept_for_their_queue(worker_for: Any, client: Any) -> None:
    peaks = Peaks()
    task = TaskDef("q:res", Q, peaks.handle)
    await fill(client, task, {"low": 12}, sleep=60)  # no low slot frees up while the test runs
    limits = {"critical": QueueLimit(reserved=1)}
    await worker_for(task, concurrency=3, queue_limits=limits, shutdown_timeout=0.5)

    async def busy() -> bool:
        return peaks.running["low"] == 2

    await wait_until(busy)
    await fill(client, task, {"critical": 1})

    async def critical_done() -> bool:
        return peaks.done["critical"] == 1

    await wait_until(critical_done, timeout=30)  # a free reserved slot: no waiting behind low
    assert peaks.done["low"] == 0  # it ran in its reserved slot, not in one a low task gave back
    assert peaks.peak["low"] == 2
