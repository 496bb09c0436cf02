"""The cron scheduler where it meets the rest: a unique task type, a bad entry under several worker processes,
and a replica that was paused while another kept firing."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from framework.clock import SimulatedClock
from framework.registry import Registry
from framework.scheduler.scheduler import Scheduler
from framework.task import CronEntry, TaskDef

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from framework.protocol.keys import Schema
    from framework.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_700_000_040.0  # a multiple of 60


class Job(msgspec.Struct, frozen=True, kw_only=True):
    n: int = 0


async def _handle(ctx: Any, payload: Job) -> None:
    return None


async def pending_ids(redis: Redis, schema: Schema, queue: str) -> list[str]:
    return [raw.decode() for raw in await redis.lrange(schema.queue(queue).pending, 0, -1)]


# --- a task type's default uniqueness ------------------------------------------------------------


async def test_cron_honours_the_task_types_default_uniqueness(settings: Settings, redis: Redis, schema: Schema) -> None:
    """A task type declared ``unique=...`` gets no duplicate from cron while the previous tick's task is pending:
    the tick takes the type's uniqueness lock (the key Go's tools read), and a tick that finds it held is skipped.
    """
    task = TaskDef("cronfaults:unique", Job, _handle, queue="cronq", unique=3600)
    clock = SimulatedClock(T0 + 5)
    sched = Scheduler(
        settings,
        entries=[CronEntry("u", "@every 10s", task, Job(n=1))],
        registry=Registry([task]),
        redis=redis,
        clock=clock,
    )
    assert sched.entries[0].options.unique_ttl == 3600  # resolved ...
    await sched.fire_due()
    clock.set(T0 + 10)
    await sched.fire_due()
    unique_key = schema.queue("cronq").unique("cronfaults:unique", b'{"n":1}')
    assert await redis.exists(unique_key) == 1  # ... and the lock taken
    clock.set(T0 + 20)
    await sched.fire_due()
    assert len(await pending_ids(redis, schema, "cronq")) == 1  # the second tick is a duplicate of a pending task


# --- a restart across a tick ---------------------------------------------------------------------------


async def test_a_scheduler_restarted_across_a_tick_fires_it_late_but_not_one_missed_for_longer(
    settings: Settings, redis: Redis, schema: Schema
) -> None:
    """The only scheduler stops just before an hourly tick and starts again 5 s after it (a rolling deploy):
    the tick is late, not missed, and fires. One that nobody fired for more than a minute stays missed."""
    task = TaskDef("cronfaults:hourly", Job, _handle, queue="cronq3")
    hour = math.ceil(T0 / 3600) * 3600

    def scheduler(at: float) -> Scheduler:
        return Scheduler(
            settings,
            entries=[CronEntry("h", "0 * * * *", task, Job(n=3))],
            registry=Registry([task]),
            redis=redis,
            clock=SimulatedClock(at),
        )

    first = scheduler(hour - 10)
    await first.fire_due()
    first.clock.set(hour)  # type: ignore[attr-defined]
    assert len(await first.fire_due()) == 1
    assert len(await scheduler(hour + 3600 + 5).fire_due()) == 1  # restarted 5 s after the tick: fired late
    assert await scheduler(hour + 7200 + 70).fire_due() == []  # 70 s after it: missed, as documented
    assert len(await pending_ids(redis, schema, "cronq3")) == 2


# --- an invalid entry under `framework worker -p N --scheduler` ------------------------------------


@pytest.mark.slow
def test_worker_processes_with_a_bad_cron_entry_fail_at_start_not_crash_loop(
    tmp_path: Path, redis_url: str, namespace: str
) -> None:
    """``framework worker -p 2 --scheduler`` with an invalid cron entry stops at once, naming the entry, rather
    than restarting the child that runs the scheduler again and again while the other serves."""
    config = tmp_path / "framework.toml"
    config.write_text(
        f'redis_url = "{redis_url}"\nnamespace = "{namespace}"\napp = "tests.framework.scheduler_app"\n'
        f'load_plugins = []\ndata_dir = "{tmp_path / "data"}"\n\n'
        '[[cron]]\nname = "broken"\nspec = "61 * * * *"\ntask = "test:tick"\n'
    )
    env = {**os.environ, "FRAMEWORK_APP": "tests.framework.scheduler_app", "PYTHONPATH": str(ROOT)}
    log = tmp_path / "out.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "framework", "--config", str(config), "worker", "-p", "2", "--scheduler"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            try:
                code = proc.wait(timeout=12)
            except subprocess.TimeoutExpired:
                code = None
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
    text = log.read_text(errors="replace")
    deaths = text.count("worker_process_died")
    assert "cron entry 'broken' from settings" in text
    assert code not in (None, 0), f"still running after 12 s; {deaths} child deaths:\n{text[-3000:]}"
    assert deaths <= 1, text[-3000:]


# --- a paused replica resumes (coverage: passes) ----------------------------------------------------


async def test_paused_replica_resuming_does_not_refire_what_another_fired(
    settings: Settings, redis: Redis, schema: Schema
) -> None:
    """Replica A is paused across two ticks that replica B fires; on resuming (within and past the lateness
    window, with ``run_missed``) A enqueues nothing again."""
    task = TaskDef("cronfaults:tick", Job, _handle, queue="cronq2")
    entries = [CronEntry("m", "@every 1m", task, run_missed=True), CronEntry("f", "@every 10s", task)]
    clock_a, clock_b = SimulatedClock(T0 + 1), SimulatedClock(T0 + 1)
    a, b = (
        Scheduler(settings, entries=entries, registry=Registry([task]), redis=redis, clock=c)
        for c in (clock_a, clock_b)
    )
    await a.fire_due()
    await b.fire_due()
    for t in range(2, 201):  # B runs on; A is paused from T0+1 to T0+200
        clock_b.set(T0 + t)
        await b.fire_due()
    clock_a.set(T0 + 200)
    assert await a.fire_due() == []  # 10 s ticks 150..200 already fired by B; the 1 m tick at 180 too
    ids = await pending_ids(redis, schema, "cronq2")
    assert len(ids) == len(set(ids)) == 3 + 20  # 60, 120, 180 and every 10 s from 10 to 200


# --- a replica whose clock runs ahead ---------------------------------------------------------------------


async def test_a_claim_made_by_a_clock_running_ahead_lasts_until_the_others_reach_the_tick(
    settings: Settings, redis: Redis, schema: Schema
) -> None:
    """A replica whose clock is two hours ahead fires an hourly tick two hours before the others reach it. Its
    claim must still be there when they do (else they fire the tick again): it lives its TTL from the tick, not
    from the moment it was made. A claim made on time lives its TTL, as before."""
    task = TaskDef("cronfaults:skew", Job, _handle, queue="cronq4")
    real = (await redis.time())[0]
    tick = (real // 3600 + 3) * 3600  # two to three hours from now by Redis's clock
    entries = [CronEntry("h", "0 * * * *", task)]
    clock = SimulatedClock(tick - 1)
    ahead = Scheduler(settings, entries=entries, registry=Registry([task]), redis=redis, clock=clock)
    await ahead.fire_due()
    clock.set(tick + 1)
    assert len(await ahead.fire_due()) == 1
    claim = schema.queue("cronq4").cron_claim(ahead.entries[0].id, tick)
    ttl = ahead.entries[0].claim_ttl(tick)  # two hours for an hourly entry
    assert await redis.ttl(claim) >= (tick - real) + ttl - 5  # was ttl: gone before the others reach the tick

    hour = math.ceil(T0 / 3600) * 3600  # a tick long past by Redis's clock: its claim lives its TTL from now
    on_time = SimulatedClock(hour - 1)
    past = Scheduler(settings, entries=entries, registry=Registry([task]), redis=redis, clock=on_time)
    await past.fire_due()
    on_time.set(hour + 1)
    assert [f.tick for f in await past.fire_due()] == [hour]
    assert ttl - 10 <= await redis.ttl(schema.queue("cronq4").cron_claim(past.entries[0].id, hour)) <= ttl
