"""One task as the inspector shows it: the stored message decoded, plus what its record adds.

A stored message that cannot be read (not protobuf, cut short, empty, without a task type, or with
times out of range) does not make the read fail: the task becomes a row with ``decode_error`` set and
what the task record itself holds (id, queue, state, group, result, times), so it can still be seen,
run, archived or deleted. The worker archives such a message as it is, so it does show up.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgspec

from framework.inspector.namespace import from_unix, json_value, text
from framework.protocol.message import TaskMessage, TaskState, decode_message

__all__ = ("FIELDS", "SCORED", "TaskDetails", "record_state", "task_details")

FIELDS = ("msg", "state", "result", "group", "unique_key", "pending_since")
"""The task-record fields read for each task."""
SCORED = (TaskState.SCHEDULED, TaskState.RETRY)
"""States whose zset score is the time the task becomes pending."""
_BAD_VALUE = (ValueError, OverflowError, OSError)  # what decoding, int() and datetime raise on bad stored values


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
        decode_error: why the stored message could not be read ("" when it could). The message's own
            fields (type, payload, headers, retries, times) are then empty or zero; the rest comes
            from the task record.
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
    decode_error: str = ""


class _Record(msgspec.Struct, frozen=True, kw_only=True):
    """What the task record and the task's zset say, apart from the message."""

    state: TaskState
    result: bytes | None
    group: str
    unique_key: str
    next_process_at: datetime | None
    pending_since: datetime | None


def task_details(
    queue: str, task_id: str, fields: list[Any], score: float | None, *, held_in: TaskState | None = None
) -> TaskDetails:
    """Build a :class:`TaskDetails` from the ``HMGET`` of :data:`FIELDS` and the task's zset score.

    A message that cannot be read gives a row with ``decode_error`` set rather than an error. A record
    whose ``state`` field is not a task state (written by another client, or damaged) takes the state
    of the collection it was found in, ``held_in``.

    Raises:
        ValueError: ``state`` is not a task state and ``held_in`` is None.
    """
    state = record_state(fields[1], held_in)
    record = _Record(
        state=state,
        result=bytes(fields[2]) if fields[2] is not None else None,
        group=text(fields[3]),
        unique_key=text(fields[4]),
        next_process_at=_or_none(lambda: from_unix(score) if state in SCORED else None),
        pending_since=_or_none(lambda: from_unix(int(fields[5]) / 1e9) if fields[5] else None),
    )
    try:
        return _decoded(queue, task_id, _message(bytes(fields[0] or b"")), record)
    except _BAD_VALUE as exc:
        return _undecodable(queue, task_id, record, str(exc))


def record_state(value: Any, held_in: TaskState | None = None) -> TaskState:
    """The task state a record's ``state`` field names, or ``held_in`` when it names none.

    Raises:
        ValueError: the field is not a task state and ``held_in`` is None.
    """
    try:
        return TaskState(text(value))
    except ValueError:
        if held_in is None:
            raise
        return held_in


def _message(data: bytes) -> TaskMessage:
    """The task message in ``data``, which must at least name a task type (asynq's client requires one).

    Raises:
        ValueError: ``data`` is empty, is not a TaskMessage, or has no task type.
    """
    if not data:
        raise ValueError("empty task message (0 bytes)")
    msg = decode_message(data)
    if not msg.type:
        raise ValueError(f"invalid asynq.TaskMessage ({len(data)} bytes, starting {data[:16].hex()}): no task type")
    return msg


def _decoded(queue: str, task_id: str, msg: TaskMessage, record: _Record) -> TaskDetails:
    payload = bytes(msg.payload)
    parsed, is_json = json_value(payload) if payload else (None, False)
    return TaskDetails(
        id=task_id,
        queue=queue,
        type=msg.type,
        state=record.state,
        payload=payload,
        payload_json=parsed,
        payload_is_json=is_json,
        headers=dict(msg.headers),
        error=msg.error_msg,
        retried=msg.retried,
        max_retry=msg.retry,
        last_failed_at=from_unix(msg.last_failed_at),
        next_process_at=record.next_process_at,
        timeout=msg.timeout,
        deadline=from_unix(msg.deadline),
        retention=msg.retention,
        completed_at=from_unix(msg.completed_at),
        result=record.result,
        group=record.group or msg.group_key,
        unique_key=record.unique_key or msg.unique_key,
        pending_since=record.pending_since,
    )


def _undecodable(queue: str, task_id: str, record: _Record, error: str) -> TaskDetails:
    """The row of a task whose message cannot be read: only what the task record holds."""
    return TaskDetails(
        id=task_id,
        queue=queue,
        type="",
        state=record.state,
        payload=b"",
        headers={},
        error="",
        retried=0,
        max_retry=0,
        last_failed_at=None,
        next_process_at=record.next_process_at,
        timeout=0,
        deadline=None,
        retention=0,
        completed_at=None,
        result=record.result,
        group=record.group,
        unique_key=record.unique_key,
        pending_since=record.pending_since,
        decode_error=error,
    )


def _or_none(read: Callable[[], datetime | None]) -> datetime | None:
    """``read()``, or ``None`` when the stored value is not a time (not a number, or out of range)."""
    try:
        return read()
    except _BAD_VALUE:
        return None
