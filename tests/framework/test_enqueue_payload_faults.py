"""Payloads a worker could not decode, and options that could never run, are refused before anything is stored.

Each case runs against the session Valkey (and, where a task should run, a real worker); "nothing stored" means
the queue has no key at all: no task record, no pending list, no uniqueness lock.
"""

from __future__ import annotations

import math
import time
from typing import Any

import msgspec
import pytest

from framework.client.client import Client, TaskCall
from framework.client.sync import SyncClient
from framework.errors import InvalidOption, PayloadTypeError
from framework.protocol.keys import Schema
from framework.task import TaskDef


class Reading(msgspec.Struct, frozen=True, kw_only=True):
    sensor: str = "s1"
    value: float = 0.0
    extra: Any = None


async def record(ctx: Any, p: Reading) -> float:
    return p.value


READING = TaskDef("faults:reading", Reading, record, max_retry=0)


async def queue_keys(redis: Any, schema: Schema, queue: str = "default") -> list[bytes]:
    """Every key of ``queue`` (records, lists, sets, locks)."""
    return sorted(await redis.keys(f"{schema.ns}:{{{queue}}}:*"))


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (Reading(value=math.nan), "Expected `float`, got `null` - at `$.value`"),
        (Reading(value=-math.inf), "Expected `float`, got `null` - at `$.value`"),
        (Reading(sensor=7), "Expected `str`, got `int` - at `$.sensor`"),  # type: ignore[arg-type]
        (Reading(value="high"), "Expected `float`, got `str` - at `$.value`"),  # type: ignore[arg-type]
    ],
)
async def test_a_payload_no_worker_could_decode_is_refused_before_it_is_stored(
    client: Client, redis: Any, schema: Schema, payload: Reading, message: str
) -> None:
    for options in ({}, {"queue": "default"}, {"unique": 60}):  # the prepared fast path, the general one, a lock
        with pytest.raises(PayloadTypeError) as caught:
            await client.enqueue(READING, payload, **options)
        assert "task 'faults:reading'" in str(caught.value)
        assert message in str(caught.value)
    with pytest.raises(PayloadTypeError, match=r"at `\$\."):
        await client.enqueue_many([TaskCall(READING, Reading()), TaskCall(READING, payload)])
    with pytest.raises(PayloadTypeError, match=r"at `\$\."):
        await client.apply(READING, payload, wait_timeout=5)
    assert await queue_keys(redis, schema) == []


async def test_a_payload_json_cannot_carry_is_refused_naming_the_field(
    client: Client, redis: Any, schema: Schema
) -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    for extra, cause in [(object(), "unsupported"), ("\ud800", "surrogates not allowed"), (cycle, "recursion")]:
        with pytest.raises(PayloadTypeError) as caught:
            await client.enqueue(READING, Reading(extra=extra))
        text = str(caught.value)
        assert text.startswith("the payload of task 'faults:reading' cannot be encoded as JSON (field 'extra')"), text
        assert cause in text
        # a type string without a registered definition: the payload is plain JSON
        with pytest.raises(PayloadTypeError, match="the payload of a 'faults:raw' task cannot be encoded as JSON"):
            await client.enqueue("faults:raw", {"extra": extra})
    assert await queue_keys(redis, schema) == []


def test_the_sync_client_refuses_them_too(redis_url: str, schema: Schema) -> None:
    with SyncClient(redis_url, schema=schema) as sync:
        with pytest.raises(PayloadTypeError, match=r"at `\$\.value`"):
            sync.enqueue(READING, Reading(value=math.nan))
        with pytest.raises(PayloadTypeError, match="field 'extra'"):
            sync.enqueue(READING, Reading(extra=object()))


async def test_a_valid_payload_still_runs(client: Client, start: Any) -> None:
    await start(READING)
    assert await client.apply(READING, Reading(value=2.5, extra={"unit": "C"}), wait_timeout=10) == 2.5


async def test_a_deadline_before_the_task_is_ready_is_refused(client: Client, redis: Any, schema: Schema) -> None:
    now = time.time()
    cases: list[dict[str, Any]] = [
        {"deadline": now + 60, "process_in": 120},
        {"deadline": now + 60, "process_at": now + 3600},
        {"deadline": now + 60, "process_in": 60},  # ready at its deadline: not a moment to run in
    ]
    for options in cases:
        with pytest.raises(InvalidOption) as caught:
            await client.enqueue(READING, Reading(), **options)
        assert "option deadline=" in str(caught.value)
        assert "could never run" in str(caught.value)
    assert await queue_keys(redis, schema) == []
    # a deadline after the time it becomes ready is fine
    info = await client.enqueue(READING, Reading(), deadline=now + 600, process_in=60)
    assert info.deadline == int(now + 600)


async def test_apply_checks_its_options_before_it_listens_or_stores(client: Client, redis: Any, schema: Schema) -> None:
    for options in ({"task_id": ""}, {"task_id": "   "}, {"queue": ""}, {"max_retry": -1}):
        with pytest.raises(InvalidOption):
            await client.apply(READING, Reading(), wait_timeout=5, **options)
    assert not client.waiters._watches
    assert await queue_keys(redis, schema) == []
    assert await redis.keys(f"{schema.ext}:*") == []  # no waiting marker either


async def test_headers_larger_than_a_payload_may_be_are_refused_before_anything_is_stored(
    client: Client, redis: Any, schema: Schema
) -> None:
    """Headers travel in the message as the payload does: together they may not be larger than a payload."""
    big = {"trace": "x" * (client.max_payload_size + 1)}
    with pytest.raises(InvalidOption, match=r"headers is invalid: \d+ bytes in all, above the \d+ bytes"):
        await client.enqueue(READING, Reading(), headers=big)
    with pytest.raises(InvalidOption, match="headers is invalid"):
        await client.enqueue_many([TaskCall(READING, Reading(), {"headers": big})])
    with pytest.raises(InvalidOption, match="not valid text"):
        await client.enqueue(READING, Reading(), headers={"file": "caf\udce9.txt"})  # a lone surrogate
    assert await queue_keys(redis, schema) == []
    info = await client.enqueue(READING, Reading(), headers={"trace": "x" * 1000})  # a fair size is kept
    assert info.headers == {"trace": "x" * 1000}


@pytest.mark.parametrize("option", ["queue", "task_id", "group"])
async def test_a_name_holding_a_lone_surrogate_is_refused_naming_the_option(
    client: Client, redis: Any, schema: Schema, option: str
) -> None:
    """A name read from a file system (``os.listdir`` gives lone surrogates for undecodable bytes)."""
    with pytest.raises(InvalidOption, match=f"option {option}=.* is not valid text"):
        await client.enqueue(READING, Reading(), **{option: "caf\udce9"})
    assert await redis.keys("*udce9*") == []
