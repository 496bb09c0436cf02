"""Tests for the scheduler: entry validation, exactly-once firing, missed ticks, DST and asynq's records.

The multi-process tests run real scheduler processes (tests/framework/scheduler_app.py) against the
session Valkey: three at once, with one killed mid-tick, and with skewed clocks.
"""

from __future__ import annotations

import asyncio
import json
import math
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import msgspec
import pluggy
import pytest
import redis as redis_sync
from click.testing import CliRunner
from redis.exceptions import ConnectionError as RedisConnectionError

from framework import hookspecs
from framework.clock import SimulatedClock
from framework.errors import ConfigError, PluginError
from framework.hookspecs import hookimpl
from framework.protocol.message import decode_enqueue_event, decode_message, decode_scheduler_entry
from framework.registry import Registry
from framework.scheduler.scheduler import HISTORY_MAX, MISSED_AFTER, Scheduler, entry_id, load_entries
from framework.settings import CronEntrySettings, Settings
from framework.task import CronEntry, TaskDef
from tests.framework.scheduler_app import QUEUE, TICK, Tick, tick_task

if TYPE_CHECKING:
    from collections.abc import Iterator

    from redis.asyncio import Redis

    from framework.protocol.keys import Schema

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_700_000_040.0  # a multiple of 60


class Other(msgspec.Struct, frozen=True, kw_only=True):
    text: str = ""


def b(value: Any) -> bytes:
    """A Redis reply as bytes (the client is opened with bytes replies)."""
    assert isinstance(value, bytes), value
    return value


