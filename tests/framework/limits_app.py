"""A worker program with limited task types, for the limit tests with real processes.

``python -m tests.framework.limits_app`` runs one worker (settings from ``FRAMEWORK_*``, see
:func:`tests.framework.worker_app.env_for`). Each handler records in Redis under ``<namespace>:test:``:

* ``starts`` LIST: Unix time of each start of a ``lim:rated`` task (limit ``api``: 150/s);
* ``live`` STRING: ``lim:capped`` tasks running now (limit ``slots``: 5 at once); ``live_seen`` LIST: the
  count each one saw as it started, so the most ever running is the list's maximum;
* ``free`` STRING: ``lim:free`` tasks done (no limit);
* ``crash`` SET: ids of ``lim:single`` tasks (limit ``single``: 1 at once) that killed their process.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

from framework.limits import Limit
from framework.settings import Settings, load_settings
from framework.task import TaskDef
from framework.worker.worker import Worker
from tests.framework.worker_app import ROOT, env_for

__all__ = ("CAPPED", "FREE", "RATED", "SINGLE", "Tick", "start_limited_worker")


class Tick(msgspec.Struct, frozen=True, kw_only=True):
    """What a limited test task does: sleep, or kill its process the first time it runs."""

    sleep: float = 0.0
    crash: bool = False


def _key(ctx: Any, name: str) -> str:
    return f"{ctx.services.settings.namespace}:test:{name}"


async def rated(ctx: Any, tick: Tick) -> None:
    await ctx.services.redis.rpush(_key(ctx, "starts"), repr(time.time()))


async def capped(ctx: Any, tick: Tick) -> None:
    r = ctx.services.redis
    live = await r.incr(_key(ctx, "live"))
    await r.rpush(_key(ctx, "live_seen"), live)
    try:
        await asyncio.sleep(tick.sleep)
    finally:
        await asyncio.shield(r.decr(_key(ctx, "live")))


async def free(ctx: Any, tick: Tick) -> None:
    await ctx.services.redis.incr(_key(ctx, "free"))


async def single(ctx: Any, tick: Tick) -> None:
    r = ctx.services.redis
    if tick.crash and await r.sadd(_key(ctx, "crash"), ctx.id):
        os._exit(3)  # dies holding the limit's only slot
    await r.rpush(_key(ctx, "single"), ctx.id)


RATED = TaskDef("lim:rated", Tick, rated, limit=Limit(rate="150/s", name="api"))
CAPPED = TaskDef("lim:capped", Tick, capped, limit=Limit(concurrency=5, name="slots"))
FREE = TaskDef("lim:free", Tick, free)
SINGLE = TaskDef("lim:single", Tick, single, limit=Limit(concurrency=1, name="single"))


def start_limited_worker(settings: Settings, log: Path, **extra: Any) -> subprocess.Popen[bytes]:
    """Launch this program as a worker process; its output goes to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.framework.limits_app"],
            cwd=ROOT,
            env=env_for(settings, **extra),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def main() -> None:
    """Run one worker with these task types until SIGTERM."""
    dead_after = float(os.environ.get("TEST_DEAD_AFTER") or 0) or None
    asyncio.run(Worker(load_settings(), tasks=[RATED, CAPPED, FREE, SINGLE], dead_after=dead_after).run())


if __name__ == "__main__":
    main()
