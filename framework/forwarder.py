"""The forwarder: moves due scheduled and retry tasks to pending, for every queue it serves.

It sleeps until the earliest due task (at most ``forward_interval``), so a scheduled or retried task
starts within a second of its due time while an idle worker sends one small script per queue per interval.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

if TYPE_CHECKING:
    from collections.abc import Iterable

    import structlog

    from framework.broker import RedisBroker

__all__ = ("Forwarder",)


class Forwarder:
    """Forwards due tasks of ``queues`` every ``interval`` seconds (sooner when one is due)."""

    def __init__(
        self, broker: RedisBroker, queues: Iterable[str], interval: float, logger: structlog.typing.FilteringBoundLogger
    ) -> None:
        self.broker = broker
        self.queues = list(queues)
        self.interval = interval
        self.log = logger
        self._stop = asyncio.Event()

    async def forward_once(self) -> tuple[int, float | None]:
        """Forward every queue once; returns (tasks moved, earliest due time left)."""
        moved = 0
        earliest: float | None = None
        for queue in self.queues:
            n, nxt = await self.broker.forward(queue)
            moved += n
            if nxt is not None and (earliest is None or nxt < earliest):
                earliest = nxt
        return moved, earliest

    async def run(self) -> None:
        """Forward until stopped."""
        while not self._stop.is_set():
            wait = self.interval
            try:
                _, earliest = await self.forward_once()
                if earliest is not None:
                    wait = min(wait, max(0.05, earliest - self.broker.clock.now()))
            except (RedisError, OSError) as exc:
                self.log.warning("forward_failed", error=f"{type(exc).__name__}: {exc}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), wait)

    def stop(self) -> None:
        """Stop after the current pass."""
        self._stop.set()
