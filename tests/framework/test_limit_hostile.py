"""Task limits under faults, hostile handlers and bad data: a worker that dies holding a task whose rate token is
reserved, a handler that runs on past its timeout while it holds a concurrency slot, stray entries in a limit's
keys, and limits declared with values that are no rate at all.

The tests of the scripts run ``limit_take.lua`` and ``limit_release.lua`` through the broker on the test Valkey,
on a SimulatedClock near the real time (see :mod:`tests.framework.test_limit_faults`); the others run a real
worker in this process.
"""

from __future__ import annotations

import asyncio
import math
import threading
from typing import Any

import msgspec
import pytest
from redis.asyncio import Redis

from framework.broker.broker import RedisBroker
from framework.client.client import Client
from framework.clock import SimulatedClock
from framework.errors import ConfigError
from framework.limits import Limit, Rate, applied_limits, parse_rate
from framework.protocol.keys import Schema
from framework.settings import Settings
from framework.task import TaskDef
from tests.fixtures.limits import LIMIT_QUEUE as Q
from tests.fixtures.limits import take_active
from tests.framework.worker_app import task_record, wait_until


async def test_a_task_recovered_from_a_dead_worker_does_not_start_on_the_token_reserved_before_it_died(
    broker: RedisBroker, clock: SimulatedClock
) -> None:
    """rate 1/s: b's token is reserved for t=1 s and its worker holds it until then, but dies first. Its lease
    lapses; meanwhile c starts at t=40 on a fresh token. Recovered and taken again, b must not start at once on
    its old token (two starts 10 ms apart at 1/s): that moment is long past, so it asks for a new one."""
    [lim] = applied_limits([Limit(rate="1/s", name="crash")], "t", None)
    await take_active(broker, "a", "b")
    assert (await broker.limit_take(Q, "a", [lim])).code == 0  # t=0
    assert (await broker.limit_take(Q, "b", [lim])).code == 3  # reserved for t=1, held by a worker that dies
    clock.advance(40.0)  # its lease (30 s) lapsed
    await take_active(broker, "c")
    assert (await broker.limit_take(Q, "c", [lim])).code == 0  # t=40: the rate was idle, c starts
    assert await broker.recover(Q, "b", clock.now(), 10) == 1  # the recoverer puts b back
    clock.advance(0.01)
    assert [i for i, _ in await broker.dequeue(Q, 1, alone=True)] == ["b"]  # a crash suspect, run alone
    again = await broker.limit_take(Q, "b", [lim])
    assert again.code == 3, "b started 10 ms after c at 1/s, on a token reserved 40 s ago"
    assert again.due == pytest.approx(clock.now() - 0.01 + 1.0)  # the next token after c's


async def test_a_task_a_little_late_for_its_token_still_starts_on_it(
    broker: RedisBroker, clock: SimulatedClock
) -> None:
    """The other side of the test above: a task that comes back for its token less than 1 s late (its worker's
    loop was busy, a forwarder pass came late) starts on it, and the rate's next token is where it was."""
    [lim] = applied_limits([Limit(rate="1/s", name="late")], "t", None)
    await take_active(broker, "a", "b")
    assert (await broker.limit_take(Q, "a", [lim])).code == 0  # t=0
    assert (await broker.limit_take(Q, "b", [lim])).code == 3  # reserved for t=1
    clock.advance(1.9)
    assert (await broker.limit_take(Q, "b", [lim])).code == 0  # t=1.9: 0.9 s late, on its token
    await take_active(broker, "c")
    taken = await broker.limit_take(Q, "c", [lim])
    assert (taken.code, taken.due - clock.now()) == (3, pytest.approx(0.1))  # the token for t=2


async def test_a_slot_kept_for_a_handler_given_up_on_holds_until_its_time_then_is_freed(
    broker: RedisBroker, clock: SimulatedClock, redis: Redis, schema: Schema
) -> None:
    """concurrency 1: a's handler was given up on, its outcome written (no lease any more), and its slot kept for it
    for 30 s: b waits for the slot meanwhile, though a's task holds no lease. A renewal moves the time on; once the
    worker stops renewing (it died), the slot is freed at that time and b takes it."""
    [lim] = applied_limits([Limit(concurrency=1, name="kept")], "t", None)
    await take_active(broker, "a", "b")
    assert (await broker.limit_take(Q, "a", [lim])).code == 0
    holder = f"{Q}\na\nrun1"
    await broker.limit_release(Q, "a", [lim], holder=holder, keep_until=clock.now() + 30)
    await redis.zrem(schema.queue(Q).lease, "a")  # its outcome is written: the task is no longer leased
    assert await redis.zrange(schema.limit("kept").slots, 0, -1) == [holder.encode()]
    clock.advance(20.0)
    await broker.limit_release(Q, "a", [lim], holder=holder, keep_until=clock.now() + 30)  # renewed at t=20
    clock.advance(20.0)  # t=40: past the first time, not the renewed one
    assert (await broker.limit_take(Q, "b", [lim])).code == 2  # parked: the slot is still kept
    await take_active(broker, "c")
    clock.advance(11.0)  # t=51: the worker never renewed it again
    assert (await broker.limit_take(Q, "c", [lim])).code == 0
    assert await redis.zrange(schema.limit("kept").slots, 0, -1) == [f"{Q}\nc".encode()]


