"""Task records whose ``msg`` is not a readable TaskMessage, written in every state with the broker's layout.

Three kinds of message: ``garbage`` (random bytes that are not protobuf), ``truncated`` (a valid message
cut in half, inside its payload) and ``empty`` (zero bytes). Each is written in each state exactly as
the broker's scripts would leave a task there (hash fields, list or zset, lease, group set), so what
the inspector, the admin and the CLI read is what a real broken task looks like.
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING

from framework.protocol.message import TaskState, decode_message, encode_message, new_message

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from framework.protocol.keys import Schema

__all__ = ("GROUP", "KINDS", "STATES", "broken_messages", "corrupt_id", "seed_corrupt")

STATES = tuple(TaskState)
"""Every task state, aggregating included."""
GROUP = "g1"
"""The aggregation group the aggregating tasks are in."""
KINDS = ("garbage", "truncated", "empty")


def _garbage() -> bytes:
    """64 random bytes (from a fixed seed, so the test is reproducible) that do not parse as a TaskMessage."""
    rng = random.Random(20240601)
    while True:
        data = rng.randbytes(64)
        try:
            decode_message(data)
        except ValueError:
            return data


def _truncated() -> bytes:
    payload = b'{"text": "' + b"x" * 200 + b'"}'
    msg = new_message(type="broken:task", payload=payload, id="x", queue="q", retry=3, timeout=60, deadline=0)
    data = encode_message(msg)
    return data[: len(data) // 2]


def broken_messages() -> dict[str, bytes]:
    """The three broken ``msg`` values by kind; each fails to decode (or decodes to nothing at all)."""
    out = {"garbage": _garbage(), "truncated": _truncated(), "empty": b""}
    for kind in ("garbage", "truncated"):
        try:
            decode_message(out[kind])
        except ValueError:
            continue
        raise AssertionError(f"the {kind} message decodes")
    return out


def corrupt_id(kind: str, state: TaskState | str) -> str:
    """The id of the broken task of ``kind`` in ``state``."""
    return f"{kind}-{TaskState(state).value}"


async def seed_corrupt(redis: Redis, schema: Schema, queue: str) -> dict[tuple[str, TaskState], str]:
    """Write one broken task per kind and state into ``queue``; returns their ids by (kind, state).

    Times are far in the future (scheduled, retry, leases, completed expiry), so no worker, forwarder,
    recoverer or janitor moves them; the queue should be one no worker serves in any case.
    """
    qk = schema.queue(queue)
    now = int(time.time())
    later = now + 86_400
    ids: dict[tuple[str, TaskState], str] = {}
    async with redis.pipeline(transaction=True) as pipe:
        pipe.sadd(schema.all_queues, queue)
        for kind, msg in broken_messages().items():
            for state in STATES:
                task_id = ids[kind, state] = corrupt_id(kind, state)
                key = qk.task(task_id)
                pipe.hset(key, mapping={"msg": msg, "state": state.value})
                if state is TaskState.PENDING:
                    pipe.hset(key, "pending_since", str(now * 1_000_000_000))
                    pipe.lpush(qk.pending, task_id)
                elif state is TaskState.ACTIVE:
                    pipe.lpush(qk.active, task_id)
                    pipe.zadd(qk.lease, {task_id: later})
                elif state is TaskState.AGGREGATING:
                    pipe.hset(key, "group", GROUP)
                    pipe.zadd(qk.group(GROUP), {task_id: now})
                    pipe.sadd(qk.groups, GROUP)
                else:
                    score = now if state is TaskState.ARCHIVED else later
                    pipe.zadd(getattr(qk, state.value), {task_id: score})
        await pipe.execute()
    return ids
