"""The loop the worker's periodic components share: do one pass, report Redis health, sleep, repeat."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

if TYPE_CHECKING:
    from framework.transport.health import RedisHealth

__all__ = ("Periodic",)


class Periodic:
    """Base of the forwarder, janitor and recoverer.

    A subclass sets :attr:`component` (its name in health reports), ``interval``, ``health`` and
    ``_stop`` (an :class:`asyncio.Event`), and implements :meth:`tick`.
    """

    component = "periodic"
    interval: float
    health: RedisHealth
    _stop: asyncio.Event
    _wake: asyncio.Event | None = None
    next_pass: float = 0.0
    """``time.monotonic()`` of the next pass while sleeping (0 before the first)."""

    async def tick(self) -> float | None:
        """One pass. Returns a wait shorter than ``interval`` when the next pass is due sooner, else None."""
        raise NotImplementedError

    async def run(self) -> None:
        """Run passes until stopped; a Redis fault is reported and the pass is tried again next time."""
        wake = self._wake = asyncio.Event()
        while not self._stop.is_set():
            wait = self.interval
            try:
                sooner = await self.tick()
            except (RedisError, OSError) as exc:
                self.health.failed(self.component, exc)
            else:
                self.health.ok(self.component)
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

    def stop(self) -> None:
        """Stop after the current pass."""
        self._stop.set()
        self.nudge()
