"""The asynq wire messages: the only encode/decode functions for what we store in Redis.

Bytes are those of Go's ``proto.Marshal`` (asynq v0.26): fields in number order, zero values
omitted, every map entry with both key and value. Go writes map entries in random order; we sort
them by key (UTF-8 byte order, as Go's deterministic mode does), so our output is reproducible
whichever protobuf backend is installed. A decoded :class:`TaskMessage` keeps fields it does not
know and :func:`encode_message` writes them back after the known ones (where Go writes them), so a
newer asynq's field survives our retries.

``TaskMessage`` is the protobuf class itself, since it is re-encoded after each transition. The
heartbeat and scheduler messages are written from keyword arguments and read into frozen
:mod:`msgspec` Structs with plain Python types; times are aware UTC datetimes, and ``None`` stands
for Go's zero time.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

import msgspec
from google.protobuf.message import DecodeError, Message

from framework.protocol.proto import asynq_pb2 as _pb
from framework.protocol.proto.asynq_pb2 import TaskMessage
from framework.protocol.proto.gotime import from_timestamp, to_timestamp
from framework.protocol.proto.wire import sort_map_entries

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = (
    "SchedulerEnqueueEvent",
    "SchedulerEntry",
    "ServerInfo",
    "TaskMessage",
    "TaskState",
    "WorkerInfo",
    "decode_enqueue_event",
    "decode_message",
    "decode_scheduler_entry",
    "decode_server_info",
    "decode_worker_info",
    "encode_enqueue_event",
    "encode_message",
    "encode_scheduler_entry",
    "encode_server_info",
    "encode_worker_info",
    "new_message",
)

_M = TypeVar("_M", bound=Message)
_HEADERS_FIELD = 15  # TaskMessage.headers
_QUEUES_FIELD = 5  # ServerInfo.queues


class TaskState(enum.StrEnum):
    """The ``state`` field of a task hash: which collection of its queue holds the task."""

    PENDING = "pending"
    ACTIVE = "active"
    SCHEDULED = "scheduled"
    RETRY = "retry"
    ARCHIVED = "archived"
    COMPLETED = "completed"
    AGGREGATING = "aggregating"


def new_message(
    *,
    type: str,  # noqa: A002
    payload: bytes,
    id: str,  # noqa: A002
    queue: str,
    retry: int,
    timeout: int,
    deadline: int,
    unique_key: str = "",
    retention: int = 0,
    group_key: str = "",
    headers: Mapping[str, str] | None = None,
) -> TaskMessage:
    """Build the message of a new task (``retried``, errors and completion are left at zero).

    Args:
        type: Task type name, the routing key.
        payload: Opaque payload bytes (``b""`` is written as no payload, as Go does).
        id: Task ID, unique within its queue.
        queue: Queue name.
        retry: Maximum number of retries (int32).
        timeout: Seconds one run may take; 0 for none.
        deadline: Unix seconds by which the task must finish; 0 for none.
        unique_key: Full Redis key of the uniqueness lock; ``""`` for none.
        retention: Seconds to keep the task after success; 0 to delete it at once.
        group_key: Aggregation group; ``""`` for none.
        headers: Metadata, string to string.

    Returns:
        The message, ready for :func:`encode_message`.

    Raises:
        ValueError: If a number does not fit its field (int32 or int64).
    """
    # only the fields that are set: the protobuf constructor costs per keyword, and zero values are not written
    msg = TaskMessage(type=type, payload=payload, id=id, queue=queue, retry=retry, timeout=timeout)
    if deadline:
        msg.deadline = deadline
    if unique_key:
        msg.unique_key = unique_key
    if retention:
        msg.retention = retention
    if group_key:
        msg.group_key = group_key
    if headers:
        msg.headers.update(headers)
    return msg


def encode_message(msg: TaskMessage) -> bytes:
    """Encode a task message as Go's ``proto.Marshal`` does, with headers sorted by key.

    Args:
        msg: The message; it is not modified.

    Returns:
        Fields 1-14 in number order, then one entry per header in key order, then any unknown
        fields kept from decoding, in the order they were read.
    """
    if not msg.headers:
        return msg.SerializeToString()
    return sort_map_entries(msg.SerializeToString(deterministic=True), _HEADERS_FIELD)


def decode_message(data: bytes) -> TaskMessage:
    """Decode the ``msg`` field of a task hash.

    Args:
        data: The protobuf bytes.

    Returns:
        The message, including any fields unknown to us (kept for :func:`encode_message`).

    Raises:
        ValueError: If ``data`` is not a valid ``TaskMessage``.
    """
    return _decode(TaskMessage, data)


def _decode(cls: type[_M], data: bytes) -> _M:
    """Parse ``data`` as a ``cls`` message, turning every parse error into ``ValueError``."""
    try:
        return cls.FromString(data)
    except (DecodeError, ValueError) as exc:  # the pure-Python backend raises UnicodeDecodeError
        name = cls.DESCRIPTOR.full_name
        msg = f"invalid {name} protobuf ({len(data)} bytes, starting {bytes(data[:16]).hex()}): {exc}"
        raise ValueError(msg) from exc


def _time(message: Message, field: str) -> datetime | None:
    """Read a Timestamp field as a datetime; absent and Go's zero time both read as ``None``."""
    if not message.HasField(field):
        return None
    timestamp = getattr(message, field)
    return from_timestamp(timestamp)


class ServerInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A running server (worker process), as written to ``asynq:servers:{<host>:<pid>:<id>}``.

    Attributes:
        host: Host name.
        pid: Process ID.
        server_id: Server UUID.
        concurrency: Maximum number of tasks processed at once.
        queues: Queue name -> weight.
        strict_priority: Whether higher-weight queues are always emptied first.
        status: ``"active"``, ``"stopped"``, ``"closed"``, ...
        start_time: When the server started.
        active_worker_count: Tasks in progress.
    """

    host: str
    pid: int
    server_id: str
    concurrency: int
    queues: dict[str, int]
    strict_priority: bool
    status: str
    start_time: datetime | None
    active_worker_count: int


def encode_server_info(
    *,
    host: str,
    pid: int,
    server_id: str,
    concurrency: int,
    queues: Mapping[str, int],
    strict_priority: bool,
    status: str,
    start_time: datetime | float | None,
    active_worker_count: int,
) -> bytes:
    """Encode a ``ServerInfo``. Arguments as the fields of :class:`ServerInfo`.

    Times are aware datetimes or Unix seconds; ``None`` is written as Go's zero time.

    Returns:
        The protobuf bytes, with ``queues`` sorted by name.
    """
    info = _pb.ServerInfo(
        host=host,
        pid=pid,
        server_id=server_id,
        concurrency=concurrency,
        queues=queues,
        strict_priority=strict_priority,
        status=status,
        start_time=to_timestamp(start_time),
        active_worker_count=active_worker_count,
    )
    return sort_map_entries(info.SerializeToString(deterministic=True), _QUEUES_FIELD)


def decode_server_info(data: bytes) -> ServerInfo:
    """Decode a ``ServerInfo``.

    Raises:
        ValueError: If ``data`` is not a valid ``ServerInfo``.
    """
    info = _decode(_pb.ServerInfo, data)
    return ServerInfo(
        host=info.host,
        pid=info.pid,
        server_id=info.server_id,
        concurrency=info.concurrency,
        queues=dict(info.queues),
        strict_priority=info.strict_priority,
        status=info.status,
        start_time=_time(info, "start_time"),
        active_worker_count=info.active_worker_count,
    )


class WorkerInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A task in progress, as written to the ``asynq:workers:{<host>:<pid>:<id>}`` hash.

    Attributes:
        host: Host name of the server.
        pid: Process ID of the server.
        server_id: Server UUID.
        task_id: ID of the task.
        task_type: Type of the task.
        task_payload: Payload of the task.
        queue: Queue of the task.
        start_time: When processing started.
        deadline: When processing must end.
    """

    host: str
    pid: int
    server_id: str
    task_id: str
    task_type: str
    task_payload: bytes
    queue: str
    start_time: datetime | None
    deadline: datetime | None


def encode_worker_info(
    *,
    host: str,
    pid: int,
    server_id: str,
    task_id: str,
    task_type: str,
    task_payload: bytes,
    queue: str,
    start_time: datetime | float | None,
    deadline: datetime | float | None,
) -> bytes:
    """Encode a ``WorkerInfo``. Arguments as the fields of :class:`WorkerInfo`.

    Times are aware datetimes or Unix seconds; ``None`` is written as Go's zero time.

    Returns:
        The protobuf bytes.
    """
    return _pb.WorkerInfo(
        host=host,
        pid=pid,
        server_id=server_id,
        task_id=task_id,
        task_type=task_type,
        task_payload=task_payload,
        queue=queue,
        start_time=to_timestamp(start_time),
        deadline=to_timestamp(deadline),
    ).SerializeToString()


