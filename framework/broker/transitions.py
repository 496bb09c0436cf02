"""The worker part of :class:`~framework.broker.broker.RedisBroker`: dequeueing, and every transition of an active task.

Taking tasks (leased, recorded in the worker's in-flight set), finishing them (done, completed, retried,
archived, requeued) with their processed and failed counters, deferring those whose type has no handler,
and writing results. (Leases are extended by the worker's heartbeat thread: :mod:`framework.broker.liveness`.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from framework.broker.base import INFLIGHT_TTL, LEASE_SECONDS, BrokerPart
from framework.protocol.keys import day_stamp
from framework.protocol.scripts import SCRIPTS

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from framework.protocol.keys import QueueKeys

__all__ = ("ARCHIVE_MAX_AGE", "ARCHIVE_MAX_SIZE", "MINUTE_TTL", "Taken", "WorkerTransitions")

ARCHIVE_MAX_SIZE = 10_000
ARCHIVE_MAX_AGE = 90 * 24 * 3600
_DAY_TTL = 90 * 24 * 3600
MINUTE_TTL = 26 * 3600
"""How long the per-minute counters are kept."""


class Taken(list[tuple[str, bytes]]):
    """The tasks one dequeue took: (task id, encoded TaskMessage) pairs, oldest first.

    Attributes:
        suspect: the one task taken is a crash suspect (``recover.lua``): it must run alone.
        blocked: nothing was taken because a suspect is next and the worker holds tasks.
    """

    suspect = False
    blocked = False


_DEQUEUE = SCRIPTS["dequeue"]
_DONE = SCRIPTS["done"]


class WorkerTransitions(BrokerPart):
    """What a worker's processor calls for the tasks it takes.

    Args:
        state: what the broker's parts share.
    """

    # -- helpers ---------------------------------------------------------------------------------

    def _stat_keys(self, qk: QueueKeys, now: float, kind: str) -> list[str]:
        day = day_stamp(int(now))
        if kind == "processed":
            return [qk.processed, qk.processed_day(day), qk.minute_stats("processed", int(now) // 60)]
        return [qk.failed, qk.failed_day(day), qk.minute_stats("failed", int(now) // 60)]

    @staticmethod
    def _day_expireat(now: float) -> int:
        return int(now) + _DAY_TTL

    # -- worker transitions ------------------------------------------------------------------------

    async def dequeue(
        self, queue: str, count: int, inflight_key: str = "", waiter: str = "", *, alone: bool = False
    ) -> Taken:
        """Take up to ``count`` pending tasks of ``queue`` (none when paused); leases them for 30 s.

        Args:
            queue: the queue.
            count: the most tasks to take.
            inflight_key: the dequeuing worker's in-flight set of this queue (``QueueKeys.inflight``);
                the ids taken are added to it atomically. "" records nothing.
            waiter: this worker's server id, listening on its handoff channel: when nothing is pending it
                is registered in the queue's waiters, so the next enqueue hands its task straight to it
                (needs ``inflight_key``). "" registers nothing.
            alone: the worker holds no task at all, so it may take a crash suspect, which then runs alone.

        Returns:
            (task id, encoded TaskMessage) of each task taken, oldest first; see :class:`Taken` for the
            suspect and blocked flags. A batch stops before the first suspect in it.
        """
        qk = self.schema.queue(queue)
        lease_until = int(self.clock.now()) + LEASE_SECONDS
        keys = [qk.pending, qk.active, qk.lease, qk.paused, qk.suspects]
        args: list[Any] = [qk.task_prefix, lease_until, count, INFLIGHT_TTL, 1 if alone else 0]
        if inflight_key:
            keys.append(inflight_key)
            if waiter:
                keys.append(qk.waiters)
                args.append(waiter)
        flat: list[Any] = await self.hot.evalsha(_DEQUEUE, keys, args)
        taken = Taken()
        if len(flat) % 2:
            if len(flat) == 1:
                taken.blocked = True
                return taken
            taken.suspect = True
        taken.extend((flat[i].decode(), flat[i + 1]) for i in range(0, len(flat) - 1, 2))
        return taken

    async def clear_suspect(self, queue: str, task_id: str) -> None:
        """The task ran alone and its worker lived: it is no longer a crash suspect."""
        await self.redis.srem(self.schema.queue(queue).suspects, task_id)

    async def withdraw(self, queues: Sequence[str], waiter: str) -> None:
        """Take ``waiter`` out of the queues' waiters: no enqueue hands it a task after this returns."""
        _raise_first(await self.hot.execute_many([("LREM", self.schema.queue(q).waiters, 0, waiter) for q in queues]))

    async def pending_counts(self, queues: Sequence[str]) -> list[int]:
        """``LLEN`` of each queue's pending list, in one round trip (an idle worker's cheap check)."""
        lengths = _raise_first(await self.hot.execute_many([("LLEN", self.schema.queue(q).pending) for q in queues]))
        return [int(n) for n in lengths]

    def pending_check_key(self, queues: Iterable[str]) -> str:
        """The claim on the idle check of exactly ``queues`` (framework's own key; see :meth:`check_pending`)."""
        return self.schema.queue_set_claim("pending-check", queues)

    async def check_pending(self, queues: Sequence[str], claim: str, ttl: float, holder: str) -> list[int] | None:
        """The idle check of ``queues``, made once per ``ttl`` seconds by one of the idle workers serving them.

        An idle worker looks at the pending lists for tasks that came without a wake-up (Go clients publish
        none). One look serves every worker with the same queues: the first to claim ``claim``
        (:meth:`pending_check_key`, ``SET NX`` for ``ttl`` s) makes it, and publishes a wake-up for each queue
        it finds tasks in, so every idle worker serving it looks there at once. Without the claim, each idle
        worker would send one ``LLEN`` per queue each time: queues times workers.

        Returns:
            ``LLEN`` of each queue's pending list (as :meth:`pending_counts`), or None when another worker
            holds the claim (it looks, and wakes this one should it find anything).
        """
        if not await self.claim(claim, ttl, holder or "1"):
            return None
        counts = await self.pending_counts(queues)
        if self._channel:
            for queue, count in zip(queues, counts, strict=True):
                if count:
                    await self.redis.publish(self._channel, queue)
        return counts

    async def done(
        self, queue: str, tasks: Sequence[tuple[str, str] | tuple[str, str, bytes]], inflight: str = ""
    ) -> list[int]:
        """Finish succeeded tasks (no retention); the waited ones have their outcome announced.

        Args:
            queue: their queue.
            tasks: (id, unique lock key or "") pairs, or (id, lock, result bytes) triples: a task someone waits
                for (:meth:`~framework.protocol.keys.QueueKeys.waiting`) has ``done`` and its result (or the
                record's ``result`` field) published to its waiters; the record is deleted either way.
            inflight: the acknowledging worker's in-flight set of ``queue``; the ids leave it in the same step.

        Returns:
            Per task, 1 done or 0 not found (the task is no longer active here).
        """
        keys, args = self.done_call(queue, tasks, inflight)
        result: list[int] = await self.hot.evalsha(_DONE, keys, args)
        return result

    def done_call(
        self, queue: str, tasks: Sequence[tuple[str, str] | tuple[str, str, bytes]], inflight: str = ""
    ) -> tuple[list[str], list[Any]]:
        """The keys and arguments of :meth:`done` (``done.lua``)."""
        qk = self.schema.queue(queue)
        now = self.clock.now()
        args: list[Any] = [qk.task_prefix, self._day_expireat(now), MINUTE_TTL, qk.xprefix]
        for task in tasks:
            args += (task[0], task[1], task[2] if len(task) > 2 else b"")
        keys = [qk.active, qk.lease, *self._stat_keys(qk, now, "processed")]
        if inflight:
            keys.append(inflight)
        return keys, args

    async def mark_complete(
        self, queue: str, task_id: str, data: bytes, expires_at: int, unique_key: str, result: bytes = b""
    ) -> int:
        """Finish a succeeded task that has a retention: keep it as completed until ``expires_at``.

        ``result`` (when not empty) is stored in the record's ``result`` field in the same step; the task's
        waiters are told ``completed``.
        """
        keys, args = self.complete_call(queue, task_id, data, expires_at, unique_key, result)
        return int(await self.pool.evalsha(SCRIPTS["mark_complete"], keys, args))

    def complete_call(
        self, queue: str, task_id: str, data: bytes, expires_at: int, unique_key: str, result: bytes = b""
    ) -> tuple[list[str], list[Any]]:
        """The keys and arguments of :meth:`mark_complete` (``mark_complete.lua``)."""
        qk = self.schema.queue(queue)
        now = self.clock.now()
        keys = [qk.task(task_id), qk.active, qk.lease, qk.completed, *self._stat_keys(qk, now, "processed")]
        args: list[Any] = [task_id, data, expires_at, self._day_expireat(now), MINUTE_TTL, unique_key, result]
        args.append(qk.xprefix)
        return keys, args

    async def requeue(self, queue: str, task_id: str, *, wake: bool = False) -> int:
        """Put an unfinished active task back at the head of its queue (no retry spent).

        ``wake``: also publish a wake-up for the queue, so an idle worker takes the task at once.
        """
        qk = self.schema.queue(queue)
        keys = [qk.task(task_id), qk.active, qk.lease, qk.pending]
        found = int(await self.pool.evalsha(SCRIPTS["requeue"], keys, [task_id]))
        if found and wake and self._channel:
            await self.redis.publish(self._channel, queue)
        return found

    def _failure_keys(self, qk: QueueKeys, now: float) -> list[str]:
        return [*self._stat_keys(qk, now, "processed"), *self._stat_keys(qk, now, "failed")]

    async def retry(self, queue: str, task_id: str, data: bytes, retry_at: int, *, failure: bool) -> int:
        """Move a failed active task to the retry set until ``retry_at``."""
        qk = self.schema.queue(queue)
        now = self.clock.now()
        keys = [qk.task(task_id), qk.active, qk.lease, qk.retry, *self._failure_keys(qk, now)]
        args: list[Any] = [task_id, data, retry_at, 1 if failure else 0, self._day_expireat(now), MINUTE_TTL]
        return int(await self.pool.evalsha(SCRIPTS["retry"], keys, args))

    async def archive(self, queue: str, task_id: str, data: bytes) -> int:
        """Move a failed active task to the archive (kept 90 days, at most 10,000 per queue); tell its waiters."""
        keys, args = self.archive_call(queue, task_id, data)
        return int(await self.pool.evalsha(SCRIPTS["archive"], keys, args))

    def archive_call(self, queue: str, task_id: str, data: bytes) -> tuple[list[str], list[Any]]:
        """The keys and arguments of :meth:`archive` (``archive.lua``)."""
        qk = self.schema.queue(queue)
        now = self.clock.now()
        keys = [qk.task(task_id), qk.active, qk.lease, qk.archived, *self._failure_keys(qk, now)]
        args: list[Any] = [
            task_id,
            data,
            int(now),
            int(now) - ARCHIVE_MAX_AGE,
            ARCHIVE_MAX_SIZE,
            qk.task_prefix,
            self._day_expireat(now),
            MINUTE_TTL,
            qk.xprefix,
        ]
        return keys, args

    async def cancel_requested(self, queue: str, task_id: str) -> bool:
        """Whether the caller cancelled this running task (``Client.cancel``): then it is archived, not retried."""
        return bool(await self.redis.exists(self.schema.queue(queue).cancel_request(task_id)))

    async def defer(
        self, queue: str, task_id: str, data: bytes, *, now: int, wait: float, delays: tuple[int, int]
    ) -> int:
        """Put back an active task whose type has no handler here, for a worker that has one (``defer.lua``).

        It goes to the retry set without spending a retry or counting as a failure; the delay is the time
        since its first deferral, bounded by ``delays`` (shortest, longest).

        Args:
            queue: its queue.
            task_id: its id.
            data: its encoded message (error text and failure time updated).
            now: the time, Unix s.
            wait: seconds from the first deferral after which it is no longer deferred.
            delays: the shortest and longest delay, whole seconds.

        Returns:
            When it is due again (Unix s); 0 when it is no longer active; -1 when it has waited ``wait``
            seconds (it is still active, for the caller to archive).
        """
        qk = self.schema.queue(queue)
        keys = [qk.task(task_id), qk.active, qk.lease, qk.retry]
        args: list[Any] = [task_id, data, now, wait, delays[0], delays[1]]
        return int(await self.pool.evalsha(SCRIPTS["defer"], keys, args))

    async def write_result(self, queue: str, task_id: str, data: bytes) -> None:
        """Store a running task's result bytes (``HSET result``)."""
        await self.redis.hset(self.schema.queue(queue).task(task_id), "result", data)

    async def write_progress(
        self, queue: str, task_id: str, fields: Mapping[str, str | int | float], event: bytes, ttl: int
    ) -> None:
        """Store a running task's progress beside it and announce it (one pipelined round trip).

        The record is our own hash (:meth:`~framework.protocol.keys.QueueKeys.progress`), never a field of
        asynq's task hash, so Go's tools neither see nor trip on it; it expires ``ttl`` seconds after each
        write, so it never outlives the task by much, even when its worker dies.

        Args:
            queue: the task's queue.
            task_id: its id.
            fields: the record's fields (fraction, message, updated_at, attempt, ended).
            event: what is published on the task's progress channel (JSON).
            ttl: seconds the record lives after this write.
        """
        qk = self.schema.queue(queue)
        key = qk.progress(task_id)
        flat = [part for item in fields.items() for part in item]
        channel = qk.progress_channel(task_id)
        commands = [("HSET", key, *flat), ("EXPIRE", key, max(1, ttl)), ("PUBLISH", channel, event)]
        _raise_first(await self.hot.execute_many(commands))


def _raise_first(replies: list[Any]) -> list[Any]:
    """``replies``, unless one is an error: then that error is raised."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies
