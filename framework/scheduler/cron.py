"""Cron-expression parsing and next-fire computation. Pure; no I/O.

A schedule is a spec plus an IANA time zone (default ``UTC``). Three kinds of spec are accepted:

- five cron fields, ``minute hour day-of-month month day-of-week``, parsed by croniter (names such as
  ``jan``/``mon``, ``?``, and croniter's deterministic ``L``, ``W`` and ``#`` extensions are allowed;
  its hashed ``H`` and random ``R`` forms are not, because every replica must compute the same ticks);
- the macros ``@yearly``/``@annually``, ``@monthly``, ``@weekly``, ``@daily``/``@midnight``, ``@hourly``;
- ``@every <duration>`` with a Go duration of at least one second (``30s``, ``1m30s``, ``1.5h``).

The time zone is an IANA name such as ``Europe/Berlin``, given beside the spec (a robfig/cron ``CRON_TZ=`` or
``TZ=`` prefix in the spec is refused, saying so). ``localtime`` and ``posixrules``, which some systems
install beside the zones as links to the host's own choice, are refused: replicas on hosts set to different
zones would compute different ticks for the same entry. So are the ``right/`` zones some systems install:
they count leap seconds, which Unix time does not, so their clock changes come seconds late.

``@every`` ticks are aligned to the Unix epoch: the ticks are the integer multiples of the interval,
so every scheduler replica computes the same tick times whenever it started. This deliberately
differs from Go's robfig/cron, which counts from scheduler start; exactly-once firing across
replicas relies on it. The time zone plays no part in ``@every``.

Cron fields are matched against local wall-clock time. croniter enumerates the matching wall-clock
times; this module maps each one to real instants, because croniter's own time-zone handling fires
fixed-time jobs twice when clocks fall back. The rule follows Vixie cron and croniter's own test for
"wildcard" jobs:

- A spec whose hour field covers every hour (``*``, ``*/1``, ``0-23``, ``@hourly``) follows real time.
  In the repeated hour it fires in both passes; matches in the skipped hour do not exist. So an hourly
  job fires once per real hour across both transitions.
- Any other spec names specific local hours, and each matching wall-clock time fires exactly once.
  A repeated time fires at its first occurrence only. A skipped time fires at the moment the clocks
  jump (a 02:30 job in Europe/Berlin runs at 03:00 CEST on the spring-forward day); several skipped
  times, or a skipped time and the first time after the jump, fire only once.

This deliberately differs from Go's robfig/cron (asynq's), which skips a fixed-time job whose time the
clocks jump over that day and runs one whose time repeats twice.

Zone rules come from the host's zone files, or the ``tzdata`` package where there are none: replicas whose
versions disagree about a zone's clock changes compute different ticks for it, so give them the same one.

croniter is imported by the functions that use it, not with this module: :func:`parse_duration` needs
none of it, and a plugin's settings module that calls it is imported by ``framework --help``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import pairwise
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from framework.errors import FrameworkError

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ("CronSpecError", "Schedule", "parse_duration", "parse_schedule")

_NS_PER_S = 1_000_000_000
_MAX_DURATION_NS = (1 << 63) - 1
_UNITS_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": _NS_PER_S}
_UNITS_NS |= {"m": 60 * _NS_PER_S, "h": 3600 * _NS_PER_S}
_COMPONENT = re.compile(r"([0-9]*)(?:\.([0-9]*))?([^0-9.]*)")
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_FIELDS = (
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31, L, nW"),
    ("month", "1-12 or jan-dec"),
    ("day-of-week", "0-7 or sun-sat, dow#n, Ln"),
)
_HASHED = re.compile(r"[hr](\(\d+-\d+\))?(/\d+)?", re.IGNORECASE)
_EPOCH = datetime(1970, 1, 1)
_SECOND = timedelta(seconds=1)
_PROBES = tuple(6 * 3600 * k for k in range(-8, 9))
_HOST_ZONES = frozenset({"localtime", "posixrules"})
"""Files of the zoneinfo directory that link to a zone chosen per host, so replicas would disagree on the ticks."""
_GO_TZ_PREFIX = re.compile(r"(CRON_TZ|TZ)=", re.IGNORECASE)


class CronSpecError(FrameworkError, ValueError):
    """A schedule spec or its time zone is invalid.

    Args:
        spec: the spec as given.
        reason: what is wrong with it.
    """

    def __init__(self, spec: str, reason: str) -> None:
        super().__init__(spec, reason)
        self.spec = spec
        self.reason = reason

    def __str__(self) -> str:
        return f"invalid schedule {self.spec!r}: {self.reason}"


def parse_duration(text: str) -> float:
    """Parse a Go ``time.ParseDuration`` string into seconds.

    A duration is an optional sign and a sequence of decimal numbers, each with an optional fraction
    and a unit (``ns``, ``us``/``µs``, ``ms``, ``s``, ``m``, ``h``), such as ``300ms``, ``-1.5h`` or
    ``2h45m``. ``"0"`` is the only number allowed without a unit.

    Args:
        text: the duration text.

    Returns:
        The duration in seconds (nanosecond precision, like Go).

    Raises:
        ValueError: the text is not a valid Go duration; the message says why.
    """
    return _duration_ns(text) / _NS_PER_S


def parse_schedule(spec: str, tz: str = "UTC") -> Schedule:
    """Validate a spec and time zone and return their :class:`Schedule`.

    Args:
        spec: five cron fields, a macro such as ``@daily``, or ``@every <duration>``.
        tz: an IANA time zone name in which the cron fields are read.

    Returns:
        The schedule; its ``spec`` has surrounding whitespace removed.

    Raises:
        CronSpecError: the spec or the time zone is invalid.
    """
    return Schedule(spec.strip(), tz)


@dataclass(frozen=True, slots=True)
class Schedule:
    """When a cron entry fires. Built by :func:`parse_schedule`; constructing it directly validates too.

    Attributes:
        spec: the cron spec, macro or ``@every <duration>`` (set by the user).
        tz: the IANA time zone the cron fields are read in (set by the user; default ``UTC``).
    """

    spec: str
    tz: str = "UTC"
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)
    _expr: str = field(init=False, repr=False, compare=False)
    _interval_ns: int = field(init=False, repr=False, compare=False)
    _every_hour: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts = self.spec.split()
        if not parts:
            raise CronSpecError(self.spec, "the spec is empty")
        expr, interval_ns = parts, 0
        if parts[0].startswith("@"):
            expr, interval_ns = _macro(self.spec, parts)
        if interval_ns:
            object.__setattr__(self, "_expr", "")
            object.__setattr__(self, "_every_hour", False)
        else:
            every_hour = _check_fields(self.spec, expr)
            object.__setattr__(self, "_expr", " ".join(expr))
            object.__setattr__(self, "_every_hour", every_hour)
        object.__setattr__(self, "_interval_ns", interval_ns)
        object.__setattr__(self, "_zone", _zone(self.spec, self.tz))

    @property
    def is_interval(self) -> bool:
        """Whether this is an ``@every`` schedule (epoch-aligned, time-zone independent)."""
        return self._interval_ns > 0

    def next_after(self, t: float) -> float:
        """Return the first fire time strictly after ``t``.

        Args:
            t: a Unix timestamp in seconds.

        Returns:
            A Unix timestamp; integral for cron specs.
        """
        if self._interval_ns:
            n = _floor_div(t, self._interval_ns) + 1
            while (tick := n * self._interval_ns / _NS_PER_S) <= t:
                n += 1
            return tick
        return self._cron_next(t)

    def prev_at_or_before(self, t: float) -> float | None:
        """Return the most recent fire time at or before ``t``, or ``None`` if there is none.

        Args:
            t: a Unix timestamp in seconds.

        Returns:
            A Unix timestamp, or ``None`` when the schedule never fired before ``t``.
        """
        if self._interval_ns:
            n = _floor_div(t, self._interval_ns) + 1  # that tick may round down to ``t``
            while (tick := n * self._interval_ns / _NS_PER_S) > t:
                n -= 1
            return tick
        return self._cron_prev(t)

    def ticks_between(self, a: float, b: float) -> Iterator[float]:
        """Yield the fire times in the half-open interval ``(a, b]``, in order.

        Args:
            a: exclusive lower bound, a Unix timestamp.
            b: inclusive upper bound, a Unix timestamp.

        Yields:
            Unix timestamps.
        """
        tick = self.next_after(a)
        while tick <= b:
            yield tick
            tick = self.next_after(tick)

    def _cron_next(self, t: float) -> float:
        start = _wall(t, self._zone) - _shift(t, self._zone) - _SECOND
        from croniter import CroniterBadDateError, croniter  # noqa: PLC0415 - croniter loads with the first schedule

        matches = croniter(self._expr, start)
        best: float | None = None
        limit: datetime | None = None
        while True:
            try:
                wall: datetime = matches.get_next(datetime)
            except CroniterBadDateError:
                if best is None:
                    raise CronSpecError(self.spec, f"no fire time after {t}") from None
                return best
            if best is not None and limit is not None and wall > limit:
                return best
            for tick in _instants(wall, self._zone, self._every_hour):
                if tick > t and (best is None or tick < best):
                    best, limit = tick, wall + _shift(tick, self._zone)

    def _cron_prev(self, t: float) -> float | None:
        start = _wall(t, self._zone) + _shift(t, self._zone) + _SECOND
        from croniter import CroniterBadDateError, croniter  # noqa: PLC0415 - croniter loads with the first schedule

        matches = croniter(self._expr, start)
        best: float | None = None
        limit: datetime | None = None
        while True:
            try:
                wall: datetime = matches.get_prev(datetime)
            except CroniterBadDateError:
                return best
            if best is not None and limit is not None and wall < limit:
                return best
            for tick in _instants(wall, self._zone, self._every_hour):
                if tick <= t and (best is None or tick > best):
                    best, limit = tick, wall - _shift(tick, self._zone)


def _zone(spec: str, tz: str) -> ZoneInfo:
    if isinstance(tz, str) and tz.rpartition("/")[2] in _HOST_ZONES:
        raise CronSpecError(spec, f"time zone {tz!r} is whichever zone each host is set to; name the zone itself")
    if isinstance(tz, str) and tz.startswith("right/"):
        raise CronSpecError(spec, f"time zone {tz!r} counts leap seconds, which Unix time does not; use {tz[6:]!r}")
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError, OSError):  # OSError: a folder of zones, an overlong name
        raise CronSpecError(spec, f"unknown time zone {tz!r}") from None


def _macro(spec: str, parts: list[str]) -> tuple[list[str], int]:
    """Resolve a ``@`` spec to cron fields, or to an interval in nanoseconds for ``@every``."""
    name = parts[0].lower()
    if name == "@every":
        if len(parts) != 2:
            raise CronSpecError(spec, "@every takes exactly one Go duration, for example '@every 1h30m'")
        try:
            interval_ns = _duration_ns(parts[1])
        except ValueError as exc:
            raise CronSpecError(spec, str(exc)) from None
        if interval_ns < _NS_PER_S:
            raise CronSpecError(spec, f"@every interval {parts[1]!r} must be at least 1s")
        return [], interval_ns
    if name not in _MACROS:
        known = ", ".join([*_MACROS, "@every <duration>"])
        raise CronSpecError(spec, f"unknown macro {parts[0]!r} (expected one of {known})")
    if len(parts) != 1:
        raise CronSpecError(spec, f"{parts[0]} takes no arguments")
    return _MACROS[name].split(), 0


def _check_fields(spec: str, fields: list[str]) -> bool:
    """Validate five cron fields; return whether the hour field covers every hour."""
    if prefix := _GO_TZ_PREFIX.match(fields[0]):
        raise CronSpecError(spec, f"give the time zone as the entry's tz, not a {prefix.group()!r} prefix")
    if len(fields) != len(_FIELDS):
        names = " ".join(name for name, _ in _FIELDS)
        raise CronSpecError(spec, f"expected 5 fields ({names}), got {len(fields)}")
    for (name, _), value in zip(_FIELDS, fields, strict=True):
        if any(_HASHED.fullmatch(part) for part in value.split(",")):
            raise CronSpecError(spec, f"{name} field {value!r}: hashed (H) and random (R) values are not supported")
    expr = " ".join(fields)
    from croniter import CroniterBadCronError, CroniterBadDateError, croniter  # noqa: PLC0415 - croniter loads with the first schedule

    try:
        matches = croniter(expr, _EPOCH)
    except CroniterBadCronError as exc:
        raise CronSpecError(spec, _field_problem(fields) or str(exc)) from None
    try:
        matches.get_next(datetime, start_time=datetime(2000, 1, 1))
    except CroniterBadDateError:
        raise CronSpecError(spec, "the day-of-month, month and day-of-week fields never match a real date") from None
    return bool(matches.expanded[1] == ["*"])


def _field_problem(fields: list[str]) -> str | None:
    """Name the first field that croniter rejects on its own, with what that field allows."""
    from croniter import CroniterBadCronError, croniter  # noqa: PLC0415 - croniter loads with the first schedule

    for index, ((name, allowed), value) in enumerate(zip(_FIELDS, fields, strict=True)):
        alone = " ".join(value if i == index else "*" for i in range(len(_FIELDS)))
        try:
            croniter(alone, _EPOCH)
        except CroniterBadCronError:
            return f"{name} field {value!r} is invalid (allowed: {allowed}, with * , - /)"
    return None


def _duration_ns(text: str) -> int:
    """Parse a Go duration into integer nanoseconds, as ``time.ParseDuration`` does."""
    body = text[1:] if text[:1] in ("+", "-") else text
    if body == "0":
        return 0
    if not body:
        raise ValueError(f"invalid duration {text!r}: empty")
    total, pos = 0, 0
    while pos < len(body):
        match = _COMPONENT.match(body, pos)
        assert match is not None  # every part of the pattern is optional
        whole, frac, unit = match.groups()
        if not whole and not frac:
            raise ValueError(f"invalid duration {text!r}: expected a number at {body[pos:]!r}")
        if not unit:
            raise ValueError(f"invalid duration {text!r}: missing unit (one of {', '.join(_UNITS_NS)})")
        if unit not in _UNITS_NS:
            raise ValueError(f"invalid duration {text!r}: unknown unit {unit!r} (one of {', '.join(_UNITS_NS)})")
        scale = _UNITS_NS[unit]
        total += int(whole or 0) * scale + int(frac or 0) * scale // 10 ** len(frac or "")
        if total > _MAX_DURATION_NS:
            raise ValueError(f"invalid duration {text!r}: longer than Go's maximum of about 292 years")
        pos = match.end()
    return -total if text.startswith("-") else total


def _floor_div(t: float, interval_ns: int) -> int:
    """Return ``floor(t / interval)`` computed exactly, with ``t`` in seconds."""
    numerator, denominator = t.as_integer_ratio()
    return (numerator * _NS_PER_S) // (denominator * interval_ns)


def _wall(t: float, zone: ZoneInfo) -> datetime:
    """The naive local wall-clock time of instant ``t``."""
    return datetime.fromtimestamp(t, zone).replace(tzinfo=None)


def _offset(t: float, zone: ZoneInfo) -> timedelta:
    offset = datetime.fromtimestamp(t, zone).utcoffset()
    assert offset is not None
    return offset


def _shift(t: float, zone: ZoneInfo) -> timedelta:
    """How far wall-clock order and instant order can disagree around ``t``; zero away from transitions.

    Within this distance of a transition a later wall-clock time can fire earlier, so the searches
    look this far beyond their first candidate. It is the total movement of the UTC offset within
    two days of ``t``, or zero when no transition is within twice that movement of ``t``.
    """
    offsets = [_offset(t + probe, zone) for probe in _PROBES]
    moved = sum((abs(b - a) for a, b in pairwise(offsets)), timedelta())
    reach = 2 * moved.total_seconds() + 60
    if len({_offset(t + reach * k / 4, zone) for k in range(-4, 5)}) == 1:
        return timedelta()
    return moved


def _instants(wall: datetime, zone: ZoneInfo, every_hour: bool) -> tuple[float, ...]:
    """The fire instants of a matching wall-clock time, applying the DST rule in the module docstring."""
    local = (wall - _EPOCH) // _SECOND
    first = wall.replace(tzinfo=zone).utcoffset()
    second = wall.replace(tzinfo=zone, fold=1).utcoffset()
    assert first is not None
    assert second is not None
    early, late = local - first // _SECOND, local - second // _SECOND
    if first == second:
        return (float(early),)
    if first > second:  # repeated when clocks fall back: `early` is the first pass
        return (float(early), float(late)) if every_hour else (float(early),)
    if every_hour:  # skipped when clocks spring forward
        return ()
    return (float(_transition(late, early, zone)),)


def _transition(lo: int, hi: int, zone: ZoneInfo) -> int:
    """The first second in ``(lo, hi]`` whose UTC offset differs from the offset at ``lo``."""
    before = _offset(lo, zone)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _offset(mid, zone) == before:
            lo = mid
        else:
            hi = mid
    return hi
