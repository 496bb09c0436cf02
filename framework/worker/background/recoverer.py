"""The recoverer: brings back tasks whose worker died, and puts stale aggregation sets back in their group.

Paths, on the queues this worker serves:

* **Dead workers (fast; ours).** Each worker's heartbeat thread records it in ``<ext>:alive`` every
  ``heartbeat_interval``, and ``dequeue.lua`` records the ids it takes in the worker's per-queue in-flight
  set. A worker silent for ``dead_after`` seconds is dead (a busy event loop does not silence it, see
  :mod:`framework.worker.heartbeat`). Its tasks whose Redis lease was not extended for ``dead_after`` seconds
  go back to the head of their queue, **spending no retry** (``recover.lua``). With the default heartbeat
  of 2 s, ``dead_after`` is 8 s and a killed worker's tasks run again within about 15 s.
* **Poison pills (ours).** Only a task that kills its worker is charged. A worker that died holding one
  task charges that task with the death; after ``max_recoveries`` such deaths it is archived as a poison
  pill. A worker that died holding several charges none of them: each is marked a *suspect*, and a
  worker takes a suspect only when it holds nothing else and takes nothing else while it runs
  (``dequeue.lua``), so the next death names its task and an innocent task completes and loses the mark.
  The price is paid only after a crash: while suspects wait, a worker finishes what it holds before it
  takes one. (A dead worker's tasks are counted on the queues this worker serves.)
* **Expired leases (asynq's).** A task whose lease ended more than 30 s ago (a Go worker died, or one of
  ours could not record its tasks) is retried as a failure with ``"asynq: task lease expired"``, or
  archived when out of retries, exactly as Go's recoverer does. Checked every 6 passes.
* **Orphans.** Active tasks without a lease entry (left by a crash outside a script, or by old clients)
  get an already-expired lease so the path above picks them up. Checked every 12 passes.
* **Lost leases (ours).** A task whose in-memory lease lapsed in this worker (Redis was unreachable for
  longer than the lease) is given back to the head of its queue by this worker's recoverer, spending no
  retry and not counted as a crash, as soon as its Redis lease is as stale as a dead worker's would be
  (``recover.lua``; when another worker has re-leased it meanwhile, nothing happens).
* **Lost replies (ours).** A dequeue that ran in Redis but whose reply never reached this worker (the link
  reset, a Sentinel failover, a timeout), or a hand-off whose message was lost, leaves a task active, leased
  and on this worker's own in-flight set while the worker holds nothing of it; being alive, it is never
  taken for dead. Each pass reads this worker's in-flight sets (one round trip) and gives back, to the head
  of its queue, every task named there that it does not hold, once its lease is as stale as a dead worker's
  would be (``recover.lua``; spending no retry, not counted as a crash). Without this the task would wait for
  asynq's lease expiry (a minute) and be retried as a failure.
* **Dead waiters (ours).** A dead worker's id leaves the waiters lists (``<ext>:{q}:waiters``) of the queues
  this worker serves. An idle worker killed with SIGKILL leaves it there, and only an enqueue that finds
  nothing pending pops it: a queue fed by Go clients or by the forwarder alone (which hand nothing off) would
  keep the id of every worker killed while idle, the list's TTL renewed by each live worker's idle dequeue.
  Once a dead worker's tasks on these queues are all settled, it is not looked at again (each look is a
  command per queue for its waiters and one for its in-flight sets) until it is forgotten.
* **Cancelled by their caller.** A task ``Client.cancel`` asked to stop while it ran (its cancel request is
  kept for a while) is archived as cancelled rather than requeued by every path above, as its worker would
  have archived it: its caller was told it is being cancelled, so it does not run again.
* **Stale aggregation sets.** Sets staged longer than 2 minutes (their aggregator died, or its aggregate
  function failed) are put back into their group (asynq does this in its recoverer too). Their tasks keep
  the failed attempts counted on them, so a batch that always fails is archived by the aggregator after its
  ``max_attempts`` (see :mod:`framework.worker.background.aggregator`) rather than put back for good.

Why it is safe: the fast path requeues a task only when its Redis lease was last set at least
``dead_after`` seconds ago, and a worker's in-memory leases last ``dead_after - 1`` seconds from their
last extension, so the old owner, should it still be alive after all, has already stopped writing for
that task. ``dead_after`` defaults to ``max(6, 4 * heartbeat_interval)``: three missed beats, and more
than Go's 5 s lease-extension period, so a task that a Go worker re-leased is never taken from it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from framework.broker.base import LEASE_SECONDS
from framework.errors import TaskCancelled
from framework.protocol.message import decode_message, encode_message
from framework.retry import default_retry_delay
from framework.worker.outcomes import CANCELLED_BY_CALLER, error_text
from framework.worker.steps import archive

if TYPE_CHECKING:
    from collections.abc import Container, Iterable

    import structlog

    from framework.broker.broker import Broker
    from framework.task import RetryDelay

__all__ = ("LEASE_EXPIRED_ERROR", "Recoverer", "default_dead_after")

LEASE_EXPIRED_ERROR = "asynq: task lease expired"
FORGET_DEAD_AFTER = 600.0
"""Seconds after its last beat a dead worker's liveness entry is dropped (every recoverer had its chance)."""