def ts(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def cron(name: str = "tick", spec: str = "@every 10s", **kwargs: Any) -> CronEntrySettings:
    kwargs.setdefault("task", TICK)
    return CronEntrySettings(name=name, spec=spec, **kwargs)


class _Plugin:
    def __init__(self, entries: list[Any]) -> None:
        self.entries = entries

    @hookimpl
    def register_cron_entries(self, settings: Settings) -> list[Any]:
        return self.entries


def plugin_manager(*entries: Any, name: str = "myplugin") -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(_Plugin(list(entries)), name=name)
    return pm


@pytest.fixture
def reg() -> Registry:
    return Registry([tick_task])


def make(settings: Settings, redis: Redis, clock: SimulatedClock, reg: Registry, **kwargs: Any) -> Scheduler:
    return Scheduler(settings, registry=reg, redis=redis, clock=clock, **kwargs)


async def pending_ticks(redis: Redis, schema: Schema, queue: str = QUEUE) -> list[int]:
    ids = [b(raw).decode() for raw in await redis.lrange(schema.queue(queue).pending, 0, -1)]
    return sorted(int(task_id.rsplit(":", 1)[1]) for task_id in ids)


# --- entries: ids, Go forms ---------------------------------------------------------------------


def test_entry_id_is_a_stable_uuid_of_name_spec_tz_and_type() -> None:
    a = entry_id("nightly", "0 3 * * *", "UTC", "x:y")
    assert a == entry_id("nightly", "0 3 * * *", "UTC", "x:y")
    assert len(a) == 36
    assert a.count("-") == 4
    others = {
        entry_id("nightly2", "0 3 * * *", "UTC", "x:y"),
        entry_id("nightly", "0 4 * * *", "UTC", "x:y"),
        entry_id("nightly", "0 3 * * *", "Europe/Berlin", "x:y"),
        entry_id("nightly", "0 3 * * *", "UTC", "x:z"),
    }
    assert a not in others
    assert len(others) == 4


def test_resolved_entry_in_go_forms(settings: Settings, reg: Registry) -> None:
    entry = CronEntry(
        "report",
        " 0 9 * * mon-fri ",
        tick_task,
        Tick(n=2),
        tz="Europe/Berlin",
        options={"queue": 'we"ird', "max_retry": 5, "timeout": 5400, "retention": 90, "headers": {"k": "<v>"}},
    )
    (e,) = load_entries(settings, None, reg, entries=[entry])
    assert e.spec == "0 9 * * mon-fri"
    assert e.source == "app"
    assert e.id == entry_id("report", "0 9 * * mon-fri", "Europe/Berlin", TICK)
    assert e.go_spec == "CRON_TZ=Europe/Berlin 0 9 * * mon-fri"
    assert e.go_options == (
        'Queue("we\\"ird")',
        "MaxRetry(5)",
        "Timeout(1h30m0s)",
        "Retention(1m30s)",
        'Header(["k","\\u003cv\\u003e"])',
    )
    assert e.payload == b'{"n":2}'
    assert e.claim_ttl(ts("2024-03-01T09:00:00+01:00")) == 3 * 86400 * 2  # Friday -> Monday
    (every,) = load_entries(settings, None, reg, entries=[CronEntry("fast", "@every 1s", TICK)])
    assert every.go_spec == "@every 1s"
    assert every.go_options == ('Queue("cron")', "MaxRetry(3)", "Timeout(1m0s)")
    assert every.claim_ttl(T0) == 3600
    assert every.payload == b'{"n":0}'


def test_entries_come_from_settings_plugins_and_code(settings: Settings, reg: Registry) -> None:
    s = settings.replace(cron=[cron("a", payload={"n": 4}, queue="low", run_missed=True)])
    pm = plugin_manager(CronEntry("b", "@hourly", TICK))
    a, b, c = load_entries(s, pm, reg, entries=[CronEntry("c", "@daily", tick_task, source="mine")])
    assert (a.name, a.source, a.options.queue, a.run_missed, a.payload) == ("a", "settings", "low", True, b'{"n":4}')
    assert (b.name, b.source, b.options.queue, b.run_missed) == ("b", "myplugin", QUEUE, False)
    assert (c.name, c.source) == ("c", "mine")


# --- bad input ----------------------------------------------------------------------------------

SETTINGS_ERRORS = [
    (cron("bad", "* * *"), "invalid schedule '* * *': expected 5 fields"),
    (cron("bad", "61 * * * *"), "minute field '61' is invalid"),
    (cron("bad", "@every 0.5s"), "must be at least 1s"),
    (cron("bad", "@daily", tz="Mars/Olympus"), "unknown time zone 'Mars/Olympus'"),
    (cron("bad", task="nope:nope"), "unknown task type 'nope:nope' (registered types: test:tick)"),
    (cron("bad", payload={"n": "x"}), "does not fit Tick"),
    (cron("bad", payload={"m": 1, "n": "1"}), "does not fit Tick"),
    (cron(" "), "the name must be a non-blank string"),
]


@pytest.mark.parametrize(("entry", "message"), SETTINGS_ERRORS)
def test_bad_settings_entry_fails_naming_entry_and_settings(
    settings: Settings, reg: Registry, entry: CronEntrySettings, message: str
) -> None:
    s = settings.replace(cron=[cron("fine"), entry])
    with pytest.raises(ConfigError, match=r"cron entry .* from settings: ") as info:
        load_entries(s, None, reg)
    assert message in str(info.value)
    assert f"cron entry {entry.name!r}" in str(info.value)
    with pytest.raises(ConfigError):
        Scheduler(s, registry=reg)


PLUGIN_ERRORS = [
    (CronEntry("bad", "@every", TICK), "@every takes exactly one Go duration"),
    (CronEntry("bad", "@sometimes", TICK), "unknown macro '@sometimes'"),
    (CronEntry("bad", "0 3 * * *", TICK, tz="Nowhere"), "unknown time zone 'Nowhere'"),
    (CronEntry("bad", "@daily", "nope:nope"), "unknown task type 'nope:nope'"),
    (CronEntry("bad", "@daily", 42), "task must be a TaskDef or a task type string"),  # type: ignore[arg-type]
    (CronEntry("bad", "@daily", tick_task, Other(text="x")), "takes a Tick payload, got Other"),
    (CronEntry("bad", "@daily", TICK, {"n": [1]}), "does not fit Tick"),
    (CronEntry("bad", "@daily", TICK, options={"task_id": "x"}), "option(s) task_id cannot be used"),
    (CronEntry("bad", "@daily", TICK, options={"process_in": 5, "unique": 9}), "process_in, unique cannot be used"),
    (CronEntry("bad", "@daily", TICK, options={"max_retry": -1}), "max_retry=-1 is invalid"),
    (CronEntry("bad", "@daily", TICK, options={"queue": " "}), "queue=' ' is invalid"),
    (CronEntry("bad", "@daily", TICK, options=[("queue", "x")]), "options must be a mapping"),  # type: ignore[arg-type]
    (CronEntry("bad", None, TICK), "the spec must be a string, got None"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("entry", "message"), PLUGIN_ERRORS)
def test_bad_plugin_entry_fails_naming_entry_and_plugin(
    settings: Settings, reg: Registry, entry: CronEntry, message: str
) -> None:
    pm = plugin_manager(CronEntry("fine", "@daily", TICK), entry)
    with pytest.raises(PluginError, match="cron entry 'bad' from plugin 'myplugin': ") as info:
        load_entries(settings, pm, reg)
    assert message in str(info.value)
    with pytest.raises(PluginError, match="from plugin 'myplugin'"):
        Scheduler(settings, plugin_manager=pm, registry=reg)


def test_plugin_returning_something_else_fails(settings: Settings, reg: Registry) -> None:
    with pytest.raises(PluginError, match=r"from plugin .myplugin.: is not a framework\.task\.CronEntry"):
        load_entries(settings, plugin_manager({"name": "x"}), reg)


def test_duplicate_names_fail_naming_both_origins(settings: Settings, reg: Registry) -> None:
    s = settings.replace(cron=[cron("same")])
    with pytest.raises(PluginError, match=r"'same' from plugin 'myplugin': the name is already used by .* settings"):
        load_entries(s, plugin_manager(CronEntry("same", "@hourly", TICK)), reg)
    with pytest.raises(ConfigError, match="'same' from app: the name is already used by the entry from settings"):
        load_entries(s, None, reg, entries=[CronEntry("same", "@daily", TICK)])


def test_scheduler_collects_task_types_from_plugins(settings: Settings) -> None:
    class Tasks:
        @hookimpl
        def register_task_types(self, settings: Settings) -> list[TaskDef[Any]]:
            return [tick_task]

    pm = plugin_manager(CronEntry("b", "@hourly", TICK))
    pm.register(Tasks(), name="tasks")
    scheduler = Scheduler(settings, plugin_manager=pm)
    assert [e.name for e in scheduler.entries] == ["b"]
    assert TICK in scheduler.registry


# --- firing with a simulated clock ----------------------------------------------------------------


async def test_fires_each_tick_with_a_deterministic_task(
    settings: Settings, redis: Redis, schema: Schema, reg: Registry
) -> None:
    clock = SimulatedClock(T0 + 5)
    s = settings.replace(cron=[cron(payload={"n": 9})])
    sched = make(s, redis, clock, reg)
    assert await sched.fire_due() == []  # the first call only sets the starting point
    clock.set(T0 + 10)
    (fired,) = await sched.fire_due()
    e = sched.entries[0]
    assert fired == (e.name, T0 + 10, f"cron:{e.id}:{int(T0) + 10}")
    assert await sched.fire_due() == []
    clock.set(T0 + 25)
    assert [f.tick for f in await sched.fire_due()] == [T0 + 20]
    assert await pending_ticks(redis, schema) == [int(T0) + 10, int(T0) + 20]
    msg = decode_message(b(await redis.hget(schema.queue(QUEUE).task(fired.task_id), "msg")))
    assert (msg.type, msg.payload, msg.id, msg.queue, msg.retry, msg.timeout) == (
        TICK,
        b'{"n":9}',
        fired.task_id,
        QUEUE,
        3,
        60,
    )
    events = [decode_enqueue_event(b(m)) for m in await redis.zrange(schema.scheduler_history(e.id), 0, -1)]
    assert [ev.task_id for ev in events] == [fired.task_id, f"cron:{e.id}:{int(T0) + 20}"]
    assert events[0].enqueue_time == datetime.fromtimestamp(T0 + 10, UTC)
    assert await redis.hget(schema.cron_last, e.id) == str(int(T0) + 20).encode()
    claim = schema.queue(QUEUE).cron_claim(e.id, int(T0) + 10)
    assert 3500 < await redis.ttl(claim) <= 3600


async def test_schedulers_with_skewed_clocks_fire_each_tick_once(
    settings: Settings, redis: Redis, schema: Schema, reg: Registry
) -> None:
    s = settings.replace(cron=[cron(spec="@every 1s")])
    real = SimulatedClock(T0)
    offsets = (0.0, 1.5, -1.5, 0.7)
    clocks = [SimulatedClock(T0 + off) for off in offsets]
    scheds = [make(s, redis, c, reg) for c in clocks]
    won: list[float] = []
    for step in range(200):  # 20 s in steps of 0.1 s, the schedulers taking turns in varying order
        real.advance(0.1)
        for clock, offset in zip(clocks, offsets, strict=True):
            clock.set(real.now() + offset)
        for sched in scheds if step % 2 else scheds[::-1]:
            won.extend(f.tick for f in await sched.fire_due())
    ticks = await pending_ticks(redis, schema)
    assert len(won) == len(ticks) == len(set(ticks))
    assert ticks == list(range(int(T0) - 1, int(T0) + 22))  # the clock 1.5 s ahead starts and ends first


@pytest.mark.parametrize(
    ("start", "daily", "local_day", "hours"),
    [
        ("2024-03-30T12:00:00+00:00", ["2024-03-31T01:00:00+00:00", "2024-04-01T00:30:00+00:00"], "2024-03-31", 23),
        ("2024-10-26T12:00:00+00:00", ["2024-10-27T00:30:00+00:00", "2024-10-28T01:30:00+00:00"], "2024-10-27", 25),
    ],
    ids=["spring-forward", "fall-back"],
)
async def test_dst_transitions_fire_the_right_ticks(
    settings: Settings,
    redis: Redis,
    schema: Schema,
    reg: Registry,
    start: str,
    daily: list[str],
    local_day: str,
    hours: int,
) -> None:
    berlin = ZoneInfo("Europe/Berlin")
    s = settings.replace(
        cron=[cron("daily", "30 2 * * *", tz="Europe/Berlin"), cron("hourly", "@hourly", tz="Europe/Berlin")]
    )
    clock = SimulatedClock(ts(start))
    sched = make(s, redis, clock, reg)
    fired: dict[str, list[float]] = {"daily": [], "hourly": []}
    for _ in range(48 * 60):
        for f in await sched.fire_due():
            fired[f.entry].append(f.tick)
        clock.advance(60)
    assert fired["daily"] == [ts(t) for t in daily]
    local = [datetime.fromtimestamp(t, berlin) for t in fired["hourly"]]
    assert sum(1 for d in local if d.date().isoformat() == local_day) == hours
    assert all(d.minute == 0 and d.second == 0 for d in local)
    assert (
        len(await pending_ticks(redis, schema)) == len(fired["daily"]) + len(fired["hourly"]) == 2 + 47
    )  # one per real hour


@pytest.mark.parametrize(
    ("spec", "before", "tick"),
    [
        ("30 2 * * *", "2024-03-30T02:30:00+01:00", "2024-03-31T03:00:00+02:00"),  # 02:30 skipped: runs at 03:00
        ("0 * * * *", "2024-10-27T02:00:00+02:00", "2024-10-27T02:00:00+01:00"),  # the second pass of 02:00
    ],
    ids=["spring-forward", "fall-back"],
)
async def test_a_restart_exactly_at_a_dst_tick_fires_it_once_whatever_the_hosts_zone(
    settings: Settings,
    redis: Redis,
    schema: Schema,
    reg: Registry,
    monkeypatch: pytest.MonkeyPatch,
    spec: str,
    before: str,
    tick: str,
) -> None:
    """The only scheduler fires the tick before, stops a second before the next, and two replicas start exactly
    at it, one on a host set to another zone: the tick fires once, at the instant the entry's zone gives."""
    s = settings.replace(cron=[cron("dst", spec, tz="Europe/Berlin")])
    clock = SimulatedClock(ts(before) - 1)
    first = make(s, redis, clock, reg)
    await first.fire_due()
    clock.set(ts(before))
    assert [f.tick for f in await first.fire_due()] == [ts(before)]
    clock.set(ts(tick) - 1)
    assert await first.fire_due() == []
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        fired = await make(s, redis, SimulatedClock(ts(tick)), reg).fire_due()
    finally:
        monkeypatch.undo()
        time.tzset()
    assert [f.tick for f in fired] == [ts(tick)]
    assert await make(s, redis, SimulatedClock(ts(tick)), reg).fire_due() == []
    assert await pending_ticks(redis, schema) == [int(ts(before)), int(ts(tick))]


async def test_sub_second_intervals_get_distinct_whole_second_ticks(
    settings: Settings, redis: Redis, schema: Schema, reg: Registry
) -> None:
    clock = SimulatedClock(T0)
    sched = make(settings.replace(cron=[cron(spec="@every 1500ms")]), redis, clock, reg)
    fired = []
    for _ in range(13):
        fired.extend(await sched.fire_due())
        clock.advance(0.5)
    assert [f.tick - T0 for f in fired] == [1.5, 3.0, 4.5, 6.0]
    assert [t - int(T0) for t in await pending_ticks(redis, schema)] == [1, 3, 4, 6]


async def test_late_ticks_fire_and_older_ones_are_missed(
    settings: Settings, redis: Redis, schema: Schema, reg: Registry
) -> None:
    clock = SimulatedClock(T0 + 5)
    sched = make(settings.replace(cron=[cron(spec="@every 10s")]), redis, clock, reg)
    await sched.fire_due()
    clock.set(T0 + 35)  # the loop was blocked for 30 s: the three ticks are late, not missed
    assert [f.tick - T0 for f in await sched.fire_due()] == [10, 20, 30]
    clock.set(T0 + 335)  # stalled for 5 minutes: only ticks at most MISSED_AFTER late are fired
    assert MISSED_AFTER == 60
    assert [f.tick - T0 for f in await sched.fire_due()] == [280, 290, 300, 310, 320, 330]


async def test_missed_ticks_after_downtime(settings: Settings, redis: Redis, schema: Schema, reg: Registry) -> None:
    base = [cron("skip", "@every 1m"), cron("catch-up", "@every 1m", run_missed=True)]
    clock = SimulatedClock(T0 + 5)
    first = make(settings.replace(cron=base), redis, clock, reg)
    await first.fire_due()
    clock.set(T0 + 60)
    assert sorted(f.entry for f in await first.fire_due()) == ["catch-up", "skip"]
    # every scheduler is down for ten minutes; then two start, and a brand-new run_missed entry appears
    s = settings.replace(cron=[*base, cron("new", "@every 1m", run_missed=True)])
    clock.set(T0 + 630)
    second = make(s, redis, clock, reg)
    assert [(f.entry, f.tick - T0) for f in await second.fire_due()] == [("catch-up", 600)]
    clock.set(T0 + 640)
    third = make(s, redis, clock, reg)
    assert await third.fire_due() == []  # the most recent missed tick ran once
    assert await second.fire_due() == []
    clock.set(T0 + 660)
    assert sorted(f.entry for f in await third.fire_due() + await second.fire_due()) == ["catch-up", "new", "skip"]
    ticks = await pending_ticks(redis, schema)
    assert sorted(t - int(T0) for t in ticks) == [60, 60, 600, 660, 660, 660]


async def test_failed_enqueue_is_retried_while_not_missed(
    settings: Settings, redis: Redis, schema: Schema, reg: Registry
) -> None:
    clock = SimulatedClock(T0 + 5)
    sched = make(settings.replace(cron=[cron(spec="@every 10s")]), redis, clock, reg)
    await sched.fire_due()
    broker = sched._broker
    assert broker is not None
    original = broker.cron_enqueue
    calls = 0

    async def flaky(*args: Any, **kwargs: Any) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RedisConnectionError("Redis went away")
        return await original(*args, **kwargs)

    broker.cron_enqueue = flaky  # type: ignore[method-assign]
    clock.set(T0 + 10)
    assert await sched.fire_due() == []
    assert sched._delay() == 1.0  # retried after a second, not at the next tick
    clock.set(T0 + 11)
    assert [f.tick - T0 for f in await sched.fire_due()] == [10]
    assert sched._delay() == pytest.approx(9.0)
    assert await pending_ticks(redis, schema) == [int(T0) + 10]


async def test_history_keeps_the_newest_1000(settings: Settings, redis: Redis, schema: Schema, reg: Registry) -> None:
    clock = SimulatedClock(T0 + 5)
    sched = make(settings.replace(cron=[cron()]), redis, clock, reg)
    history = schema.scheduler_history(sched.entries[0].id)
    await redis.zadd(history, {f"old-{i}".encode(): i for i in range(HISTORY_MAX)})
    await sched.fire_due()
    clock.set(T0 + 10)
    (fired,) = await sched.fire_due()
    assert await redis.zcard(history) == HISTORY_MAX
    assert await redis.zscore(history, "old-0") is None
    newest = await redis.zrange(history, -1, -1, withscores=True)
    assert decode_enqueue_event(b(newest[0][0])).task_id == fired.task_id
    assert newest[0][1] == int(T0) + 10


async def test_beat_writes_entries_in_asynq_format(
    settings: Settings, redis: Redis, schema: Schema, reg: Registry
) -> None:
    s = settings.replace(cron=[cron("every", payload={"n": 1}), cron("nightly", "30 2 * * *", tz="Europe/Berlin")])
    clock = SimulatedClock(T0 + 5)
    sched = make(s, redis, clock, reg)
    await sched.fire_due()
    clock.set(T0 + 12)
    await sched.fire_due()
    await sched.beat()
    key = schema.scheduler_entries(sched.host, sched.pid, sched.scheduler_id)
    assert key == f"{schema.ns}:schedulers:{{{sched.host}:{sched.pid}:{sched.scheduler_id}}}"
    assert await redis.zscore(schema.schedulers, key) == int(T0) + 12 + 20
    assert 0 < await redis.ttl(key) <= 20
    entries = {d.id: d for d in (decode_scheduler_entry(b(raw)) for raw in await redis.lrange(key, 0, -1))}
    every, nightly = sched.entries
    assert set(entries) == {every.id, nightly.id}
    e = entries[every.id]
    assert (e.spec, e.task_type, e.task_payload) == ("@every 10s", TICK, b'{"n":1}')
    assert e.enqueue_options == ('Queue("cron")', "MaxRetry(3)", "Timeout(1m0s)")
    assert e.next_enqueue_time == datetime.fromtimestamp(T0 + 20, UTC)
    assert e.prev_enqueue_time == datetime.fromtimestamp(T0 + 10, UTC)
    n = entries[nightly.id]
    assert n.spec == "CRON_TZ=Europe/Berlin 30 2 * * *"
    assert n.prev_enqueue_time is None  # never fired: Go's zero time
    assert n.next_enqueue_time == datetime.fromtimestamp(nightly.schedule.next_after(T0 + 12), UTC)
    ours = json.loads((await redis.hget(schema.cron_entries, nightly.id)) or b"")
    assert ours | {"seen_at": 0} == {
        "id": nightly.id,
        "name": "nightly",
        "spec": "30 2 * * *",
        "tz": "Europe/Berlin",
        "task_type": TICK,
        "queue": QUEUE,
        "source": "settings",
        "run_missed": False,
        "seen_at": 0,
    }


async def test_start_and_stop(settings: Settings, redis: Redis, schema: Schema, reg: Registry) -> None:
    sched = Scheduler(settings.replace(cron=[cron(spec="@every 1s")]), registry=reg, redis=redis)
    began = time.monotonic()
    async with sched:
        assert await redis.zcard(schema.schedulers) == 1

        async def two_ticks() -> bool:
            return len(await pending_ticks(redis, schema)) >= 2

        deadline = time.monotonic() + 30
        while not await two_ticks():
            assert time.monotonic() < deadline, "no two ticks fired"
            await asyncio.sleep(0.05)
    ran_for = time.monotonic() - began  # two seconds and a bit, or more on a loaded machine
    ticks = await pending_ticks(redis, schema)
    assert 2 <= len(ticks) <= math.ceil(ran_for) + 1  # one per second it ran, none after it stopped
    assert ticks == list(range(ticks[0], ticks[0] + len(ticks)))
    assert await redis.zcard(schema.schedulers) == 0
    assert await redis.exists(sched.key) == 0
    assert await redis.ping()  # a client given to the scheduler stays open


async def test_without_entries_the_scheduler_idles(settings: Settings, redis: Redis, schema: Schema) -> None:
    sched = Scheduler(settings, redis=redis)
    await sched.start()
    await sched.stop()
    assert await redis.zcard(schema.schedulers) == 0


# --- real scheduler processes ---------------------------------------------------------------------


class Fleet:
    """Scheduler processes (tests/framework/scheduler_app.py) that are killed if a test fails."""

    def __init__(self, redis_url: str, namespace: str, logs: Path) -> None:
        self.redis_url, self.namespace, self.logs = redis_url, namespace, logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, *args: str) -> subprocess.Popen[bytes]:
        log = (self.logs / f"scheduler-{len(self.procs)}.log").open("wb")
        cmd = [sys.executable, "-m", "tests.framework.scheduler_app", self.redis_url, self.namespace, *args]
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)
        log.close()
        self.procs.append(proc)
        return proc

    def stop(self, *procs: subprocess.Popen[bytes]) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=10)

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def fleet(redis_url: str, namespace: str, tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(redis_url, namespace, tmp_path)
    try:
        yield f
    finally:
        f.cleanup()


def _enqueued_ticks(log: Path) -> list[int]:
    """The ticks a scheduler process logged as enqueued by itself (its JSON log lines)."""
    lines = (json.loads(line) for line in log.read_text().splitlines() if line.startswith("{"))
    return [line["tick"] for line in lines if line.get("event") == "cron_enqueued"]


async def wait_for_schedulers(redis: Redis, schema: Schema, count: int, timeout: float = 15.0) -> float:
    deadline = time.time() + timeout
    while await redis.zcard(schema.schedulers) < count:
        assert time.time() < deadline, f"fewer than {count} schedulers started"
        await asyncio.sleep(0.05)
    return time.time()


async def history_ids(redis: Redis, schema: Schema) -> list[str]:
    eid = entry_id("tick", "@every 1s", "UTC", TICK)
    return [decode_enqueue_event(b(m)).task_id for m in await redis.zrange(schema.scheduler_history(eid), 0, -1)]


async def assert_each_tick_once(redis: Redis, schema: Schema, ready: float, end: float) -> list[int]:
    ticks = await pending_ticks(redis, schema)
    assert len(ticks) == len(set(ticks)), "a tick was enqueued twice"
    assert ticks == list(range(ticks[0], ticks[-1] + 1)), "a tick was lost"
    assert ticks[0] <= math.ceil(ready)
    assert ticks[-1] >= math.floor(end) - 2
    return ticks


@pytest.mark.slow
async def test_three_scheduler_processes_enqueue_each_tick_once(fleet: Fleet, redis: Redis, schema: Schema) -> None:
    procs = [fleet.spawn() for _ in range(3)]
    ready = await wait_for_schedulers(redis, schema, 3)
    await asyncio.sleep(4.0)
    end = time.time()
    await asyncio.to_thread(fleet.stop, *procs)
    assert [p.returncode for p in procs] == [0, 0, 0]
    ticks = await assert_each_tick_once(redis, schema, ready, end)
    assert len(ticks) >= 4
    eid = entry_id("tick", "@every 1s", "UTC", TICK)
    assert sorted(await history_ids(redis, schema)) == sorted(f"cron:{eid}:{t}" for t in ticks)
    assert await redis.zcard(schema.schedulers) == 0  # each cleared its entries on SIGTERM


@pytest.mark.slow
async def test_schedulers_killed_mid_tick_lose_no_tick(fleet: Fleet, redis: Redis, schema: Schema) -> None:
    steady = fleet.spawn()
    doomed = fleet.spawn("--die-before-call", "3")  # killed just before its 3rd enqueue attempt
    ready = await wait_for_schedulers(redis, schema, 2)
    winner = fleet.spawn("--offset", "0.4", "--die-after-win")  # first to each tick; killed after enqueueing
    await asyncio.sleep(4.5)
    end = time.time()
    assert doomed.poll() == -signal.SIGKILL
    assert winner.poll() == -signal.SIGKILL
    await asyncio.to_thread(fleet.stop, steady)
    assert steady.returncode == 0
    ticks = await assert_each_tick_once(redis, schema, ready, end)
    eid = entry_id("tick", "@every 1s", "UTC", TICK)
    missing = {f"cron:{eid}:{t}" for t in ticks} - set(await history_ids(redis, schema))
    assert len(missing) == 1  # the killed winner's tick is enqueued; only its history event is lost


@pytest.mark.slow
async def test_scheduler_processes_with_skewed_clocks_fire_each_tick_once(
    fleet: Fleet, redis: Redis, schema: Schema
) -> None:
    procs = [fleet.spawn("--offset", "1.5"), fleet.spawn("--offset", "-1.5")]
    ready = await wait_for_schedulers(redis, schema, 2)
    await asyncio.sleep(4.0)
    end = time.time()
    await asyncio.to_thread(fleet.stop, *procs)
    ticks = await assert_each_tick_once(redis, schema, ready - 1.5, end - 1.5)
    assert len(await history_ids(redis, schema)) == len(ticks)
    early, late = (_enqueued_ticks(fleet.logs / f"scheduler-{i}.log") for i in (0, 1))
    assert early  # the logs are read: the early clock fired
    # the late clock fires only ticks from before the early one started; every later one it finds claimed
    assert all(tick < min(early) for tick in late), (early, late)


# --- framework cron ls ----------------------------------------------------------------------------


def write_config(tmp_path: Path, redis_url: str, namespace: str, extra: str = "") -> Path:
    path = tmp_path / "framework.toml"
    path.write_text(
        f'redis_url = "{redis_url}"\nnamespace = "{namespace}"\napp = "tests.framework.scheduler_app"\n'
        f'load_plugins = []\ndata_dir = "{tmp_path / "data"}"\n\n'
        '[[cron]]\nname = "nightly"\nspec = "30 2 * * *"\ntz = "Europe/Berlin"\ntask = "test:tick"\n'
        f"payload = {{n = 3}}\n{extra}"
    )
    return path


def invoke(*args: str) -> Any:
    import framework.cli.cron  # noqa: F401 - registers the command group
    from framework.cli import cli

    # CliContext.pm reads the app module from FRAMEWORK_APP only (it does not pass settings to app_plugins)
    env = {"COLUMNS": "200", "FRAMEWORK_APP": "tests.framework.scheduler_app"}
    return CliRunner().invoke(cli, list(args), env=env)


def test_cron_ls(tmp_path: Path, redis_url: str, namespace: str, schema: Schema) -> None:
    config = write_config(tmp_path, redis_url, namespace)
    nightly = entry_id("nightly", "30 2 * * *", "Europe/Berlin", TICK)
    last = int(ts("2024-03-31T03:00:00+02:00"))
    with redis_sync.Redis.from_url(redis_url) as r:
        r.hset(schema.cron_last, nightly, last)
    result = invoke("--config", str(config), "cron", "ls", "--json")
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert rows["nightly"] | {"next_run": None} == {
        "name": "nightly",
        "id": nightly,
        "source": "settings",
        "spec": "30 2 * * *",
        "tz": "Europe/Berlin",
        "task_type": TICK,
        "queue": QUEUE,
        "run_missed": False,
        "last_run": "2024-03-31T03:00:00+02:00",
        "next_run": None,
    }
    assert datetime.fromisoformat(rows["nightly"]["next_run"]).time().isoformat() == "02:30:00"
    plugin = rows["plugin-tick"]
    assert (plugin["source"], plugin["spec"], plugin["tz"], plugin["last_run"]) == (
        "app",
        "0 9 * * mon-fri",
        "Europe/Berlin",
        None,
    )
    table = invoke("--config", str(config), "cron", "ls")
    assert table.exit_code == 0, table.output
    assert "2024-03-31 03:00:00 CEST" in table.output
    for text in ("nightly", "plugin-tick", "settings", "app", "0 9 * * mon-fri", "never"):
        assert text in table.output


def test_cron_ls_names_a_bad_entry(tmp_path: Path, redis_url: str, namespace: str) -> None:
    bad = '\n[[cron]]\nname = "broken"\nspec = "@every 1 s"\ntask = "test:tick"\n'
    result = invoke("--config", str(write_config(tmp_path, redis_url, namespace, bad)), "cron", "ls")
    assert isinstance(result.exception, ConfigError)
    assert "cron entry 'broken' from settings: invalid schedule '@every 1 s'" in str(result.exception)
