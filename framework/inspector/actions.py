"""Task actions: run now, archive and delete one task or every task of a state, cancel, delete a queue.

Each change is a Lua script (``run_task``, ``archive_task``, ``delete_task``; ``run_all``,
``archive_all``, ``delete_all`` one batch at a time; ``remove_queue``), so it is atomic and never
touches an active task: active tasks belong to their worker, and are stopped with :meth:`cancel`.
The deleting scripts announce each deletion to the task's waiters (``Client.wait``, ``apply``), who get
:class:`~framework.errors.TaskDeleted` instead of taking the vanished task for a success.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from framework.broker.transitions import ARCHIVE_MAX_AGE, ARCHIVE_MAX_SIZE
from framework.errors import QueueNotFound, TaskNotFound
from framework.inspector.errors import InvalidTaskState, QueueNotEmpty
from framework.inspector.namespace import Part, as_state, names_a_state, text
from framework.protocol.message import TaskState
from framework.protocol.scripts import SCRIPTS
from framework.transport.connection import is_cluster

if TYPE_CHECKING:
    from framework.protocol.keys import QueueKeys

__all__ = ("BATCH_SIZE", "Progress", "TaskActions")

Progress = Callable[[int, int], None]
"""A progress callback: (tasks handled so far, tasks there were at the start)."""

BATCH_SIZE = 1000
"""Tasks one bulk-script call handles."""

_S = TaskState
_RUNNABLE = frozenset({_S.SCHEDULED, _S.RETRY, _S.ARCHIVED, _S.COMPLETED, _S.AGGREGATING})
_ARCHIVABLE = frozenset({_S.PENDING, _S.SCHEDULED, _S.RETRY, _S.COMPLETED, _S.AGGREGATING})
_DELETABLE = _RUNNABLE | {_S.PENDING}
_DELETED = "deleted"
"""What a deleted task's waiters are told (on its outcome channel; :mod:`framework.client.waiting`)."""
_QUEUE_REMOVED = "deleted\nqueue"
"""What the waiters of a task deleted with its queue are told."""


_Key = str | bytes
"""A key or a name as Redis stores it: group names read back from Redis are kept as their bytes."""
_Source = tuple[_Key, str, _Key]
"""(key, "list"/"zset", group name) of a collection a bulk action takes tasks from."""


