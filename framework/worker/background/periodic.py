"""The loop the worker's periodic jobs share: do one pass, report Redis health, sleep, repeat.

A job (the forwarder, recoverer, janitor, workflow checker, group aggregator) is an object with a
:attr:`Job.component` name and a :meth:`Job.run_once` pass; it knows nothing of timing. :class:`Periodic` runs
one job: a pass every ``interval`` seconds (sooner when the pass asks for it, or when :meth:`Periodic.nudge`
or :meth:`Periodic.due_at` says so), a Redis fault reported through the worker's
:class:`~framework.transport.health.RedisHealth` and the pass tried again next time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Protocol

from redis.exceptions import RedisError

from framework.clock import SystemClock

if TYPE_CHECKING:
    from framework.clock import Clock
    from framework.transport.health import RedisHealth

__all__ = ("Job", "Periodic")

_EARLY_MARGIN = 0.002  # a timer may fire a little early; a whole-second due time must be reached by then


class Job(Protocol):
    """One periodic job: what :class:`Periodic` runs."""

    @property
    def component(self) -> str:
        """Its name in health reports (``redis_unavailable component=...``)."""

    async def run_once(self) -> float | None:
        """One pass. Returns a wait shorter than the interval when the next pass is due sooner, else None."""


class Periodic:
    """Runs ``job`` every ``interval`` seconds until stopped; see the module docstring.

    Args:
        job: the job.
        interval: the longest wait between passes (s).
        health: where Redis faults are reported.
        clock: where time comes from (for :meth:`due_at`).

    Attributes:
        next_pass: ``time.monotonic()`` of the next pass while waiting (0 before the first).
    """

    def __init__(self, job: Job, interval: float, health: RedisHealth, clock: Clock | None = None) -> None:
        self.job = job
        self.interval = interval
        self.health = health
        self.clock = clock or SystemClock()
        self.next_pass = 0.0
        self._stop = asyncio.Event()
        self._wake: asyncio.Event | None = None
        self._early: asyncio.TimerHandle | None = None
        self._early_at = 0.0

    @property
    def name(self) -> str:
        """The job's class name (names the asyncio task that runs it)."""
        return type(self.job).__name__

    async def run(self) -> None:
        """Run passes until stopped; a Redis fault is reported and the pass is tried again next time."""
        wake = self._wake = asyncio.Event()
        job, component = self.job, self.job.component
        while not self._stop.is_set():
            wait = self.interval
            try:
                sooner = await job.run_once()
            except (RedisError, OSError) as exc:
                self.health.failed(component, exc)
            else:
                self.health.ok(component)
                if sooner is not None:
                    wait = min(wait, sooner)
            if self._stop.is_set():
                break
            wake.clear()
            self.next_pass = time.monotonic() + wait
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), wait)

    def nudge(self) -> None:
        """Run the next pass now (no-op before :meth:`run` starts)."""
        if self._wake is not None:
            self._wake.set()

    def due_at(self, when: float) -> None:
        """Something the job handles becomes due at Unix time ``when``: pass then, if that is before the next pass.

        The worker calls the forwarder's with the retries it schedules, so a short retry delay is not
        stretched to the forwarder's interval. One timer at most: the earliest such time.
        """
        delay = max(0.0, when - self.clock.now()) + _EARLY_MARGIN
        at = time.monotonic() + delay
        if not self.next_pass or at >= self.next_pass or (self._early is not None and self._early_at <= at):
            return
        if self._early is not None:
            self._early.cancel()
        self._early_at = at
        self._early = asyncio.get_running_loop().call_later(delay, self._early_pass)

    def _early_pass(self) -> None:
        self._early = None
        self.nudge()

    def stop(self) -> None:
        """Stop after the current pass."""
        self._stop.set()
        self.nudge()
