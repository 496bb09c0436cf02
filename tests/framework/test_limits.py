"""Task limits on a real Valkey with real workers: rates, concurrency caps, keys and overrides, no retry spent."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from framework.client.client import Client
from framework.errors import ConfigError
from framework.limits import Limit, applied_limits, parse_rate
from framework.protocol.keys import Schema
from framework.settings import Settings
from framework.task import TaskDef
from tests.framework.worker_app import wait_until


@pytest.fixture
async def client(client: Client) -> AsyncIterator[Client]:
    yield client
    await client.waiters.close()


class Job(msgspec.Struct, frozen=True, kw_only=True):
    n: int = 0
    customer: str = ""


def test_rates_parse_and_bad_ones_say_how_to_write_them() -> None:
    assert parse_rate("100/s").interval_ms == 10
    assert parse_rate("1000/min").interval_ms == 60
    assert parse_rate("5/10s").interval_ms == 2000
    with pytest.raises(ConfigError, match=r"e\.g\. '100/s'"):
        parse_rate("fast")
    with pytest.raises(ConfigError, match="needs a rate, a concurrency"):
        Limit()
    with pytest.raises(ConfigError, match=r"limits.mail.concurrency=0 is invalid"):
        Settings(limits={"mail": {"concurrency": 0}})
    with pytest.raises(ConfigError, match=r"limits.mail.overrides.acme: rate 'x'"):
        Settings(limits={"mail": {"rate": "1/s", "overrides": {"acme": {"rate": "x"}}}})


def test_settings_and_overrides_replace_the_declared_values() -> None:
    limit = Limit(rate="10/s", concurrency=2, key=lambda p: p.customer, overrides={"acme": Limit(rate="50/s")})
    [acme] = applied_limits([limit], "t", Job(customer="acme"))
    assert (acme.name, acme.key, str(acme.rate), acme.concurrency) == ("t", "acme", "50/s", 2)
    [other] = applied_limits([limit], "t", Job(customer="zed"), {"t": {"concurrency": 4}})
    assert (str(other.rate), other.concurrency) == ("10/s", 4)


async def test_a_concurrency_cap_holds_and_every_task_runs_once_without_spending_retries(
    start: Any, client: Client
) -> None:
    running = 0
    most = 0
    seen: list[tuple[int, int]] = []

    async def work(ctx: Any, p: Job) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.05)
        seen.append((p.n, ctx.retried))
        running -= 1

    task = TaskDef("lim:cap", Job, work, limit=Limit(concurrency=3))
    await start(task)
    for n in range(30):
        await client.enqueue(task, Job(n=n))
    await wait_until(lambda: _true(len(seen) == 30), timeout=30)
    assert most <= 3
    assert sorted(n for n, _ in seen) == list(range(30))
    assert all(retried == 0 for _, retried in seen)


async def _true(value: bool) -> bool:
    return value


async def test_a_worker_stopped_right_after_its_tasks_ran_gives_every_slot_back(
    start: Any, client: Client, redis: Any, schema: Schema
) -> None:
    """The release of a slot starts when the outcome's write ends; a stop waits for it too."""
    for round_ in range(5):
        ran = asyncio.Event()

        async def work(ctx: Any, p: Job, ran: asyncio.Event = ran) -> None:
            ran.set()

        task = TaskDef(f"lim:stop{round_}", Job, work, limit=Limit(concurrency=2, name=f"stop{round_}"))
        worker = await start(task)
        await client.enqueue(task, Job())
        await ran.wait()
        await worker.stop()  # the handler returned this moment: its outcome and release are in flight
        assert await redis.zcard(schema.limit(f"stop{round_}").slots) == 0, round_


async def test_a_rate_holds_over_a_window_and_other_types_are_not_held_up(start: Any, client: Client) -> None:
    starts: list[float] = []
    free: list[float] = []

    async def limited(ctx: Any, p: Job) -> None:
        starts.append(time.monotonic())

    async def unlimited(ctx: Any, p: Job) -> None:
        free.append(time.monotonic())

    slow = TaskDef("lim:rate", Job, limited, limit=Limit(rate="20/s"))
    fast = TaskDef("lim:free", Job, unlimited)
    await start(slow, fast)
    begun = time.monotonic()
    for n in range(40):
        await client.enqueue(slow, Job(n=n))
    for n in range(200):
        await client.enqueue(fast, Job(n=n))
    await wait_until(lambda: _true(len(free) == 200), timeout=30)
    assert len(starts) < 40  # the unlimited ones did not wait behind the limited ones
    await wait_until(lambda: _true(len(starts) == 40), timeout=30)
    # 40 tasks at 20/s (burst 1): the last starts about 2 s after the first, never much sooner
    span = max(starts) - min(starts)
    assert span >= 39 / 20 * 0.9, span
    assert time.monotonic() - begun < 20


async def test_a_keyed_limit_counts_each_key_alone(
    start: Any, client: Client, redis: Any, schema: Schema, settings: Any
) -> None:
    running: dict[str, int] = {}
    most: dict[str, int] = {}
    done: list[str] = []

    async def work(ctx: Any, p: Job) -> None:
        running[p.customer] = running.get(p.customer, 0) + 1
        most[p.customer] = max(most.get(p.customer, 0), running[p.customer])
        await asyncio.sleep(0.05)
        running[p.customer] -= 1
        done.append(p.customer)

    limit = Limit(concurrency=1, key=lambda p: p.customer, overrides={"big": Limit(concurrency=4)}, name="per-customer")
    task = TaskDef("lim:keyed", Job, work, limit=limit)
    await start(task, settings=settings.replace(janitor_interval=600))  # its pruning would race the last check
    for n in range(12):
        await client.enqueue(task, Job(n=n, customer="small" if n % 2 else "big"))
    await wait_until(lambda: _true(len(done) == 12), timeout=30)
    assert most["small"] == 1
    assert 1 <= most["big"] <= 4
    stats = await redis.hgetall(schema.limit("per-customer").stats)
    assert int(stats[b"started"]) == 12
    # each slot goes back once its task's outcome is written
    await wait_until(lambda: _none_held(redis, schema.limit("per-customer", "small").slots), timeout=10)
    assert await redis.smembers(schema.limit("per-customer").keys) == {b"small", b"big"}


async def _none_held(redis: Any, key: str) -> bool:
    return not await redis.zcard(key)
