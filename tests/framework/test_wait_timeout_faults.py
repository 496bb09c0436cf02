"""``Client.wait``/``apply`` timeouts at their edges: infinity is no limit, NaN or a negative is refused at once.

Against the session Valkey and a real worker. A refused timeout raises :class:`InvalidOption` before anything is
sent, and leaves no waiter behind.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import msgspec
import pytest

from framework.client.client import Client
from framework.client.sync import SyncClient
from framework.errors import InvalidOption
from framework.protocol.keys import Schema
from framework.task import TaskDef


class N(msgspec.Struct, frozen=True, kw_only=True):
    n: int = 0


async def square(ctx: Any, p: N) -> int:
    return p.n * p.n


SQUARE = TaskDef("wait:square", N, square, retention=60)


@pytest.mark.parametrize("limit", [math.inf, 1e300, 10.0**12])
async def test_an_infinite_or_huge_timeout_waits_as_long_as_it_takes(
    client: Client, start: Any, redis: Any, schema: Schema, limit: float
) -> None:
    await start(SQUARE)
    assert await client.apply(SQUARE, N(n=3), wait_timeout=limit) == 9
    info = await client.enqueue(SQUARE, N(n=4))
    assert await client.wait(info, timeout=limit) == 16
    waiter = asyncio.ensure_future(client.wait("wait-later", timeout=limit))
    await asyncio.sleep(0.2)  # the task does not exist: the waiter is told so, whatever its timeout
    with pytest.raises(LookupError):
        await waiter


@pytest.mark.parametrize("limit", [math.nan, -1, -math.inf, "10", True])
async def test_a_timeout_that_is_not_a_duration_is_refused_before_anything_is_sent(
    client: Client, redis: Any, schema: Schema, limit: Any
) -> None:
    info = await client.enqueue(SQUARE, N(n=2))
    with pytest.raises(InvalidOption, match=r"^timeout=.* is invalid"):
        await client.wait(info, timeout=limit)
    with pytest.raises(InvalidOption, match=r"^wait_timeout=.* is invalid"):
        await client.apply(SQUARE, N(n=2), wait_timeout=limit)
    with pytest.raises(InvalidOption, match=r"^timeout=.* is invalid"):
        await client.wait_workflow("wf-1", timeout=limit)
    assert not client.waiters._watches  # no waiter left behind
    assert await redis.keys(f"{schema.ext}:*") == []  # no waiting marker
    assert await redis.llen(schema.queue("default").pending) == 1  # apply stored nothing


def test_the_sync_client_checks_the_timeout_too(redis_url: str, schema: Schema) -> None:
    with SyncClient(redis_url, schema=schema) as sync:
        info = sync.enqueue(SQUARE, N())
        with pytest.raises(InvalidOption, match="timeout=nan"):
            sync.wait(info, timeout=math.nan)
