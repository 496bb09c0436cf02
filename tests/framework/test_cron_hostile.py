"""The cron scheduler under bad data, odd schedules and faults.

Values in ``<ext>:cron:last`` that no scheduler wrote, keys of another type where the scheduler writes, a clock
that jumps forward and back, a restart across a tick of a fractional ``@every`` interval, a payload that cannot
be encoded, time zones that are host-dependent, a folder of zones or leap-second zones, a Go ``CRON_TZ=`` prefix,
and ``framework cron ls`` on such data. Each test drives the scheduler with a simulated clock against the session
Valkey.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
import redis as redis_sync
from click.testing import CliRunner

from framework.clock import SimulatedClock
from framework.errors import ConfigError
from framework.inspector import Inspector
from framework.protocol.message import decode_scheduler_entry
from framework.registry import Registry
from framework.scheduler.cron import CronSpecError, parse_schedule
from framework.scheduler.scheduler import Scheduler, entry_id
from framework.task import CronEntry, TaskDef
from tests.framework.scheduler_app import TICK

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from framework.protocol.keys import Schema
    from framework.settings import Settings

T0 = 1_700_000_040.0  # a multiple of 60
QUEUE = "hostileq"


class Job(msgspec.Struct, frozen=True, kw_only=True):
    n: int = 0


async def _handle(ctx: Any, payload: Any) -> None:
    return None


job = TaskDef("hostile:job", Job, _handle, queue=QUEUE)
raw = TaskDef("hostile:raw", bytes, _handle, queue=QUEUE)


def scheduler(settings: Settings, redis: Redis, clock: SimulatedClock, *entries: CronEntry) -> Scheduler:
    return Scheduler(
        settings,
        entries=entries or [CronEntry("e", "@every 10s", job)],
        registry=Registry([job, raw]),
        redis=redis,
        clock=clock,
    )


async def pending_ticks(redis: Redis, schema: Schema) -> list[int]:
    ids = [value.decode() for value in await redis.lrange(schema.queue(QUEUE).pending, 0, -1)]
    return sorted(int(task_id.rsplit(":", 1)[1]) - int(T0) for task_id in ids)


# --- <ext>:cron:last written by something else -----------------------------------------------------------


async def test_last_ticks_no_scheduler_wrote_neither_stop_firing_nor_publishing(
    settings: Settings, redis: Redis, schema: Schema
) -> None:
    """A float, text and a number past the year 9999 in ``cron:last`` read as "never fired": the scheduler fires
    and writes its ``SchedulerEntry`` records. They raised ValueError, which stopped the firing loop and the
    heartbeat for good (and made ``start`` fail)."""
    clock = SimulatedClock(T0 + 5)
    entries = [CronEntry(name, "@every 10s", job, run_missed=True) for name in ("float", "text", "huge")]
    sched = scheduler(settings, redis, clock, *entries)
    values = ["1.7e9", "yesterday", str(10**19)]
    await redis.hset(schema.cron_last, mapping={e.id: v for e, v in zip(sched.entries, values, strict=True)})
    assert await sched.fire_due() == []  # never fired: no missed tick to run
    await sched.beat()
    published = [decode_scheduler_entry(r) for r in await redis.lrange(sched.key, 0, -1)]
    assert [p.prev_enqueue_time for p in published] == [None, None, None]
    clock.set(T0 + 10)
    assert sorted(f.entry for f in await sched.fire_due()) == ["float", "huge", "text"]


async def test_last_ticks_key_of_another_type_does_not_stop_the_scheduler(
    settings: Settings, redis: Redis, schema: Schema
) -> None:
    """``cron:last`` holding a string: every ``fire_due`` raised WRONGTYPE while reading it, so no entry ever
    fired. Now the ticks fire; only their record in ``cron:last`` fails (logged)."""
    await redis.set(schema.cron_last, "not a hash")
    clock = SimulatedClock(T0 + 5)
    sched = scheduler(settings, redis, clock)
    await sched.fire_due()
    clock.set(T0 + 10)
    assert [f.tick - T0 for f in await sched.fire_due()] == [10]
    await sched.beat()
    assert await pending_ticks(redis, schema) == [10]


async def test_start_survives_a_schedulers_key_of_another_type(
    settings: Settings, redis: Redis, schema: Schema
) -> None:
    """asynq's ``<ns>:schedulers`` holding a string (written by another client): publishing the entries fails,
    which made ``start`` raise, so every scheduler (and ``framework worker --scheduler``) failed to start."""
    await redis.set(schema.schedulers, "not a sorted set")
    clock = SimulatedClock(T0 + 5)
    sched = scheduler(settings, redis, clock)
    await sched.start()
    try:
        clock.set(T0 + 10)
        assert [f.tick - T0 for f in await sched.fire_due()] == [10]
    finally:
        await sched.stop()


# --- a pending list of another type ---------------------------------------------------------------------


async def test_the_inspector_lists_the_entries_beside_a_scheduler_key_of_another_type(
    settings: Settings, redis: Redis, schema: Schema
) -> None:
    """One key named in ``<ns>:schedulers`` holding a string (another client's) failed the whole listing (WRONGTYPE):
    the dashboard's cron page and ``framework cron ls`` showed nothing."""
    clock = SimulatedClock(time.time())  # the inspector lists the records live by the real clock
    sched = scheduler(settings, redis, clock)
    await sched.start()
    try:
        await redis.zadd(schema.schedulers, {"asynq:schedulers:{odd}": 4_000_000_000})
        await redis.set("asynq:schedulers:{odd}", "not a list")
        entries = await Inspector(redis, schema).scheduler_entries()
        assert [e.spec for e in entries] == [e.spec for e in sched.entries]
    finally:
        await sched.stop()
        await redis.delete("asynq:schedulers:{odd}")


async def test_a_tick_refused_by_a_bad_pending_key_is_retried_not_lost(
    settings: Settings, redis: Redis, schema: Schema
) -> None:
    """The queue's pending key holds a string for a moment. ``cron_enqueue.lua`` set the claim and the task hash
    before its LPUSH failed, and Redis keeps a failed script's writes: every retry found the claim taken, the
    tick was lost and a task hash said "pending" without being in the queue. Now nothing is written, and the
    retry after the key is repaired enqueues the tick."""
    clock = SimulatedClock(T0 + 5)
    sched = scheduler(settings, redis, clock)
    await sched.fire_due()
    pending = schema.queue(QUEUE).pending
    await redis.set(pending, "not a list")
    clock.set(T0 + 10)
    assert await sched.fire_due() == []
    e = sched.entries[0]
    assert await redis.exists(schema.queue(QUEUE).task(e.task_id(int(T0) + 10))) == 0
    await redis.delete(pending)
    clock.set(T0 + 11)
    assert [f.tick - T0 for f in await sched.fire_due()] == [10]
    assert await pending_ticks(redis, schema) == [10]


# --- a clock that jumps ------------------------------------------------------------------------------------


async def test_a_clock_set_a_day_ahead_and_corrected_fires_again_at_once(
    settings: Settings, redis: Redis, schema: Schema
) -> None:
    """The only scheduler's clock jumps a day ahead and is corrected back. It fired nothing until its clock
    reached the day-ahead position again: a day of ticks lost. Now it goes on from the corrected time; a tick it
    reaches a second time after a small step back is not enqueued twice."""
    clock = SimulatedClock(T0 + 5)
    sched = scheduler(settings, redis, clock)
    await sched.fire_due()
    clock.set(T0 + 10)
    assert [f.tick - T0 for f in await sched.fire_due()] == [10]
    clock.set(T0 + 86_400 + 5)  # a day ahead: the ticks of its last minute fire (early, by real time)
    assert len(await sched.fire_due()) == 6
    clock.set(T0 + 15)  # corrected
    assert await sched.fire_due() == []
    clock.set(T0 + 20)
    assert [f.tick - T0 for f in await sched.fire_due()] == [20]
    clock.set(T0 + 19.5)  # a small step back across a tick already fired
    assert await sched.fire_due() == []
    clock.set(T0 + 30)
    assert [f.tick - T0 for f in await sched.fire_due()] == [30]
    ticks = await pending_ticks(redis, schema)
    assert ticks == [10, 20, 30, *range(86_350, 86_401, 10)]


# --- a restart across a tick of a fractional @every interval ----------------------------------------------


async def test_a_restart_across_a_fractional_every_tick_fires_it_late(
    settings: Settings, redis: Redis, schema: Schema
) -> None:
    """``@every 1500ms`` ticks at 4.5 s (recorded as its whole second, 4) and 6 s; the only scheduler stops
    after firing 4.5 and starts again at 6.3. The tick at 6 is the only one nobody fired, so it is late, not
    missed, as for whole-second ticks; it was taken for missed, because the tick after 4 was taken to be 4.5."""
    entry = CronEntry("e", "@every 1500ms", job)
    clock = SimulatedClock(T0 + 0.2)
    first = scheduler(settings, redis, clock, entry)
    await first.fire_due()
    clock.set(T0 + 4.6)
    assert [f.tick - T0 for f in await first.fire_due()] == [1.5, 3.0, 4.5]
    second = scheduler(settings, redis, SimulatedClock(T0 + 6.3), entry)
    assert [f.tick - T0 for f in await second.fire_due()] == [6.0]
    longer = scheduler(settings, redis, SimulatedClock(T0 + 9.2), entry)  # 7.5 and 9 nobody fired: missed
    assert await longer.fire_due() == []
    assert await pending_ticks(redis, schema) == [1, 3, 4, 6]


# --- entries that cannot be used ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ({"when": object()}, "Encoding objects of type object is unsupported"),
        ({"text": "\udc80"}, "surrogates not allowed"),
    ],
    ids=["unsupported-type", "lone-surrogate"],
)
def test_a_payload_that_cannot_be_encoded_names_the_entry(settings: Settings, payload: Any, problem: str) -> None:
    """A raw-bytes task's payload given as data JSON cannot carry raised a bare TypeError or UnicodeEncodeError,
    naming neither the entry nor where it came from."""
    with pytest.raises(ConfigError) as info:
        Scheduler(settings, entries=[CronEntry("export", "@daily", raw, payload)], registry=Registry([raw]))
    message = str(info.value)
    assert message.startswith("cron entry 'export' from app: the payload cannot be encoded as JSON: ")
    assert problem in message


