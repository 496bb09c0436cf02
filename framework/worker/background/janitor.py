"""The janitor: deletes expired completed tasks, and prunes the keys keyed limits have seen.

Completed tasks whose retention has run out go as asynq deletes them (every 8 s, batches of 100).
"""

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

    def __init__(
        self,
        broker: Broker,
        queues: Iterable[str],
        logger: structlog.typing.FilteringBoundLogger,
        keyed_limits: Iterable[str] = (),
    ) -> None:
        self.broker = broker
        self.queues = list(queues)
        self.log = logger
        self.keyed_limits = sorted(set(keyed_limits))
        self._cursors = dict.fromkeys(self.keyed_limits, "0")

    async def sweep(self) -> int:
        """Delete expired completed tasks in every queue; returns how many."""
        total = 0
        for queue in self.queues:
            total += await self.broker.delete_expired_completed(queue)
        if total:
            self.log.debug("completed_tasks_deleted", tasks=total)
        return total

    async def prune_limit_keys(self) -> int:
        """Walk one page of each keyed limit's seen keys, dropping those that hold nothing; returns how many.

        A keyed limit (per user, per tenant) records every key it has seen, for the dashboard's reads; without
        this the set grows with every value a key ever took. The dead holders of each key's slots go first (a
        task archived as a poison pill keeps its slot otherwise, until the key's slots are all taken again), so
        a key such a task used does not stay for ever. A page per pass keeps each pass short.
        """
        dropped = 0
        for name in self.keyed_limits:
            self._cursors[name], n = await self.broker.prune_limit_keys(name, self._cursors[name])
            dropped += n
        if dropped:
            self.log.debug("limit_keys_pruned", keys=dropped)
        return dropped

    async def run_once(self) -> None:
        """One sweep, and one page of each keyed limit's seen keys."""
        await self.sweep()
        await self.prune_limit_keys()
