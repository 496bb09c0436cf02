"""The loop the worker's periodic components share: do one pass, report Redis health, sleep, repeat."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

if TYPE_CHECKING:
    from framework.health import RedisHealth

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

    async def tick(self) -> float | None:
        """One pass. Returns a wait shorter than ``interval`` when the next pass is due sooner, else None."""
        raise NotImplementedError

    async def run(self) -> None:
        """Run passes until stopped; a Redis fault is reported and the pass is tried again next time."""
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
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), wait)

    def stop(self) -> None:
        """Stop after the current pass."""
        self._stop.set()