@pytest.mark.parametrize("tz", ["localtime", "posixrules", "posix/localtime"])
def test_a_time_zone_that_depends_on_the_host_is_refused(tz: str) -> None:
    """``localtime`` (a link to the host's zone, where the system installs one) was accepted: replicas on hosts
    set to different zones computed different ticks for the same entry, and each fired its own."""
    with pytest.raises(CronSpecError, match=f"time zone '{tz}' is whichever zone each host is set to"):
        parse_schedule("0 3 * * *", tz)
    assert parse_schedule("0 3 * * *", "Europe/Berlin").tz == "Europe/Berlin"


@pytest.mark.parametrize("tz", ["America", "Europe", "Etc", "US", "Europe/" + "x" * 300])
def test_a_time_zone_that_names_a_folder_or_is_too_long_is_refused_naming_the_entry(
    settings: Settings, tz: str
) -> None:
    """``tz = "America"`` (a folder of zones, not a zone) or an overlong name raised a bare IsADirectoryError or
    OSError from the zone database: the scheduler and ``framework cron ls`` stopped with a traceback that named
    neither the entry nor where it came from."""
    with pytest.raises(CronSpecError, match=f"unknown time zone '{tz}'"):
        parse_schedule("0 3 * * *", tz)
    with pytest.raises(ConfigError, match=f"cron entry 'report' from app: .*unknown time zone '{tz}'"):
        Scheduler(settings, entries=[CronEntry("report", "0 3 * * *", raw, b"", tz)], registry=Registry([raw]))


