"""Faults.clear() with a misspelt method name: refused, rather than leaving the simulated outage in place."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from framework.client.client import Client
from framework.errors import RedisUnavailable
from framework.testing import Seeder

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from framework.protocol.keys import Schema
    from framework.testing import Faults


async def test_clearing_a_misspelt_method_is_refused_and_the_right_name_ends_the_outage(
    faults: Faults, redis: Redis, schema: Schema
) -> None:
    client = Client(redis, schema=schema, wrap_broker=faults.wrap)
    faults.fail("enqueue", times=None)

    with pytest.raises(ValueError, match=r"'enqeue' is not a broker method; use one of: .*enqueue"):
        faults.clear("enqeue")
    with pytest.raises(RedisUnavailable):  # still down: nothing was cleared
        await client.enqueue("app:job", b"x")

    faults.clear("enqueue")
    info = await client.enqueue("app:job", b"x")
    assert await Seeder(client).ids("default", "pending") == [info.id]
