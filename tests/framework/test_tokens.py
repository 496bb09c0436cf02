"""The one-time token helper against real Valkey: issue, verify, consume once, expire, wrong purpose, index."""

from __future__ import annotations

import asyncio
import hashlib
from typing import TYPE_CHECKING

import pytest

from framework.clock import SimulatedClock
from framework.web.tokens import MAX_TOKEN_CHARS, Tokens, token_digest

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from framework.protocol.keys import Schema
    from framework.services import Services


@pytest.fixture
def clock() -> SimulatedClock:
    import time

    return SimulatedClock(time.time())


@pytest.fixture
def tokens(redis: Redis, schema: Schema, clock: SimulatedClock) -> Tokens:
    return Tokens(redis, schema, clock=clock)


async def test_issue_stores_only_the_hash_with_a_ttl(tokens: Tokens, redis: Redis, schema: Schema) -> None:
    token = await tokens.issue("password-reset", "user-1", ttl=3600, data={"email": "a@example.com"})
    assert len(token) >= 40
    assert all(c.isalnum() or c in "-_" for c in token)
    digest = hashlib.sha256(token.encode()).hexdigest()
    assert token_digest(token) == digest
    key = schema.token("password-reset", digest)
    raw = await redis.get(key)
    assert raw is not None
    assert token.encode() not in raw
    assert 3590_000 < await redis.pttl(key) <= 3600_000
    keys = [k async for k in redis.scan_iter(match=f"{schema.ext}:*")]
    assert all(token.encode() not in k for k in keys)
    index = await redis.zrange(schema.token_index(), 0, -1, withscores=True)
    assert [m for m, _ in index] == [f"password-reset:{digest}".encode()]


async def test_issue_gives_different_tokens(tokens: Tokens) -> None:
    issued = {await tokens.issue("verify-email", "u", ttl=60) for _ in range(20)}
    assert len(issued) == 20


async def test_verify_returns_the_record_and_keeps_the_token(tokens: Tokens, clock: SimulatedClock) -> None:
    token = await tokens.issue("verify-email", "42", ttl=600, data={"email": "x@example.com", "n": 3})
    for _ in range(2):
        record = await tokens.verify("verify-email", token)
        assert record is not None
        assert (record.purpose, record.subject) == ("verify-email", "42")
        assert record.data == {"email": "x@example.com", "n": 3}
        assert record.issued == clock.now()
        assert record.expires == clock.now() + 600


async def test_consume_works_once(tokens: Tokens, redis: Redis, schema: Schema) -> None:
    token = await tokens.issue("password-reset", "user-1", ttl=3600)
    record = await tokens.consume("password-reset", token)
    assert record is not None
    assert record.subject == "user-1"
    assert await tokens.consume("password-reset", token) is None
    assert await tokens.verify("password-reset", token) is None
    assert await redis.zcard(schema.token_index()) == 0


async def test_concurrent_consumes_give_the_record_to_exactly_one(tokens: Tokens) -> None:
    token = await tokens.issue("password-reset", "user-1", ttl=3600)
    results = await asyncio.gather(*(tokens.consume("password-reset", token) for _ in range(20)))
    assert sum(r is not None for r in results) == 1


async def test_wrong_purpose_is_unknown(tokens: Tokens) -> None:
    token = await tokens.issue("password-reset", "user-1", ttl=3600)
    assert await tokens.verify("verify-email", token) is None
    assert await tokens.consume("verify-email", token) is None
    assert await tokens.consume("password-reset", token) is not None  # the failed attempts did not use it up


async def test_expired_by_the_clock(tokens: Tokens, clock: SimulatedClock) -> None:
    token = await tokens.issue("verify-email", "u", ttl=60)
    clock.advance(59)
    assert await tokens.verify("verify-email", token) is not None
    clock.advance(1)
    assert await tokens.verify("verify-email", token) is None
    assert await tokens.consume("verify-email", token) is None


