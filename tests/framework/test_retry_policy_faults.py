"""A retry policy that raises or returns no number must not keep a failed task from its retry.

Against a real worker: the task goes to the retry set with the default policy's delay (its retry counted), the
fault is logged, and nothing is left active.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from structlog.testing import capture_logs

from framework.protocol.keys import Schema
from framework.protocol.message import decode_message
from framework.task import TaskDef
from tests.framework.worker_app import wait_until


class P(msgspec.Struct, frozen=True, kw_only=True):
    n: int = 0


async def fail(ctx: Any, p: P) -> None:
    raise ValueError("upstream down")


def raising_policy(retried: int, error: BaseException) -> float:
    raise KeyError("no delay configured for this error")


def none_policy(retried: int, error: BaseException) -> float:
    return None  # type: ignore[return-value]


@pytest.mark.parametrize("policy", [raising_policy, none_policy])
async def test_a_broken_task_policy_still_retries_the_task(
    start: Any, client: Any, redis: Any, schema: Schema, policy: Any
) -> None:
    task = TaskDef("policy:broken", P, fail, max_retry=3, retry_delay=policy)
    qk = schema.queue("default")
    with capture_logs() as logs:
        await start(task)
        info = await client.enqueue(task, P())

        async def retried() -> bool:
            return await redis.zscore(qk.retry, info.id) is not None

        await wait_until(retried, timeout=10)
    assert await redis.lrange(qk.active, 0, -1) == []
    msg = decode_message(await redis.hget(qk.task(info.id), "msg"))
    assert (msg.retried, msg.error_msg) == (1, "ValueError: upstream down")
    delay = await redis.zscore(qk.retry, info.id) - msg.last_failed_at
    assert 4 <= delay <= 16  # the default policy's first delay: 10 s, scaled by 0.5-1.5
    faults = [e for e in logs if e["event"] == "retry_delay_failed"]
    assert len(faults) == 1 and faults[0]["task_id"] == info.id
    assert "KeyError" in faults[0]["error"] or "TypeError" in faults[0]["error"]


async def test_a_broken_worker_policy_still_retries_the_task(
    start: Any, client: Any, redis: Any, schema: Schema
) -> None:
    task = TaskDef("policy:worker", P, fail, max_retry=3)
    qk = schema.queue("default")
    await start(task, retry_delay=raising_policy)
    info = await client.enqueue(task, P())

    async def retried() -> bool:
        return await redis.zscore(qk.retry, info.id) is not None

    await wait_until(retried, timeout=10)
    assert await redis.lrange(qk.active, 0, -1) == []
