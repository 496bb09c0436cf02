"""The broker's maintenance part: forwarding, recovery, the janitor, aggregation.

Moving due scheduled and retry tasks to pending, finding dead workers and recovering their tasks, deleting
expired completed tasks, and staging, reading and reclaiming the aggregation sets of task groups.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from framework.broker.base import LEASE_SECONDS, BrokerPart
from framework.broker.transitions import ARCHIVE_MAX_AGE, ARCHIVE_MAX_SIZE
from framework.protocol.scripts import SCRIPTS

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence


__all__ = ("AGGREGATION_SET_TTL", "SUSPECT_TTL", "FailedAggregation", "Maintenance")

AGGREGATION_SET_TTL = 120
"""Seconds an aggregation set may stay staged before it is put back in its group (asynq: 2 min)."""
SUSPECT_TTL = 24 * 3600
"""Seconds a queue's crash-suspect marks last after the last death (marks of deleted tasks fade with it)."""


@dataclass(frozen=True, slots=True)
class FailedAggregation:
    """What :meth:`Maintenance.aggregation_failed` did with a failed attempt to aggregate a staged set.

    Attributes:
        counted: the attempt was counted on the set's tasks; False when nothing was done, because the set is gone
            (reclaimed, deleted, or its aggregate task enqueued) or because ``due`` tasks need their messages.
        due: when not counted, the tasks that reach the most attempts with this one and whose archive message
            was not given: (raw id, attempts, current encoded message) each; call again with their messages.
        attempts: the most attempts a task of the set has now (when counted).
        archived: tasks archived, having reached the most attempts.
        deleted: tasks deleted instead (their message was given as ``b""``: it does not decode).
        left: tasks left staged, below the most attempts.
    """

    counted: bool
    due: list[tuple[bytes, int, bytes]] = field(default_factory=list)
    attempts: int = 0
    archived: int = 0
    deleted: int = 0
    left: int = 0


