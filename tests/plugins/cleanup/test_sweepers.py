"""The sweep engine: reports, failures, logging, the dashboard's last results, sweeper validation."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

import pytest
import structlog
from framework_cleanup.keys import claim_key, results_key
from framework_cleanup.sweepers import (
    SweepContext,
    Sweeper,
    SweepReport,
    SweepResult,
    last_results,
    run_sweeper,
    run_sweepers,
)

from framework.protocol.keys import Schema

if TYPE_CHECKING:
    from framework.services import Services


def counting(name: str, n: int, size: int = 10) -> Sweeper:
    async def sweep(ctx: SweepContext) -> SweepResult:
        for i in range(n):
            ctx.result.add(f"{name}/{i}", size)
        return ctx.result

    return Sweeper(name, "@hourly", sweep)


async def boom(ctx: SweepContext) -> SweepResult:
    ctx.result.add("half/done", 7)
    raise RuntimeError("disk on fire")


async def test_a_failing_sweeper_is_reported_by_name_and_the_others_run(services: Services) -> None:
    sweepers = [counting("first", 2), Sweeper("broken", "@daily", boom), counting("last", 3)]

    with structlog.testing.capture_logs() as logs:
        reports = await run_sweepers(services, sweepers)

    assert [(r.sweeper, r.removed, r.failed) for r in reports] == [
        ("first", 2, False),
        ("broken", 1, True),
        ("last", 3, False),
    ]
    assert reports[1].errors == ["RuntimeError: disk on fire"]
    assert reports[1].items == ["half/done"]
    failures = [e for e in logs if e["event"] == "cleanup_sweeper_failed"]
    assert len(failures) == 1
    assert failures[0]["sweeper"] == "broken"
    assert failures[0]["error"] == "RuntimeError: disk on fire"
    assert failures[0]["log_level"] == "error"
    kept = await last_results(services.redis, services.schema)
    assert sorted(kept) == ["broken", "first", "last"]
    assert kept["broken"].failed


async def test_every_run_is_logged_with_counts_and_bytes(services: Services) -> None:
    with structlog.testing.capture_logs() as logs:
        await run_sweeper(services, counting("tokens", 4, size=25))
    swept = [e for e in logs if e["event"] == "cleanup_swept"]
    assert len(swept) == 1
    assert {k: swept[0][k] for k in ("sweeper", "removed", "bytes", "errors", "dry_run", "log_level")} == {
        "sweeper": "tokens",
        "removed": 4,
        "bytes": 100,
        "errors": 0,
        "dry_run": False,
        "log_level": "info",
    }


async def test_the_last_result_is_kept_for_the_dashboard(services: Services) -> None:
    now = 1_700_000_000.0
    await run_sweeper(services, counting("tmp", 1), now=now - 100)
    report = await run_sweeper(services, counting("tmp", 3, size=5), now=now)

    raw = await services.redis.hget(results_key(services.schema), "tmp")
    stored = json.loads(raw)
    assert {k: stored[k] for k in ("time", "removed", "bytes", "errors", "dry_run")} == {
        "time": now,
        "removed": 3,
        "bytes": 15,
        "errors": [],
        "dry_run": False,
    }
    results = await last_results(services.redis, services.schema)
    assert results == {"tmp": report}
    assert report.duration >= 0


async def test_dry_runs_are_kept_flagged(services: Services) -> None:
    seen: list[bool] = []

    async def sweep(ctx: SweepContext) -> SweepResult:
        seen.append(ctx.dry_run)
        return ctx.result

    await run_sweeper(services, Sweeper("x", "@daily", sweep), dry_run=True)

    assert seen == [True]
    assert (await last_results(services.redis, services.schema))["x"].dry_run


def test_the_keys_keep_the_values_they_had_in_the_core_schema() -> None:
    """Reports and claims stored before the keys moved into this plugin are found under the same names."""
    digest = hashlib.sha1(b"tmp/x", usedforsecurity=False).hexdigest()
    assert results_key(Schema()) == "framework:cleanup:last"
    assert claim_key(Schema(), "tmp", "tmp/x") == f"framework:cleanup:claim:tmp:{digest}"
    assert results_key(Schema("t1")) == "t1:fw:cleanup:last"


async def test_a_report_stored_under_the_old_key_is_read(services: Services) -> None:
    report = {"sweeper": "tmp", "time": 1.0, "removed": 2}
    await services.redis.hset(f"{services.schema.ext}:cleanup:last", "tmp", json.dumps(report))
    assert (await last_results(services.redis, services.schema))["tmp"].removed == 2


async def test_last_results_when_nothing_ran_or_a_value_is_unreadable(services: Services) -> None:
    assert await last_results(services.redis, services.schema) == {}
    await services.redis.hset(results_key(services.schema), "bad", b"{oops")
    await run_sweeper(services, counting("good", 1))
    assert list(await last_results(services.redis, services.schema)) == ["good"]


async def test_a_sweep_may_return_its_own_result(services: Services) -> None:
    async def sweep(ctx: SweepContext) -> SweepResult:
        return SweepResult(removed=3, bytes=9, items=["a"], errors=["b: denied"])

    report = await run_sweeper(services, Sweeper("own", "@daily", sweep))

    assert (report.removed, report.bytes, report.items, report.errors, report.failed) == (
        3,
        9,
        ["a"],
        ["b: denied"],
        False,
    )


async def test_the_context_gives_now_grace_and_cutoff(services: Services) -> None:
    seen: list[tuple[float, float, float, str]] = []

    async def sweep(ctx: SweepContext) -> SweepResult:
        seen.append((ctx.now, ctx.grace, ctx.cutoff, ctx.sweeper))
        assert ctx.services is services
        return ctx.result

    await run_sweeper(services, Sweeper("g", "@daily", sweep, grace=60), now=1000.0)

    assert seen == [(1000.0, 60.0, 940.0, "g")]


@pytest.mark.parametrize("name", ["", "Upper", "with space", "x:y", "-lead", "a" * 65])
def test_sweeper_names_are_checked(name: str) -> None:
    with pytest.raises(ValueError, match="invalid sweeper name"):
        Sweeper(name, "@daily", boom)


def test_grace_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="grace"):
        Sweeper("x", "@daily", boom, grace=-1)


async def test_report_round_trips(services: Services) -> None:
    report = await run_sweeper(services, counting("rt", 2))
    assert isinstance(report, SweepReport)
    assert (await last_results(services.redis, services.schema))["rt"] == report
