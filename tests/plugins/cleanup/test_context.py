"""The sweep context: results, claims between concurrent runs, and removing storage objects."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import pytest
from framework_cleanup.context import MAX_ERRORS, SAMPLE_SIZE, SweepContext, SweepResult
from framework_cleanup.keys import claim_key

from framework.logging import get_logger
from framework.storage import ObjectInfo, StorageError, StorageUnavailable

if TYPE_CHECKING:
    from framework.services import Services
    from tests.plugins.cleanup.conftest import Store


def context(services: Services, name: str = "s", *, dry_run: bool = False, claim_ttl: float = 60) -> SweepContext:
    return SweepContext(
        services, name, dry_run=dry_run, now=time.time(), grace=0, logger=get_logger("t"), claim_ttl=claim_ttl
    )


def test_result_keeps_a_sample_and_caps_errors() -> None:
    result = SweepResult()
    for i in range(SAMPLE_SIZE + 10):
        result.add(f"k{i}", 2)
    for i in range(MAX_ERRORS + 5):
        result.error(f"e{i}")
    assert (result.removed, result.bytes, len(result.items), len(result.errors)) == (
        SAMPLE_SIZE + 10,
        2 * (SAMPLE_SIZE + 10),
        SAMPLE_SIZE,
        MAX_ERRORS,
    )


async def test_only_one_run_wins_a_claim(services: Services) -> None:
    a, b = context(services), context(services)
    async with a.exclusive("tmp/x") as won_a:
        async with b.exclusive("tmp/x") as won_b:
            assert (won_a, won_b) == (True, False)
        key = claim_key(services.schema, "s", "tmp/x")
        assert 0 < await services.redis.pttl(key) <= 60_000
    async with b.exclusive("tmp/x") as won_again:
        assert won_again
    assert await services.redis.exists(claim_key(services.schema, "s", "tmp/x")) == 0


async def test_claims_of_a_run_that_died_expire(services: Services) -> None:
    ctx = context(services, claim_ttl=2.0)
    key = claim_key(services.schema, "s", "tmp/x")
    await services.redis.set(key, b"1", px=int(ctx.claim_ttl * 1000))  # what a run that died left behind
    async with ctx.exclusive("tmp/x") as won:
        assert not won
    await asyncio.sleep(2.2)
    async with ctx.exclusive("tmp/x") as won:
        assert won


async def test_a_dry_run_claims_nothing(services: Services) -> None:
    async with context(services).exclusive("tmp/x"), context(services, dry_run=True).exclusive("tmp/x") as won:
        assert won
    assert [k async for k in services.redis.scan_iter(match=f"{services.schema.ext}:*")] == []


async def test_remove_object_counts_an_object_once(local_store: Store) -> None:
    await local_store.put("tmp/a", b"abc")
    info = ObjectInfo(key="tmp/a", size=3)
    ctx = context(local_store.services)
    assert await ctx.remove_object(info) is True
    assert await ctx.remove_object(info) is False
    assert (ctx.result.removed, ctx.result.bytes, ctx.result.items) == (1, 3, ["tmp/a"])


async def test_remove_object_in_a_dry_run_only_counts(local_store: Store) -> None:
    await local_store.put("tmp/a", b"abc")
    ctx = context(local_store.services, dry_run=True)
    assert await ctx.remove_object(ObjectInfo(key="tmp/a", size=3)) is True
    assert ctx.result.removed == 1
    assert await local_store.keys() == {"tmp/a"}


class Refusing:
    def __init__(self, inner: Any, error: Exception) -> None:
        self.inner, self.error = inner, error

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def delete(self, key: str) -> bool:
        raise self.error


async def test_a_refused_delete_is_an_error_of_that_item(local_store: Store) -> None:
    services = local_store.services
    real = services.storage
    services._storage = Refusing(real, StorageError("access denied"))  # the lazily created store, replaced
    ctx = context(services)
    assert await ctx.remove_object(ObjectInfo(key="tmp/a", size=3)) is False
    assert ctx.result.errors == ["tmp/a: access denied"]
    services._storage = Refusing(real, StorageUnavailable("down"))
    with pytest.raises(StorageUnavailable):
        await ctx.remove_object(ObjectInfo(key="tmp/b", size=3))
    async with ctx.exclusive("tmp/b") as won:  # the claim was released
        assert won
    services._storage = real
