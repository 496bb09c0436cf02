"""The cleanup plugin under faults and bad data: runs at once, runs cut short, expired claims, garbled records."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import pytest
from framework_cleanup.config import load_config
from framework_cleanup.sweepers import SweepContext, Sweeper, last_results, run_sweeper

from framework.errors import ConfigError
from framework.inspector import Inspector
from framework.logging import get_logger
from framework.workflow import chain
from tests.plugins.cleanup.conftest import builtin
from tests.plugins.cleanup.test_workflows import ADD, Num

if TYPE_CHECKING:
    from framework_cleanup.sweepers import SweepResult
    from redis.asyncio import Redis

    from framework.client.client import Client
    from framework.protocol.keys import Schema
    from framework.services import Services
    from framework.settings import Settings

DAY = 86400.0


async def test_two_workflow_sweeps_at_once_count_each_pruned_entry_once(
    services: Services, redis: Redis, schema: Schema
) -> None:
    home = schema.queue("default")
    await redis.sadd(schema.all_queues, "default")
    created = time.time() - DAY
    ids = [f"gone-{i}" for i in range(60)]
    await redis.zadd(home.workflows(), dict.fromkeys(ids, created))
    await redis.zadd(home.workflows_running(), dict.fromkeys(ids, created))
    sweeper = builtin(services.settings, "workflows")

    first, second = await asyncio.gather(run_sweeper(services, sweeper), run_sweeper(services, sweeper))

    assert await redis.zcard(home.workflows()) == 0
    assert await redis.zcard(home.workflows_running()) == 0
    assert first.removed + second.removed == len(ids)


async def test_a_sweep_cut_short_keeps_a_report_of_what_it_removed_and_still_stops(services: Services) -> None:
    started = asyncio.Event()

    async def sweep(ctx: SweepContext) -> SweepResult:
        ctx.result.add("tmp/first", 10)
        started.set()
        await asyncio.Event().wait()  # a long sweep, cut short by shutdown or the task's timeout
        return ctx.result

    run = asyncio.create_task(run_sweeper(services, Sweeper("slow", "@hourly", sweep)))
    await started.wait()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run

    report = (await last_results(services.redis, services.schema))["slow"]
    assert report.failed
    assert (report.removed, report.bytes, report.items) == (1, 10, ["tmp/first"])
    assert "cut short" in report.errors[0]


async def test_a_sweep_past_its_timeout_is_reported_and_times_out(services: Services) -> None:
    async def sweep(ctx: SweepContext) -> SweepResult:
        ctx.result.add("tmp/first")
        await asyncio.sleep(10)
        return ctx.result

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await run_sweeper(services, Sweeper("late", "@hourly", sweep))
    report = (await last_results(services.redis, services.schema))["late"]
    assert report.failed
    assert report.removed == 1


async def test_a_run_whose_claim_expired_does_not_release_the_claim_another_run_took(services: Services) -> None:
    slow, other, third = (
        SweepContext(services, "s", dry_run=False, now=time.time(), grace=0, logger=get_logger("t"), claim_ttl=ttl)
        for ttl in (0.05, 60, 60)
    )
    slow_claim = slow.exclusive("tmp/item")
    assert await slow_claim.__aenter__()
    await asyncio.sleep(0.15)  # the slow run's claim expires while it still works on the item
    other_claim = other.exclusive("tmp/item")
    assert await other_claim.__aenter__()

    await slow_claim.__aexit__(None, None, None)  # the slow run finishes: the claim is the other run's now

    async with third.exclusive("tmp/item") as won:
        assert not won
    await other_claim.__aexit__(None, None, None)
    async with third.exclusive("tmp/item") as won:
        assert won


async def test_an_abandoned_workflow_with_a_garbled_record_does_not_stop_the_sweep(
    services: Services, client: Client, redis: Redis, schema: Schema
) -> None:
    chain_of_two = chain(ADD.step(Num(n=1), name="a", queue="go"), ADD.step(Num(), input="prev", name="b"))
    infos = [await client.start_workflow(chain_of_two, queue="default") for _ in range(2)]
    for info in infos:
        await Inspector(redis, schema=schema).archive_task(*info.steps["a"])
    garbled = schema.queue("default").workflow(infos[0].id).meta
    await redis.hset(garbled, mapping={"created": "yesterday", "name": b"\xff\xfe"})

    report = await run_sweeper(services, builtin(services.settings, "workflows"), now=time.time() + 31 * DAY)

    assert (report.failed, report.errors, report.removed) == (False, [], 2)
    for info in infos:
        assert await redis.hget(schema.queue("default").workflow(info.id).meta, "status") == b"cancelled"


@pytest.mark.parametrize(
    "section",
    [
        {"tmp_prefix": "uploads/"},
        {"tmp_prefix": "data/", "uploads_prefix": "data/uploads/"},
        {"tmp_prefix": "data/tmp/", "uploads_prefix": "data/"},
    ],
)
def test_a_tmp_prefix_overlapping_the_uploads_is_a_config_error(settings: Settings, section: dict[str, str]) -> None:
    # the tmp sweeper removes everything under its prefix after a day: uploads there would go with it
    with pytest.raises(ConfigError, match=r"tmp_prefix.*uploads_prefix"):
        load_config(settings.replace(plugins={"cleanup": section}))
