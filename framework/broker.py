"""The hot-path Redis adapter: the only code that changes task state, one method per Lua script.

Every transition is atomic in Redis; nothing here uses WATCH/MULTI. Methods take the encoded
``TaskMessage`` bytes where a script stores a message, so callers encode once.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Protocol

from framework.keys import Schema, day_stamp
from framework.resp import RespClient, fast_path_for
from framework.scripts import SCRIPTS, run_pipeline

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from redis.asyncio import Redis

    from framework.clock import Clock
    from framework.keys import QueueKeys

__all__ = (
    "AGGREGATION_SET_TTL",
    "ARCHIVE_MAX_AGE",
    "ARCHIVE_MAX_SIZE",
    "ENQUEUE_BATCH",
    "INFLIGHT_TTL",
    "LEASE_SECONDS",
    "Broker",
    "EnqueueCall",
    "RedisBroker",
)

LEASE_SECONDS = 30
"""asynq's fixed lease length; Go recoverers rely on it."""
ARCHIVE_MAX_SIZE = 10_000
ARCHIVE_MAX_AGE = 90 * 24 * 3600
_DAY_TTL = 90 * 24 * 3600
MINUTE_TTL = 26 * 3600
"""How long the per-minute counters are kept."""
INFLIGHT_TTL = 24 * 3600
"""Seconds a worker's per-queue in-flight set outlives its last dequeue or heartbeat."""
AGGREGATION_SET_TTL = 120
"""Seconds an aggregation set may stay staged before it is put back in its group (asynq: 2 min)."""
ENQUEUE_BATCH = 64
"""Most tasks one ``enqueue_many.lua`` call stores (a batch of more is several calls in the same round trip)."""


class EnqueueCall(Protocol):
    """One prepared enqueue: which script, keys and args (built by :meth:`RedisBroker.prepare_enqueue`)."""


class Broker(Protocol):
    """The operations the worker and client need; :class:`RedisBroker` is the implementation.

    A Protocol so a fault-injecting broker can wrap the real one in tests.
    """

    schema: Schema

    async def register_queues(self, queues: Iterable[str]) -> None: ...  # noqa: D102
    async def enqueue(  # noqa: D102
        self,
        queue: str,
        task_id: str,
        data: bytes,
        *,
        process_at: int | None = ...,
        unique_key: str = ...,
        unique_ttl: int = ...,
        group: str = ...,
    ) -> int: ...
    async def dequeue(self, queue: str, count: int, inflight_key: str = ...) -> list[tuple[str, bytes]]: ...  # noqa: D102
    async def done(self, queue: str, tasks: Sequence[tuple[str, str]]) -> list[int]: ...  # noqa: D102
    async def mark_complete(  # noqa: D102
        self, queue: str, task_id: str, data: bytes, expires_at: int, unique_key: str
    ) -> int: ...
    async def requeue(self, queue: str, task_id: str, *, wake: bool = ...) -> int: ...  # noqa: D102
    async def retry(self, queue: str, task_id: str, data: bytes, retry_at: int, *, failure: bool) -> int: ...  # noqa: D102
    async def archive(self, queue: str, task_id: str, data: bytes) -> int: ...  # noqa: D102


