"""Tests for framework.scheduler.cron: parsing, next/previous fire times, @every alignment and DST handling."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter, croniter_range

from framework.errors import FrameworkError
from framework.scheduler.cron import CronSpecError, Schedule, parse_duration, parse_schedule


def ts(iso: str) -> float:
    """Unix timestamp of an ISO-8601 string with an explicit offset."""
    moment = datetime.fromisoformat(iso)
    assert moment.tzinfo is not None, iso
    return moment.timestamp()


def iso(t: float, tz: str = "UTC") -> str:
    return datetime.fromtimestamp(t, ZoneInfo(tz)).isoformat()


# --- spec forms ---------------------------------------------------------------------------------

SPEC_FORMS = [
    ("* * * * *", False),
    ("0 3 * * mon-fri", False),
    ("*/15 9-17 * jan,jul ?", False),
    ("0 0 L * *", False),
    ("0 0 * * mon#2", False),
    ("  0   3  * * *  ", False),
    ("@hourly", False),
    ("@daily", False),
    ("@midnight", False),
    ("@weekly", False),
    ("@monthly", False),
    ("@yearly", False),
    ("@annually", False),
    ("@DAILY", False),
    ("@every 30s", True),
    ("@every 1m30s", True),
    ("@every 2h", True),
    ("@every 1.5h", True),
    ("@every 1s", True),
    ("@every 1500ms", True),
]


@pytest.mark.parametrize(("spec", "is_interval"), SPEC_FORMS)
def test_spec_forms_parse(spec: str, is_interval: bool) -> None:
    schedule = parse_schedule(spec)
    assert schedule.spec == spec.strip()
    assert schedule.tz == "UTC"
    assert schedule.is_interval is is_interval


MACROS = [
    ("@hourly", "0 * * * *"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@weekly", "0 0 * * 0"),
    ("@monthly", "0 0 1 * *"),
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
]


@pytest.mark.parametrize(("macro", "fields"), MACROS)
def test_macros_fire_like_their_expansion(macro: str, fields: str) -> None:
    for tz in ("UTC", "Europe/Berlin"):
        a, b = parse_schedule(macro, tz), parse_schedule(fields, tz)
        t = ts("2024-02-27T13:14:15+00:00")
        for _ in range(5):
            t = a.next_after(t)
            assert t == b.next_after(t - 1)


def test_schedule_is_a_frozen_value() -> None:
    schedule = parse_schedule(" @daily ", "Europe/Berlin")
    assert schedule == Schedule("@daily", "Europe/Berlin")
    assert hash(schedule) == hash(Schedule("@daily", "Europe/Berlin"))
    assert schedule != Schedule("@daily", "UTC")
    assert repr(schedule) == "Schedule(spec='@daily', tz='Europe/Berlin')"
    with pytest.raises(AttributeError):
        schedule.spec = "@hourly"  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(schedule)) == schedule


def test_constructing_schedule_directly_validates() -> None:
    with pytest.raises(CronSpecError, match="expected 5 fields"):
        Schedule("* * *")
    with pytest.raises(CronSpecError, match="unknown time zone"):
        Schedule("@daily", "Nowhere/Special")


# --- next fire --------------------------------------------------------------------------------

NEXT_UTC = [
    ("* * * * *", "2024-05-01T10:00:00+00:00", "2024-05-01T10:01:00+00:00"),
    ("* * * * *", "2024-05-01T10:00:59.999+00:00", "2024-05-01T10:01:00+00:00"),
    ("*/15 * * * *", "2024-05-01T10:07:00+00:00", "2024-05-01T10:15:00+00:00"),
    ("0 * * * *", "2024-05-01T10:00:00+00:00", "2024-05-01T11:00:00+00:00"),
    ("30 2 * * *", "2024-05-01T02:29:59+00:00", "2024-05-01T02:30:00+00:00"),
    ("30 2 * * *", "2024-05-01T02:30:00+00:00", "2024-05-02T02:30:00+00:00"),
    ("0 9 * * mon-fri", "2024-05-03T09:00:00+00:00", "2024-05-06T09:00:00+00:00"),
    ("0 0 1 * *", "2024-01-31T12:00:00+00:00", "2024-02-01T00:00:00+00:00"),
    ("0 0 L * *", "2024-02-01T00:00:00+00:00", "2024-02-29T00:00:00+00:00"),
    ("0 0 29 2 *", "2024-03-01T00:00:00+00:00", "2028-02-29T00:00:00+00:00"),
    ("0 0 * * mon#2", "2024-05-01T00:00:00+00:00", "2024-05-13T00:00:00+00:00"),
    ("0 0 13 * fri", "2024-05-01T00:00:00+00:00", "2024-05-03T00:00:00+00:00"),  # day-of-month OR day-of-week
    ("0 0 * * 7", "2024-05-01T00:00:00+00:00", "2024-05-05T00:00:00+00:00"),  # 7 is Sunday
    ("@hourly", "2024-05-01T10:59:59+00:00", "2024-05-01T11:00:00+00:00"),
    ("@daily", "2024-12-31T23:59:00+00:00", "2025-01-01T00:00:00+00:00"),
    ("@weekly", "2024-05-01T00:00:00+00:00", "2024-05-05T00:00:00+00:00"),
    ("@monthly", "2024-05-01T00:00:00+00:00", "2024-06-01T00:00:00+00:00"),
    ("@yearly", "2024-05-01T00:00:00+00:00", "2025-01-01T00:00:00+00:00"),
]


@pytest.mark.parametrize(("spec", "start", "expected"), NEXT_UTC)
def test_next_after_utc(spec: str, start: str, expected: str) -> None:
    fire = parse_schedule(spec).next_after(ts(start))
    assert fire == ts(expected), iso(fire)
    assert fire == int(fire)


NEXT_ZONED = [
    ("30 2 * * *", "Europe/Berlin", "2024-07-01T00:00:00+00:00", "2024-07-01T02:30:00+02:00"),
    ("30 2 * * *", "Europe/Berlin", "2024-01-15T00:00:00+00:00", "2024-01-15T02:30:00+01:00"),
    ("0 9 * * mon", "America/New_York", "2024-05-06T12:59:59+00:00", "2024-05-06T09:00:00-04:00"),
    ("0 9 * * mon", "America/New_York", "2024-05-06T13:00:01+00:00", "2024-05-13T09:00:00-04:00"),
    ("0 0 * * *", "Asia/Kolkata", "2024-05-01T00:00:00+00:00", "2024-05-02T00:00:00+05:30"),
    ("@daily", "Australia/Sydney", "2024-05-01T00:00:00+00:00", "2024-05-02T00:00:00+10:00"),
    ("0 12 1 1 *", "Pacific/Kiritimati", "2024-05-01T00:00:00+00:00", "2025-01-01T12:00:00+14:00"),
]


@pytest.mark.parametrize(("spec", "tz", "start", "expected"), NEXT_ZONED)
def test_next_after_in_a_named_zone(spec: str, tz: str, start: str, expected: str) -> None:
    fire = parse_schedule(spec, tz).next_after(ts(start))
    assert fire == ts(expected), iso(fire, tz)


# --- @every -------------------------------------------------------------------------------------

EVERY = [
    ("@every 30s", 1_700_000_000.0, 1_700_000_010.0),
    ("@every 30s", 1_700_000_010.0, 1_700_000_040.0),
    ("@every 1m30s", 1_700_000_000.0, 1_700_000_010.0),  # 1_700_000_010 = 18_888_889 * 90
    ("@every 2h", 1_700_000_000.0, 1_700_006_400.0),
    ("@every 1.5h", 1_700_000_000.0, 1_700_001_000.0),
    ("@every 7s", 0.0, 7.0),
    ("@every 7s", -1.0, 0.0),
    ("@every 1500ms", 1.0, 1.5),
    ("@every 1500ms", 1.5, 3.0),
    ("@every 24h", ts("2024-05-01T12:00:00+00:00"), ts("2024-05-02T00:00:00+00:00")),
]


@pytest.mark.parametrize(("spec", "start", "expected"), EVERY)
def test_every_is_aligned_to_the_unix_epoch(spec: str, start: float, expected: float) -> None:
    assert parse_schedule(spec).next_after(start) == expected


@pytest.mark.parametrize("tz", ["UTC", "Europe/Berlin", "Asia/Kolkata"])
def test_every_ignores_the_time_zone_and_the_start_time(tz: str) -> None:
    schedule = parse_schedule("@every 1h30m", tz)
    # Replicas started at different moments agree on every tick: each is a multiple of 5400 s.
    for start in (1_700_000_000.0, 1_700_000_123.456, 1_700_001_000.0, 1_700_003_999.9):
        tick = schedule.next_after(start)
        assert tick % 5400 == 0
        assert 0 < tick - start <= 5400
        assert schedule.prev_at_or_before(start) == tick - 5400 or tick - 5400 == start


def test_every_ticks_are_strictly_after_and_exact_near_float_boundaries() -> None:
    schedule = parse_schedule("@every 1.1s")
    t = 1_700_000_000.0
    for _ in range(200):
        nxt = schedule.next_after(t)
        assert nxt > t
        assert schedule.prev_at_or_before(nxt) == nxt
        t = nxt


# --- prev_at_or_before ---------------------------------------------------------------------------

PREV = [
    ("*/15 * * * *", "UTC", "2024-05-01T10:07:00+00:00", "2024-05-01T10:00:00+00:00"),
    ("*/15 * * * *", "UTC", "2024-05-01T10:15:00+00:00", "2024-05-01T10:15:00+00:00"),  # inclusive
    ("30 2 * * *", "UTC", "2024-05-01T02:29:59+00:00", "2024-04-30T02:30:00+00:00"),
    ("@daily", "Europe/Berlin", "2024-05-01T21:59:59+00:00", "2024-05-01T00:00:00+02:00"),
    ("@daily", "Europe/Berlin", "2024-05-01T22:00:00+00:00", "2024-05-02T00:00:00+02:00"),
    ("0 0 29 2 *", "UTC", "2027-01-01T00:00:00+00:00", "2024-02-29T00:00:00+00:00"),
    ("@every 1h", "Asia/Kolkata", "2024-05-01T10:59:59+00:00", "2024-05-01T10:00:00+00:00"),
    ("@every 1h", "UTC", "2024-05-01T11:00:00+00:00", "2024-05-01T11:00:00+00:00"),
]


@pytest.mark.parametrize(("spec", "tz", "at", "expected"), PREV)
def test_prev_at_or_before(spec: str, tz: str, at: str, expected: str) -> None:
    fire = parse_schedule(spec, tz).prev_at_or_before(ts(at))
    assert fire == ts(expected), fire and iso(fire, tz)


# --- ticks_between -------------------------------------------------------------------------------

TICKS = [
    ("0 * * * *", "UTC", "2024-05-01T10:00:00+00:00", "2024-05-01T13:00:00+00:00", ["11:00", "12:00", "13:00"]),
    ("0 * * * *", "UTC", "2024-05-01T10:00:00+00:00", "2024-05-01T10:59:59+00:00", []),
    ("0 * * * *", "UTC", "2024-05-01T10:00:00+00:00", "2024-05-01T10:00:00+00:00", []),
    ("*/20 * * * *", "UTC", "2024-05-01T10:00:00+00:00", "2024-05-01T11:00:00+00:00", ["10:20", "10:40", "11:00"]),
    ("@every 45m", "UTC", "2024-05-01T10:00:00+00:00", "2024-05-01T12:00:00+00:00", ["10:30", "11:15", "12:00"]),
]


@pytest.mark.parametrize(("spec", "tz", "a", "b", "expected"), TICKS)
def test_ticks_between_is_half_open(spec: str, tz: str, a: str, b: str, expected: list[str]) -> None:
    ticks = list(parse_schedule(spec, tz).ticks_between(ts(a), ts(b)))
    assert [datetime.fromtimestamp(t, UTC).strftime("%H:%M") for t in ticks] == expected


# --- daylight-saving time ------------------------------------------------------------------------
# Europe/Berlin: 2024-03-31 02:00 CET -> 03:00 CEST (02:xx skipped); 2024-10-27 03:00 CEST -> 02:00 CET
# (02:xx twice). America/New_York: 2024-03-10 02:00 EST -> 03:00 EDT; 2024-11-03 02:00 EDT -> 01:00 EST.

DST = [
    # A daily job in the skipped hour runs once, when the clocks jump; the next day is normal again.
    (
        "30 2 * * *",
        "Europe/Berlin",
        "2024-03-30T12:00:00+01:00",
        ["2024-03-31T03:00:00+02:00", "2024-04-01T02:30:00+02:00"],
    ),
    # A daily job in the repeated hour runs once, at the first pass.
    (
        "30 2 * * *",
        "Europe/Berlin",
        "2024-10-26T12:00:00+02:00",
        ["2024-10-27T02:30:00+02:00", "2024-10-28T02:30:00+01:00"],
    ),
    (
        "30 2 * * *",
        "America/New_York",
        "2024-03-09T12:00:00-05:00",
        ["2024-03-10T03:00:00-04:00", "2024-03-11T02:30:00-04:00"],
    ),
    (
        "30 1 * * *",
        "America/New_York",
        "2024-11-02T12:00:00-04:00",
        ["2024-11-03T01:30:00-04:00", "2024-11-04T01:30:00-05:00"],
    ),
    # Several skipped times of one job fire once, and not again at the first real time after the jump.
    (
        "0,30 2,3 * * *",
        "Europe/Berlin",
        "2024-03-31T00:00:00+01:00",
        ["2024-03-31T03:00:00+02:00", "2024-03-31T03:30:00+02:00", "2024-04-01T02:00:00+02:00"],
    ),
    (
        "*/15 2 * * *",
        "America/New_York",
        "2024-03-10T00:00:00-05:00",
        ["2024-03-10T03:00:00-04:00", "2024-03-11T02:00:00-04:00"],
    ),
    (
        "*/15 1 * * *",
        "America/New_York",
        "2024-11-03T00:50:00-04:00",
        [
            "2024-11-03T01:00:00-04:00",
            "2024-11-03T01:15:00-04:00",
            "2024-11-03T01:30:00-04:00",
            "2024-11-03T01:45:00-04:00",
            "2024-11-04T01:00:00-05:00",
        ],
    ),
    # Hourly jobs follow real time: one fire per real hour, no duplicate and no two-hour gap.
    (
        "0 * * * *",
        "Europe/Berlin",
        "2024-03-31T00:30:00+01:00",
        ["2024-03-31T01:00:00+01:00", "2024-03-31T03:00:00+02:00", "2024-03-31T04:00:00+02:00"],
    ),
    (
        "0 * * * *",
        "Europe/Berlin",
        "2024-10-27T01:30:00+02:00",
        ["2024-10-27T02:00:00+02:00", "2024-10-27T02:00:00+01:00", "2024-10-27T03:00:00+01:00"],
    ),
    (
        "30 * * * *",
        "America/New_York",
        "2024-11-03T00:45:00-04:00",
        ["2024-11-03T01:30:00-04:00", "2024-11-03T01:30:00-05:00", "2024-11-03T02:30:00-05:00"],
    ),
    (
        "@hourly",
        "America/New_York",
        "2024-03-10T00:30:00-05:00",
        ["2024-03-10T01:00:00-05:00", "2024-03-10T03:00:00-04:00", "2024-03-10T04:00:00-04:00"],
    ),
    # Every two hours is not every hour: 02:00 in the gap runs when the clocks jump.
    (
        "0 */2 * * *",
        "Europe/Berlin",
        "2024-03-30T23:30:00+01:00",
        ["2024-03-31T00:00:00+01:00", "2024-03-31T03:00:00+02:00", "2024-03-31T04:00:00+02:00"],
    ),
    # Midnight transitions (America/Santiago 2024-09-08 00:00 -> 01:00): @daily still runs that day.
    (
        "@daily",
        "America/Santiago",
        "2024-09-07T12:00:00-04:00",
        ["2024-09-08T01:00:00-03:00", "2024-09-09T00:00:00-03:00"],
    ),
    # A 30-minute shift (Australia/Lord_Howe 2024-10-06 02:00 -> 02:30).
    (
        "15 2 * * *",
        "Australia/Lord_Howe",
        "2024-10-05T12:00:00+10:30",
        ["2024-10-06T02:30:00+11:00", "2024-10-07T02:15:00+11:00"],
    ),
    # A skipped day (Pacific/Apia jumped from 2011-12-29 24:00 -10:00 to 2011-12-31 00:00 +14:00).
    (
        "0 12 * * *",
        "Pacific/Apia",
        "2011-12-29T13:00:00-10:00",
        ["2011-12-31T00:00:00+14:00", "2011-12-31T12:00:00+14:00"],
    ),
    ("0 * * * *", "Pacific/Apia", "2011-12-29T23:30:00-10:00", ["2011-12-31T00:00:00+14:00"]),
]


@pytest.mark.parametrize(("spec", "tz", "start", "expected"), DST)
def test_dst_next_fires(spec: str, tz: str, start: str, expected: list[str]) -> None:
    schedule = parse_schedule(spec, tz)
    fires, t = [], ts(start)
    for _ in expected:
        t = schedule.next_after(t)
        fires.append(iso(t, tz))
    assert fires == [datetime.fromisoformat(e).isoformat() for e in expected]


@pytest.mark.parametrize(("spec", "tz", "start", "expected"), DST)
def test_dst_prev_and_ticks_agree_with_next(spec: str, tz: str, start: str, expected: list[str]) -> None:
    schedule = parse_schedule(spec, tz)
    fires = [ts(e) for e in expected]
    assert list(schedule.ticks_between(ts(start), fires[-1])) == fires
    for earlier, later in pairwise(fires):
        assert schedule.prev_at_or_before(later) == later
        assert schedule.prev_at_or_before(later - 1) == earlier
        assert schedule.prev_at_or_before((earlier + later) / 2) == earlier


DST_DAY_COUNTS = [
    ("0 * * * *", "Europe/Berlin", "2024-03-31", 23),
    ("0 * * * *", "Europe/Berlin", "2024-10-27", 25),
    ("0 * * * *", "America/New_York", "2024-03-10", 23),
    ("0 * * * *", "America/New_York", "2024-11-03", 25),
    ("30 2 * * *", "Europe/Berlin", "2024-03-31", 1),
    ("30 2 * * *", "Europe/Berlin", "2024-10-27", 1),
    ("30 1 * * *", "America/New_York", "2024-11-03", 1),
    ("30 2 * * *", "America/New_York", "2024-03-10", 1),
    ("*/30 2 * * *", "Europe/Berlin", "2024-10-27", 2),
    ("* * * * *", "Europe/Berlin", "2024-10-27", 25 * 60),
]


@pytest.mark.parametrize(("spec", "tz", "day", "count"), DST_DAY_COUNTS)
def test_dst_fires_per_local_day(spec: str, tz: str, day: str, count: int) -> None:
    zone = ZoneInfo(tz)
    midnight = datetime.fromisoformat(day).replace(tzinfo=zone)
    next_midnight = (midnight + timedelta(days=1)).replace(tzinfo=zone)
    ticks = list(parse_schedule(spec, tz).ticks_between(midnight.timestamp() - 1, next_midnight.timestamp() - 1))
    assert len(ticks) == count
    assert len(set(ticks)) == count
    if spec.startswith("0 * "):
        assert all(b - a == 3600 for a, b in pairwise(ticks))


# --- brute-force reference ------------------------------------------------------------------------


def _reference_fires(spec: str, tz: str, start: float, end: float) -> list[float]:
    """Fire instants in (start, end] from a minute-by-minute scan of real time, written independently.

    Every-hour specs fire at each instant whose wall-clock time matches. Other specs fire at the first
    occurrence of each matching wall-clock time, and at a spring-forward transition if a matching
    wall-clock time lies in the skipped range.
    """
    zone = ZoneInfo(tz)
    every_hour = croniter(spec).expanded[1] == ["*"]
    first_wall = datetime.fromtimestamp(start, UTC).replace(tzinfo=None) - timedelta(days=2)
    matching = set(croniter_range(first_wall, first_wall + timedelta(seconds=end - start, days=4), spec))
    fires = []
    minute = int(start // 60 + 1) * 60
    while minute <= end:
        local = datetime.fromtimestamp(minute, zone)
        wall = local.replace(tzinfo=None)
        fires_now = wall in matching and (every_hour or local.fold == 0)
        before = datetime.fromtimestamp(minute - 1, zone)
        jump = local.utcoffset() - before.utcoffset()  # type: ignore[operator]
        if not every_hour and jump > timedelta(0):
            skipped = before.replace(tzinfo=None) + timedelta(seconds=1)
            while skipped < wall:
                fires_now = fires_now or skipped in matching
                skipped += timedelta(minutes=1)
        if fires_now:
            fires.append(float(minute))
        minute += 60
    return fires


REFERENCE = [
    (spec, tz, window)
    for spec in (
        "30 2 * * *",
        "0 * * * *",
        "*/20 * * * *",
        "*/15 2 * * *",
        "0,30 2,3 * * *",
        "0 */2 * * *",
        "30 1 * * *",
    )
    for tz, window in (
        ("Europe/Berlin", "2024-03-30T20:00:00+00:00"),
        ("Europe/Berlin", "2024-10-26T20:00:00+00:00"),
        ("America/New_York", "2024-03-09T22:00:00-05:00"),
        ("America/New_York", "2024-11-02T22:00:00-04:00"),
        ("Australia/Lord_Howe", "2024-04-06T20:00:00+11:00"),
        ("Australia/Lord_Howe", "2024-10-05T20:00:00+10:30"),
    )
]


@pytest.mark.parametrize(("spec", "tz", "window"), REFERENCE)
def test_matches_brute_force_reference(spec: str, tz: str, window: str) -> None:
    schedule = parse_schedule(spec, tz)
    start = ts(window)
    end = start + 12 * 3600
    expected = _reference_fires(spec, tz, start - 86400, end + 86400)
    assert list(schedule.ticks_between(start, end)) == [f for f in expected if start < f <= end]
    for probe in range(int(start), int(end), 7 * 60 + 13):
        after = [f for f in expected if f > probe]
        at_or_before = [f for f in expected if f <= probe]
        assert schedule.next_after(probe) == after[0], iso(probe, tz)
        assert schedule.prev_at_or_before(probe) == at_or_before[-1], iso(probe, tz)


# --- invalid specs -------------------------------------------------------------------------------

INVALID = [
    ("", "UTC", "the spec is empty"),
    ("   ", "UTC", "the spec is empty"),
    ("* * * *", "UTC", "expected 5 fields (minute hour day-of-month month day-of-week), got 4"),
    ("* * * * * *", "UTC", "expected 5 fields"),
    ("0 0 1 1 * 2030", "UTC", "got 6"),
    ("60 * * * *", "UTC", "minute field '60' is invalid (allowed: 0-59"),
    ("* 24 * * *", "UTC", "hour field '24' is invalid (allowed: 0-23"),
    ("* * 0 * *", "UTC", "day-of-month field '0' is invalid"),
    ("* * 32 * *", "UTC", "day-of-month field '32' is invalid"),
    ("* * * 13 *", "UTC", "month field '13' is invalid (allowed: 1-12 or jan-dec"),
    ("* * * * 8", "UTC", "day-of-week field '8' is invalid (allowed: 0-7 or sun-sat"),
    ("* * * * funday", "UTC", "day-of-week field 'funday' is invalid"),
    ("*/0 * * * *", "UTC", "minute field '*/0' is invalid"),
    ("-1 * * * *", "UTC", "minute field '-1' is invalid"),
    ("1,,2 * * * *", "UTC", "minute field '1,,2' is invalid"),
    ("H * * * *", "UTC", "minute field 'H': hashed (H) and random (R) values are not supported"),
    ("0 R * * *", "UTC", "hour field 'R': hashed (H) and random (R)"),
    ("0 0 30 2 *", "UTC", "never match a real date"),
    ("0 0 31 4,6 *", "UTC", "never match a real date"),
    ("@fortnightly", "UTC", "unknown macro '@fortnightly' (expected one of @yearly, @annually"),
    ("@reboot", "UTC", "unknown macro '@reboot'"),
    ("@daily 3", "UTC", "@daily takes no arguments"),
    ("@every", "UTC", "@every takes exactly one Go duration"),
    ("@every 1h 30m", "UTC", "@every takes exactly one Go duration"),
    ("@every 1x", "UTC", "invalid duration '1x': unknown unit 'x'"),
    ("@every 90", "UTC", "invalid duration '90': missing unit"),
    ("@every abc", "UTC", "invalid duration 'abc'"),
    ("@every 500ms", "UTC", "@every interval '500ms' must be at least 1s"),
    ("@every 0s", "UTC", "@every interval '0s' must be at least 1s"),
    ("@every 0", "UTC", "@every interval '0' must be at least 1s"),
    ("@every -5m", "UTC", "@every interval '-5m' must be at least 1s"),
    ("@daily", "Mars/Olympus_Mons", "unknown time zone 'Mars/Olympus_Mons'"),
    ("@every 1h", "Europe/Berln", "unknown time zone 'Europe/Berln'"),
    ("0 * * * *", "", "unknown time zone ''"),
    ("0 * * * *", "../etc/passwd", "unknown time zone '../etc/passwd'"),
]


@pytest.mark.parametrize(("spec", "tz", "message"), INVALID)
def test_invalid_specs_are_rejected_with_a_clear_message(spec: str, tz: str, message: str) -> None:
    with pytest.raises(CronSpecError) as info:
        parse_schedule(spec, tz)
    text = str(info.value)
    assert text.startswith(f"invalid schedule {spec.strip()!r}: ")
    assert message in text
    assert info.value.spec == spec.strip()
    assert info.value.reason in text


def test_cron_spec_error_is_a_value_error_in_the_framework_hierarchy() -> None:
    error = CronSpecError("@nope", "unknown macro")
    assert isinstance(error, ValueError)
    assert isinstance(error, FrameworkError)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.spec, copy.reason, str(copy)) == ("@nope", "unknown macro", str(error))


# --- parse_duration ------------------------------------------------------------------------------

DURATIONS = [
    ("0", 0.0),
    ("-0", 0.0),
    ("45s", 45.0),
    ("1m30s", 90.0),
    ("1h30m", 5400.0),
    ("1.5h", 5400.0),
    ("2h45m30.5s", 9930.5),
    (".5s", 0.5),
    ("1.s", 1.0),
    ("+2h", 7200.0),
    ("-1.5h", -5400.0),
    ("500ms", 0.5),
    ("1500us", 0.0015),
    ("1500µs", 0.0015),
    ("1500μs", 0.0015),
    ("250ns", 2.5e-7),
    ("1h1h", 7200.0),
    ("2562047h", 2562047 * 3600.0),
]


@pytest.mark.parametrize(("text", "seconds"), DURATIONS)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


BAD_DURATIONS = [
    ("", "invalid duration '': empty"),
    ("-", "invalid duration '-': empty"),
    ("1", "invalid duration '1': missing unit (one of ns, us, µs, μs, ms, s, m, h)"),
    ("1h30", "invalid duration '1h30': missing unit"),
    ("10x", "invalid duration '10x': unknown unit 'x'"),
    ("1H", "invalid duration '1H': unknown unit 'H'"),
    ("1d", "invalid duration '1d': unknown unit 'd'"),
    ("1h 30m", "invalid duration '1h 30m': unknown unit 'h '"),
    (".s", "invalid duration '.s': expected a number at '.s'"),
    ("s", "invalid duration 's': expected a number at 's'"),
    ("--1s", "invalid duration '--1s': expected a number at '-1s'"),
    ("2562048h", "invalid duration '2562048h': longer than Go's maximum"),
]


@pytest.mark.parametrize(("text", "message"), BAD_DURATIONS)
def test_parse_duration_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=r"^invalid duration") as info:
        parse_duration(text)
    assert message in str(info.value)
