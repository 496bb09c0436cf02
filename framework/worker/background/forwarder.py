"""The forwarder: moves due scheduled and retry tasks to pending (or back to their group), for every queue it serves.

Each pass first asks, in one round trip, for the earliest score in each queue's scheduled and retry
sets; only queues with a due task run ``forward.lua`` (which publishes a wake-up, so an idle worker
starts the task at once). It then sleeps until the earliest due time or ``interval`` seconds, whichever
is sooner, so a task starts within a second of its due time while an idle worker sends one small
round trip per ``interval``. Any one worker can forward for everyone, Go workers included.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from framework.worker.background.periodic import Periodic

if TYPE_CHECKING:
    from collections.abc import Iterable

    import structlog

    from framework.broker.broker import RedisBroker
    from framework.transport.health import RedisHealth

__all__ = ("Forwarder",)

_MIN_WAIT = 0.05
_EARLY_MARGIN = 0.002  # a timer may fire a little early; the task's whole-second score must be due by then


class Forwarder(Periodic):
    """Forwards due tasks of ``queues`` every ``interval`` seconds (sooner when one is due).

    Args:
        broker: the Redis broker.
        queues: the queues to forward.
        interval: the longest sleep between passes.
        logger: the worker's logger.
        health: where Redis faults are reported.
    """

    def __init__(
        self,
        broker: RedisBroker,
        queues: Iterable[str],
        interval: float,
        logger: structlog.typing.FilteringBoundLogger,
        health: RedisHealth,
    ) -> None:
        self.broker = broker
        self.queues = list(queues)
        self.interval = interval
        self.log = logger
        self.health = health
        self._stop = asyncio.Event()
        self._early: asyncio.TimerHandle | None = None
        self._early_at = 0.0

    async def forward_once(self) -> tuple[int, float | None]:
        """Forward every queue with due tasks; returns (tasks moved, earliest due time left or None)."""
        now = self.broker.clock.now()
        moved = 0
        earliest: float | None = None
        for queue, due in zip(self.queues, await self.broker.next_due(self.queues), strict=True):
            nxt = due
            if due is not None and due <= now:
                n, nxt = await self.broker.forward(queue)
                moved += n
            if nxt is not None and (earliest is None or nxt < earliest):
                earliest = nxt
        return moved, earliest

    component = "forwarder"

    def due_at(self, when: float) -> None:
        """A task of this process becomes due at Unix time ``when``: pass then, if that is before the next pass.

        The worker calls it for the retries it schedules, so a short retry delay is not stretched to the
        forwarder's interval. One timer at most: the earliest such time.
        """
        delay = max(0.0, when - self.broker.clock.now()) + _EARLY_MARGIN
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

    async def tick(self) -> float | None:
        """Forward due tasks; wake again when the earliest task left is due, if that is sooner."""
        moved, earliest = await self.forward_once()
        if moved:
            self.log.debug("tasks_forwarded", tasks=moved)
        if earliest is None:
            return None
        return max(_MIN_WAIT, earliest - self.broker.clock.now())
