"""The forwarder: moves due scheduled and retry tasks to pending (or back to their group), for every queue it serves.

Each pass first asks, in one round trip, for the earliest score in each queue's scheduled and retry
sets; only queues with a due task run ``forward.lua`` (which publishes a wake-up, so an idle worker
starts the task at once). It then sleeps until the earliest due time or ``interval`` seconds, whichever
is sooner, so a task starts within a second of its due time. Any one worker can forward for everyone,
Go workers included.

**One pass for the workers serving the same queues.** The look at every queue costs two commands per queue,
so each worker making its own would cost Redis queues times workers a second, mostly for nothing. A pass is
claimed first (:meth:`~framework.broker.maintenance.Maintenance.claim`): the regular pass, on a key naming the
queue set for a little under ``interval``, so one worker a second makes it; the pass at a known due time (the
earliest one a pass saw, or a retry this worker scheduled: :meth:`Forwarder.note_due`), on a key naming that
time too, so one of the workers that know it makes it, on time. A worker alone wins every claim, as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    import structlog

    from framework.broker.broker import Broker

__all__ = ("CLAIM_SHARE", "Forwarder")

_MIN_WAIT = 0.05
CLAIM_SHARE = 0.9
"""The regular pass's claim lasts this share of the interval: a worker alone has its own claim lapsed by its next."""
_DUE_CLAIM = 10.0
"""Seconds the claim on a pass at one due time lasts: longer than the workers that know that time take to try."""


class Forwarder:
    """Forwards due tasks of ``queues`` (a job for :class:`~framework.worker.background.periodic.Periodic`).

    Run it every ``forward_interval`` seconds; each pass asks for the next one sooner when a task left is due
    before then, and the worker has its runner pass at the due time of each retry it schedules
    (:meth:`~framework.worker.background.periodic.Periodic.due_at`, with :meth:`note_due`).

    Args:
        broker: the broker.
        queues: the queues to forward.
        logger: the worker's logger.
        interval: the runner's interval (s): how long a regular pass's claim lasts, near enough.
    """

    component = "forwarder"

    def __init__(
        self,
        broker: Broker,
        queues: Iterable[str],
        logger: structlog.typing.FilteringBoundLogger,
        interval: float = 1.0,
    ) -> None:
        self.broker = broker
        self.queues = list(queues)
        self.log = logger
        self.interval = interval
        self._claim_key = ""
        self._due: float | None = None
        """The earliest due time this worker knows of (its last pass's, or a retry it scheduled since)."""

    def note_due(self, when: float) -> None:
        """A retry this worker scheduled is due at Unix time ``when``: the pass then is made, claimed on that time."""
        if self._due is None or when < self._due:
            self._due = when

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

    async def _claimed(self, now: float) -> bool:
        """Whether this worker makes the pass now (see the module docstring)."""
        broker = self.broker
        if not self._claim_key:
            self._claim_key = broker.forward_claim_key(self.queues)
        due = self._due
        if due is not None and due <= now:
            self._due = None  # whoever wins the claim on it forwards it
            return await broker.claim(f"{self._claim_key}:{round(due * 1000)}", _DUE_CLAIM)
        return await broker.claim(self._claim_key, self.interval * CLAIM_SHARE)

    async def run_once(self) -> float | None:
        """Forward due tasks; returns the wait until the earliest task left is due (None when none is left)."""
        now = self.broker.clock.now()
        if await self._claimed(now):
            self._due = None  # the pass sees every due time written before it
            moved, earliest = await self.forward_once()
            if moved:
                self.log.debug("tasks_forwarded", tasks=moved)
            if earliest is not None:  # a retry noted while the pass ran may be due sooner (written after it looked)
                self.note_due(earliest)
        if self._due is None:
            return None
        return max(_MIN_WAIT, self._due - self.broker.clock.now())