def default_dead_after(heartbeat_interval: float) -> float:
    """Seconds of silence after which a worker counts as dead: ``max(6, 4 * heartbeat_interval)``."""
    return max(6.0, 4.0 * heartbeat_interval)


class Recoverer:
    """Recovers tasks of dead workers and of expired leases on ``queues``.

    A job for :class:`~framework.worker.background.periodic.Periodic`, run every ``recoverer_interval`` seconds.

    Args:
        broker: the broker.
        queues: the queues this worker serves.
        logger: the worker's logger.
        dead_after: seconds without a heartbeat after which a worker counts as dead.
        max_recoveries: recoveries after which a task is archived as a poison pill.
        retry_delay: the retry policy for expired leases.
        lost: this worker's processor's list of tasks whose lease lapsed (``Processor.lost``).
        server_id: this worker's server id, whose in-flight sets are read for lost replies (None: not read).
        held: the (queue, id) of every task this worker holds now (the processor's in-flight record).
    """

    component = "recoverer"

    def __init__(
        self,
        broker: Broker,
        queues: Iterable[str],
        logger: structlog.typing.FilteringBoundLogger,
        *,
        dead_after: float = 8.0,
        max_recoveries: int = 3,
        retry_delay: RetryDelay | None = None,
        lost: list[tuple[str, str, float]] | None = None,
        server_id: str | None = None,
        held: Container[tuple[str, str]] = (),
    ) -> None:
        self.broker = broker
        self.queues = list(queues)
        self.log = logger
        self.dead_after = dead_after
        self.max_recoveries = max_recoveries
        self.retry_delay = retry_delay or default_retry_delay
        self.lost = lost if lost is not None else []
        self.server_id = server_id
        self.held = held
        self._passes = 0
        self._settled: set[tuple[str, float]] = set()
        """(server id, last beat) of dead workers whose tasks on these queues this recoverer has all settled."""

    async def recover_dead_workers(self) -> int:
        """Requeue (or archive as poison pills) the tasks of workers whose heartbeat stopped; returns how many."""
        broker = self.broker
        now = broker.clock.now()
        dead = await broker.dead_workers(now - self.dead_after)
        # a dead worker settled here already (the same last beat: not one that came back and died again) has
        # nothing more on these queues: it left their waiters, and no task can reach its in-flight sets since
        # (a hand-off reaches only a waiter). It is not looked at again, each look being a command per queue.
        self._settled &= set(dead)
        for sid, last_seen in [d for d in dead if d in self._settled and d[1] < now - FORGET_DEAD_AFTER]:
            await broker.forget_worker(sid)
            self._settled.discard((sid, last_seen))
        dead = [d for d in dead if d not in self._settled]
        if not dead:
            return 0
        for sid, _ in dead:
            # an idle worker killed with SIGKILL leaves its id in the waiters lists (see the module docstring)
            await broker.withdraw(self.queues, sid)
        held_by = await broker.inflight_of([sid for sid, _ in dead], self.queues)
        newest_dead_lease = self._newest_dead_lease(now)
        moved = 0
        for (sid, last_seen), held in zip(dead, held_by, strict=True):
            settled = True
            tasks = [(q, task_id) for q, ids in held.items() for task_id in ids]
            alone = await self._died_alone(sid, tasks) if tasks else True
            for queue, ids in held.items():
                queue_settled = True
                for task_id in ids:
                    result = await self._recover_one(queue, task_id, sid, newest_dead_lease, alone=alone)
                    moved += result == 1
                    queue_settled &= result != -1
                if ids and queue_settled:
                    await broker.drop_inflight(queue, sid)
                settled &= queue_settled
            if settled and last_seen < now - FORGET_DEAD_AFTER:
                await broker.forget_worker(sid)
            elif settled:
                self._settled.add((sid, last_seen))
        return moved

    def _newest_dead_lease(self, now: float) -> int:
        """The newest lease expiry (Unix s) a dead owner (or one that lost its lease) can have left.

        A lease set (whole seconds, now + 30 s) at or before ``now - dead_after``: never one a live worker holds.
        """
        return math.floor(now - self.dead_after) + LEASE_SECONDS - 1

    async def _died_alone(self, sid: str, held: list[tuple[str, str]]) -> bool:
        """Whether the dead worker ``sid`` held one task when it died (so that task is charged with it).

        Counted once, by the first recoverer to look, from the tasks of its in-flight sets that are still
        leased (the sets also name tasks that finished since the last trim), and kept in Redis: later
        passes and other recoverers, which may find some of the tasks recovered already, use that count.
        """
        count = await self.broker.tasks_at_death(sid)
        if count is None:  # counted only by the first look, not again at every pass
            seen = sum(await self.broker.leased(held))
            count = await self.broker.record_tasks_at_death(sid, seen, int(FORGET_DEAD_AFTER))
        return count == 1

    async def _recover_one(
        self, queue: str, task_id: str, sid: str, newest_dead_lease: float, *, alone: bool = True
    ) -> int:
        """Recover one task of a dead worker; returns 1 requeued, 2 archived, 0 nothing to do, -1 try later.

        ``alone``: the worker died holding only this task, which is then charged with the death.
        """
        result = await self._recover(queue, task_id, newest_dead_lease, self.max_recoveries, alone=alone, server_id=sid)
        if result == 1:
            self.log.warning(
                "task_recovered",
                task_id=task_id,
                queue=queue,
                dead_worker=sid,
                charged=alone,
                note="no retry spent" if alone else "no retry spent; runs alone next (a suspect)",
            )
        return int(result)

    async def give_back_lost(self) -> int:
        """Requeue tasks whose lease lapsed in this worker once nobody can hold them; returns how many."""
        if not self.lost:
            return 0
        now = self.broker.clock.now()
        newest_dead_lease = self._newest_dead_lease(now)
        keep: list[tuple[str, str, float]] = []
        given = 0
        pending, self.lost[:] = list(self.lost), []
        try:
            while pending:
                queue, task_id, lost_at = pending[0]
                result = 0
                if now >= lost_at + 1.0:
                    result = await self._recover(queue, task_id, newest_dead_lease, self.max_recoveries, count=False)
                if result == 1:
                    given += 1
                    self.log.info("task_given_back", task_id=task_id, queue=queue, note="lease lost; no retry spent")
                elif now < lost_at + 1.0 or (result == -1 and now < lost_at + self.dead_after + 5.0):
                    keep.append((queue, task_id, lost_at))  # too early to tell: try again next pass
                pending.pop(0)
        finally:
            self.lost.extend(keep + pending)
        return given

    async def reclaim_unheld(self) -> int:
        """Give back tasks on this worker's own in-flight sets that it does not hold (lost replies); returns how many.

        Only once a task's lease is as stale as a dead worker's: a task someone holds has its lease extended
        (ours every beat, Go's every 5 s), and one whose reply is late has a fresh one. Ids of finished tasks
        the heartbeat has not trimmed yet hold no lease and are left alone.
        """
        sid, held = self.server_id, self.held
        if sid is None:
            return 0
        (named,) = await self.broker.inflight_of([sid], self.queues)
        unheld = [(queue, task_id) for queue, ids in named.items() for task_id in ids if (queue, task_id) not in held]
        if not unheld:
            return 0
        newest_dead_lease = self._newest_dead_lease(self.broker.clock.now())
        given = 0
        for queue, task_id in unheld:
            if (queue, task_id) in held:  # taken again while an earlier give-back was awaited
                continue
            result = await self._recover(
                queue, task_id, newest_dead_lease, self.max_recoveries, count=False, server_id=sid
            )
            if result == 1:
                given += 1
                self.log.warning(
                    "task_given_back",
                    task_id=task_id,
                    queue=queue,
                    note="taken for this worker but never received (a lost reply); no retry spent",
                )
        return given

    async def _recover(
        self, queue: str, task_id: str, newest_dead_lease: float, max_recoveries: int, **how: Any
    ) -> int:
        """``broker.recover`` (same arguments), archiving what it hands back.

        Returns 1 requeued, 0 nothing to do, -1 try later, 2 archived as a poison pill, 3 archived as cancelled.
        """
        result = await self.broker.recover(queue, task_id, newest_dead_lease, max_recoveries, **how)
        if not isinstance(result, list):
            return int(result)
        kind, data = int(result[0]), result[1]
        if kind == 3:
            await self._archive_cancelled(queue, data)
        else:
            await self._archive_poison(queue, data)
        return kind

    async def _archive_cancelled(self, queue: str, data: bytes) -> None:
        msg = decode_message(data)
        msg.error_msg = error_text(TaskCancelled(CANCELLED_BY_CALLER))
        msg.last_failed_at = int(self.broker.clock.now())
        await archive(self.broker, queue, msg.id, msg, encode_message(msg))
        self.log.warning(
            "task_cancelled_recovered",
            task_id=msg.id,
            queue=queue,
            note="its caller cancelled it while it ran and its worker is gone: archived, not run again",
        )

    async def _archive_poison(self, queue: str, data: bytes) -> None:
        msg = decode_message(data)
        msg.error_msg = (
            f"poison pill: the worker running this task died {self.max_recoveries + 1} times "
            "(killed, out of memory, or the handler crashed the process); archived"
        )
        msg.last_failed_at = int(self.broker.clock.now())
        await archive(self.broker, queue, msg.id, msg, encode_message(msg))
        await self.broker.clear_suspect(queue, msg.id)
        self.log.error("task_poison_pill", task_id=msg.id, queue=queue, type=msg.type, error=msg.error_msg)

    async def recover_expired_leases(self) -> int:
        """Retry (or archive) tasks whose lease ended more than 30 s ago, as asynq's recoverer does."""
        now = self.broker.clock.now()
        count = 0
        for queue in self.queues:
            for data in await self.broker.list_lease_expired(queue, now - LEASE_SECONDS):
                msg = decode_message(data)
                msg.error_msg = LEASE_EXPIRED_ERROR
                msg.last_failed_at = int(now)
                if msg.retried >= msg.retry:
                    await archive(self.broker, queue, msg.id, msg, encode_message(msg))
                else:
                    delay = self.retry_delay(msg.retried, RuntimeError(LEASE_EXPIRED_ERROR))
                    msg.retried += 1
                    await self.broker.retry(queue, msg.id, encode_message(msg), math.ceil(now + delay), failure=True)
                count += 1
                self.log.warning("task_lease_expired", task_id=msg.id, queue=queue, retried=msg.retried)
        return count

    async def repair(self) -> int:
        """Give expired leases to active tasks that have none; returns how many."""
        total = 0
        for queue in self.queues:
            total += await self.broker.repair_orphans(queue)
        if total:
            self.log.warning("orphans_repaired", tasks=total)
        return total

    async def reclaim_aggregation_sets(self) -> int:
        """Put stale aggregation sets back into their groups; returns how many sets."""
        total = 0
        for queue in self.queues:
            total += await self.broker.reclaim_stale_aggregation_sets(queue)
        if total:
            self.log.warning("aggregation_sets_reclaimed", sets=total)
        return total

    async def recover_once(self) -> None:
        """One pass: lost leases and replies, dead workers; expired leases, stale sets every 6th; orphans every 12th."""
        await self.give_back_lost()
        await self.reclaim_unheld()
        await self.recover_dead_workers()
        if self._passes % 6 == 0:
            await self.recover_expired_leases()
            await self.reclaim_aggregation_sets()
        if self._passes % 12 == 0:
            await self.repair()
        self._passes += 1

    async def run_once(self) -> None:
        """One recovery pass (:meth:`recover_once`)."""
        await self.recover_once()