async def test_expired_by_redis_ttl(redis: Redis, schema: Schema) -> None:
    tokens = Tokens(redis, schema)
    token = await tokens.issue("verify-email", "u", ttl=0.05)
    assert await tokens.verify("verify-email", token) is not None
    await asyncio.sleep(0.15)
    assert await redis.exists(schema.token("verify-email", token_digest(token))) == 0
    assert await tokens.verify("verify-email", token) is None
    assert await tokens.consume("verify-email", token) is None


@pytest.mark.parametrize("bad", ["", "x" * (MAX_TOKEN_CHARS + 1), "not-a-token", None, 42])
async def test_garbage_tokens_are_unknown(tokens: Tokens, bad: object) -> None:
    await tokens.issue("password-reset", "u", ttl=60)
    assert await tokens.verify("password-reset", bad) is None  # type: ignore[arg-type]
    assert await tokens.consume("password-reset", bad) is None  # type: ignore[arg-type]


@pytest.mark.parametrize("purpose", ["", "a b", "x:y", "a/b", "p" * 65])
async def test_invalid_purpose_is_refused(tokens: Tokens, purpose: str) -> None:
    with pytest.raises(ValueError, match="invalid token purpose"):
        await tokens.issue(purpose, "u", ttl=60)
    with pytest.raises(ValueError, match="invalid token purpose"):
        await tokens.verify(purpose, "t")


@pytest.mark.parametrize("ttl", [0, -1, float("inf"), float("nan")])
async def test_invalid_ttl_is_refused(tokens: Tokens, ttl: float) -> None:
    with pytest.raises(ValueError, match="invalid token ttl"):
        await tokens.issue("verify-email", "u", ttl=ttl)


async def test_data_must_be_json(tokens: Tokens) -> None:
    with pytest.raises(TypeError, match="JSON"):
        await tokens.issue("verify-email", "u", ttl=60, data={"x": object()})


async def test_revoke(tokens: Tokens) -> None:
    token = await tokens.issue("verify-email", "u", ttl=60)
    assert await tokens.revoke("verify-email", token) is True
    assert await tokens.revoke("verify-email", token) is False
    assert await tokens.verify("verify-email", token) is None


async def test_expired_lists_and_discard_removes_once(tokens: Tokens, clock: SimulatedClock, redis: Redis) -> None:
    short = await tokens.issue("verify-email", "a", ttl=10)
    await tokens.issue("password-reset", "b", ttl=1000)
    now = clock.now()
    assert await tokens.expired(now) == []
    expired = await tokens.expired(now + 100)
    assert [(e.purpose, e.digest) for e in expired] == [("verify-email", token_digest(short))]
    assert expired[0].expires == now + 10
    assert expired[0].member == f"verify-email:{token_digest(short)}"
    size = await tokens.discard(expired[0])
    assert size is not None
    assert size > 0  # the record was still in Redis (its real TTL has not run out)
    assert await redis.exists(expired[0].key) == 0
    assert await tokens.discard(expired[0]) is None
    assert await tokens.expired(now + 100) == []
    assert [e.purpose for e in await tokens.expired(now + 10_000)] == ["password-reset"]


async def test_expired_pages(tokens: Tokens, clock: SimulatedClock) -> None:
    for i in range(5):
        await tokens.issue("verify-email", str(i), ttl=10 + i)
    later = clock.now() + 100
    first = await tokens.expired(later, limit=2)
    second = await tokens.expired(later, offset=2, limit=2)
    rest = await tokens.expired(later, offset=4, limit=2)
    assert [len(first), len(second), len(rest)] == [2, 2, 1]
    assert len({e.digest for e in first + second + rest}) == 5


async def test_from_services(services: Services) -> None:
    tokens = Tokens.from_services(services)
    token = await tokens.issue("verify-email", "u", ttl=60)
    assert await Tokens(services.redis, services.schema).consume("verify-email", token) is not None
