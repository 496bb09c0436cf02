"""Put tasks into any state, and read them back, as the framework itself would.

:class:`Seeder` stores each task with the real client and moves it with the real broker transitions, so
what it leaves in Redis is exactly what a worker would: a pending task is enqueued; an active one is then
dequeued (with a lease); a retry, archived or completed one is then failed, archived or completed by the
broker's own scripts (so the queue's processed and failed counters count it, as they would have). The
reads go through the :class:`~framework.inspector.Inspector`. Nothing here writes a key by hand.

Example::

    async def test_the_dashboard_lists_failures(seeder):  # the pytest plugin's fixture
        task = await seeder.seed_archived(send_email, SendEmail(to="ada@example.com"), error="mailbox full")
        assert task.state == "archived" and task.error == "mailbox full"
        assert [t.id for t in await seeder.tasks("default", "archived")] == [task.id]

    async def test_a_dead_workers_task_comes_back(seeder):
        task = await seeder.seed_active(send_email, payload, lease_until=time.time() - 60)  # lease ran out
        ...
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any, Unpack

from framework.broker.base import LEASE_SECONDS
from framework.broker.broker import RedisBroker
from framework.errors import TaskNotFound
from framework.inspector import MAX_PAGE_SIZE, Inspector, TaskState
from framework.inspector.namespace import text
from framework.protocol.message import decode_message, encode_message

if TYPE_CHECKING:
    from framework.client.client import Client
    from framework.inspector import TaskDetails
    from framework.task import EnqueueOptions, TaskDef

__all__ = ("Seeder",)

_HOUR = 3600.0
SEEDED_ERROR = "seeded failure"
"""The error message of seeded retry and archived tasks, unless one is given."""


class _At:
    """A clock stopped at one instant (the broker reads lease expiries and stats times from its clock)."""

    __slots__ = ("t",)

    def __init__(self, t: float) -> None:
        self.t = t

    def now(self) -> float:
        return self.t


def _unix(when: datetime | float) -> float:
    return when.timestamp() if isinstance(when, datetime) else float(when)


class Seeder:
    """Seeds the queues of a client's namespace with tasks in every state, and reads them back.

    Each ``seed_*`` method takes a task as :meth:`Client.enqueue <framework.client.client.Client.enqueue>`
    does (a :class:`~framework.task.TaskDef` and its payload, or a type string and bytes or JSON), and its
    enqueue options; it returns the task as the inspector reads it back.

    Args:
        client: the client to enqueue with (its Redis, key schema and clock are used throughout).

    Attributes:
        client: the client.
        inspector: an inspector of the same namespace, for anything the reads here do not cover.
    """

    def __init__(self, client: Client) -> None:
        self.client = client
        self.inspector = Inspector(client.redis, client.schema, clock=client.clock)

    # -- seeding ----------------------------------------------------------------------------------

    async def seed_pending(
        self, task: TaskDef[Any] | str, payload: Any = None, **options: Unpack[EnqueueOptions]
    ) -> TaskDetails:
        """Enqueue a task: pending, at the tail of its queue."""
        info = await self.client.enqueue(task, payload, **options)
        return await self.get(info.queue, info.id)

    async def seed_scheduled(
        self,
        task: TaskDef[Any] | str,
        payload: Any = None,
        *,
        at: datetime | float | None = None,
        **options: Unpack[EnqueueOptions],
    ) -> TaskDetails:
        """Enqueue a task to run later: scheduled until ``at`` (default: in an hour)."""
        if at is not None or ("process_at" not in options and "process_in" not in options):
            options["process_at"] = at if at is not None else self.client.clock.now() + _HOUR
        return await self.seed_pending(task, payload, **options)

    async def seed_aggregating(
        self, task: TaskDef[Any] | str, payload: Any = None, **options: Unpack[EnqueueOptions]
    ) -> TaskDetails:
        """Enqueue a task into its aggregation group (the ``group`` option, required) until an aggregator takes it.

        Raises:
            ValueError: no ``group`` was given.
        """
        if not options.get("group"):
            raise ValueError("an aggregating task needs its group: seed_aggregating(task, payload, group=...)")
        return await self.seed_pending(task, payload, **options)

    async def seed_active(
        self,
        task: TaskDef[Any] | str,
        payload: Any = None,
        *,
        lease_until: datetime | float | None = None,
        **options: Unpack[EnqueueOptions],
    ) -> TaskDetails:
        """Enqueue a task and take it as a worker does: active, leased until ``lease_until``.

        The default lease is the one a dequeue gives (30 s from now); one in the past is the task of a worker
        that died, which a worker's recoverer brings back. No live worker holds the task.
        """
        info = await self.client.enqueue(task, payload, **options)
        until = _unix(lease_until) if lease_until is not None else self.client.clock.now() + LEASE_SECONDS
        await self._take(info.queue, info.id, until)
        return await self.get(info.queue, info.id)

    async def seed_retry(
        self,
        task: TaskDef[Any] | str,
        payload: Any = None,
        *,
        error: str = SEEDED_ERROR,
        retried: int = 1,
        retry_at: datetime | float | None = None,
        **options: Unpack[EnqueueOptions],
    ) -> TaskDetails:
        """A task that failed: in the retry set until ``retry_at`` (default: in an hour).

        Args:
            task: the task type.
            payload: its payload.
            error: the error message it failed with.
            retried: its retries so far, this failure included.
            retry_at: when it is due again.
            **options: enqueue options.
        """
        info = await self.client.enqueue(task, payload, **options)
        now = self.client.clock.now()
        data = await self._take(info.queue, info.id, now + LEASE_SECONDS)
        msg = decode_message(data)
        msg.retried, msg.error_msg, msg.last_failed_at = retried, error, int(now)
        due = _unix(retry_at) if retry_at is not None else now + _HOUR
        await self._broker(now).retry(info.queue, info.id, encode_message(msg), int(due), failure=True)
        return await self.get(info.queue, info.id)

    async def seed_archived(
        self,
        task: TaskDef[Any] | str,
        payload: Any = None,
        *,
        error: str = SEEDED_ERROR,
        retried: int = 0,
        **options: Unpack[EnqueueOptions],
    ) -> TaskDetails:
        """A task that failed for good: archived, with ``error`` and ``retried`` retries."""
        info = await self.client.enqueue(task, payload, **options)
        now = self.client.clock.now()
        data = await self._take(info.queue, info.id, now + LEASE_SECONDS)
        msg = decode_message(data)
        msg.retried, msg.error_msg, msg.last_failed_at = retried, error, int(now)
        await self._broker(now).archive(info.queue, info.id, encode_message(msg))
        return await self.get(info.queue, info.id)

    async def seed_completed(
        self,
        task: TaskDef[Any] | str,
        payload: Any = None,
        *,
        result: bytes | None = None,
        **options: Unpack[EnqueueOptions],
    ) -> TaskDetails:
        """A task that succeeded and is kept for its retention (default: an hour), with ``result`` if given."""
        if not options.get("retention"):
            options["retention"] = _HOUR
        info = await self.client.enqueue(task, payload, **options)
        now = self.client.clock.now()
        data = await self._take(info.queue, info.id, now + LEASE_SECONDS)
        msg = decode_message(data)
        msg.completed_at = int(now)
        broker = self._broker(now)
        if result is not None:
            await broker.write_result(info.queue, info.id, result)
        await broker.mark_complete(info.queue, info.id, encode_message(msg), int(now) + msg.retention, msg.unique_key)
        return await self.get(info.queue, info.id)

    # -- reading ----------------------------------------------------------------------------------

    async def get(self, queue: str, task_id: str) -> TaskDetails:
        """One task, in whatever state it is.

        Raises:
            QueueNotFound: the queue does not exist.
            TaskNotFound: the queue has no such task (a task that succeeded without retention is deleted).
        """
        return await self.inspector.get_task(queue, task_id)

    async def tasks(self, queue: str, state: TaskState | str) -> list[TaskDetails]:
        """Every task of ``queue`` in ``state``, the next to be processed first.

        Raises:
            QueueNotFound: the queue does not exist.
            ValueError: an unknown state.
        """
        out: list[TaskDetails] = []
        page = 1
        while True:
            got = await self.inspector.list_tasks(queue, state, page=page, size=MAX_PAGE_SIZE)
            out += got.tasks
            if page * MAX_PAGE_SIZE >= got.total:
                return out
            page += 1

    async def ids(self, queue: str, state: TaskState | str) -> list[str]:
        """The ids of :meth:`tasks`."""
        return [t.id for t in await self.tasks(queue, state)]

    async def lease(self, queue: str, task_id: str) -> float | None:
        """When the lease of an active task runs out (Unix seconds); None when it holds none."""
        score = await self.client.redis.zscore(self.client.schema.queue(queue).lease, task_id)
        return None if score is None else float(score)

    async def wait_for(self, queue: str, task_id: str, state: TaskState | str, *, timeout: float = 10.0) -> TaskDetails:
        """Wait until a task is in ``state`` (while a worker runs elsewhere), and return it.

        Raises:
            AssertionError: it is not in ``state`` after ``timeout`` seconds; the message says where it is.
        """
        want = TaskState(state)
        deadline = time.monotonic() + timeout
        seen = "no such task"
        while True:
            try:
                task = await self.get(queue, task_id)
            except TaskNotFound:
                seen = "no such task (deleted, as a task that succeeded without retention is)"
            else:
                if task.state is want:
                    return task
                seen = f"{task.state.value}" + (f", error {task.error!r}" if task.error else "")
            if time.monotonic() >= deadline:
                where = f"task {task_id!r} of queue {queue!r}"
                raise AssertionError(f"{where} is not {want.value} after {timeout} s: {seen}")
            await asyncio.sleep(0.02)

    # -- transitions ------------------------------------------------------------------------------

    def _broker(self, now: float) -> RedisBroker:
        """A broker on the client's connection whose clock stands at ``now`` (redis-py only: nothing to close)."""
        return RedisBroker(self.client.redis, self.client.schema, _At(now), wakeup=False, fast=False)

    async def _take(self, queue: str, task_id: str, lease_until: float) -> bytes:
        """Dequeue task ``task_id`` as a worker does, leased until ``lease_until``; returns its message.

        A dequeue takes the oldest pending tasks, and the task was just enqueued, so every task pending
        before it is taken too; those go back to the head of the queue in their order, as they were.
        A paused queue is unpaused for the moment and paused again.
        """
        broker = self._broker(lease_until - LEASE_SECONDS)
        redis, qk = self.client.redis, self.client.schema.queue(queue)
        ahead = [text(raw) for raw in await redis.lrange(qk.pending, 0, -1)]  # this task among them
        async with redis.pipeline(transaction=False) as pipe:  # a requeue clears it: written back below
            for other in ahead:
                pipe.hget(qk.task(other), "pending_since")
            stamps = dict(zip(ahead, await pipe.execute(), strict=True))
        was_paused = await self.inspector.unpause(queue)
        try:
            taken = await broker.dequeue(queue, len(ahead))
        finally:
            if was_paused:
                await self.inspector.pause(queue)
        mine = [data for i, data in taken if i == task_id]
        others = [i for i, _ in taken if i != task_id]
        for other in reversed(others):  # each goes to the head: the oldest ends up there again
            await broker.requeue(queue, other)
        async with redis.pipeline(transaction=False) as pipe:
            for other in others:
                if stamps.get(other) is not None:
                    pipe.hset(qk.task(other), "pending_since", stamps[other])
            await pipe.execute()
        if not mine:
            raise RuntimeError(f"task {task_id!r} of queue {queue!r} could not be taken (is its queue served?)")
        return bytes(mine[0])
