"""Enqueue options as one frozen value, and the rule that merges them.

Precedence: the call site, then the task type's defaults, then the queue's defaults in settings, then
asynq's defaults (25 retries, 30 minute timeout).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec

from framework.errors import InvalidOption

if TYPE_CHECKING:
    from framework.settings import Settings
    from framework.task import TaskDef

__all__ = ("DEFAULT_MAX_RETRY", "DEFAULT_TIMEOUT", "EnqueueOptions", "resolve_options")

DEFAULT_MAX_RETRY = 25
DEFAULT_TIMEOUT = 1800

_Seconds = float | int | timedelta
_Instant = float | int | datetime

_ALLOWED = frozenset(
    {
        "queue",
        "max_retry",
        "timeout",
        "deadline",
        "process_at",
        "process_in",
        "unique",
        "retention",
        "task_id",
        "headers",
        "group",
    }
)


class EnqueueOptions(msgspec.Struct, frozen=True, kw_only=True):
    """Resolved options of one enqueue. Built by :func:`resolve_options`; read by the client.

    Attributes:
        queue: queue name.
        max_retry: retries before archiving.
        timeout: whole seconds the handler may run (0 = only the deadline applies).
        deadline: Unix seconds by which the task must finish (0 = none).
        process_at: Unix seconds when the task becomes ready (None = now).
        unique_ttl: whole seconds of the uniqueness lock (0 = not unique).
        retention: whole seconds to keep the completed task (0 = delete on success).
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
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise InvalidOption(f"option {name}={value!r} is invalid: expected seconds (a number or timedelta)")
    if value < 0:
        raise InvalidOption(f"option {name}={value!r} is invalid: must not be negative")
    return float(value)


def _instant(name: str, value: _Instant | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise InvalidOption(f"option {name}={value!r} is invalid: use a timezone-aware datetime")
        return value.timestamp()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidOption(f"option {name}={value!r} is invalid: expected a datetime or Unix seconds")
    return float(value)


def _whole(name: str, value: float | None) -> int | None:
    """Round up to whole seconds, the unit asynq stores (a 0.5 s timeout must not become 0)."""
    if value is None:
        return None
    return math.ceil(value)


def _pick(call: Any, *fallbacks: Any) -> Any:
    if call is not None:
        return call
    for value in fallbacks:
        if value is not None:
            return value
    return None


def resolve_options(
    task: TaskDef[Any] | None,
    options: Mapping[str, Any],
    settings: Settings | None,
    now: float,
) -> EnqueueOptions:
    """Merge call-site options with the task's and the queue's defaults, and validate them.

    Args:
        task: the task definition, when the type is registered.
        options: keyword options given at the call site.
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
    queue = options.get("queue") or (task.queue if task else "default")
    if not isinstance(queue, str) or not queue.strip():
        raise InvalidOption(f"option queue={queue!r} is invalid: a queue name must be a non-blank string")
    qdef = settings.queue_defaults.get(queue) if settings else None

    max_retry = _pick(options.get("max_retry"), task.max_retry if task else None, qdef.max_retry if qdef else None)
    max_retry = DEFAULT_MAX_RETRY if max_retry is None else max_retry
    if isinstance(max_retry, bool) or not isinstance(max_retry, int) or max_retry < 0:
        raise InvalidOption(f"option max_retry={max_retry!r} is invalid: must be an integer >= 0")

    timeout = _seconds(
        "timeout", _pick(options.get("timeout"), task.timeout if task else None, qdef.timeout if qdef else None)
    )
    deadline = _instant("deadline", options.get("deadline"))
    if deadline is not None and deadline <= now:
        raise InvalidOption(f"option deadline={options.get('deadline')!r} is invalid: it is in the past")
    if timeout is None and deadline is None:
        timeout = DEFAULT_TIMEOUT
    if timeout == 0 and deadline is None:
        raise InvalidOption("option timeout=0 is invalid without a deadline: a task needs a timeout or a deadline")

    process_at = _instant("process_at", options.get("process_at"))
    process_in = _seconds("process_in", options.get("process_in"))
    if process_at is not None and process_in is not None:
        raise InvalidOption("options process_at and process_in cannot both be given")
    if process_in is not None:
        process_at = now + process_in
    at: int | None = None
    if process_at is not None and process_at > now:
        at = math.ceil(process_at)

    unique = options.get("unique")
    if unique is None and task is not None:
        unique = task.unique
    unique_ttl = 0 if unique in (None, False) else _whole("unique", _seconds("unique", unique))
    if unique is not None and unique is not False and not unique_ttl:
        raise InvalidOption(f"option unique={unique!r} is invalid: the uniqueness TTL must be at least 1 second")

    retention = _seconds(
        "retention",
        _pick(options.get("retention"), task.retention if task else None, qdef.retention if qdef else None),
    )
    task_id = options.get("task_id")
    if task_id is not None and (not isinstance(task_id, str) or not task_id.strip()):
        raise InvalidOption(f"option task_id={task_id!r} is invalid: must be a non-blank string")
    headers = dict(options.get("headers") or {})
    for key, value in headers.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidOption(f"option headers has a non-string entry {key!r}: {value!r}")
    group = options.get("group") or ""
    if not isinstance(group, str):
        raise InvalidOption(f"option group={group!r} is invalid: must be a string")
    return EnqueueOptions(
        queue=queue,
        max_retry=max_retry,
        timeout=_whole("timeout", timeout) or 0,
        deadline=int(deadline) if deadline is not None else 0,
        process_at=at,
        unique_ttl=unique_ttl or 0,
        retention=_whole("retention", retention) or 0,
        task_id=task_id,
        headers=headers,
        group=group,
    )