def decode_worker_info(data: bytes) -> WorkerInfo:
    """Decode a ``WorkerInfo``.

    Raises:
        ValueError: If ``data`` is not a valid ``WorkerInfo``.
    """
    info = _decode(_pb.WorkerInfo, data)
    return WorkerInfo(
        host=info.host,
        pid=info.pid,
        server_id=info.server_id,
        task_id=info.task_id,
        task_type=info.task_type,
        task_payload=info.task_payload,
        queue=info.queue,
        start_time=_time(info, "start_time"),
        deadline=_time(info, "deadline"),
    )


class SchedulerEntry(msgspec.Struct, frozen=True, kw_only=True):
    """A periodic task, as written to the ``asynq:schedulers:{<host>:<pid>:<id>}`` list.

    Attributes:
        id: Entry UUID.
        spec: Cron spec.
        task_type: Type of the task it enqueues.
        task_payload: Payload of the task it enqueues.
        enqueue_options: Options in Go's ``Option.String()`` form (``Queue("x")``, ``MaxRetry(5)``).
        next_enqueue_time: Next fire time.
        prev_enqueue_time: Previous fire time; ``None`` if it never fired.
    """

    id: str
    spec: str
    task_type: str
    task_payload: bytes
    enqueue_options: tuple[str, ...]
    next_enqueue_time: datetime | None
    prev_enqueue_time: datetime | None


def encode_scheduler_entry(
    *,
    id: str,  # noqa: A002
    spec: str,
    task_type: str,
    task_payload: bytes,
    enqueue_options: Sequence[str],
    next_enqueue_time: datetime | float | None,
    prev_enqueue_time: datetime | float | None,
) -> bytes:
    """Encode a ``SchedulerEntry``. Arguments as the fields of :class:`SchedulerEntry`.

    Times are aware datetimes or Unix seconds; ``None`` is written as Go's zero time.

    Returns:
        The protobuf bytes.
    """
    return _pb.SchedulerEntry(
        id=id,
        spec=spec,
        task_type=task_type,
        task_payload=task_payload,
        enqueue_options=enqueue_options,
        next_enqueue_time=to_timestamp(next_enqueue_time),
        prev_enqueue_time=to_timestamp(prev_enqueue_time),
    ).SerializeToString()


def decode_scheduler_entry(data: bytes) -> SchedulerEntry:
    """Decode a ``SchedulerEntry``.

    Raises:
        ValueError: If ``data`` is not a valid ``SchedulerEntry``.
    """
    entry = _decode(_pb.SchedulerEntry, data)
    return SchedulerEntry(
        id=entry.id,
        spec=entry.spec,
        task_type=entry.task_type,
        task_payload=entry.task_payload,
        enqueue_options=tuple(entry.enqueue_options),
        next_enqueue_time=_time(entry, "next_enqueue_time"),
        prev_enqueue_time=_time(entry, "prev_enqueue_time"),
    )


class SchedulerEnqueueEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One enqueue by a scheduler entry, a member of ``asynq:scheduler_history:<entry id>``.

    Attributes:
        task_id: ID of the enqueued task.
        enqueue_time: When it was enqueued.
    """

    task_id: str
    enqueue_time: datetime | None


def encode_enqueue_event(task_id: str, enqueue_time: datetime | float) -> bytes:
    """Encode a ``SchedulerEnqueueEvent``.

    Args:
        task_id: ID of the enqueued task.
        enqueue_time: When it was enqueued: Unix seconds (fractions become nanos) or an aware datetime.

    Returns:
        The protobuf bytes.
    """
    return _pb.SchedulerEnqueueEvent(task_id=task_id, enqueue_time=to_timestamp(enqueue_time)).SerializeToString()


def decode_enqueue_event(data: bytes) -> SchedulerEnqueueEvent:
    """Decode a ``SchedulerEnqueueEvent``.

    Raises:
        ValueError: If ``data`` is not a valid ``SchedulerEnqueueEvent``.
    """
    event = _decode(_pb.SchedulerEnqueueEvent, data)
    return SchedulerEnqueueEvent(task_id=event.task_id, enqueue_time=_time(event, "enqueue_time"))
