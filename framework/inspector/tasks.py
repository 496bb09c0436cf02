"""Task queries: list the tasks of a queue in one state, page by page, and read one task.

A page costs one range read (``LRANGE``/``ZRANGE`` of exactly the page) and one pipelined ``HMGET``
per task on it, whatever the size of the queue.

A task whose stored message cannot be read is returned with ``decode_error`` set (see
:mod:`framework.inspector.details`), and each read that meets such tasks logs one
``task_message_undecodable`` warning naming them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from framework.errors import TaskNotFound
from framework.inspector.details import FIELDS, SCORED, TaskDetails, record_state, task_details
from framework.inspector.namespace import Part, as_state, names_a_state, text
from framework.logging import get_logger
from framework.protocol.message import TaskState

if TYPE_CHECKING:
    from framework.protocol.keys import QueueKeys

__all__ = ("MAX_PAGE_SIZE", "PAST_THE_END", "GroupInfo", "TaskPage", "TaskReads")

MAX_PAGE_SIZE = 1000
"""The largest page :meth:`Inspector.list_tasks <framework.inspector.core.Inspector.list_tasks>` returns."""

PAST_THE_END = 2**32
"""An offset past the end of any Redis list or sorted set (they hold fewer than 2**32 members).

Pages further on are read from here: a page number so large that its offset would not fit in Redis's
64-bit range arguments gives an empty page, as any page past the end does, rather than an error.
"""
_LISTS = (TaskState.PENDING, TaskState.ACTIVE)
_LOGGED_IDS = 20
"""Task ids one ``task_message_undecodable`` warning names at most."""


class TaskPage(msgspec.Struct, frozen=True, kw_only=True):
    """One page of the tasks of a queue in one state.

    Attributes:
        queue: the queue name.
        state: the state listed.
        group: the group listed, for aggregating tasks ("" = every group).
        page: the page number, from 1.
        size: the page size asked for.
        total: tasks in that state (in that group) altogether.
        tasks: the tasks on this page, next to be processed first.
    """

    queue: str
    state: TaskState
    group: str
    page: int
    size: int
    total: int
    tasks: list[TaskDetails]


class GroupInfo(msgspec.Struct, frozen=True, kw_only=True):
    """An aggregation group of a queue.

    Attributes:
        group: the group name.
        size: tasks in it.
    """

    group: str
    size: int


def _warn_undecodable(queue: str, tasks: list[TaskDetails]) -> None:
    """Log one warning for the tasks of one read whose message cannot be decoded (none: no warning)."""
    bad = [t for t in tasks if t.decode_error]
    if bad:
        get_logger("framework.inspector").warning(
            "task_message_undecodable",
            queue=queue,
            count=len(bad),
            task_ids=[t.id for t in bad[:_LOGGED_IDS]],
            states=sorted({t.state.value for t in bad}),
            error=bad[0].decode_error,
        )


def _warn_unknown_state(queue: str, records: list[tuple[str, Any]]) -> None:
    """Log one warning for the records of one read whose state field is not a task state (none: no warning)."""
    bad = [(task_id, text(value)) for task_id, value in records if not names_a_state(value)]
    if bad:
        get_logger("framework.inspector").warning(
            "task_state_unknown",
            queue=queue,
            count=len(bad),
            task_ids=[task_id for task_id, _ in bad[:_LOGGED_IDS]],
            states=sorted({value for _, value in bad})[:_LOGGED_IDS],
        )


def _check_page(page: int, size: int) -> None:
    if page < 1:
        raise ValueError(f"page={page!r} is invalid: pages are numbered from 1")
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise ValueError(f"size={size!r} is invalid: must be between 1 and {MAX_PAGE_SIZE}")


class TaskReads(Part):
    """The task reads of :class:`~framework.inspector.core.Inspector`: pages of one state, groups, and single tasks."""

    __slots__ = ()

    async def list_tasks(
        self,
        queue: str,
        state: TaskState | str,
        *,
        page: int = 1,
        size: int = 20,
        group: str | None = None,
        reverse: bool = False,
    ) -> TaskPage:
        """One page of the tasks of ``queue`` in ``state``, the next to be processed first (last, ``reverse``)."""
        st = as_state(state)
        _check_page(page, size)
        qk = await self._ns.queue_keys(queue)
        start = min((page - 1) * size, PAST_THE_END)
        if st in _LISTS:
            key = qk.pending if st is TaskState.PENDING else qk.active
            ids, total = await self._list_page(key, start, size, reverse)
            scored: list[tuple[str, float | None]] = [(i, None) for i in ids]
        elif st is TaskState.AGGREGATING:
            scored, total = await self._group_page(qk, group, start, size, reverse)
        else:
            scored, total = await self._zset_page(getattr(qk, st.value), start, size, reverse)
        tasks = await self._fetch(qk, queue, scored, st)
        _warn_undecodable(queue, tasks)
        return TaskPage(queue=queue, state=st, group=group or "", page=page, size=size, total=total, tasks=tasks)

    async def count_tasks(self, queue: str, state: TaskState | str, *, group: str | None = None) -> int:
        """How many tasks of ``queue`` are in ``state`` (in ``group``, for aggregating), reading none of them."""
        st = as_state(state)
        qk = await self._ns.queue_keys(queue)
        if st in _LISTS:
            return int(await self._redis.llen(qk.pending if st is TaskState.PENDING else qk.active))
        if st is TaskState.AGGREGATING:
            if group:
                return int(await self._redis.zcard(qk.group(group)))
            return sum(g.size for g in await self._groups(qk))
        return int(await self._redis.zcard(getattr(qk, st.value)))

    async def _list_page(self, key: str, start: int, size: int, reverse: bool) -> tuple[list[str], int]:
        """A page of a list read from the right (the oldest end; from the left, ``reverse``), with its length."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.llen(key)
            if reverse:
                pipe.lrange(key, start, start + size - 1)
            else:
                pipe.lrange(key, -(start + size), -(start + 1))
            total, ids = await pipe.execute()
        return [text(i) for i in (ids if reverse else reversed(ids))], int(total)

    async def _zset_page(
        self, key: str, start: int, size: int, reverse: bool
    ) -> tuple[list[tuple[str, float | None]], int]:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zcard(key)
            pipe.zrange(key, start, start + size - 1, desc=reverse, withscores=True)
            total, items = await pipe.execute()
        return [(text(i), float(s)) for i, s in items], int(total)

    async def _group_page(
        self, qk: QueueKeys, group: str | None, start: int, size: int, reverse: bool
    ) -> tuple[list[tuple[str, float | None]], int]:
        """A page across the groups in name order (or of one group); each group's latest first, ``reverse``."""
        groups = [group] if group else [g.group for g in await self._groups(qk)]
        async with self._redis.pipeline(transaction=False) as pipe:
            for g in groups:
                pipe.zcard(qk.group(g))
            sizes = [int(n) for n in await pipe.execute()]
        out: list[tuple[str, float | None]] = []
        offset = start
        for g, n in zip(groups, sizes, strict=True):
            if len(out) >= size:
                break
            if offset >= n:
                offset -= n
                continue
            stop = offset + size - len(out) - 1
            items: list[Any] = await self._redis.zrange(qk.group(g), offset, stop, desc=reverse, withscores=True)
            out += [(text(i), float(s)) for i, s in items]
            offset = 0
        return out, sum(sizes)

    async def _fetch(
        self, qk: QueueKeys, queue: str, scored: list[tuple[str, float | None]], listed: TaskState
    ) -> list[TaskDetails]:
        """The task records of ``scored`` ids, read from the collection of ``listed`` tasks.

        Ids without a record are left out; a record whose state field is not a task state shows as ``listed``.
        """
        if not scored:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for task_id, _ in scored:
                pipe.hmget(qk.task(task_id), FIELDS)
            rows = await pipe.execute()
        found = [(i, s, f) for (i, s), f in zip(scored, rows, strict=True) if f[0] is not None and f[1]]
        _warn_unknown_state(queue, [(i, f[1]) for i, _, f in found])
        return [task_details(queue, i, f, s, held_in=listed) for i, s, f in found]

    async def _groups(self, qk: QueueKeys) -> list[GroupInfo]:
        names = sorted(text(g) for g in await self._redis.smembers(qk.groups))
        async with self._redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.zcard(qk.group(name))
            sizes = await pipe.execute()
        return [GroupInfo(group=n, size=int(s)) for n, s in zip(names, sizes, strict=True)]

    async def list_groups(self, queue: str) -> list[GroupInfo]:
        """The aggregation groups of ``queue`` and their sizes, by name."""
        return await self._groups(await self._ns.queue_keys(queue))

    async def get_task(self, queue: str, task_id: str) -> TaskDetails:
        """One task of ``queue``, in whatever state it is."""
        qk = await self._ns.queue_keys(queue)
        fields = await self._redis.hmget(qk.task(task_id), FIELDS)
        if fields[0] is None or not fields[1]:
            raise TaskNotFound(f"queue {queue!r} has no task {task_id!r}")
        try:
            state = record_state(fields[1])
        except ValueError:
            _warn_unknown_state(queue, [(task_id, fields[1])])
            state = await self._holder(qk, queue, task_id, text(fields[3]))
        score = None
        if state in SCORED:
            score = await self._redis.zscore(getattr(qk, state.value), task_id)
        task = task_details(queue, task_id, list(fields), score, held_in=state)
        _warn_undecodable(queue, [task])
        return task

    async def _holder(self, qk: QueueKeys, queue: str, task_id: str, group: str) -> TaskState:
        """The state of the collection holding ``task_id``, for a record whose state field names none.

        Raises:
            TaskNotFound: no collection of the queue holds it (the record is an orphan).
        """
        zsets = [s for s in TaskState if s not in _LISTS and s is not TaskState.AGGREGATING]
        candidates = [*_LISTS, *zsets, *([TaskState.AGGREGATING] if group else [])]
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.lpos(qk.pending, task_id)
            pipe.lpos(qk.active, task_id)
            for zset in zsets:
                pipe.zscore(getattr(qk, zset.value), task_id)
            if group:
                pipe.zscore(qk.group(group), task_id)
            found = await pipe.execute()
        for candidate, hit in zip(candidates, found, strict=True):
            if hit is not None:
                return candidate
        raise TaskNotFound(f"queue {queue!r} has no task {task_id!r} (its record is in no state's collection)")