def _raw(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _single_keys(qk: QueueKeys, task_id: str) -> list[str]:
    return [qk.task(task_id), qk.pending, qk.scheduled, qk.retry, qk.archived, qk.completed, qk.groups]


def _allowed(action: str, state: TaskState, allowed: frozenset[TaskState]) -> None:
    if state not in allowed:
        names = ", ".join(sorted(s.value for s in allowed))
        raise InvalidTaskState(f"cannot {action} {state.value} tasks; {action} works on: {names}")


class TaskActions(Part):
    """The changes :class:`~framework.inspector.core.Inspector` makes to tasks and queues."""

    __slots__ = ()

    async def _single_error(self, code: int, qk: QueueKeys, queue: str, task_id: str, what: str) -> None:
        if code == 0:
            state = await self._redis.hget(qk.task(task_id), "state")
            if state is not None and not names_a_state(state):
                raise InvalidTaskState(
                    f"task {task_id!r} has a record whose state {text(state)!r} is not a task state "
                    "(written by another client?); it can only be deleted"
                )
            if text(state) == TaskState.AGGREGATING.value:  # not in its group: staged in an aggregation set
                raise InvalidTaskState(
                    f"task {task_id!r} is being merged into an aggregate task (its group is being aggregated); "
                    "if the aggregation fails, it is back in its group within minutes"
                )
            raise TaskNotFound(f"queue {queue!r} has no task {task_id!r}")
        if code == -1:
            raise InvalidTaskState(f"task {task_id!r} is active; cancel it instead (a worker is running it)")
        if code == -2:
            raise InvalidTaskState(f"task {task_id!r} is already {what}")

    async def run_task(self, queue: str, task_id: str) -> None:
        """Make a scheduled, retry, archived, completed or aggregating task pending now."""
        qk = await self._ns.queue_keys(queue)
        args: list[Any] = [task_id, qk.group_prefix(), int(self._ns.now() * 1e9), self._schema.wakeup_channel, queue]
        code = int(await SCRIPTS["run_task"](self._redis, _single_keys(qk, task_id), args))
        await self._single_error(code, qk, queue, task_id, "pending")

    async def archive_task(self, queue: str, task_id: str) -> None:
        """Archive a non-active task now (it will not run unless run again).

        Its waiters (``Client.wait``, ``apply``) get :class:`~framework.errors.TaskFailed` with ``archived`` set, as
        for a task a worker archived; :class:`~framework.errors.TaskDeleted` when the archive's caps dropped it.
        """
        qk = await self._ns.queue_keys(queue)
        now = int(self._ns.now())
        args: list[Any] = [task_id, qk.group_prefix(), now, now - ARCHIVE_MAX_AGE, ARCHIVE_MAX_SIZE, qk.task_prefix]
        args.append(qk.xprefix)
        code = int(await SCRIPTS["archive_task"](self._redis, _single_keys(qk, task_id), args))
        await self._single_error(code, qk, queue, task_id, "archived")

    async def delete_task(self, queue: str, task_id: str) -> None:
        """Delete a non-active task and its record; its uniqueness lock is released if it holds it.

        Its waiters (``Client.wait``, ``apply``) get :class:`~framework.errors.TaskDeleted`. A grouped task being
        merged into an aggregate task (staged in an aggregation set) is refused with InvalidTaskState, as archiving
        it is: its payload may be in the aggregate already.
        """
        qk = await self._ns.queue_keys(queue)
        args = [task_id, qk.group_prefix(), qk.xprefix, qk.aggregation_sets]
        code = int(await SCRIPTS["delete_task"](self._redis, _single_keys(qk, task_id), args))
        await self._single_error(code, qk, queue, task_id, "deleted")

    async def cancel(self, task_id: str) -> int:
        """Ask every worker to cancel the active task ``task_id`` (``PUBLISH <ns>:cancel``)."""
        channel = self._schema.cancel_channel
        receivers = int(await self._redis.publish(channel, task_id))
        if is_cluster(self._redis):
            replies = await self._redis.pubsub_numsub(channel, target_nodes="all")
            receivers = sum(int(n) for _, n in replies)
        return receivers

    # -- bulk ---------------------------------------------------------------------------------------

    async def _sources(self, qk: QueueKeys, state: TaskState, group: str | None) -> list[_Source]:
        """(key, "list"/"zset", group name) of each collection holding ``state`` tasks.

        Group names read from the queue's groups set are kept as the bytes stored (Go may write any), and so
        are the group keys made of them: a name decoded for display would name another key.
        """
        if state is TaskState.PENDING:
            return [(qk.pending, "list", "")]
        if state is TaskState.AGGREGATING:
            if group:
                return [(qk.group(group), "zset", group)]
            prefix = qk.group_prefix().encode()
            names = sorted(_raw(g) for g in await self._redis.smembers(qk.groups))
            return [(prefix + g, "zset", g) for g in names]
        return [(getattr(qk, state.value), "zset", "")]

    async def _counts(self, sources: list[_Source]) -> list[tuple[int, _Key]]:
        """(tasks, the id at the left end: the newest, as stored, or "") of each source; "" for a set.

        A list's left end is read before its length: a task pushed in between is left out of both.
        """
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, kind, _ in sources:
                if kind == "list":
                    pipe.lindex(key, 0)
                    pipe.llen(key)
                else:
                    pipe.zcard(key)
            replies = iter(await pipe.execute())
        out = []
        for _, kind, _ in sources:
            last = (next(replies) or "") if kind == "list" else ""
            out.append((int(next(replies)), last))
        return out

    async def _bulk(
        self,
        queue: str,
        state: TaskState | str,
        group: str | None,
        allowed: tuple[str, frozenset[TaskState]],
        call: Callable[[QueueKeys, _Key, str, _Key, int, str, _Key], Any],
        progress: Progress | None,
    ) -> int:
        """Act on the tasks of ``state`` in batches: at most as many as were counted when it started.

        The count is what the caller was shown (and confirmed); tasks that arrive meanwhile (pushed at a
        pending list's other end, forwarded into a set) are not touched, and a steady producer cannot keep
        the action going forever. A pending list is also bounded by the id that was newest when it was
        counted: workers take the oldest tasks meanwhile, and the action never reaches past that id to the
        tasks enqueued after it. ``call`` gets (keys, source key, "list"/"zset", group name, most ids to
        take, the state's name, that id or ""); the scripts leave alone a task whose record names another
        state than its source's (a stale entry: the task is elsewhere, perhaps running), and drop the entry.
        """
        st = as_state(state)
        _allowed(allowed[0], st, allowed[1])
        qk = await self._ns.queue_keys(queue)
        sources = await self._sources(qk, st, group)
        counts = await self._counts(sources)
        total = sum(n for n, _ in counts)
        done = 0
        if progress is not None:
            progress(0, total)
        for (key, kind, name), (counted, last) in zip(sources, counts, strict=True):
            left = counted
            while left > 0:
                limit = min(BATCH_SIZE, left)
                taken, changed = await call(qk, key, kind, name, limit, st.value, last)
                done += int(changed)
                left -= int(taken)
                if progress is not None:
                    progress(done, total)
                if int(taken) < limit:
                    break
        return done

    async def run_all(
        self, queue: str, state: TaskState | str, *, group: str | None = None, progress: Progress | None = None
    ) -> int:
        """Make every task of ``state`` (scheduled, retry, archived, completed, aggregating) pending now."""

        async def call(qk: QueueKeys, key: _Key, kind: str, name: _Key, limit: int, st: str, last: _Key) -> Any:
            now_ns = int(self._ns.now() * 1e9)
            args: list[Any] = [qk.task_prefix, limit, name, now_ns, self._schema.wakeup_channel, queue, st]
            return await SCRIPTS["run_all"](self._redis, [key, qk.pending, qk.groups], args)

        return await self._bulk(queue, state, group, ("run", _RUNNABLE), call, progress)

    async def archive_all(
        self, queue: str, state: TaskState | str, *, group: str | None = None, progress: Progress | None = None
    ) -> int:
        """Archive every task of ``state`` (pending, scheduled, retry, completed, aggregating).

        Their waiters are told as by :meth:`archive_task`.
        """

        async def call(qk: QueueKeys, key: _Key, kind: str, name: _Key, limit: int, st: str, last: _Key) -> Any:
            now = int(self._ns.now())
            args: list[Any] = [qk.task_prefix, limit, kind, name, now, now - ARCHIVE_MAX_AGE, ARCHIVE_MAX_SIZE, st]
            args += [qk.xprefix, last]
            return await SCRIPTS["archive_all"](self._redis, [key, qk.archived, qk.groups], args)

        return await self._bulk(queue, state, group, ("archive", _ARCHIVABLE), call, progress)

    async def delete_all(
        self, queue: str, state: TaskState | str, *, group: str | None = None, progress: Progress | None = None
    ) -> int:
        """Delete every task of ``state`` (any but active) and release the uniqueness locks they hold.

        Their waiters (``Client.wait``, ``apply``) get :class:`~framework.errors.TaskDeleted`.
        """
        return await self._delete_all(queue, state, group, progress, _DELETED)

    async def _forget_workflows(self, qk: QueueKeys) -> None:
        """Drop the entries of expired workflows from a removed queue's workflow indexes, and its check keys.

        Nothing else would: the workflow checkers look at the queues workers serve, and the cleanup plugin's
        sweeper at the queues in ``<ns>:queues``. The entries of workflows whose records are still there (a
        workflow whose steps run in other queues) stay, so it can still be listed and waited for.
        """
        for index in (qk.workflows(), qk.workflows_running()):
            page: list[bytes] = []
            async for member, _ in self._redis.zscan_iter(index, count=500):
                page.append(_raw(member))
                if len(page) >= 500:
                    await self._drop_expired(qk, index, page)
                    page = []
            if page:
                await self._drop_expired(qk, index, page)
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in (qk.workflows_checked(), qk.workflows_cursor(), qk.workflows_pruned()):
                pipe.delete(key)  # one key per DEL: redis-py's Cluster pipeline refuses more
            await pipe.execute()

    async def _drop_expired(self, qk: QueueKeys, index: str, ids: list[bytes]) -> None:
        """Remove from ``index`` those of ``ids`` whose workflow records are gone."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for wid in ids:
                pipe.exists(_raw(qk.xprefix) + b"wf:" + wid)
            found = await pipe.execute()
        gone = [wid for wid, n in zip(ids, found, strict=True) if not n]
        if gone:
            await self._redis.zrem(index, *gone)

    async def _delete_all(
        self, queue: str, state: TaskState | str, group: str | None, progress: Progress | None, announcement: str
    ) -> int:
        """:meth:`delete_all`, announcing ``announcement`` to the deleted tasks' waiters."""

        async def call(qk: QueueKeys, key: _Key, kind: str, name: _Key, limit: int, st: str, last: _Key) -> Any:
            args: list[Any] = [qk.task_prefix, limit, kind, name, qk.xprefix, announcement, st, last]
            return await SCRIPTS["delete_all"](self._redis, [key, qk.groups], args)

        return await self._bulk(queue, state, group, ("delete", _DELETABLE), call, progress)

    async def delete_queue(self, queue: str, *, force: bool = False, progress: Progress | None = None) -> None:
        """Remove a queue: its keys and its name. Only an empty queue, unless ``force``.

        With ``force``, the waiters of the tasks deleted get :class:`~framework.errors.TaskDeleted` with
        ``queue_removed`` set. The queue's indexes of the workflows whose home it was lose the entries of
        workflows whose records are gone (see :meth:`_forget_workflows`).
        """
        qk = await self._ns.queue_keys(queue)
        if force:
            for state in sorted(_DELETABLE):
                await self._delete_all(queue, state, None, progress, _QUEUE_REMOVED)
        keys = [qk.pending, qk.active, qk.groups, qk.aggregation_sets, qk.scheduled, qk.retry, qk.archived]
        keys += [qk.completed, qk.lease, qk.paused, qk.processed, qk.failed]
        code = int(await SCRIPTS["remove_queue"](self._redis, keys, []))
        if code == -2:
            raise QueueNotEmpty(f"queue {queue!r} has active tasks; wait for them or cancel them first")
        if code == -1:
            hint = "" if force else "; use force to delete its tasks too"
            raise QueueNotEmpty(f"queue {queue!r} has tasks{hint}")
        await self._forget_workflows(qk)
        if not await self._redis.srem(self._schema.all_queues, queue):
            raise QueueNotFound(f"queue {queue!r} does not exist (namespace {self._schema.ns!r})")