async def test_stray_entries_in_a_limits_keys_do_not_stop_its_tasks(
    broker: RedisBroker, redis: Redis, schema: Schema
) -> None:
    """A slot holder, a parked entry or a reserved moment that is not what the scripts write (hand-edited, or left
    by another version) is dropped or ignored; before, each made every take or release of the limit fail, so its
    tasks failed and were retried until archived."""
    [lim] = applied_limits([Limit(rate="1000/s", concurrency=1, name="stray")], "t", None)
    keys = schema.limit("stray")
    await redis.zadd(keys.slots, {"no-separator": 1})
    await redis.rpush(keys.parked, "no-separator")
    await take_active(broker, "a")
    await redis.hset(schema.queue(Q).task("a"), "fw_limit_at", "soon")
    assert (await broker.limit_take(Q, "a", [lim])).code == 0
    assert await redis.zrange(keys.slots, 0, -1) == [f"{Q}\na".encode()]
    assert await redis.hget(schema.queue(Q).task("a"), "fw_limit_at") is None
    assert await broker.limit_release(Q, "a", [lim]) == 0
    assert await redis.llen(keys.parked) == 0
    assert await redis.zcard(keys.slots) == 0


@pytest.mark.parametrize(
    ("count", "seconds"),
    [(0, 1.0), (-1, 1.0), (math.nan, 1.0), (1, math.nan), (1, 0.0), (1, math.inf), (math.inf, 1.0)],
)
def test_a_rate_given_as_a_rate_object_is_checked_like_one_given_as_text(count: float, seconds: float) -> None:
    """``Limit(rate=Rate(...))`` skipped the checks of ``"100/s"``: a count of 0 made every task of the type fail
    (a division by zero as it asked), and a negative, NaN or infinite one dropped the rate without a word."""
    with pytest.raises(ConfigError, match="finite numbers above zero"):
        Limit(rate=Rate(count, seconds))


def test_a_rate_too_slow_to_keep_in_redis_stops_the_start_rather_than_every_task() -> None:
    """One task per 10^12 days parsed, but its timestamp's expiry is more than Redis takes: every take of the
    limit failed, and its tasks were retried until archived. It is refused as a setting and in code."""
    with pytest.raises(ConfigError, match=r"limits.slow: rate '1/1000000000000d': at most 1,000 years"):
        Settings(limits={"slow": {"rate": "1/1000000000000d"}})
    with pytest.raises(ConfigError, match="at most 1,000 years"):
        Limit(rate="1/1000000000000d")
    assert parse_rate("1/365000d").interval_ms == 365000 * 86400 * 1000


class N(msgspec.Struct, frozen=True, kw_only=True):
    n: int = 0


def _never(retried: int, error: BaseException) -> float:
    return 600.0


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_a_handler_running_on_past_its_timeout_keeps_its_concurrency_slot_until_it_ends(
    start: Any, settings: Any, client: Client, redis: Redis, schema: Schema, kind: str
) -> None:
    """concurrency 1: the first handler runs on past its timeout (an async one swallowing its cancellation and
    given up on, a sync one whose thread cannot be stopped); its outcome, a retry, is written while it runs, and it
    may still be calling what the limit protects. The next task must not start until it really ends, though its
    task is no longer leased: its slot is kept for it, as the worker keeps its own slot."""
    release = threading.Event()
    lock = threading.Lock()
    live = most = 0
    order: list[str] = []

    def begin(n: int) -> None:
        nonlocal live, most
        with lock:
            live += 1
            most = max(most, live)
            order.append(f"start {n}")

    def end(n: int) -> None:
        nonlocal live
        with lock:
            live -= 1
            order.append(f"end {n}")

    async def deaf() -> None:  # swallows every cancellation (what a handler must not do)
        while not release.is_set():
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                continue

    async def handle(ctx: Any, p: N) -> None:
        begin(p.n)
        try:
            if p.n == 0:
                await deaf()
        finally:
            end(p.n)

    def handle_sync(ctx: Any, p: N) -> None:
        begin(p.n)
        if p.n == 0:
            release.wait(10)
        end(p.n)

    task = TaskDef(
        f"lim:overrun:{kind}",
        N,
        handle if kind == "async" else handle_sync,
        retry_delay=_never,
        limit=Limit(concurrency=1, name="overrun"),
    )
    await start(task, settings=settings.replace(cancel_grace=0.3))
    try:
        first = await client.enqueue(task, N(n=0), timeout=1)
        await wait_until(lambda: _true(order == ["start 0"]))
        await client.enqueue(task, N(n=1))

        async def given_up() -> bool:
            return (await task_record(redis, schema, "default", first.id)).get("state") == "retry"

        await wait_until(given_up)
        await asyncio.sleep(0.5)  # were its slot given back with the outcome, the next task would start now
        assert order == ["start 0"], order
        assert await redis.zcard(schema.limit("overrun").slots) == 1  # kept for the handler still running
        release.set()
        await wait_until(lambda: _true(order[-1:] == ["end 1"]))
    finally:
        release.set()
    assert most == 1
    assert order == ["start 0", "end 0", "start 1", "end 1"]
    await wait_until(lambda: _none_held(redis, schema.limit("overrun").slots))


async def _true(value: bool) -> bool:
    return value


async def _none_held(redis: Redis, key: str) -> bool:
    return not await redis.zcard(key)
