"""Limits: what a task type declares, and what applies to one task.

A :class:`Limit` caps a task type (or several, sharing a ``name``) across every worker and host:

* ``rate="100/s"`` (also ``/ms``, ``/min``, ``/h``, ``/d``) with ``burst`` tasks at once after a quiet spell
  (default 1: evenly spaced). Kept as GCRA: one timestamp per limit (and key).
* ``concurrency=5``: at most that many of its tasks run at once.
* ``key=lambda payload: payload.customer_id``: the limit applies per key instead (each key its own count),
  with ``overrides={"acme": Limit(rate="500/s")}`` for keys that get more (or less).

Settings may set or change a limit by its name (``[limits.<name>]``: ``rate``, ``burst``, ``concurrency``,
``overrides``), so operators tune limits without a deploy; :func:`applied_limits` merges them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from framework.errors import ConfigError

__all__ = ("Applied", "Limit", "Rate", "applied_limits", "parse_rate")

_UNITS = {"ms": 0.001, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hour": 3600.0, "d": 86400.0}
_RATE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*/\s*(\d*(?:\.\d+)?)\s*([a-z]+)\s*")
_NAME = re.compile(r"[A-Za-z0-9_.:-]+")
_SLOWEST = 1000 * 365 * 86400.0
"""The longest interval between two tasks a rate may give, in seconds (1,000 years): well short of the rates whose
timestamp's expiry is more than Redis takes, which would fail every task of the limit."""


@dataclass(frozen=True, slots=True)
class Rate:
    """A rate: ``count`` tasks per ``seconds``.

    Attributes:
        count: tasks allowed per period.
        seconds: the period.

    Raises:
        ConfigError: either is not a finite number above zero, or the interval is over 1,000 years.
    """

    count: float
    seconds: float

    def __post_init__(self) -> None:
        try:
            valid = all(math.isfinite(v) and v > 0 for v in (self.count, self.seconds))
            valid = valid and self.seconds / self.count <= _SLOWEST
        except TypeError:
            valid = False
        if not valid:
            raise ConfigError(
                f"{self!r}: the count and the period must be finite numbers above zero, at most 1,000 years between "
                "two tasks"
            )

    @property
    def interval_ms(self) -> float:
        """Milliseconds between two tasks at this rate."""
        return 1000.0 * self.seconds / self.count

    def __str__(self) -> str:
        for unit in ("s", "min", "h", "d", "ms"):
            if math.isclose(self.seconds, _UNITS[unit]):
                return f"{self.count:g}/{unit}"
        return f"{self.count:g}/{self.seconds:g}s"


def parse_rate(text: str | Rate) -> Rate:
    """``"100/s"``, ``"1000/min"``, ``"5/10s"``, ``"2.5/h"`` -> :class:`Rate`.

    Raises:
        ConfigError: the text is not a rate (the message shows the accepted forms).
    """
    if isinstance(text, Rate):
        return text
    found = _RATE.fullmatch(str(text).lower())
    unit = _UNITS.get(found.group(3)) if found else None
    if not found or unit is None:
        raise ConfigError(f"rate {text!r}: write it as <count>/<unit>, e.g. '100/s', '1000/min', '5/10s', '2/h'")
    count = float(found.group(1))
    per = float(found.group(2)) if found.group(2) else 1.0
    if count <= 0 or per <= 0:
        raise ConfigError(f"rate {text!r}: the count and the period must be above zero")
    if per * unit / count > _SLOWEST:
        raise ConfigError(f"rate {text!r}: at most 1,000 years between two tasks")
    return Rate(count, per * unit)


