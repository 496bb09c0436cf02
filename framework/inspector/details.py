"""One task as the inspector shows it: the stored message decoded, plus what its record adds."""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any

import msgspec

from framework.inspector._base import from_unix, text
from framework.message import TaskState, decode_message

__all__ = ("FIELDS", "SCORED", "TaskDetails", "task_details")

FIELDS = ("msg", "state", "result", "group", "unique_key", "pending_since")
"""The task-record fields read for each task."""
SCORED = (TaskState.SCHEDULED, TaskState.RETRY)
"""States whose zset score is the time the task becomes pending."""


class TaskDetails(msgspec.Struct, frozen=True, kw_only=True):
    """One task as stored: its message decoded, plus what the task record and its state add.

    Attributes:
        id: the task id.
        queue: its queue.
        type: its task type.
        state: which collection of the queue holds it.
        payload: the payload bytes.
        payload_json: the payload decoded as JSON, when ``payload_is_json``.
        payload_is_json: whether the payload is a JSON document.
        headers: its headers.
        error: the last error message ("" if it never failed).
        retried: retries so far.
        max_retry: retries allowed.
        last_failed_at: when it last failed.
        next_process_at: when a scheduled or retry task becomes pending.
        timeout: seconds one run may take (0 = deadline only).
        deadline: when it must have finished.
        retention: seconds a completed task is kept.
        completed_at: when it succeeded.
        result: the bytes its handler wrote as a result, if any.
        group: its aggregation group ("" = none).
        unique_key: the uniqueness lock it took ("" = none).
        pending_since: when it last became pending (set while pending).
    """

    id: str
    queue: str
    type: str
    state: TaskState
    payload: bytes
    payload_json: Any = None
    payload_is_json: bool = False
    headers: dict[str, str]
    error: str
    retried: int
    max_retry: int
    last_failed_at: datetime | None
    next_process_at: datetime | None
    timeout: int
    deadline: datetime | None
    retention: int
    completed_at: datetime | None
    result: bytes | None
    group: str
    unique_key: str
    pending_since: datetime | None


def task_details(queue: str, task_id: str, fields: list[Any], score: float | None) -> TaskDetails:
    """Build a :class:`TaskDetails` from the ``HMGET`` of :data:`FIELDS` and the task's zset score.

    Raises:
        ValueError: the ``msg`` field is not a valid TaskMessage, or ``state`` is not a task state.
    """
    msg = decode_message(fields[0])
    state = TaskState(text(fields[1]))
    payload = bytes(msg.payload)
    parsed: Any = None
    is_json = False
    if payload:
        with contextlib.suppress(msgspec.DecodeError):
            parsed, is_json = msgspec.json.decode(payload), True
    since = fields[5]
    return TaskDetails(
        id=task_id,
        queue=queue,
        type=msg.type,
        state=state,
        payload=payload,
        payload_json=parsed,
        payload_is_json=is_json,
        headers=dict(msg.headers),
        error=msg.error_msg,
        retried=msg.retried,
        max_retry=msg.retry,
        last_failed_at=from_unix(msg.last_failed_at),
        next_process_at=from_unix(score) if state in SCORED else None,
        timeout=msg.timeout,
        deadline=from_unix(msg.deadline),
        retention=msg.retention,
        completed_at=from_unix(msg.completed_at),
        result=bytes(fields[2]) if fields[2] is not None else None,
        group=text(fields[3]) or msg.group_key,
        unique_key=text(fields[4]) or msg.unique_key,
        pending_since=from_unix(int(since) / 1e9) if since else None,
    )
