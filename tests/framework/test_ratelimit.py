"""Sliding-window rate limits in real Valkey, with a simulated clock."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from structlog.testing import capture_logs

from framework.clock import SimulatedClock
from framework.embedded.launch import free_port
from framework.web.ratelimit import RateLimit

if TYPE_CHECKING:
    from framework.protocol.keys import Schema


def limiter(redis: Redis, schema: Schema, clock: SimulatedClock, *, limit: int = 3, window: float = 10) -> RateLimit:
    return RateLimit(redis, schema, "test", limit=limit, window=window, clock=clock)


async def test_take_allows_limit_events_per_window_then_says_how_long_to_wait(redis: Redis, schema: Schema) -> None:
    clock = SimulatedClock(1000.0)
    limit = limiter(redis, schema, clock)
    for _ in range(3):
        assert await limit.take("10.0.0.1") == 0
        clock.advance(1)
    assert await limit.take("10.0.0.1") == pytest.approx(7.0)  # the first event leaves the window at 1010
    assert await redis.zcard(schema.rate_limit("test", "10.0.0.1")) == 3  # a refused event is not recorded
    assert await limit.take("10.0.0.2") == 0  # another client has its own count
    clock.set(1010.5)
    assert await limit.take("10.0.0.1") == 0
    assert await limit.take("10.0.0.1") == pytest.approx(0.5)  # the second event leaves at 1011


async def test_hit_and_retry_after_count_failures_in_a_sliding_window(redis: Redis, schema: Schema) -> None:
    clock = SimulatedClock(0.0)
    limit = limiter(redis, schema, clock, limit=2)
    assert await limit.retry_after("c") == 0
    await limit.hit("c")
    clock.set(4)
    assert await limit.retry_after("c") == 0
    await limit.hit("c")
    clock.set(5)
    assert await limit.retry_after("c") == pytest.approx(5.0)
    clock.set(10.5)
    assert await limit.retry_after("c") == 0  # the event at 0 left; one remains
    await limit.hit("c")
    assert await limit.retry_after("c") == pytest.approx(3.5)  # now the event at 4 must leave
    await limit.reset("c")
    assert await limit.retry_after("c") == 0


async def test_keys_expire_and_stay_small(redis: Redis, schema: Schema) -> None:
    limit = RateLimit(redis, schema, "test", limit=5, window=30)  # the system clock: Redis expires the key
    for _ in range(50):
        await limit.hit("flood")
    key = schema.rate_limit("test", "flood")
    assert await redis.zcard(key) <= 6
    assert 0 < await redis.pttl(key) <= 31_000


async def test_concurrent_takes_never_pass_the_limit(redis: Redis, schema: Schema) -> None:
    limit = limiter(redis, schema, SimulatedClock(50.0), limit=5)
    waits = await asyncio.gather(*(limit.take("burst") for _ in range(40)))
    assert 1 <= waits.count(0) <= 5
    assert await redis.zcard(schema.rate_limit("test", "burst")) == waits.count(0)


async def test_limit_zero_is_off(redis: Redis, schema: Schema) -> None:
    limit = limiter(redis, schema, SimulatedClock(), limit=0)
    for _ in range(10):
        assert await limit.take("c") == 0
        await limit.hit("c")
    assert await limit.retry_after("c") == 0
    assert await redis.exists(schema.rate_limit("test", "c")) == 0


def test_bad_arguments(redis: Redis, schema: Schema) -> None:
    for limit, window in ((-1, 10), (1, 0)):
        with pytest.raises(ValueError, match="rate limit 'test'"):
            RateLimit(redis, schema, "test", limit=limit, window=window)


async def test_unreachable_redis_lets_requests_through_and_says_so(schema: Schema) -> None:
    down = Redis(host="127.0.0.1", port=free_port(), retry=Retry(NoBackoff(), 0))  # nothing listens there
    limit = RateLimit(down, schema, "test", limit=1, window=10)
    try:
        with capture_logs() as logs:
            assert await limit.take("c") == 0
            await limit.hit("c")
            assert await limit.retry_after("c") == 0
    finally:
        await down.aclose()
    events = [e for e in logs if e["event"] == "rate_limit_unavailable"]
    assert len(events) == 3 and events[0]["limit"] == "test"
