"""The client's values: :class:`TaskCall`, one task of a batch, and :class:`TaskInfo`, what an enqueue stored.

Both are importable from :mod:`framework.client.client` (and :mod:`framework`) as well.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from framework.protocol.message import TaskState
from framework.task import EnqueueOptions, TaskDef

__all__ = ("Job", "TaskCall", "TaskInfo")

_NO_OPTIONS: Any = object()  # TaskCall without options: a new empty dict each


class TaskInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What the client stored. Returned by every enqueue.

    Attributes:
        id: the task id.
        queue: its queue.
        type: its task type.
        state: pending, scheduled or aggregating.
        next_process_at: Unix seconds when it becomes ready.
        max_retry: retries allowed.
        timeout: seconds the handler may run (0 = deadline only).
        deadline: Unix seconds by which it must finish (0 = none).
        retention: seconds a completed task is kept.
        group: aggregation group ("" = none).
        headers: its headers.
        payload: the payload bytes as stored.
    """

    id: str
    queue: str
    type: str
    state: TaskState
    next_process_at: float
    max_retry: int
    timeout: int
    deadline: int
    retention: int
    group: str
    headers: dict[str, str]
    payload: bytes


@dataclass(frozen=True, slots=True, init=False)
class TaskCall:
    """One task for :meth:`Client.enqueue_many`: what one :meth:`Client.enqueue` call takes, held as a value.

    Example::

        await client.enqueue_many([TaskCall(send_email, SendEmail(to=to), {"queue": "low"}) for to in people])

    Attributes:
        task: a :class:`TaskDef` or a type string.
        payload: the payload.
        options: enqueue options, as for :meth:`Client.enqueue`.
    """

    task: TaskDef[Any] | str
    payload: Any = None
    options: EnqueueOptions = field(default_factory=EnqueueOptions)

    def __init__(self, task: TaskDef[Any] | str, payload: Any = None, options: EnqueueOptions = _NO_OPTIONS) -> None:
        # the generated __init__'s work, through the slots' own setters: callers build thousands of these
        _set_task(self, task)
        _set_payload(self, payload)
        _set_options(self, {} if options is _NO_OPTIONS else options)


_set_task = TaskCall.__dict__["task"].__set__
_set_payload = TaskCall.__dict__["payload"].__set__
_set_options = TaskCall.__dict__["options"].__set__

Job = TaskCall
"""Deprecated: the old name of :class:`TaskCall`, kept for one release (it will be removed in the next)."""