@dataclass(frozen=True, slots=True, eq=False)
class Limit:
    """A limit on a task type's tasks, shared by every worker; see the module docstring.

    Args:
        rate: the most tasks started per period (``"100/s"``), or None.
        burst: tasks that may start at once after a quiet spell (default 1: evenly spaced at the rate).
        concurrency: the most tasks running at once, or None.
        key: computes the key the limit applies to from the payload (each key counts alone), or None.
        overrides: per key, a :class:`Limit` whose rate, burst and concurrency replace these for that key.
        name: shared by task types that count against one limit (default: the task type).
    """

    rate: str | Rate | None = None
    burst: int | None = None
    concurrency: int | None = None
    key: Callable[[Any], Any] | None = None
    overrides: Mapping[str, Limit] = field(default_factory=dict)
    name: str | None = None

    def __post_init__(self) -> None:
        if self.rate is None and self.concurrency is None:
            raise ConfigError("a Limit needs a rate, a concurrency, or both")
        if self.rate is not None:
            object.__setattr__(self, "rate", parse_rate(self.rate))
        if self.burst is not None and (not isinstance(self.burst, int) or self.burst < 1):
            raise ConfigError(f"Limit burst must be a whole number of at least 1, got {self.burst!r}")
        if self.concurrency is not None and (not isinstance(self.concurrency, int) or self.concurrency < 1):
            raise ConfigError(f"Limit concurrency must be a whole number of at least 1, got {self.concurrency!r}")
        if self.name is not None and not _NAME.fullmatch(self.name):
            raise ConfigError(f"Limit name {self.name!r}: use letters, digits and . _ : -")


@dataclass(frozen=True, slots=True)
class Applied:
    """One limit as it applies to one task: the counter it takes from and its values.

    Attributes:
        name: the limit's name.
        key: the key within it ("" = the limit as a whole).
        rate: the rate, or None.
        burst: the burst (at least 1).
        concurrency: the most running at once (0 = no such cap).
    """

    name: str
    key: str
    rate: Rate | None
    burst: int
    concurrency: int


_Values = tuple[Rate | None, int, int]
"""(rate, burst, concurrency) as they stand while declarations and settings are applied in turn."""


def _declared(limit: Limit) -> _Values:
    rate = limit.rate if isinstance(limit.rate, Rate) or limit.rate is None else parse_rate(limit.rate)
    return rate, limit.burst or 1, limit.concurrency or 0


def _replaced(values: _Values, over: Mapping[str, Any] | Limit | None) -> _Values:
    """``values`` with what ``over`` (a settings table or an override Limit) gives in place of theirs."""
    if over is None:
        return values
    if isinstance(over, Limit):
        over = {"rate": over.rate, "burst": over.burst, "concurrency": over.concurrency}
    rate, burst, concurrency = values
    if over.get("rate") is not None:
        rate = parse_rate(over["rate"])
    if over.get("burst") is not None:
        burst = int(over["burst"])
    if over.get("concurrency") is not None:
        concurrency = int(over["concurrency"])
    return rate, burst, concurrency


_SETTING_KEYS = {"rate", "burst", "concurrency", "overrides"}


def check_setting(name: str, table: Mapping[str, Any]) -> None:
    """Check one ``[limits.<name>]`` table (and its ``overrides``); raise ConfigError naming what is wrong."""
    where = f"setting limits.{name}"
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where} must be a table (rate, burst, concurrency, overrides)")
    unknown = set(table) - _SETTING_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_SETTING_KEYS)}")
    tables = [(where, table)] + [(f"{where}.overrides.{k}", v) for k, v in dict(table.get("overrides") or {}).items()]
    for label, values in tables:
        if not isinstance(values, Mapping):
            raise ConfigError(f"{label} must be a table (rate, burst, concurrency)")
        try:
            if values.get("rate") is not None:
                parse_rate(values["rate"])
        except ConfigError as exc:
            raise ConfigError(f"{label}: {exc}") from exc
        for key in ("burst", "concurrency"):
            value = values.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ConfigError(f"{label}.{key}={value!r} is invalid: must be a whole number >= 1")


def applied_limits(
    limits: Sequence[Limit], task_type: str, payload: Any, settings: Mapping[str, Mapping[str, Any]] | None = None
) -> list[Applied]:
    """The limits that apply to a task of ``task_type`` with ``payload``.

    Args:
        limits: the task type's limits.
        task_type: its type (the default limit name).
        payload: the decoded payload (for a keyed limit).
        settings: ``[limits.<name>]`` tables: ``rate``, ``burst``, ``concurrency`` and ``overrides`` (key ->
            the same three), which replace the code's values.

    Raises:
        ConfigError: a setting is not a valid rate or count.
    """
    out = []
    for limit in limits:
        name = limit.name or task_type
        table = (settings or {}).get(name)
        values = _replaced(_declared(limit), table)
        key = ""
        if limit.key is not None:
            key = str(limit.key(payload))
            values = _replaced(values, limit.overrides.get(key))
            values = _replaced(values, (table or {}).get("overrides", {}).get(key))
        rate, burst, concurrency = values
        out.append(Applied(name, key, rate, max(1, burst), concurrency))
    return out
