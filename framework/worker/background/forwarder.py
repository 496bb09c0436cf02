"""The forwarder: moves due scheduled and retry tasks to pending (or back to their group), for every queue it serves.

Each pass first asks, in one round trip, for the earliest score in each queue's scheduled and retry
sets; only queues with a due task run ``forward.lua`` (which publishes a wake-up, so an idle worker
starts the task at once). It then sleeps until the earliest due time or ``interval`` seconds, whichever
is sooner, so a task starts within a second of its due time while an idle worker sends one small
round trip per ``interval``. Any one worker can forward for everyone, Go workers included.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    import structlog

    from framework.broker.broker import Broker

__all__ = ("Forwarder",)

_MIN_WAIT = 0.05


class Forwarder:
    """Forwards due tasks of ``queues`` (a job for :class:`~framework.worker.background.periodic.Periodic`).

    Run it every ``forward_interval`` seconds; each pass asks for the next one sooner when a task left is due
    before then, and the worker has its runner pass at the due time of each retry it schedules
    (:meth:`~framework.worker.background.periodic.Periodic.due_at`).

    Args:
        broker: the broker.
        queues: the queues to forward.
        logger: the worker's logger.
    """

    component = "forwarder"

    def __init__(self, broker: Broker, queues: Iterable[str], logger: structlog.typing.FilteringBoundLogger) -> None:
        self.broker = broker
        self.queues = list(queues)
        self.log = logger

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

    async def run_once(self) -> float | None:
        """Forward due tasks; returns the wait until the earliest task left is due (None when none is left)."""
        moved, earliest = await self.forward_once()
        if moved:
            self.log.debug("tasks_forwarded", tasks=moved)
        if earliest is None:
            return None
        return max(_MIN_WAIT, earliest - self.broker.clock.now())
