"""Rate limits count a client, not one of its addresses: an IPv6 /64 is one client, ``::ffff:a.b.c.d`` is ``a.b.c.d``.

Every home or server on IPv6 gets at least a /64 and may use any address in it, so a limit kept per address
could be escaped by changing the address before each attempt (a password guess, an upload).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from framework.clock import SimulatedClock
from framework.web.ratelimit import RateLimit, limited_client

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from framework.protocol.keys import Schema


def limiter(redis: Redis, schema: Schema) -> RateLimit:
    return RateLimit(redis, schema, "addresses", limit=2, window=60, clock=SimulatedClock(1000.0))


async def test_every_address_of_one_ipv6_64_shares_the_limit(redis: Redis, schema: Schema) -> None:
    limit = limiter(redis, schema)
    assert await limit.take("2001:db8:1:2::1") == 0
    assert await limit.take("2001:db8:1:2:ffff:ffff:ffff:fffe") == 0
    assert await limit.take("2001:db8:1:2:1234:5678:9abc:def0") > 0  # a third address of the same /64
    assert await limit.retry_after("2001:db8:1:2::99") > 0
    assert await limit.take("2001:db8:1:3::1") == 0  # the next /64 is another client


async def test_failures_counted_across_rotating_ipv6_addresses_throttle_them(redis: Redis, schema: Schema) -> None:
    limit = limiter(redis, schema)
    for host in range(1, 4):
        await limit.hit(f"2001:db8:aa:bb::{host:x}")
    assert await limit.retry_after("2001:db8:aa:bb::ffff") > 0


async def test_an_ipv4_address_counts_the_same_when_mapped_into_ipv6(redis: Redis, schema: Schema) -> None:
    limit = limiter(redis, schema)
    assert await limit.take("192.0.2.7") == 0
    assert await limit.take("::ffff:192.0.2.7") == 0
    assert await limit.take("::ffff:c000:207") > 0  # the same address, written in hex
    assert await limit.take("192.0.2.8") == 0


@pytest.mark.parametrize(
    ("client", "counted_as"),
    [
        ("203.0.113.9", "203.0.113.9"),
        ("2001:DB8:0:0:1::1", "2001:db8::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("::ffff:203.0.113.9", "203.0.113.9"),
        ("unknown", "unknown"),
        ("user:42", "user:42"),
        ("", ""),
    ],
)
def test_what_a_client_is_counted_as(client: str, counted_as: str) -> None:
    assert limited_client(client) == counted_as
