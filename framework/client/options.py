"""Enqueue options: the ones a call gives, checked and merged into one frozen value.

A call names its options as :class:`~framework.task.EnqueueOptions` lists them; :func:`resolve_options`
validates them and merges them into :class:`ResolvedOptions`. Precedence: the call site, then the task
type's defaults, then the queue's defaults in settings, then asynq's defaults (25 retries, 30 minute timeout).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec

from framework.errors import InvalidOption
from framework.protocol.keys import cluster_slot_problem
from framework.settings import MAX_PAYLOAD_SIZE
from framework.task import EnqueueOptions

if TYPE_CHECKING:
    from framework.settings import Settings
    from framework.task import TaskDef

__all__ = ("DEFAULT_MAX_RETRY", "DEFAULT_TIMEOUT", "ResolvedOptions", "refusal", "resolve_options")

DEFAULT_MAX_RETRY = 25
DEFAULT_TIMEOUT = 1800
_MAX_INT32 = 2**31 - 1  # TaskMessage.retry is an int32
_MAX_SECONDS = 2**62  # far beyond any real time, well inside TaskMessage's int64 fields
_LAST_INSTANT = 253_402_300_799
"""9999-12-31T23:59:59Z: the last moment a task may be scheduled at, be due by or be locked until. Later ones
cannot be shown as dates (Python's datetime ends there), and a lock much later than that is refused by Redis."""
_LONGEST = (2**63 - 1) // 10**9
"""The longest timeout or retention stored, in seconds (about 292 years): the longest ``time.Duration`` of Go.

asynq turns both into a ``time.Duration`` (``seconds * time.Second``), which a longer one overflows: a Go
worker then gives the task a deadline in the past (it fails at once, on every try), and asynq's tools show a
wrong timeout or retention. A retention long enough also makes the completed set's score, ``now + retention``,
one Redis writes in exponent notation, which asynq's inspector cannot parse."""

_Seconds = float | int | timedelta
_Instant = float | int | datetime

_ALLOWED = EnqueueOptions.__optional_keys__
"""The option names a call may give; a caller without a type checker learns of a misspelt one at run time."""


class ResolvedOptions(msgspec.Struct, frozen=True, kw_only=True):
    """Resolved options of one enqueue. Built by :func:`resolve_options`; read by the client and the scheduler.

    Attributes:
        queue: queue name.
        max_retry: retries before archiving.
        timeout: whole seconds the handler may run (0 = only the deadline applies; at most :data:`_LONGEST`).
        deadline: Unix seconds by which the task must finish (0 = none).
        process_at: Unix seconds when the task becomes ready (None = now).
        unique_ttl: whole seconds of the uniqueness lock (0 = not unique).
        retention: whole seconds to keep the completed task (0 = delete on success; at most :data:`_LONGEST`).
        task_id: the task id (None = a new UUID4).
        headers: string headers carried with the task.
        group: aggregation group (empty = none).
    """

    queue: str
    max_retry: int
    timeout: int
    deadline: int
    process_at: int | None
    unique_ttl: int
    retention: int
    task_id: str | None
    headers: dict[str, str]
    group: str


def _seconds(name: str, value: _Seconds | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidOption(f"option {name}={value!r} is invalid: expected seconds (a finite number or timedelta)")
    if value < 0:
        raise InvalidOption(f"option {name}={value!r} is invalid: must not be negative")
    if value > _MAX_SECONDS:
        raise InvalidOption(f"option {name}={value!r} is invalid: must be at most {_MAX_SECONDS} seconds")
    return float(value)


def _instant(name: str, value: _Instant | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise InvalidOption(f"option {name}={value!r} is invalid: use a timezone-aware datetime")
        return value.timestamp()
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidOption(f"option {name}={value!r} is invalid: expected a datetime or Unix seconds")
    if abs(value) > _MAX_SECONDS:
        raise InvalidOption(f"option {name}={value!r} is invalid: not a usable Unix time")
    return float(value)


def _whole(name: str, value: float | None) -> int | None:
    """Round up to whole seconds, the unit asynq stores (a 0.5 s timeout must not become 0)."""
    if value is None:
        return None
    return math.ceil(value)


def _duration(name: str, value: float | None) -> int | None:
    """:func:`_whole`, at most :data:`_LONGEST` (a longer timeout or retention would mean the same: for ever)."""
    whole = _whole(name, value)
    return None if whole is None else min(whole, _LONGEST)


def _pick(call: Any, *fallbacks: Any) -> Any:
    if call is not None:
        return call
    for value in fallbacks:
        if value is not None:
            return value
    return None


def _queue(task: TaskDef[Any] | None, options: Mapping[str, Any]) -> str:
    queue = options.get("queue")
    if queue is None:
        queue = task.queue if task else "default"
    if not isinstance(queue, str) or not queue.strip():
        raise InvalidOption(f"option queue={queue!r} is invalid: a queue name must be a non-blank string")
    return _encodable("queue", queue)


def _encodable(name: str, value: str) -> str:
    """``value``, which Redis keys and the task message carry as UTF-8: a lone surrogate is refused, naming it."""
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError as exc:
            raise InvalidOption(f"option {name}={value!r} is invalid: it is not valid text ({exc})") from exc
    return value


def _max_retry(value: Any) -> int:
    max_retry = DEFAULT_MAX_RETRY if value is None else value
    if isinstance(max_retry, bool) or not isinstance(max_retry, int) or not 0 <= max_retry <= _MAX_INT32:
        raise InvalidOption(f"option max_retry={max_retry!r} is invalid: must be an integer from 0 to {_MAX_INT32}")
    return max_retry


def _timeout_deadline(timeout_value: Any, deadline_value: Any, now: float) -> tuple[int, int]:
    """Whole-second timeout and Unix-second deadline; asynq's 1800 s timeout when neither is given."""
    timeout = _seconds("timeout", timeout_value)
    deadline = _instant("deadline", deadline_value)
    # asynq stores the deadline in whole seconds, rounded down: what is stored must be in the future
    if deadline is not None and math.floor(deadline) <= now:
        raise InvalidOption(f"option deadline={deadline_value!r} is invalid: it is in the past")
    if deadline is not None and math.floor(deadline) > _LAST_INSTANT:
        raise InvalidOption(f"option deadline={deadline_value!r} is invalid: it is after the year 9999")
    if timeout is None and deadline is None:
        timeout = DEFAULT_TIMEOUT
    if timeout == 0 and deadline is None:
        raise InvalidOption("option timeout=0 is invalid without a deadline: a task needs a timeout or a deadline")
    return _duration("timeout", timeout) or 0, math.floor(deadline) if deadline is not None else 0


def _process_at(options: Mapping[str, Any], now: float) -> int | None:
    """Unix seconds (rounded up) when the task becomes ready; None when that is now or in the past."""
    process_at = _instant("process_at", options.get("process_at"))
    process_in = _seconds("process_in", options.get("process_in"))
    if process_at is not None and process_in is not None:
        raise InvalidOption("options process_at and process_in cannot both be given")
    if process_in is not None:
        process_at = now + process_in
    if process_at is not None and process_at > _LAST_INSTANT:
        given = "process_in" if process_in is not None else "process_at"
        raise InvalidOption(f"option {given}={options.get(given)!r} is invalid: the task would run after the year 9999")
    if process_at is not None and process_at > now:
        return math.ceil(process_at)
    return None


def _ready_before(options: Mapping[str, Any], now: float, deadline: int) -> int | None:
    """:func:`_process_at`, refused when the task would become ready at or after its deadline (it could never run)."""
    process_at = _process_at(options, now)
    if deadline and process_at is not None and deadline <= process_at:
        given = "process_in" if options.get("process_in") is not None else "process_at"
        raise InvalidOption(
            f"option deadline={options.get('deadline')!r} is invalid: it is not after the time the task becomes "
            f"ready ({given}={options.get(given)!r}), so the task could never run"
        )
    return process_at


def _unique_ttl(unique: Any) -> int:
    """Whole seconds of the uniqueness lock (rounded up); None, False or 0 (a number or a timedelta) mean not unique."""
    if unique is None or unique is False or (type(unique) in (int, float, timedelta) and not unique):
        return 0
    ttl = _whole("unique", _seconds("unique", unique))
    if not ttl:
        raise InvalidOption(f"option unique={unique!r} is invalid: the uniqueness TTL must be at least 1 second")
    return ttl


def _lock_ttl(unique: Any, ready_at: float) -> int:
    """:func:`_unique_ttl`, refused when the lock would be held past the year 9999.

    The lock is held from now until the task is ready, plus the TTL; Redis refuses an expiry that far off.
    """
    ttl = _unique_ttl(unique)
    if ttl and ready_at + ttl > _LAST_INSTANT:
        raise InvalidOption(f"option unique={unique!r} is invalid: the lock would be held past the year 9999")
    return ttl


def _headers(value: Any, limit: int) -> dict[str, str]:
    """The headers, checked: strings only, and no more bytes in all than a payload may have (``limit``, 0 = any)."""
    raw = value or {}
    if not isinstance(raw, Mapping):
        raise InvalidOption(f"option headers={raw!r} is invalid: must be a mapping of strings to strings")
    headers = dict(raw)
    size = 0
    for key, item in headers.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise InvalidOption(f"option headers has a non-string entry {key!r}: {item!r}")
        try:
            size += len(key.encode()) + len(item.encode())
        except UnicodeEncodeError as exc:  # a lone surrogate: the message cannot carry it
            raise InvalidOption(
                f"option headers has an entry that is not valid text {key!r}: {item!r} ({exc})"
            ) from exc
    if limit and size > limit:
        raise InvalidOption(
            f"option headers is invalid: {size} bytes in all, above the {limit} bytes a payload may have "
            "(setting max_payload_size; 0 = no limit)"
        )
    return headers


def resolve_options(
    task: TaskDef[Any] | None,
    options: Mapping[str, Any],
    settings: Settings | None,
    now: float,
) -> ResolvedOptions:
    """Merge call-site options with the task's and the queue's defaults, and validate them.

    Args:
        task: the task definition, when the type is registered.
        options: the options given at the call site (:class:`~framework.task.EnqueueOptions`; checked here,
            since a caller without a type checker may give any name or value).
        settings: the app's settings (queue defaults), if any.
        now: the current Unix time.

    Raises:
        InvalidOption: an unknown option, a negative delay, a deadline in the past, an empty queue, ...
    """
    unknown = set(options) - _ALLOWED
    if unknown:
        raise InvalidOption(
            f"unknown enqueue option(s): {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(_ALLOWED))}"
        )
    queue = _queue(task, options)
    qdef = settings.queue_defaults.get(queue) if settings else None
    max_retry = _max_retry(
        _pick(options.get("max_retry"), task.max_retry if task else None, qdef.max_retry if qdef else None)
    )
    timeout, deadline = _timeout_deadline(
        _pick(options.get("timeout"), task.timeout if task else None, qdef.timeout if qdef else None),
        options.get("deadline"),
        now,
    )
    unique = options.get("unique")
    if unique is None and task is not None:
        unique = task.unique
    retention = _seconds(
        "retention",
        _pick(options.get("retention"), task.retention if task else None, qdef.retention if qdef else None),
    )
    task_id = options.get("task_id")
    if task_id is not None and (not isinstance(task_id, str) or not task_id.strip()):
        raise InvalidOption(f"option task_id={task_id!r} is invalid: must be a non-blank string")
    if task_id is not None:
        _encodable("task_id", task_id)
    group = options.get("group") or ""
    if not isinstance(group, str):
        raise InvalidOption(f"option group={group!r} is invalid: must be a string")
    if group and not group.strip():  # asynq refuses a blank group name; "" and None mean no group
        raise InvalidOption(f"option group={group!r} is invalid: a group name must not be blank")
    _encodable("group", group)
    process_at = _ready_before(options, now, deadline)
    return ResolvedOptions(
        queue=queue,
        max_retry=max_retry,
        timeout=timeout,
        deadline=deadline,
        process_at=process_at,
        unique_ttl=_lock_ttl(unique, process_at or now),
        retention=_duration("retention", retention) or 0,
        task_id=task_id,
        headers=_headers(options.get("headers"), settings.max_payload_size if settings else MAX_PAYLOAD_SIZE),
        group=group,
    )


def refusal(error: BaseException, queue: str) -> str:
    """Redis's refusal of an enqueue into ``queue``, as an error message tells it (a Cluster's slot refusal explained).

    A Cluster answers ``CROSSSLOT`` for a script whose declared keys span slots, and ``... non local key ...`` for
    one that reaches a key of another slot from Lua.
    """
    text = str(error)
    if "CROSSSLOT" in text or "non local key" in text:
        problem = cluster_slot_problem(queue)
        if problem is not None:
            return f"{text}: {problem}"
    return text
