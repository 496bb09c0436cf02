"""A worker program running workflow steps, for the crash tests: ``python -m tests.framework.workflow_app``.

Settings come from the environment (``FRAMEWORK_*``, see :func:`tests.framework.worker_app.env_for`). Every
step's handler records its run under ``<namespace>:test:`` whatever process runs it:

* ``runs`` HASH task id -> runs started; ``pid`` HASH task id -> pid of the last process that started it;
* ``started`` LIST task ids, one per run started; ``ran`` LIST ``"<task id> <pid>"``, one per run started.

A step whose payload says ``hang`` sleeps a minute on its first run (long enough to be killed in it); one
that says ``crash`` kills its process on every run. ``TEST_DEAD_AFTER`` and ``TEST_MAX_RECOVERIES`` set the
worker's ``dead_after`` and ``max_recoveries``; ``make_worker`` is also a supervisor factory.

``TEST_HOLD`` makes this process hold a step's finishing call (``step_done``, ``step_complete``), ``before``
it runs (the handler returned, the script not run) or ``after`` it ran (the workflow advanced), until the test
pushes to ``<namespace>:test:go`` (or kills the process). ``TEST_HOLD_STEPS`` names the steps held
(comma-separated; default every step). A held call is recorded in ``<namespace>:test:held`` (before) or
``<namespace>:test:finished`` (after), as the step's name.
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Any

import msgspec
from redis.asyncio import Redis

from framework.settings import Settings, load_settings
from framework.task import TaskDef
from framework.testing.proxy import BrokerProxy
from framework.worker.worker import Worker

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from framework.broker.broker import RedisBroker


class Num(msgspec.Struct, frozen=True, kw_only=True):
    """A step's payload: ``n`` (first step) or ``prev`` (the step before's result).

    ``hang``: sleep a minute on the first run; ``crash``: kill the process on every run (a poison pill);
    ``pause``: seconds every run sleeps.
    """

    n: int = 0
    prev: int | None = None
    hang: bool = False
    crash: bool = False
    pause: float = 0.0


class Many(msgspec.Struct, frozen=True, kw_only=True):
    """A chord callback's payload: the group's results."""

    values: list[int] = []


async def _record(ctx: Any) -> int:
    ns = ctx.services.settings.namespace
    pid = os.getpid()
    async with ctx.services.redis.pipeline(transaction=False) as pipe:
        pipe.hincrby(f"{ns}:test:runs", ctx.id, 1)
        pipe.hset(f"{ns}:test:pid", ctx.id, pid)
        pipe.rpush(f"{ns}:test:started", ctx.id)
        pipe.rpush(f"{ns}:test:ran", f"{ctx.id} {pid}")
        runs, _, _, _ = await pipe.execute()
    return int(runs)


async def add_one(ctx: Any, p: Num) -> int:
    """``prev + 1`` (or ``n + 1``); a minute's sleep first on the first run when ``hang``."""
    runs = await _record(ctx)
    if p.crash:
        os._exit(3)
    if p.hang and runs == 1:
        await asyncio.sleep(60)
    if p.pause:
        await asyncio.sleep(p.pause)
    return (p.prev if p.prev is not None else p.n) + 1


async def total(ctx: Any, p: Many) -> list[int]:
    """The group's results, as they came (the test checks their order)."""
    await _record(ctx)
    return p.values


def _fast_retry(retried: int, error: BaseException) -> float:
    return 0.5


ADD = TaskDef("wfc:add", Num, add_one, result=int, max_retry=5, retry_delay=_fast_retry)
COLLECT = TaskDef("wfc:collect", Many, total, result=list[int], max_retry=5, retry_delay=_fast_retry)

FINISHING = frozenset({"step_done", "step_complete"})


class Holding(BrokerProxy):
    """A broker holding the finishing call of chosen steps before or after it runs (see the module docstring).

    Args:
        inner: the real broker.
        url: the server's URL (a hold waits on a connection of its own).
        mode: ``before`` or ``after``.
        steps: the names of the steps held (empty: every step).
    """

    def __init__(self, inner: RedisBroker, url: str, mode: str, steps: frozenset[str]) -> None:
        super().__init__(inner)
        self.url = url
        self.mode = mode
        self.held_steps = steps

    async def intercept(
        self, name: str, call: Callable[..., Awaitable[Any]], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Hold a chosen step's ``step_done``/``step_complete`` until the test says go."""
        step = args[0].step if name in FINISHING and args else None
        if step is None or (self.held_steps and step not in self.held_steps):
            return await call(*args, **kwargs)
        if self.mode == "before":
            await self._hold("held", step)
            return await call(*args, **kwargs)
        reply = await call(*args, **kwargs)
        await self._hold("finished", step)
        return reply

    async def _hold(self, what: str, step: str) -> None:
        ns = self.inner.schema.ns
        redis = Redis.from_url(self.url)
        try:
            await redis.rpush(f"{ns}:test:{what}", step)
            await redis.blpop([f"{ns}:test:go"], timeout=0)
        finally:
            await redis.aclose()


def make_worker(settings: Settings) -> Worker:
    """The worker of this program: the step types, holding finishing calls when ``TEST_HOLD`` says so."""
    dead_after = float(os.environ.get("TEST_DEAD_AFTER") or 0) or None
    max_recoveries = int(os.environ.get("TEST_MAX_RECOVERIES") or 3)
    mode = os.environ.get("TEST_HOLD", "")
    steps = frozenset(s for s in os.environ.get("TEST_HOLD_STEPS", "").split(",") if s)
    wrap = None
    if mode:

        def wrap(broker: RedisBroker) -> RedisBroker:
            return Holding(broker, settings.redis_url or "", mode, steps)

    return Worker(
        settings, tasks=[ADD, COLLECT], dead_after=dead_after, max_recoveries=max_recoveries, wrap_broker=wrap
    )


def main() -> None:
    """Run one worker until SIGTERM/SIGINT."""
    asyncio.run(make_worker(load_settings()).run())


if __name__ == "__main__":
    main()
