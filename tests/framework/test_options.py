"""Enqueue options: the merge rule (call site > task type > queue > asynq) and every validation rule.

Pure tests of :func:`framework.client.options.resolve_options`; no Redis.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from framework.client.options import DEFAULT_MAX_RETRY, DEFAULT_TIMEOUT, ResolvedOptions, resolve_options
from framework.errors import InvalidOption
from framework.settings import Settings, TaskDefaults
from framework.task import CronOptions, EnqueueOptions, TaskDef

NOW = 1_800_000_000.25


class Payload(msgspec.Struct, frozen=True, kw_only=True):
    n: int = 0


async def _handler(ctx: Any, payload: Payload) -> None:
    return None


def taskdef(**defaults: Any) -> TaskDef[Payload]:
    return TaskDef("opt:test", Payload, _handler, **defaults)


def resolve(task: TaskDef[Any] | None = None, settings: Settings | None = None, **options: Any) -> ResolvedOptions:
    return resolve_options(task, options, settings, NOW)


def test_asynq_defaults() -> None:
    assert (DEFAULT_MAX_RETRY, DEFAULT_TIMEOUT) == (25, 1800)
    assert resolve() == ResolvedOptions(
        queue="default",
        max_retry=25,
        timeout=1800,
        deadline=0,
        process_at=None,
        unique_ttl=0,
        retention=0,
        task_id=None,
        headers={},
        group="",
    )


def test_deadline_only_means_no_timeout() -> None:
    opts = resolve(deadline=NOW + 60)
    assert (opts.timeout, opts.deadline) == (0, int(NOW + 60))


def test_timeout_and_deadline_both_kept() -> None:
    opts = resolve(timeout=30, deadline=datetime.fromtimestamp(NOW + 60, UTC))
    assert (opts.timeout, opts.deadline) == (30, int(NOW + 60))


def test_precedence_call_then_task_then_queue_then_asynq() -> None:
    settings = Settings(
        queue_defaults={
            "low": TaskDefaults(max_retry=7, timeout=70, retention=700),
            "default": TaskDefaults(max_retry=1),
        }
    )
    task = taskdef(queue="low", max_retry=3, timeout=None, retention=None)
    by_queue = resolve(task, settings)
    assert (by_queue.queue, by_queue.max_retry, by_queue.timeout, by_queue.retention) == ("low", 3, 70, 700)
    at_call = resolve(task, settings, max_retry=0, timeout=5, retention=50)
    assert (at_call.max_retry, at_call.timeout, at_call.retention) == (0, 5, 50)
    # the queue's defaults follow the queue chosen at the call site
    other = resolve(task, settings, queue="default")
    assert (other.queue, other.max_retry, other.timeout, other.retention) == ("default", 3, 1800, 0)
    plain = resolve(None, settings, queue="default")
    assert plain.max_retry == 1
    assert resolve(None, settings, queue="elsewhere").max_retry == 25


def test_task_type_defaults() -> None:
    opts = resolve(taskdef(queue="critical", max_retry=2, timeout=9.5, retention=60, unique=30))
    assert (opts.queue, opts.max_retry, opts.timeout, opts.retention, opts.unique_ttl) == ("critical", 2, 10, 60, 30)
    assert resolve(taskdef(unique=30), unique=False).unique_ttl == 0  # the call site can switch it off


@pytest.mark.parametrize(
    ("options", "process_at"),
    [
        ({"process_in": 10}, math.ceil(NOW + 10)),
        ({"process_in": timedelta(minutes=1)}, math.ceil(NOW + 60)),
        ({"process_in": 0}, None),  # now: pending, not scheduled
        ({"process_at": NOW + 100}, math.ceil(NOW + 100)),
        ({"process_at": datetime.fromtimestamp(NOW + 100, UTC)}, math.ceil(NOW + 100)),
        ({"process_at": NOW - 100}, None),  # in the past: run now, as asynq does
    ],
)
def test_process_at(options: dict[str, Any], process_at: int | None) -> None:
    assert resolve(**options).process_at == process_at


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"timeout": 0.2}, {"timeout": 1}),  # whole seconds, rounded up: never 0
        ({"timeout": timedelta(minutes=2)}, {"timeout": 120}),
        ({"retention": 1.5}, {"retention": 2}),
        ({"unique": 0.5}, {"unique_ttl": 1}),
        ({"unique": timedelta(hours=1)}, {"unique_ttl": 3600}),
        ({"unique": 0}, {"unique_ttl": 0}),
        ({"unique": None}, {"unique_ttl": 0}),
        ({"task_id": "my-id"}, {"task_id": "my-id"}),
        ({"headers": {"trace": "abc", "empty": ""}}, {"headers": {"trace": "abc", "empty": ""}}),
        ({"group": "g1"}, {"group": "g1"}),
        ({"queue": "weird:name {x}"}, {"queue": "weird:name {x}"}),
        ({"max_retry": 0}, {"max_retry": 0}),
        ({"max_retry": 2**31 - 1}, {"max_retry": 2**31 - 1}),
    ],
)
def test_option_values(options: dict[str, Any], expected: dict[str, Any]) -> None:
    opts = resolve(**options)
    for name, value in expected.items():
        assert getattr(opts, name) == value


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"queue": ""}, "option queue='' is invalid"),
        ({"queue": "   "}, "a queue name must be a non-blank string"),
        ({"queue": 5}, "option queue=5 is invalid"),
        ({"process_in": -1}, "option process_in=-1 is invalid: must not be negative"),
        ({"process_in": timedelta(seconds=-5)}, "must not be negative"),
        ({"process_in": math.inf}, "expected seconds"),
        ({"process_in": math.nan}, "expected seconds"),
        ({"process_in": "10"}, "option process_in='10' is invalid"),
        ({"process_at": NOW + 5, "process_in": 5}, "cannot both be given"),
        ({"process_at": math.inf}, "option process_at=inf is invalid"),
        ({"process_at": math.nan}, "option process_at=nan is invalid"),
        ({"process_at": datetime(2030, 1, 1)}, "timezone-aware"),
        ({"deadline": NOW - 1}, "it is in the past"),
        ({"deadline": NOW}, "it is in the past"),
        ({"deadline": datetime.fromtimestamp(NOW - 60, UTC)}, "it is in the past"),
        ({"deadline": math.inf}, "option deadline=inf is invalid"),
        ({"deadline": 10.0**30}, "not a usable Unix time"),
        ({"timeout": -1}, "option timeout=-1 is invalid: must not be negative"),
        ({"timeout": 0}, "a task needs a timeout or a deadline"),
        ({"timeout": math.inf}, "option timeout=inf is invalid"),
        ({"timeout": True}, "option timeout=True is invalid"),
        ({"retention": -5}, "option retention=-5 is invalid"),
        ({"max_retry": -1}, "option max_retry=-1 is invalid: must be an integer from 0 to 2147483647"),
        ({"max_retry": 2**31}, "must be an integer from 0 to 2147483647"),
        ({"max_retry": 1.5}, "option max_retry=1.5 is invalid"),
        ({"max_retry": True}, "option max_retry=True is invalid"),
        ({"unique": -1}, "option unique=-1 is invalid"),
        ({"unique": True}, "option unique=True is invalid"),
        ({"unique": -0.1}, "must not be negative"),
        ({"task_id": ""}, "option task_id='' is invalid"),
        ({"task_id": 7}, "option task_id=7 is invalid"),
        ({"headers": {"k": 1}}, "option headers has a non-string entry 'k': 1"),
        ({"headers": "k=v"}, "option headers='k=v' is invalid: must be a mapping"),
        ({"headers": [("k", "v")]}, "must be a mapping"),
        ({"group": 3}, "option group=3 is invalid"),
        ({"retries": 3}, "unknown enqueue option(s): retries; allowed: deadline, group, headers, max_retry"),
        ({"delay": 3, "priority": 1}, "unknown enqueue option(s): delay, priority"),
    ],
)
def test_invalid_option(options: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidOption) as err:
        resolve(**options)
    assert message in str(err.value)
    assert isinstance(err.value, ValueError)  # InvalidOption is also a ValueError


def test_invalid_queue_default_is_reported_as_the_option() -> None:
    settings = Settings(queue_defaults={"default": TaskDefaults(max_retry=None, timeout=None)})
    assert resolve(None, settings).timeout == 1800
    with pytest.raises(InvalidOption, match="max_retry=-2"):
        resolve(taskdef(max_retry=-2))


def test_the_option_names() -> None:
    assert EnqueueOptions.__optional_keys__ == {
        "queue",
        "max_retry",
        "timeout",
        "deadline",
        "process_at",
        "process_in",
        "unique",
        "retention",
        "task_id",
        "group",
        "headers",
    }
    assert not EnqueueOptions.__required_keys__
    # a cron entry gives what shapes every run of its task, never a time, a lock, an id or a group
    assert CronOptions.__optional_keys__ == {"queue", "max_retry", "timeout", "retention", "headers"}


def test_every_typed_option_is_accepted_and_none_means_not_given() -> None:
    assert resolve(**dict.fromkeys(EnqueueOptions.__optional_keys__)) == resolve()
    task = taskdef(queue="low", max_retry=3, unique=60)
    assert resolve(task, **dict.fromkeys(EnqueueOptions.__optional_keys__)) == resolve(task)


def test_an_untyped_caller_learns_the_misspelt_name() -> None:
    with pytest.raises(InvalidOption) as err:
        resolve(queu="low")
    allowed = ", ".join(sorted(EnqueueOptions.__optional_keys__))
    assert str(err.value) == f"unknown enqueue option(s): queu; allowed: {allowed}"
