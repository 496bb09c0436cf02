"""The janitor: deletes completed tasks whose retention has run out (as asynq: every 8 s, batches of 100)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from framework.worker.background.periodic import Periodic

if TYPE_CHECKING:
    from collections.abc import Iterable

    import structlog

    from framework.broker.broker import RedisBroker
    from framework.transport.health import RedisHealth

__all__ = ("Janitor",)


class Janitor(Periodic):
    """Sweeps expired completed tasks of ``queues`` every ``interval`` seconds.

    Args:
        broker: the Redis broker.
        queues: the queues to sweep.
        interval: seconds between sweeps (``janitor_interval``).
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

    async def sweep(self) -> int:
        """Delete expired completed tasks in every queue; returns how many."""
        total = 0
        for queue in self.queues:
            total += await self.broker.delete_expired_completed(queue)
        if total:
            self.log.debug("completed_tasks_deleted", tasks=total)
        return total

    component = "janitor"

    async def tick(self) -> float | None:
        """One sweep."""
        await self.sweep()
        return None