@pytest.mark.parametrize("tz", ["right/Europe/Berlin", "right/UTC", "right/America/New_York"])
def test_a_leap_second_zone_is_refused(tz: str) -> None:
    """``right/...`` zones, installed beside the others on some hosts, count leap seconds, which Unix time does
    not: their clock changes came 27 s late (a 02:30 job in right/Europe/Berlin fired at 03:00:27 on the
    spring-forward day) and an hourly job fired at a 03:00+02:00 that never exists on the fall-back day. Hosts
    without these files refused the entry while the others ran it."""
    with pytest.raises(CronSpecError, match="counts leap seconds, which Unix time does not"):
        parse_schedule("30 2 * * *", tz)


@pytest.mark.parametrize("prefix", ["CRON_TZ=Europe/Berlin", "TZ=America/New_York", "cron_tz=UTC"])
def test_a_go_time_zone_prefix_says_where_the_time_zone_goes(prefix: str) -> None:
    """A spec copied from Go (robfig/cron's ``CRON_TZ=`` prefix, which ``asynq cron ls`` shows) was refused as
    "expected 5 fields, got 6", which does not say that the zone goes in the entry's ``tz``."""
    name = prefix.partition("=")[0]
    with pytest.raises(CronSpecError, match=f"give the time zone as the entry's tz, not a '{name}=' prefix"):
        parse_schedule(f"{prefix} 0 3 * * *")


# --- framework cron ls ------------------------------------------------------------------------------------


def test_cron_ls_shows_a_last_run_past_the_year_9999_as_never(
    tmp_path: Path, redis_url: str, namespace: str, schema: Schema
) -> None:
    """A whole number too large for a date in ``cron:last`` made ``framework cron ls`` fail with ValueError."""
    import framework.cli.cron  # noqa: F401 - registers the command group
    from framework.cli import cli

    config = tmp_path / "framework.toml"
    config.write_text(
        f'redis_url = "{redis_url}"\nnamespace = "{namespace}"\napp = "tests.framework.scheduler_app"\n'
        f'load_plugins = []\ndata_dir = "{tmp_path / "data"}"\n\n'
        f'[[cron]]\nname = "nightly"\nspec = "30 2 * * *"\ntz = "Pacific/Kiritimati"\ntask = "{TICK}"\n'
    )
    nightly = entry_id("nightly", "30 2 * * *", "Pacific/Kiritimati", TICK)
    plugin = entry_id("plugin-tick", "0 9 * * mon-fri", "Europe/Berlin", TICK)
    with redis_sync.Redis.from_url(redis_url) as r:
        r.hset(schema.cron_last, mapping={nightly: "999999999999", plugin: "253370764799"})
    env = {"COLUMNS": "200", "FRAMEWORK_APP": "tests.framework.scheduler_app"}
    table, listing = (
        CliRunner().invoke(cli, ["--config", str(config), "cron", "ls", *args], env=env) for args in ([], ["--json"])
    )
    assert table.exit_code == 0, table.output
    assert "9999-01-01 00:59:59 CET" in table.output
    assert listing.exit_code == 0, listing.output
    rows = {row["name"]: row for row in json.loads(listing.stdout)}
    assert rows["nightly"]["last_run"] is None
    assert rows["plugin-tick"]["last_run"] == "9999-01-01T00:59:59+01:00"