class Maintenance(BrokerPart):
    """What the forwarder, recoverer, janitor and aggregator call.

    Args:
        state: what the broker's parts share.
    """

    # -- maintenance -------------------------------------------------------------------------------

    async def forward(self, queue: str) -> tuple[int, float | None]:
        """Move due scheduled and retry tasks of ``queue`` to pending (or back to their group).

        Returns:
            (tasks moved, the earliest due time left in either set or None).
        """
        qk = self.schema.queue(queue)
        now = self.clock.now()
        # now to the millisecond: a task a limit put off is due at a fractional second (asynq's own are whole)
        args: list[Any] = [f"{now:.3f}", qk.task_prefix, int(now * 1e9), qk.prefix + "g:", self._channel, queue]
        moved = 0
        earliest: float | None = None
        for source in (qk.scheduled, qk.retry):
            while True:
                n, nxt = await self.pool.evalsha(SCRIPTS["forward"], [source, qk.pending, qk.groups], args)
                moved += int(n)
                if int(n) < 100:
                    break
            if float(nxt) >= 0 and (earliest is None or float(nxt) < earliest):
                earliest = float(nxt)
        return moved, earliest

    def forward_claim_key(self, queues: Iterable[str]) -> str:
        """The claim on a forwarder pass over exactly ``queues`` (framework's own key; see :meth:`claim`)."""
        return self.schema.queue_set_claim("forward-pass", queues)

    async def list_lease_expired(self, queue: str, cutoff: float, limit: int = 100) -> list[bytes]:
        """Messages of tasks in ``queue`` whose lease ended before ``cutoff``."""
        qk = self.schema.queue(queue)
        result: list[bytes] = await self.pool.evalsha(
            SCRIPTS["list_lease_expired"], [qk.lease], [int(cutoff), qk.task_prefix, limit]
        )
        return result

    async def recover(
        self,
        queue: str,
        task_id: str,
        newest_dead_lease: float,
        max_recoveries: int,
        *,
        count: bool = True,
        alone: bool = True,
        server_id: str | None = None,
    ) -> Any:
        """Requeue a task of a dead worker; see ``recover.lua`` for the answers.

        ``alone``: the worker died holding only this task, so the death is charged to it (toward the
        poison-pill limit); otherwise the task is marked a suspect, uncharged, and runs alone next time.
        ``count=False``: the owner gives back a task whose lease it lost (a Redis outage, not a crash):
        neither charged nor a suspect.
        """
        qk = self.schema.queue(queue)
        keys = [qk.task(task_id), qk.active, qk.lease, qk.pending, qk.suspects, qk.cancel_request(task_id)]
        if server_id is not None:  # the dead worker's in-flight set: the id leaves it as the task is requeued
            keys.append(qk.inflight(server_id))
        mode = 0 if not count else 1 if alone else 2
        args: list[Any] = [task_id, int(newest_dead_lease), max_recoveries, self._channel, queue, mode, SUSPECT_TTL]
        return await self.pool.evalsha(SCRIPTS["recover"], keys, args)

    async def leased(self, tasks: Sequence[tuple[str, str]]) -> list[bool]:
        """Whether each (queue, id) still holds a lease (in one round trip): the tasks a dead worker held."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for queue, task_id in tasks:
                pipe.zscore(self.schema.queue(queue).lease, task_id)
            return [score is not None for score in await pipe.execute()]

    # -- dead workers ------------------------------------------------------------------------------

    async def dead_workers(self, silent_since: float) -> list[tuple[str, float]]:
        """(server id, last beat) of each worker whose last heartbeat (``<ext>:alive``) is ``silent_since`` or older."""
        dead = await self.redis.zrangebyscore(self.schema.alive, "-inf", silent_since, withscores=True)
        return [(_text(pair[0]), float(pair[1])) for pair in cast("list[tuple[bytes, float]]", dead)]

    async def inflight_of(self, server_ids: Sequence[str], queues: Sequence[str]) -> list[dict[str, list[str]]]:
        """Per worker, queue -> the ids its in-flight set there names (one round trip); ``queues`` in order.

        The sets name what the worker took and had not finished at its last trim: the tasks it may have held.
        """
        async with self.redis.pipeline(transaction=False) as pipe:
            for sid in server_ids:
                for queue in queues:
                    pipe.smembers(self.schema.queue(queue).inflight(sid))
            replies = iter(await pipe.execute())
        return [{queue: [_text(m) for m in next(replies)] for queue in queues} for _ in server_ids]

    async def drop_inflight(self, queue: str, server_id: str) -> None:
        """Delete a dead worker's in-flight set of ``queue`` (every task it names is settled)."""
        await self.redis.delete(self.schema.queue(queue).inflight(server_id))

    async def forget_worker(self, server_id: str) -> None:
        """Drop a dead worker's liveness entry (every recoverer had its chance)."""
        await self.redis.zrem(self.schema.alive, server_id)

    async def tasks_at_death(self, server_id: str) -> int | None:
        """How many tasks a dead worker held when it died, as first counted (None: not counted yet)."""
        stored = await self.redis.get(self.schema.death(server_id))
        return None if stored is None else int(stored)

    async def record_tasks_at_death(self, server_id: str, count: int, ttl: int) -> int:
        """Store ``count`` for :meth:`tasks_at_death` unless a count is stored already; returns the one that stands.

        The first count stored wins (``SET NX``), so every recoverer charges the same tasks; kept ``ttl`` s.
        """
        key = self.schema.death(server_id)
        await self.redis.set(key, count, nx=True, ex=ttl)
        stored = await self.redis.get(key)
        return count if stored is None else int(stored)

    async def repair_orphans(self, queue: str) -> int:
        """Give already-expired leases to active tasks that have none, so recovery finds them."""
        qk = self.schema.queue(queue)
        expired = int(self.clock.now()) - 2 * LEASE_SECONDS
        return int(await self.pool.evalsha(SCRIPTS["repair_orphans"], [qk.active, qk.lease], [expired]))

    async def delete_expired_completed(self, queue: str, batch: int = 100) -> int:
        """Delete completed tasks of ``queue`` whose retention ran out; returns how many."""
        qk = self.schema.queue(queue)
        total = 0
        while True:
            n = int(
                await self.pool.evalsha(
                    SCRIPTS["delete_expired_completed"], [qk.completed], [int(self.clock.now()), qk.task_prefix, batch]
                )
            )
            total += n
            if n < batch:
                return total

    async def next_due(self, queues: Sequence[str]) -> list[float | None]:
        """Earliest score in each queue's scheduled and retry sets (None when both are empty), one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for queue in queues:
                qk = self.schema.queue(queue)
                pipe.zrange(qk.scheduled, 0, 0, withscores=True)
                pipe.zrange(qk.retry, 0, 0, withscores=True)
            replies = await pipe.execute()
        out: list[float | None] = []
        for i in range(0, len(replies), 2):
            scores = [float(r[0][1]) for r in replies[i : i + 2] if r]
            out.append(min(scores) if scores else None)
        return out

    # -- aggregation -------------------------------------------------------------------------------

    async def groups(self, queue: str) -> list[str]:
        """Names of the groups of ``queue`` that hold aggregating tasks.

        A name that is not UTF-8 (Go may write any bytes) is decoded with ``surrogateescape``: it names no
        key this side can write, which the caller tells by the name not encoding to UTF-8.
        """
        members = await self.redis.smembers(self.schema.queue(queue).groups)
        return sorted(g.decode("utf-8", "surrogateescape") if isinstance(g, bytes) else str(g) for g in members)

    async def oldest_in_group(self, queue: str, group: str, count: int) -> list[bytes]:
        """The encoded messages of a group's ``count`` oldest tasks, oldest first; ids without a record are left out.

        The aggregator reads them to find a group's task type (for aggregators by task type).
        """
        qk = self.schema.queue(queue)
        ids = await self.redis.zrange(qk.group(group), 0, count - 1)
        if not ids:
            return []
        prefix = qk.task_prefix.encode()
        async with self.redis.pipeline(transaction=False) as pipe:
            for task_id in ids:  # an id need not be UTF-8
                pipe.hget(prefix + (task_id if isinstance(task_id, bytes) else str(task_id).encode()), "msg")
            found = await pipe.execute()
        return [data for data in found if isinstance(data, bytes)]

    async def aggregation_check(
        self, queue: str, group: str, set_id: str, *, max_size: int, max_delay: float, grace_period: float
    ) -> str | None:
        """Stage a ready group's tasks (up to ``max_size``) in a new aggregation set.

        Returns:
            The aggregation set key, or None when the group is not ready.
        """
        qk = self.schema.queue(queue)
        now = self.clock.now()
        set_key = qk.aggregation_set(group, set_id)
        keys = [qk.group(group), set_key, qk.aggregation_sets, qk.groups]
        args: list[Any] = [max_size, max_delay, grace_period, int(now) + AGGREGATION_SET_TTL, now, group]
        created = int(await self.pool.evalsha(SCRIPTS["aggregation_check"], keys, args))
        return set_key if created else None

    async def read_aggregation_set(self, queue: str, set_key: str) -> tuple[list[tuple[str, bytes]], float | None]:
        """The (id, encoded message) of each task staged in an aggregation set, and the set's deadline.

        Tasks whose record is gone, or is no longer an aggregating task, are left out. An id that is not UTF-8
        comes with its undecodable bytes replaced (U+FFFD).
        """
        qk = self.schema.queue(queue)
        flat = await self.pool.evalsha(
            SCRIPTS["read_aggregation_set"], [set_key, qk.aggregation_sets], [qk.task_prefix]
        )
        deadline = float(flat[0]) if int(flat[0]) >= 0 else None
        return [(flat[i].decode("utf-8", "replace"), flat[i + 1]) for i in range(1, len(flat), 2)], deadline

    async def aggregation_set_deadline(self, queue: str, set_key: str) -> float | None:
        """An aggregation set's deadline (Unix s), or None once it is gone (aggregated, or reclaimed)."""
        score = await self.redis.zscore(self.schema.queue(queue).aggregation_sets, set_key)
        return None if score is None else float(score)

    async def delete_aggregation_set(self, queue: str, set_key: str, aggregate_id: str = "") -> int:
        """Delete an aggregation set and its member tasks (after the aggregated task was enqueued).

        Members whose record is no longer an aggregating task are left alone. Their waiters are told the
        tasks were merged into ``aggregate_id`` (default: the set id, the id our aggregator gives the
        aggregate task). Returns how many task records were deleted.
        """
        qk = self.schema.queue(queue)
        keys = [set_key, qk.aggregation_sets]
        args = [qk.task_prefix, qk.xprefix, aggregate_id]  # xprefix: where members' waiters are told
        return int(await self.pool.evalsha(SCRIPTS["delete_aggregation_set"], keys, args))

    async def aggregation_failed(
        self, queue: str, set_key: str, max_attempts: int, messages: Sequence[tuple[bytes, bytes]] = ()
    ) -> FailedAggregation:
        """Count a failed attempt to aggregate a staged set on its tasks; archive those at ``max_attempts``.

        One script (``aggregation_failed.lua``): a task that reaches ``max_attempts`` is archived with the message
        given for it in ``messages`` ((raw id, encoded message) pairs; ``b""`` deletes it), kept 90 days, at most
        10,000 per queue, and its waiters told; the set is deleted once no task is left in it. When such a task
        has no message given, nothing is written and the answer names it (``due``), with its current message.
        A set that is gone (reclaimed meanwhile, deleted, or whose aggregate task was enqueued) is left alone.
        """
        qk = self.schema.queue(queue)
        now = int(self.clock.now())
        keys = [set_key, qk.aggregation_sets, qk.archived]
        args: list[Any] = [qk.task_prefix, max_attempts, now, now - ARCHIVE_MAX_AGE, ARCHIVE_MAX_SIZE, qk.xprefix]
        for task_id, data in messages:
            args += [task_id, data]
        reply = await self.pool.evalsha(SCRIPTS["aggregation_failed"], keys, args)
        kind = int(reply[0])
        if kind == 0:
            return FailedAggregation(counted=False)
        if kind == 1:
            due = [(bytes(reply[i]), int(reply[i + 1]), bytes(reply[i + 2])) for i in range(1, len(reply), 3)]
            return FailedAggregation(counted=False, due=due)
        attempts, archived, deleted, left = (int(v) for v in reply[1:5])
        return FailedAggregation(counted=True, attempts=attempts, archived=archived, deleted=deleted, left=left)

    async def reclaim_stale_aggregation_sets(self, queue: str) -> int:
        """Put the tasks of aggregation sets past their deadline back into their groups; returns the sets.

        A stale set whose aggregate task was enqueued (a task whose id is the set id) is deleted instead,
        as :meth:`delete_aggregation_set` does: its worker died between the two steps.
        """
        qk = self.schema.queue(queue)
        keys = [qk.aggregation_sets, qk.groups]
        args: list[Any] = [int(self.clock.now()), qk.group_prefix(), qk.task_prefix, qk.xprefix]
        return int(await self.pool.evalsha(SCRIPTS["reclaim_stale_aggregation_sets"], keys, args))


def _text(value: Any) -> str:
    """A reply (bytes from a decode_responses=False client) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)
