"""A workflow's ``retention`` and ``keep_failed`` are checked before anything is stored.

NaN, infinity, a negative or a time Redis cannot expire a key after raise :class:`InvalidWorkflow` naming the
argument, rather than a bare ``ValueError``/``OverflowError`` or a silent one second.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec
import pytest

from framework.client.client import Client
from framework.errors import InvalidWorkflow
from framework.protocol.keys import Schema
from framework.task import TaskDef
from framework.workflow import chain


class N(msgspec.Struct, frozen=True, kw_only=True):
    n: int = 0


async def ident(ctx: Any, p: N) -> int:
    return p.n


IDENT = TaskDef("keep:ident", N, ident)


@pytest.mark.parametrize("name", ["retention", "keep_failed"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -5, 1e17, "60", True])
async def test_a_keeping_time_that_is_not_seconds_is_refused_before_anything_is_stored(
    client: Client, redis: Any, schema: Schema, name: str, value: Any
) -> None:
    with pytest.raises(InvalidWorkflow, match=rf"^{name}=.* is invalid: expected seconds from 0 to"):
        await client.start_workflow(chain(IDENT.step(N(n=1)), IDENT.step(N(n=2))), **{name: value})
    assert await redis.keys(f"{schema.ns}:*") == []


async def test_a_workflow_kept_for_no_time_still_runs(client: Client, start: Any) -> None:
    await start(IDENT)
    flow = chain(IDENT.step(N(n=1)), IDENT.step(N(n=2)))
    assert await client.run_workflow(flow, retention=0, keep_failed=0, wait_timeout=10) == 2
