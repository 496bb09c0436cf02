"""A scheduler process for the multi-process tests in test_scheduler.py, and an app hook module.

As a program::

    python -m tests.framework.scheduler_app REDIS_URL NAMESPACE [--spec "@every 1s"] [--offset SECONDS]
        [--die-before-call N] [--die-after-win]

runs one :class:`~framework.scheduler.scheduler.Scheduler` with a single entry ``tick`` (task ``test:tick``, queue
``cron``) until SIGTERM. ``--offset`` skews its clock; ``--die-before-call N`` makes it SIGKILL itself just
before its N-th ``cron_enqueue`` call and ``--die-after-win`` just after its first enqueue that won, before
it writes the history: a scheduler dying mid-tick. Logs are JSON lines on stderr.

As an app module (``app = "tests.framework.scheduler_app"``) it contributes the ``test:tick`` task type
and one cron entry, ``plugin-tick``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import time
from typing import Any

import msgspec

from framework.broker.broker import RedisBroker
from framework.hookspecs import hookimpl
from framework.registry import Registry
from framework.scheduler.scheduler import Scheduler
from framework.settings import CronEntrySettings, Settings
from framework.task import CronEntry, TaskDef

TICK = "test:tick"
QUEUE = "cron"


class Tick(msgspec.Struct, frozen=True, kw_only=True):
    """Payload of ``test:tick``."""

    n: int = 0


async def _handle(ctx: Any, payload: Tick) -> None:
    return None


tick_task: TaskDef[Tick] = TaskDef(TICK, Tick, _handle, queue=QUEUE, max_retry=3, timeout=60)


@hookimpl
def register_task_types(settings: Settings) -> list[TaskDef[Any]]:
    return [tick_task]


@hookimpl
def register_cron_entries(settings: Settings) -> list[CronEntry]:
    return [CronEntry("plugin-tick", "0 9 * * mon-fri", tick_task, Tick(n=7), tz="Europe/Berlin")]


class OffsetClock:
    """The wall clock, shifted by ``offset`` seconds (a host whose clock is off)."""

    def __init__(self, offset: float) -> None:
        self.offset = offset

    def now(self) -> float:
        return time.time() + self.offset


def _install_faults(die_before_call: int, die_after_win: bool) -> None:
    original = RedisBroker.cron_enqueue
    calls = 0

    async def cron_enqueue(self: RedisBroker, *args: Any, **kwargs: Any) -> int:
        nonlocal calls
        calls += 1
        if calls == die_before_call:
            os.kill(os.getpid(), signal.SIGKILL)
        won = await original(self, *args, **kwargs)
        if won and die_after_win:
            os.kill(os.getpid(), signal.SIGKILL)
        return won

    RedisBroker.cron_enqueue = cron_enqueue  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("redis_url")
    parser.add_argument("namespace")
    parser.add_argument("--spec", default="@every 1s")
    parser.add_argument("--offset", type=float, default=0.0)
    parser.add_argument("--die-before-call", type=int, default=0)
    parser.add_argument("--die-after-win", action="store_true")
    args = parser.parse_args()
    _install_faults(args.die_before_call, args.die_after_win)
    settings = Settings(
        redis_url=args.redis_url,
        namespace=args.namespace,
        log_format="json",
        cron=[CronEntrySettings(name="tick", spec=args.spec, task=TICK, payload={"n": 1})],
    )
    scheduler = Scheduler(settings, registry=Registry([tick_task]), clock=OffsetClock(args.offset))
    asyncio.run(scheduler.run())


if __name__ == "__main__":
    main()
