"""Task limits where their timing goes wrong: a rate token reserved for a task that is then parked for a slot,
a rate changed in the settings while tasks are put off under the old one, and hosts whose clocks disagree.

Each test runs the real scripts (``limit_take.lua``, ``limit_release.lua``) through the broker on the test Valkey;
time is the broker's clock (a SimulatedClock near the real time, so leases written by dequeue stay valid for the
few simulated seconds a test spans).
"""

from __future__ import annotations

import math
import time

import pytest
from redis.asyncio import Redis

from framework.broker.broker import RedisBroker
from framework.clock import SimulatedClock
from framework.limits import Limit, applied_limits
from framework.protocol.keys import Schema
from tests.fixtures.limits import LIMIT_QUEUE as Q
from tests.fixtures.limits import take_active


async def test_a_task_parked_for_a_slot_gives_up_its_reserved_token(broker: RedisBroker, clock: SimulatedClock) -> None:
    """rate 1/s + concurrency 2 on one limit: a task whose token was reserved, then found every slot taken, must
    not start on that token when a slot frees much later: by then another task took a fresh token, and two
    starts would come 10 ms apart under 1/s (burst 1). Woken, it asks for a token anew."""
    [lim] = applied_limits([Limit(rate="1/s", concurrency=2, name="stale")], "t", None)
    await take_active(broker, "a", "b", "c")
    assert (await broker.limit_take(Q, "a", [lim])).code == 0  # t=0: slot 1, token at 0
    assert (await broker.limit_take(Q, "b", [lim])).code == 3  # token reserved for t=1 s, held by its worker
    assert (await broker.limit_take(Q, "c", [lim])).code == 3  # token reserved for t=2 s
    clock.advance(1.0)
    assert (await broker.limit_take(Q, "b", [lim])).code == 0  # t=1: b starts (slot 2) on its token
    clock.advance(1.0)
    assert (await broker.limit_take(Q, "c", [lim])).code == 2  # t=2: both slots taken: c parked
    clock.advance(5.0)  # t=7: a new task d is taken; a ends, its release wakes c (pending)
    await take_active(broker, "d")
    await broker.limit_release(Q, "a", [lim])
    starts = []
    if (await broker.limit_take(Q, "d", [lim])).code == 0:  # t=7: d takes a fresh token (rate idle since t=2)
        starts.append(clock.now())
        await broker.limit_release(Q, "d", [lim])  # d is quick
    clock.advance(0.01)
    taken = await broker.dequeue(Q, 1)
    assert [i for i, _ in taken] == ["c"]
    again = await broker.limit_take(Q, "c", [lim])
    if again.code == 0:
        starts.append(clock.now())
    # at most one start per second (burst 1): the second start had to wait until t=8
    assert len(starts) < 2 or starts[1] - starts[0] >= 0.999, f"two starts {starts[1] - starts[0]:.3f} s apart at 1/s"
    assert again.code == 3
    assert again.due == pytest.approx(starts[0] + 1.0)  # the next token after d's


async def test_a_rate_changed_in_the_settings_respaces_the_backlog_from_the_next_task(
    broker: RedisBroker, clock: SimulatedClock
) -> None:
    """Operators tune limits without a deploy: with the limit at 1/min, five tasks took or reserved tokens up to
    5 min out; once the settings say 100/s, a new task waits for the backlog spaced at 100/s (5 x 10 ms), not
    for the minutes the old rate gave it. Lowering the rate again spaces what is left at the slower rate."""
    limit = Limit(rate="1/min", name="retune")
    ids = [f"r{n}" for n in range(5)]
    await take_active(broker, *ids)
    [slow] = applied_limits([limit], "t", None)
    for task_id in ids:
        await broker.limit_take(Q, task_id, [slow])
    [fast] = applied_limits([limit], "t", None, {"retune": {"rate": "100/s"}})
    await take_active(broker, "new")
    taken = await broker.limit_take(Q, "new", [fast])
    assert taken.code == 3  # near: held by its worker
    assert taken.due - clock.now() == pytest.approx(0.05)
    # the backlog is now 6 tokens at 10 ms (60 ms); at 1/min again that is 6 min
    await take_active(broker, "later")
    taken = await broker.limit_take(Q, "later", [slow])
    assert taken.code == 1
    assert taken.due - clock.now() == pytest.approx(360.0)


@pytest.mark.parametrize("skew", [-5.0, -0.2, 0.2, 5.0])
async def test_hosts_whose_clocks_disagree_bend_a_rate_by_at_most_the_skew_times_the_rate(
    redis: Redis, schema: Schema, skew: float
) -> None:
    """The rate is counted on each worker's clock (as asynq schedules on the client's), so it assumes the hosts'
    clocks agree. With one host ``skew`` s off, the starts at one instant stay within the documented bound: one
    more than the rate allows per ``skew x rate`` (none for a skew under one interval), and a start on one host
    comes at most ``skew`` sooner after a start on the other than the rate's interval."""
    real = float(int(time.time()))
    off = RedisBroker(redis, schema, SimulatedClock(real + skew))  # a host whose clock is off by `skew`
    on_time = RedisBroker(redis, schema, SimulatedClock(real))
    [lim] = applied_limits([Limit(rate="1/s", name=f"skew{skew}")], "t", None)
    ids = [f"x{n}" for n in range(6)]
    await take_active(on_time, *ids)
    started = 0
    dues = []
    for n, task_id in enumerate(ids):  # the two hosts take in turn, the one off first, all at the same instant
        broker = off if n % 2 == 0 else on_time
        taken = await broker.limit_take(Q, task_id, [lim])
        if taken.code == 0:
            started += 1
        else:  # reserved for `due` on the clock of the host that holds it: in real time, due - its offset
            dues.append(taken.due - (skew if broker is off else 0.0))
    assert 1 <= started <= 1 + math.floor(abs(skew) * 1.0)
    if abs(skew) < 1.0:
        assert started == 1
        assert min(dues) >= real + 1.0 - abs(skew) - 1e-6  # the next start is at most `skew` early


async def test_a_keyed_limits_seen_keys_that_hold_nothing_are_pruned_and_the_others_kept(
    redis: Redis, schema: Schema
) -> None:
    """The janitor's pass drops, a page at a time, the keys whose rate, slots, parked and waiting keys are all gone
    (a user id that has not started a task for a while), and keeps every key that still holds something."""
    from structlog import get_logger

    from framework.worker.background.janitor import Janitor

    name = "per-user"
    seen = schema.limit(name).keys
    gone = [f"user-{i}" for i in range(1200)]  # more than one page
    live = {"tat": "user-a", "slots": "user-b", "parked": "user-c", "waiting": "user-d"}
    await redis.sadd(seen, *gone, *live.values())
    held = {kind: schema.limit(name, key) for kind, key in live.items()}
    await redis.set(held["tat"].tat, 1, px=60_000)
    await redis.zadd(held["slots"].slots, {"q\nid": 1})
    await redis.zadd(schema.queue("q").lease, {"id": int(time.time()) + 30})  # a live holder: its task is leased
    await redis.rpush(held["parked"].parked, "q\nid")
    await redis.zadd(held["waiting"].waiting, {"q\nid": 1})
    broker = RedisBroker(redis, schema, SimulatedClock(time.time()))
    janitor = Janitor(broker, [], get_logger(), keyed_limits=[name])
    dropped = 0
    for _ in range(20):  # each pass walks a page; a full walk returns the cursor to 0
        dropped += await janitor.prune_limit_keys()
        if janitor._cursors[name] == "0":
            break
    assert dropped == len(gone)
    assert {m.decode() for m in await redis.smembers(seen)} == set(live.values())