class RedisBroker:
    """The Redis implementation of :class:`Broker`.

    Args:
        redis: an asyncio Redis client (a pool).
        schema: the key schema.
        clock: where time comes from.
        wakeup: publish on the wake-up channel when a queue goes from empty to non-empty.
        fast: run the hot paths (enqueue, dequeue, done) on a lean auto-pipelining connection
            (:mod:`framework.resp`) when ``redis`` talks to a single server over TCP or a Unix socket.

    Attributes:
        hot: what the hot paths run on: a :class:`~framework.resp.RespClient`, or ``redis`` itself.
    """

    def __init__(self, redis: Redis, schema: Schema, clock: Clock, *, wakeup: bool = True, fast: bool = True) -> None:
        self.redis = redis
        self.schema = schema
        self.clock = clock
        self._channel = schema.wakeup_channel if wakeup else ""
        self._known_queues: set[str] = set()
        self.fast = fast_path_for(redis) if fast else None
        """The lean connection's client, or None (redis-py serves everything)."""
        self.hot: Redis | RespClient = self.fast or redis
        self.handoff = self.fast is not None
        """Whether plain enqueues offer their task to an idle worker (single server; not Cluster or Sentinel)."""

    def close(self) -> None:
        """Close the hot-path connection, if any (the redis-py client is the caller's to close)."""
        if self.fast is not None:
            self.fast.close()

    # -- helpers ---------------------------------------------------------------------------------

    def _stat_keys(self, qk: QueueKeys, now: float, kind: str) -> list[str]:
        day = day_stamp(int(now))
        if kind == "processed":
            return [qk.processed, qk.processed_day(day), qk.minute_stats("processed", int(now) // 60)]
        return [qk.failed, qk.failed_day(day), qk.minute_stats("failed", int(now) // 60)]

    @staticmethod
    def _day_expireat(now: float) -> int:
        return int(now) + _DAY_TTL

    async def register_queues(self, queues: Iterable[str]) -> None:
        """``SADD <ns>:queues`` for queues not yet registered by this process (Go caches the same way)."""
        new = [q for q in queues if q not in self._known_queues]
        if new:
            await self.redis.sadd(self.schema.all_queues, *new)
            self._known_queues.update(new)

    # -- enqueue -----------------------------------------------------------------------------------

    def prepare_enqueue(
        self,
        queue: str,
        task_id: str,
        data: bytes,
        *,
        process_at: int | None = None,
        unique_key: str = "",
        unique_ttl: int = 0,
        group: str = "",
    ) -> tuple[Any, list[str], list[Any]]:
        """Choose the script and build its keys and args for one enqueue (no I/O).

        A ``process_at`` wins over ``group``, as in asynq: the task is scheduled, and the forwarder adds
        it to its group when it is due.
        """
        qk = self.schema.queue(queue)
        now = self.clock.now()
        tkey = qk.task(task_id)
        if process_at is not None:
            if unique_key:
                return (
                    SCRIPTS["schedule_unique"],
                    [tkey, qk.scheduled, unique_key],
                    [data, process_at, task_id, unique_ttl, group],
                )
            return SCRIPTS["schedule"], [tkey, qk.scheduled], [data, process_at, task_id, group]
        if group:
            keys = [tkey, qk.group(group), qk.groups]
            args: list[Any] = [data, task_id, int(now), group]
            if unique_key:
                return SCRIPTS["add_to_group_unique"], [*keys, unique_key], [*args, unique_ttl]
            return SCRIPTS["add_to_group"], keys, args
        now_ns = int(now * 1e9)
        if unique_key:
            return (
                SCRIPTS["enqueue_unique"],
                [tkey, qk.pending, unique_key],
                [data, task_id, now_ns, unique_ttl, self._channel, queue],
            )
        keys, args = [tkey, qk.pending], [data, task_id, now_ns, self._channel, queue]
        if self.handoff:
            keys += (qk.waiters, qk.paused, qk.active, qk.lease)
            args += self._handoff_args(qk, now)
        return SCRIPTS["enqueue"], keys, args

    def _handoff_args(self, qk: QueueKeys, now: float) -> list[Any]:
        """Lease expiry, in-flight prefix, handoff channel prefix and in-flight TTL: what a handoff writes."""
        return [int(now) + LEASE_SECONDS, qk.inflight_prefix(), self.schema.handoff_prefix, INFLIGHT_TTL]

    async def enqueue(
        self,
        queue: str,
        task_id: str,
        data: bytes,
        *,
        process_at: int | None = None,
        unique_key: str = "",
        unique_ttl: int = 0,
        group: str = "",
    ) -> int:
        """Store one task: scheduled (``process_at``), else aggregating (``group``), else pending.

        Returns:
            1 stored, 0 task id conflict, -1 duplicate (uniqueness lock held).
        """
        script, keys, args = self.prepare_enqueue(
            queue, task_id, data, process_at=process_at, unique_key=unique_key, unique_ttl=unique_ttl, group=group
        )
        if queue not in self._known_queues:
            await self.register_queues([queue])
        return int(await script(self.hot, keys, args))

    async def enqueue_many(self, calls: Sequence[tuple[Any, list[str], list[Any]]], queues: Iterable[str]) -> list[Any]:
        """Run prepared enqueues in one round trip; returns each result (int, or the exception).

        On the hot-path connection, consecutive plain enqueues into the same queue go to Redis as one
        ``enqueue_many.lua`` call per :data:`ENQUEUE_BATCH` tasks (each task stored as ``enqueue.lua`` stores
        it); the others, and every call on a redis-py client, run one script call per task.
        """
        new = [q for q in set(queues) if q not in self._known_queues]
        if new:
            await self.register_queues(new)
        if self.fast is None:  # redis-py (Cluster, Sentinel, TLS, ...): one script call per task, as always
            return await run_pipeline(self.redis, calls)
        grouped, spans = self._group_plain_enqueues(calls)
        results = await run_pipeline(self.fast, grouped)
        out: list[Any] = []
        for result, span in zip(results, spans, strict=True):
            if span == 0:
                out.append(result)
            elif isinstance(result, BaseException):
                out.extend([result] * span)
            else:
                out.extend(result)
        return out

    def _group_plain_enqueues(
        self, calls: Sequence[tuple[Any, list[str], list[Any]]]
    ) -> tuple[list[tuple[Any, list[str], list[Any]]], list[int]]:
        """The calls with runs of plain enqueues merged; per merged call, how many tasks it holds (0 = as it was)."""
        plain, many = SCRIPTS["enqueue"], SCRIPTS["enqueue_many"]
        grouped: list[tuple[Any, list[str], list[Any]]] = []
        spans: list[int] = []
        run_pending = ""
        for call in calls:
            script, keys, args = call
            if script is not plain:
                grouped.append(call)
                spans.append(0)
                run_pending = ""
                continue
            data, task_id, now_ns, channel, queue = args[:5]
            if keys[1] != run_pending or spans[-1] >= ENQUEUE_BATCH:
                run_pending = keys[1]
                head = [self.schema.queue(queue).task_prefix, now_ns, channel, queue]
                # the handoff keys and args when the single call had them, else blanks (nothing is offered)
                grouped.append((many, [run_pending, *keys[2:]], [*head, *(args[5:] or ("", "", "", ""))]))
                spans.append(0)
            grouped[-1][2].extend((task_id, data))
            spans[-1] += 1
        return grouped, spans

    # -- worker transitions ------------------------------------------------------------------------

    async def dequeue(
        self, queue: str, count: int, inflight_key: str = "", waiter: str = ""
    ) -> list[tuple[str, bytes]]:
        """Take up to ``count`` pending tasks of ``queue`` (none when paused); leases them for 30 s.

        Args:
            queue: the queue.
            count: the most tasks to take.
            inflight_key: the dequeuing worker's in-flight set of this queue (``QueueKeys.inflight``);
                the ids taken are added to it atomically. "" records nothing.
            waiter: this worker's server id, listening on its handoff channel: when nothing is pending it
                is registered in the queue's waiters, so the next enqueue hands its task straight to it
                (needs ``inflight_key``). "" registers nothing.

        Returns:
            (task id, encoded TaskMessage) of each task taken, oldest first.
        """
        qk = self.schema.queue(queue)
        lease_until = int(self.clock.now()) + LEASE_SECONDS
        keys = [qk.pending, qk.active, qk.lease, qk.paused]
        args: list[Any] = [qk.task_prefix, lease_until, count, INFLIGHT_TTL]
        if inflight_key:
            keys.append(inflight_key)
            if waiter:
                keys.append(qk.waiters)
                args.append(waiter)
        flat: list[bytes] = await SCRIPTS["dequeue"](self.hot, keys, args)
        return [(flat[i].decode(), flat[i + 1]) for i in range(0, len(flat), 2)]

    async def withdraw(self, queues: Sequence[str], waiter: str) -> None:
        """Take ``waiter`` out of the queues' waiters: no enqueue hands it a task after this returns."""
        commands = [("LREM", self.schema.queue(q).waiters, 0, waiter) for q in queues]
        if self.fast is not None:
            for reply in await self.fast.execute_many(commands):
                if isinstance(reply, Exception):
                    raise reply
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for command in commands:
                pipe.execute_command(*command)
            await pipe.execute()

    async def pending_counts(self, queues: Sequence[str]) -> list[int]:
        """``LLEN`` of each queue's pending list, in one round trip (an idle worker's cheap check)."""
        if self.fast is not None:
            lengths = await self.fast.execute_many([("LLEN", self.schema.queue(q).pending) for q in queues])
            for n in lengths:
                if isinstance(n, Exception):
                    raise n
            return [int(n) for n in lengths]
        async with self.redis.pipeline(transaction=False) as pipe:
            for queue in queues:
                pipe.llen(self.schema.queue(queue).pending)
            return [int(n) for n in await pipe.execute()]

    async def done(self, queue: str, tasks: Sequence[tuple[str, str]]) -> list[int]:
        """Finish succeeded tasks (no retention): ``tasks`` is (id, unique lock key or "") pairs.

        Returns:
            Per task, 1 done or 0 not found (the task is no longer active here).
        """
        qk = self.schema.queue(queue)
        now = self.clock.now()
        args: list[Any] = [qk.task_prefix, self._day_expireat(now), MINUTE_TTL]
        for task_id, unique_key in tasks:
            args += (task_id, unique_key)
        keys = [qk.active, qk.lease, *self._stat_keys(qk, now, "processed")]
        result: list[int] = await SCRIPTS["done"](self.hot, keys, args)
        return result

    async def mark_complete(self, queue: str, task_id: str, data: bytes, expires_at: int, unique_key: str) -> int:
        """Finish a succeeded task that has a retention: keep it as completed until ``expires_at``."""
        qk = self.schema.queue(queue)
        now = self.clock.now()
        keys = [qk.task(task_id), qk.active, qk.lease, qk.completed, *self._stat_keys(qk, now, "processed")]
        args: list[Any] = [task_id, data, expires_at, self._day_expireat(now), MINUTE_TTL, unique_key]
        return int(await SCRIPTS["mark_complete"](self.redis, keys, args))

    async def requeue(self, queue: str, task_id: str, *, wake: bool = False) -> int:
        """Put an unfinished active task back at the head of its queue (no retry spent).

        ``wake``: also publish a wake-up for the queue, so an idle worker takes the task at once.
        """
        qk = self.schema.queue(queue)
        keys = [qk.task(task_id), qk.active, qk.lease, qk.pending]
        found = int(await SCRIPTS["requeue"](self.redis, keys, [task_id]))
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
        return int(await SCRIPTS["retry"](self.redis, keys, args))

    async def archive(self, queue: str, task_id: str, data: bytes) -> int:
        """Move a failed active task to the archive (kept 90 days, at most 10,000 per queue)."""
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
        ]
        return int(await SCRIPTS["archive"](self.redis, keys, args))

    async def extend_leases(self, queue: str, task_ids: Sequence[str]) -> None:
        """Extend the leases of in-flight tasks to now + 30 s (``ZADD XX``: never re-adds a lost lease)."""
        if not task_ids:
            return
        until = int(self.clock.now()) + LEASE_SECONDS
        mapping = dict.fromkeys(task_ids, until)
        await self.redis.zadd(self.schema.queue(queue).lease, mapping, xx=True)

    async def write_result(self, queue: str, task_id: str, data: bytes) -> None:
        """Store a running task's result bytes (``HSET result``)."""
        await self.redis.hset(self.schema.queue(queue).task(task_id), "result", data)

    # -- maintenance -------------------------------------------------------------------------------

    async def forward(self, queue: str) -> tuple[int, float | None]:
        """Move due scheduled and retry tasks of ``queue`` to pending (or back to their group).

        Returns:
            (tasks moved, the earliest due time left in either set or None).
        """
        qk = self.schema.queue(queue)
        now = self.clock.now()
        args: list[Any] = [int(now), qk.task_prefix, int(now * 1e9), qk.prefix + "g:", self._channel, queue]
        moved = 0
        earliest: float | None = None
        for source in (qk.scheduled, qk.retry):
            while True:
                n, nxt = await SCRIPTS["forward"](self.redis, [source, qk.pending, qk.groups], args)
                moved += int(n)
                if int(n) < 100:
                    break
            if float(nxt) >= 0 and (earliest is None or float(nxt) < earliest):
                earliest = float(nxt)
        return moved, earliest

    async def list_lease_expired(self, queue: str, cutoff: float, limit: int = 100) -> list[bytes]:
        """Messages of tasks in ``queue`` whose lease ended before ``cutoff``."""
        qk = self.schema.queue(queue)
        result: list[bytes] = await SCRIPTS["list_lease_expired"](
            self.redis, [qk.lease], [int(cutoff), qk.task_prefix, limit]
        )
        return result

    async def recover(
        self, queue: str, task_id: str, newest_dead_lease: float, max_recoveries: int, *, count: bool = True
    ) -> Any:
        """Requeue a task of a dead worker; see ``recover.lua`` for the answers.

        ``count=False``: the owner gives back a task whose lease it lost (a Redis outage, not a crash), so
        the recovery does not count toward the poison-pill limit.
        """
        qk = self.schema.queue(queue)
        keys = [qk.task(task_id), qk.active, qk.lease, qk.pending]
        args: list[Any] = [task_id, int(newest_dead_lease), max_recoveries, self._channel, queue, 1 if count else 0]
        return await SCRIPTS["recover"](self.redis, keys, args)

    async def repair_orphans(self, queue: str) -> int:
        """Give already-expired leases to active tasks that have none, so recovery finds them."""
        qk = self.schema.queue(queue)
        expired = int(self.clock.now()) - 2 * LEASE_SECONDS
        return int(await SCRIPTS["repair_orphans"](self.redis, [qk.active, qk.lease], [expired]))

    async def delete_expired_completed(self, queue: str, batch: int = 100) -> int:
        """Delete completed tasks of ``queue`` whose retention ran out; returns how many."""
        qk = self.schema.queue(queue)
        total = 0
        while True:
            n = int(
                await SCRIPTS["delete_expired_completed"](
                    self.redis, [qk.completed], [int(self.clock.now()), qk.task_prefix, batch]
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
        """Names of the groups of ``queue`` that hold aggregating tasks."""
        members = await self.redis.smembers(self.schema.queue(queue).groups)
        return sorted(_text(g) for g in members)

    async def first_in_group(self, queue: str, group: str) -> bytes | None:
        """The encoded message of the oldest task of a group (to find the aggregator by task type)."""
        qk = self.schema.queue(queue)
        ids = await self.redis.zrange(qk.group(group), 0, 0)
        if not ids:
            return None
        data = await self.redis.hget(qk.task(_text(ids[0])), "msg")
        return data if isinstance(data, bytes) else None

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
        created = int(await SCRIPTS["aggregation_check"](self.redis, keys, args))
        return set_key if created else None

    async def read_aggregation_set(self, queue: str, set_key: str) -> tuple[list[tuple[str, bytes]], float | None]:
        """The (id, encoded message) of each task staged in an aggregation set, and the set's deadline."""
        qk = self.schema.queue(queue)
        flat = await SCRIPTS["read_aggregation_set"](self.redis, [set_key, qk.aggregation_sets], [qk.task_prefix])
        deadline = float(flat[0]) if int(flat[0]) >= 0 else None
        return [(flat[i].decode(), flat[i + 1]) for i in range(1, len(flat), 2)], deadline

    async def delete_aggregation_set(self, queue: str, set_key: str) -> int:
        """Delete an aggregation set and its member tasks (after the aggregated task was enqueued)."""
        qk = self.schema.queue(queue)
        keys = [set_key, qk.aggregation_sets]
        return int(await SCRIPTS["delete_aggregation_set"](self.redis, keys, [qk.task_prefix]))

    async def reclaim_stale_aggregation_sets(self, queue: str) -> int:
        """Put the tasks of aggregation sets past their deadline back into their groups; returns the sets."""
        qk = self.schema.queue(queue)
        keys = [qk.aggregation_sets, qk.groups]
        args: list[Any] = [int(self.clock.now()), qk.group_prefix()]
        return int(await SCRIPTS["reclaim_stale_aggregation_sets"](self.redis, keys, args))

    async def cron_enqueue(
        self, queue: str, entry_id: str, tick: int, task_id: str, data: bytes, claim_ttl: int
    ) -> int:
        """Claim tick ``tick`` of a cron entry and enqueue its task atomically; 1 fired, 0 already claimed."""
        qk = self.schema.queue(queue)
        if queue not in self._known_queues:
            await self.register_queues([queue])
        keys = [qk.cron_claim(entry_id, tick), qk.task(task_id), qk.pending]
        args: list[Any] = [claim_ttl, data, task_id, int(self.clock.now() * 1e9), self._channel, queue]
        return int(await SCRIPTS["cron_enqueue"](self.redis, keys, args))


def _text(value: Any) -> str:
    """A reply (bytes from a decode_responses=False client) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def now_seconds() -> int:
    """Integer Unix seconds of the wall clock."""
    return int(time.time())
