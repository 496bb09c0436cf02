"""The enqueue part of :class:`~framework.broker.broker.RedisBroker`: registering queues, choosing and batching scripts.

:meth:`EnqueueSide.prepare_enqueue` picks the script for one task (scheduled, aggregating, unique, plain
with a handoff offer) without I/O; :meth:`EnqueueSide.enqueue_many` runs prepared calls in one round trip,
merging runs of plain enqueues into ``enqueue_many.lua`` calls on the lean connection. Cron ticks are enqueued
here too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import hiredis

from framework.broker.base import INFLIGHT_TTL, LEASE_SECONDS, BrokerPart
from framework.errors import InvalidOption
from framework.protocol.keys import cluster_slot_problem
from framework.protocol.scripts import SCRIPTS
from framework.transport.cluster import is_cluster

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Sequence

    from framework.broker.base import BrokerState
    from framework.protocol.keys import QueueKeys

__all__ = ("ENQUEUE_BATCH", "EnqueueSide")

ENQUEUE_BATCH = 64
"""Most tasks one ``enqueue_many.lua`` call stores (a batch of more is several calls in the same round trip)."""


_Call = tuple[Any, list[str], list[Any]]


class EnqueueSide(BrokerPart):
    """Storing new tasks: what clients, the scheduler and the aggregator call.

    Args:
        state: what the broker's parts share.
    """

    def __init__(self, state: BrokerState) -> None:
        super().__init__(state)
        self.handoff = state.handoff
        self._known_queues = state.known_queues
        self._cluster = is_cluster(state.redis)
        # chosen once: runs of plain enqueues (one queue each, so one slot on a Cluster) are merged on the lean
        # connections; redis-py clients run one script call per task, as they always did
        self._run_calls: Callable[[Sequence[_Call]], Awaitable[list[Any]]] = (
            self._run_merged if state.lean is not None else self.hot.evalsha_many
        )

    async def register_queues(self, queues: Iterable[str]) -> None:
        """``SADD <ns>:queues`` for queues not yet registered by this process (Go caches the same way).

        Raises:
            InvalidOption: on a Cluster, a queue whose keys would not share one slot (a name starting with
                ``}``): every enqueue registers its queue first, so nothing of the task is sent. Its scripts would
                fail with CROSSSLOT, or, reaching a key of another slot from Lua, after a first write (a task's
                record stored without its place in the queue).
        """
        new = [q for q in queues if q not in self._known_queues]
        if new:
            if self._cluster:
                for queue in new:
                    problem = cluster_slot_problem(queue)
                    if problem is not None:
                        raise InvalidOption(f"option queue={queue!r} is invalid: {problem}")
            await self.redis.sadd(self.schema.all_queues, *new)
            self._known_queues.update(new)

    async def cancel(self, queue: str, task_id: str, keep: int = 3600) -> str:
        """Cancel one task for its caller (``cancel.lua``): delete it before it runs, or ask its worker to stop.

        Args:
            queue: its queue.
            task_id: its id.
            keep: seconds the request for a running task is kept (its worker archives it rather than retry).

        Returns:
            ``"deleted"`` (its waiters are told ``cancelled``), ``"cancelling"`` (it is running: the id was
            published on asynq's cancel channel), the state of a task that already finished (``"completed"``,
            ``"archived"``), or ``""`` when there is no such task.
        """
        qk = self.schema.queue(queue)
        keys = [qk.task(task_id), qk.pending, qk.scheduled, qk.retry, qk.groups, qk.cancel_request(task_id)]
        args: list[Any] = [task_id, qk.group_prefix(), qk.xprefix, self.schema.cancel_channel, keep]
        reply = await self.pool.evalsha(SCRIPTS["cancel"], keys, args)
        return reply.decode() if isinstance(reply, bytes) else str(reply)

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
        return int(await self.hot.evalsha(script, keys, args))

    async def enqueue_many(self, calls: Sequence[_Call], queues: Iterable[str]) -> list[Any]:
        """Run prepared enqueues in one round trip; returns each result (int, or the exception).

        On the lean connection, consecutive plain enqueues into the same queue go to Redis as one
        ``enqueue_many.lua`` call per :data:`ENQUEUE_BATCH` tasks (each task stored as ``enqueue.lua`` stores
        it); the others, and every call on a redis-py client, run one script call per task.
        """
        new = [q for q in set(queues) if q not in self._known_queues]
        if new:
            await self.register_queues(new)
        return await self._run_calls(calls)

    async def _run_merged(self, calls: Sequence[_Call]) -> list[Any]:
        """The calls in one round trip, runs of plain enqueues merged; each call's result, as if run alone."""
        grouped, spans = self._group_plain_enqueues(calls)
        results = await self.hot.evalsha_many(grouped)
        out: list[Any] = []
        for result, span in zip(results, spans, strict=True):
            if span == 0:
                out.append(result)
            elif isinstance(result, BaseException):
                out.extend([result] * span)
            else:
                out.extend(result)
        return out

    def _group_plain_enqueues(self, calls: Sequence[_Call]) -> tuple[list[_Call], list[int]]:
        """The calls with runs of plain enqueues merged; per merged call, how many tasks it holds (0 = as it was)."""
        plain, many = SCRIPTS["enqueue"], SCRIPTS["enqueue_many"]
        grouped: list[_Call] = []
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

    def plain_batch(self, queue: str, tasks: Sequence[bytes], n: int) -> bytes:
        """One ``enqueue_many.lua`` call storing ``n`` plain tasks into ``queue``, packed as RESP (no I/O).

        The bytes are those :meth:`enqueue_many` sends for the same tasks (keys and head args from
        :meth:`prepare_enqueue`, merged as :meth:`_run_merged` merges them), with the time taken now.

        Args:
            queue: the queue.
            tasks: the tasks' (id, encoded ``TaskMessage``) argument pairs, each already a pair of RESP bulk
                strings; joined as they are.
            n: how many tasks ``tasks`` holds.
        """
        [(script, keys, args)], _ = self._group_plain_enqueues([self.prepare_enqueue(queue, "", b"")])
        head = args[:-2]  # without the placeholder's id and message
        packed: bytes = hiredis.pack_command(("EVALSHA", script.sha, len(keys), *keys, *head))
        words = 3 + len(keys) + len(head) + 2 * n
        return b"*%d\r\n%b%b" % (words, packed[packed.index(b"\r\n") + 2 :], b"".join(tasks))

    async def cron_enqueue(
        self,
        queue: str,
        entry_id: str,
        tick: int,
        task_id: str,
        data: bytes,
        claim_ttl: int,
        *,
        unique_key: str = "",
        unique_ttl: int = 0,
    ) -> int:
        """Claim tick ``tick`` of a cron entry and enqueue its task atomically.

        The claim lives ``claim_ttl`` seconds from the tick or from now, whichever is later by Redis's clock, so a
        scheduler whose clock runs ahead does not leave a claim that expires before the others reach the tick.

        Returns 1 fired, 0 already claimed, -1 claimed but not enqueued: ``unique_key`` (a unique task type's
        lock, held ``unique_ttl`` seconds) is held by an earlier task.
        """
        qk = self.schema.queue(queue)
        if queue not in self._known_queues:
            await self.register_queues([queue])
        keys = [qk.cron_claim(entry_id, tick), qk.task(task_id), qk.pending]
        if unique_ttl > 0:
            keys.append(unique_key)
        lock_ttl = max(unique_ttl, 0)
        args: list[Any] = [claim_ttl, data, task_id, int(self.clock.now() * 1e9), self._channel, queue, lock_ttl, tick]
        return int(await self.pool.evalsha(SCRIPTS["cron_enqueue"], keys, args))
