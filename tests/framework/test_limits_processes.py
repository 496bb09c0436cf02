"""Limits across real worker processes: a rate measured over a window, a concurrency cap never exceeded,
and a slot held by a worker killed with SIGKILL given back."""

from __future__ import annotations

import asyncio
import bisect
import os
import signal
import time
from pathlib import Path
from typing import Any

from framework.client.client import TaskCall
from tests.framework.limits_app import CAPPED, FREE, RATED, SINGLE, Tick, start_limited_worker
from tests.framework.worker_app import stop_process, wait_until

FAST = {"heartbeat_interval": 0.5, "recoverer_interval": 0.5}


async def _alive(redis: Any, schema: Any) -> int:
    return int(await redis.zcard(schema.alive))


async def test_three_processes_keep_a_rate_over_10_s_and_a_cap_of_5_at_once(
    settings: Any, client: Any, redis: Any, schema: Any, tmp_path: Path
) -> None:
    s = settings.replace(**FAST, concurrency=100)
    ns = s.namespace
    procs = [start_limited_worker(s, tmp_path / f"w{i}.log") for i in range(3)]
    try:
        await wait_until(lambda: _is(redis, schema, 3), timeout=30)
        calls = [TaskCall(RATED, Tick()) for _ in range(2500)]
        calls += [TaskCall(CAPPED, Tick(sleep=0.02)) for _ in range(600)]
        calls += [TaskCall(FREE, Tick()) for _ in range(3000)]
        for i in range(0, len(calls), 500):
            await client.enqueue_many(calls[i : i + 500])

        async def window_over() -> bool:
            starts = await redis.lrange(f"{ns}:test:starts", 0, 0)
            return bool(starts) and time.time() > float(starts[0]) + 11

        await wait_until(window_over, timeout=60, interval=0.5)
        starts = sorted(float(t) for t in await redis.lrange(f"{ns}:test:starts", 0, -1))
        await wait_until(lambda: _count(redis, f"{ns}:test:live_seen", 600), timeout=60)
        await wait_until(lambda: _value(redis, f"{ns}:test:free", 3000), timeout=30)
    finally:
        for proc in procs:
            stop_process(proc)
    first = starts[0]
    in_window = sum(1 for t in starts if t < first + 10)
    # shown, not asserted: a start late for a busy machine lands in the next second (bench/limits.py reports it)
    busiest = max(bisect.bisect_left(starts, t + 1.0) - i for i, t in enumerate(starts))
    print(f"rate 150/s over 10 s, three processes: {in_window} started, at most {busiest} in a second")
    assert 1455 <= in_window <= 1545, in_window  # 150/s for 10 s, +/- 3 %
    seen = [int(v) for v in await redis.lrange(f"{ns}:test:live_seen", 0, -1)]
    assert max(seen) <= 5, max(seen)
    assert await redis.get(schema.queue("default").failed) is None  # waiting for a limit is no failure
    stats = await redis.hgetall(schema.limit("slots").stats)
    assert int(stats[b"started"]) == 600
    assert int(stats.get(b"parked", 0)) > 0  # the cap was reached: tasks waited for a slot


async def _is(redis: Any, schema: Any, n: int) -> bool:
    return await _alive(redis, schema) == n


async def _count(redis: Any, key: str, n: int) -> bool:
    return int(await redis.llen(key)) >= n


async def _value(redis: Any, key: str, n: int) -> bool:
    return int(await redis.get(key) or 0) >= n


async def test_a_slot_held_by_a_killed_worker_comes_back_within_a_lease(
    settings: Any, client: Any, redis: Any, schema: Any, tmp_path: Path
) -> None:
    s = settings.replace(**FAST)
    ns = s.namespace
    procs = [start_limited_worker(s, tmp_path / f"w{i}.log", TEST_DEAD_AFTER=2) for i in range(2)]
    try:
        await wait_until(lambda: _is(redis, schema, 2), timeout=30)
        crash = await client.enqueue(SINGLE, Tick(crash=True))
        await wait_until(lambda: _member(redis, f"{ns}:test:crash", crash.id), timeout=20)
        for _ in range(5):
            await client.enqueue(SINGLE, Tick())
        # the dead worker's slot is freed once its task is no longer leased; everything then runs, one at a time
        await wait_until(lambda: _count(redis, f"{ns}:test:single", 6), timeout=90, interval=0.2)
        assert crash.id.encode() in await redis.lrange(f"{ns}:test:single", 0, -1)  # recovered, run again
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
            stop_process(proc)
    assert not await redis.zcard(schema.limit("single").slots)
    await asyncio.sleep(0)


async def _member(redis: Any, key: str, member: str) -> bool:
    return bool(await redis.sismember(key, member))
