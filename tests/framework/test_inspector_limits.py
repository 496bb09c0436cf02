"""Seeing task limits on a real Valkey with real workers: what a worker declares, what the inspector reads."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from framework.client.client import Client
from framework.inspector import Inspector, LimitInfo
from framework.limits import Limit
from framework.protocol.keys import Schema
from framework.settings import Settings
from framework.task import TaskDef
from tests.framework.worker_app import wait_until


@pytest.fixture
async def client(client: Client) -> AsyncIterator[Client]:
    yield client
    await client.waiters.close()


@pytest.fixture
def inspector(redis: Any, schema: Schema) -> Inspector:
    return Inspector(redis, schema)


class Job(msgspec.Struct, frozen=True, kw_only=True):
    n: int = 0
    customer: str = ""


async def _nothing(ctx: Any, p: Job) -> None:
    return None


async def _by_name(inspector: Inspector) -> dict[str, LimitInfo]:
    return {info.name: info for info in await inspector.limits()}


async def test_a_starting_worker_lists_its_limits_with_the_settings_merged(
    start: Any, settings: Settings, redis: Any, schema: Schema, inspector: Inspector
) -> None:
    assert await inspector.limits() == []
    shared = Limit(rate="10/s", name="api")
    a = TaskDef("see:a", Job, _nothing, limit=shared)
    b = TaskDef("see:b", Job, _nothing, limit=[shared, Limit(concurrency=2)])
    keyed = TaskDef(
        "see:keyed",
        Job,
        _nothing,
        limit=Limit(concurrency=1, key=lambda p: p.customer, overrides={"big": Limit(concurrency=4)}, name="customer"),
    )
    tuned = msgspec.structs.replace(
        settings,
        limits={"api": {"rate": "20/s", "burst": 5}, "customer": {"overrides": {"vip": {"concurrency": 9}}}},
    )
    await start(a, b, keyed, settings=tuned)
    raw = await redis.hgetall(schema.limits_index())
    declared = {k.decode(): json.loads(v) for k, v in raw.items()}
    assert declared == {
        "api": {
            "rate": "20/s",
            "burst": 5,
            "concurrency": 0,
            "keyed": False,
            "task_types": ["see:a", "see:b"],
            "overrides": [],
        },
        "see:b": {
            "rate": "",
            "burst": 1,
            "concurrency": 2,
            "keyed": False,
            "task_types": ["see:b"],
            "overrides": [],
        },
        "customer": {
            "rate": "",
            "burst": 1,
            "concurrency": 1,
            "keyed": True,
            "task_types": ["see:keyed"],
            "overrides": ["big", "vip"],
        },
    }
    found = await _by_name(inspector)
    assert sorted(found) == ["api", "customer", "see:b"]
    assert (found["api"].rate, found["api"].in_use, found["api"].waiting, found["api"].started) == ("20/s", 0, 0, 0)


async def test_a_capped_limit_shows_its_slot_in_use_and_the_tasks_waiting_then_drains(
    start: Any, client: Client, inspector: Inspector
) -> None:
    gate = asyncio.Event()
    done: list[int] = []

    async def gated(ctx: Any, p: Job) -> None:
        await gate.wait()
        done.append(p.n)

    task = TaskDef("see:one", Job, gated, limit=Limit(concurrency=1, name="one-at-a-time"))
    await start(task)
    for n in range(4):
        await client.enqueue(task, Job(n=n))

    async def held() -> bool:
        info = (await _by_name(inspector))["one-at-a-time"]
        return (info.in_use, info.waiting) == (1, 3)

    await wait_until(held)
    assert await inspector.throttled() == 3
    gate.set()

    async def drained() -> bool:
        info = (await _by_name(inspector))["one-at-a-time"]
        return (info.in_use, info.waiting, info.started) == (0, 0, 4)

    await wait_until(drained, timeout=20)
    info = (await _by_name(inspector))["one-at-a-time"]
    assert info.parked >= 3
    assert (info.concurrency, info.keyed, info.task_types) == (1, False, ["see:one"])
    assert sorted(done) == [0, 1, 2, 3]


async def test_a_keyed_limit_sums_its_keys_and_lists_the_busiest(
    start: Any, client: Client, inspector: Inspector
) -> None:
    gate = asyncio.Event()

    async def gated(ctx: Any, p: Job) -> None:
        await gate.wait()

    limit = Limit(concurrency=1, key=lambda p: p.customer, name="per-customer")
    task = TaskDef("see:keyed", Job, gated, limit=limit)
    await start(task)
    for n, customer in enumerate(["acme", "acme", "acme", "zed"]):
        await client.enqueue(task, Job(n=n, customer=customer))

    async def held() -> bool:
        info = (await _by_name(inspector))["per-customer"]
        return (info.in_use, info.waiting) == (2, 2)

    await wait_until(held)
    info = (await _by_name(inspector))["per-customer"]
    assert (info.keyed, info.keys) == (True, 2)
    assert [(r.key, r.in_use, r.waiting) for r in info.busiest] == [("acme", 1, 2), ("zed", 1, 0)]
    gate.set()

    async def drained() -> bool:
        info = (await _by_name(inspector))["per-customer"]
        return (info.in_use, info.waiting, info.started) == (0, 0, 4)

    await wait_until(drained, timeout=20)
    assert (await _by_name(inspector))["per-customer"].busiest == []
