"""The janitor: deletes completed tasks whose retention has run out (as asynq: every 8 s, batches of 100)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    import structlog

    from framework.broker.broker import Broker

__all__ = ("Janitor",)


class Janitor:
    """Sweeps expired completed tasks of ``queues`` (a job for :class:`~framework.worker.background.periodic.Periodic`).

    Run it every ``janitor_interval`` seconds.

    Args:
        broker: the broker.
        queues: the queues to sweep.
        logger: the worker's logger.
    """

    component = "janitor"

    def __init__(self, broker: Broker, queues: Iterable[str], logger: structlog.typing.FilteringBoundLogger) -> None:
        self.broker = broker
        self.queues = list(queues)
        self.log = logger

    async def sweep(self) -> int:
        """Delete expired completed tasks in every queue; returns how many."""
        total = 0
        for queue in self.queues:
            total += await self.broker.delete_expired_completed(queue)
        if total:
            self.log.debug("completed_tasks_deleted", tasks=total)
        return total

    async def run_once(self) -> None:
        """One sweep."""
        await self.sweep()
