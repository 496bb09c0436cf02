"""Protobuf classes for asynq's wire messages, built at import time (no ``protoc``, no generated code).

:data:`SCHEMA` restates ``asynq.proto`` (beside this module) as data, spelled as in the ``.proto``
so that a test can check that the two agree. :func:`file_descriptor_proto` turns it into a
``FileDescriptorProto``, which is added to protobuf's default descriptor pool under
:data:`FILE_NAME`; the message classes come from that pool, so they use whichever protobuf backend
is installed (upb by default) and keep unknown fields on decode and write them back on encode.

For the type checker, each class is declared below under ``TYPE_CHECKING`` with its typed fields.
Application code should not use these classes directly: ``framework.protocol.message`` holds the only
encode/decode functions and writes maps in a deterministic order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, MutableMapping, MutableSequence

    from google.protobuf.descriptor import FileDescriptor
    from google.protobuf.message import Message
    from google.protobuf.timestamp_pb2 import Timestamp

__all__ = (
    "FILE_NAME",
    "PACKAGE",
    "SCHEMA",
    "SchedulerEnqueueEvent",
    "SchedulerEntry",
    "ServerInfo",
    "TaskMessage",
    "WorkerInfo",
    "file_descriptor_proto",
)

FILE_NAME = "framework/protocol/proto/asynq.proto"
"""Name of our ``.proto`` file in the descriptor pool (its path from the repository root)."""

PACKAGE = "asynq"
"""Protobuf package, as in asynq, so full names (``asynq.TaskMessage``) match Go's."""

_TIMESTAMP = "google.protobuf.Timestamp"

SCHEMA: dict[str, tuple[tuple[str, int, str], ...]] = {
    "TaskMessage": (
        ("type", 1, "string"),
        ("payload", 2, "bytes"),
        ("id", 3, "string"),
        ("queue", 4, "string"),
        ("retry", 5, "int32"),
        ("retried", 6, "int32"),
        ("error_msg", 7, "string"),
        ("timeout", 8, "int64"),
        ("deadline", 9, "int64"),
        ("unique_key", 10, "string"),
        ("last_failed_at", 11, "int64"),
        ("retention", 12, "int64"),
        ("completed_at", 13, "int64"),
        ("group_key", 14, "string"),
        ("headers", 15, "map<string, string>"),
    ),
    "ServerInfo": (
        ("host", 1, "string"),
        ("pid", 2, "int32"),
        ("server_id", 3, "string"),
        ("concurrency", 4, "int32"),
        ("queues", 5, "map<string, int32>"),
        ("strict_priority", 6, "bool"),
        ("status", 7, "string"),
        ("start_time", 8, _TIMESTAMP),
        ("active_worker_count", 9, "int32"),
    ),
    "WorkerInfo": (
        ("host", 1, "string"),
        ("pid", 2, "int32"),
        ("server_id", 3, "string"),
        ("task_id", 4, "string"),
        ("task_type", 5, "string"),
        ("task_payload", 6, "bytes"),
        ("queue", 7, "string"),
        ("start_time", 8, _TIMESTAMP),
        ("deadline", 9, _TIMESTAMP),
    ),
    "SchedulerEntry": (
        ("id", 1, "string"),
        ("spec", 2, "string"),
        ("task_type", 3, "string"),
        ("task_payload", 4, "bytes"),
        ("enqueue_options", 5, "repeated string"),
        ("next_enqueue_time", 6, _TIMESTAMP),
        ("prev_enqueue_time", 7, _TIMESTAMP),
    ),
    "SchedulerEnqueueEvent": (
        ("task_id", 1, "string"),
        ("enqueue_time", 2, _TIMESTAMP),
    ),
}
"""Message name -> fields as ``(name, number, type)``, the type spelled as in ``asynq.proto``."""

_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    "string": _F.TYPE_STRING,
    "bytes": _F.TYPE_BYTES,
    "int32": _F.TYPE_INT32,
    "int64": _F.TYPE_INT64,
    "bool": _F.TYPE_BOOL,
}


def _add_field(message: descriptor_pb2.DescriptorProto, name: str, number: int, spec: str) -> None:
    """Append one field, declared as ``spec`` (a ``.proto`` type), to ``message``."""
    field = message.field.add(name=name, number=number, label=_F.LABEL_OPTIONAL)
    if spec.startswith("map<"):
        key_type, value_type = (part.strip() for part in spec[len("map<") : -1].split(","))
        entry = message.nested_type.add(name="".join(word.title() for word in name.split("_")) + "Entry")
        entry.options.map_entry = True
        entry.field.add(name="key", number=1, label=_F.LABEL_OPTIONAL, type=_SCALARS[key_type])
        entry.field.add(name="value", number=2, label=_F.LABEL_OPTIONAL, type=_SCALARS[value_type])
        field.label = _F.LABEL_REPEATED
        field.type = _F.TYPE_MESSAGE
        field.type_name = f".{PACKAGE}.{message.name}.{entry.name}"
    elif spec.startswith("repeated "):
        field.label = _F.LABEL_REPEATED
        field.type = _SCALARS[spec.removeprefix("repeated ")]
    elif spec == _TIMESTAMP:
        field.type = _F.TYPE_MESSAGE
        field.type_name = f".{_TIMESTAMP}"
    else:
        field.type = _SCALARS[spec]


def file_descriptor_proto() -> descriptor_pb2.FileDescriptorProto:
    """Build the ``FileDescriptorProto`` of ``asynq.proto`` from :data:`SCHEMA`.

    Returns:
        A proto3 file descriptor in package ``asynq`` that imports ``google/protobuf/timestamp.proto``.
    """
    file = descriptor_pb2.FileDescriptorProto(
        name=FILE_NAME, package=PACKAGE, syntax="proto3", dependency=[timestamp_pb2.DESCRIPTOR.name]
    )
    for message_name, fields in SCHEMA.items():
        message = file.message_type.add(name=message_name)
        for name, number, spec in fields:
            _add_field(message, name, number, spec)
    return file


def _load_file() -> FileDescriptor:
    """Add our file to the default descriptor pool once, and return its descriptor."""
    pool = descriptor_pool.Default()
    try:
        return pool.FindFileByName(FILE_NAME)
    except KeyError:
        pool.AddSerializedFile(file_descriptor_proto().SerializeToString())
        return pool.FindFileByName(FILE_NAME)


def _message_class(file: FileDescriptor, name: str) -> type[Message]:
    """Make (or fetch) the class of message ``name`` and name it after this module, as protoc would."""
    cls: type[Message] = message_factory.GetMessageClass(file.message_types_by_name[name])
    cls.__module__ = __name__
    return cls


if TYPE_CHECKING:

    class TaskMessage(Message):
        """A task, as stored in the ``msg`` field of its Redis hash (fields as in ``asynq.proto``).

        Attributes:
            type: Task type name, the routing key (set by the user's task definition).
            payload: Opaque payload bytes (user).
            id: Task ID, unique per queue (user, or the client's UUIDv4 default).
            queue: Queue name (user or default).
            retry: Maximum number of retries (user or default).
            retried: Retries so far (framework, on retry).
            error_msg: Text of the last error (framework, on retry and archive).
            timeout: Seconds one run may take, 0 for none (user or default).
            deadline: Unix seconds by which the task must finish, 0 for none (user).
            unique_key: Full Redis key of the uniqueness lock, "" for none (client).
            last_failed_at: Unix seconds of the last failure (framework).
            retention: Seconds to keep the task after success (user).
            completed_at: Unix seconds of success, when retention > 0 (framework).
            group_key: Aggregation group, "" for none (user).
        """

        type: str
        payload: bytes
        id: str
        queue: str
        retry: int
        retried: int
        error_msg: str
        timeout: int
        deadline: int
        unique_key: str
        last_failed_at: int
        retention: int
        completed_at: int
        group_key: str

        @property
        def headers(self) -> MutableMapping[str, str]:
            """Metadata map (asynq >= v0.26)."""

        def __init__(
            self,
            *,
            type: str = ...,  # noqa: A002
            payload: bytes = ...,
            id: str = ...,  # noqa: A002
            queue: str = ...,
            retry: int = ...,
            retried: int = ...,
            error_msg: str = ...,
            timeout: int = ...,
            deadline: int = ...,
            unique_key: str = ...,
            last_failed_at: int = ...,
            retention: int = ...,
            completed_at: int = ...,
            group_key: str = ...,
            headers: Mapping[str, str] | None = ...,
        ) -> None: ...

    class ServerInfo(Message):
        """A running server, written on each heartbeat."""

        host: str
        pid: int
        server_id: str
        concurrency: int
        strict_priority: bool
        status: str
        active_worker_count: int

        @property
        def queues(self) -> MutableMapping[str, int]:
            """Queue name -> weight."""

        @property
        def start_time(self) -> Timestamp:
            """When the server started."""

        def __init__(
            self,
            *,
            host: str = ...,
            pid: int = ...,
            server_id: str = ...,
            concurrency: int = ...,
            queues: Mapping[str, int] | None = ...,
            strict_priority: bool = ...,
            status: str = ...,
            start_time: Timestamp | None = ...,
            active_worker_count: int = ...,
        ) -> None: ...

    class WorkerInfo(Message):
        """A task in progress on a server, written on each heartbeat."""

        host: str
        pid: int
        server_id: str
        task_id: str
        task_type: str
        task_payload: bytes
        queue: str

        @property
        def start_time(self) -> Timestamp:
            """When processing started."""

        @property
        def deadline(self) -> Timestamp:
            """When processing must end."""

        def __init__(
            self,
            *,
            host: str = ...,
            pid: int = ...,
            server_id: str = ...,
            task_id: str = ...,
            task_type: str = ...,
            task_payload: bytes = ...,
            queue: str = ...,
            start_time: Timestamp | None = ...,
            deadline: Timestamp | None = ...,
        ) -> None: ...

    class SchedulerEntry(Message):
        """A periodic task registered with a scheduler."""

        id: str
        spec: str
        task_type: str
        task_payload: bytes

        @property
        def enqueue_options(self) -> MutableSequence[str]:
            """Enqueue options in Go's ``Option.String()`` form."""

        @property
        def next_enqueue_time(self) -> Timestamp:
            """Next fire time."""

        @property
        def prev_enqueue_time(self) -> Timestamp:
            """Previous fire time (Go's zero time if never fired)."""

        def __init__(
            self,
            *,
            id: str = ...,  # noqa: A002
            spec: str = ...,
            task_type: str = ...,
            task_payload: bytes = ...,
            enqueue_options: Iterable[str] | None = ...,
            next_enqueue_time: Timestamp | None = ...,
            prev_enqueue_time: Timestamp | None = ...,
        ) -> None: ...

    class SchedulerEnqueueEvent(Message):
        """One enqueue made by a scheduler entry."""

        task_id: str

        @property
        def enqueue_time(self) -> Timestamp:
            """When the task was enqueued."""

        def __init__(self, *, task_id: str = ..., enqueue_time: Timestamp | None = ...) -> None: ...

else:
    _FILE = _load_file()
    TaskMessage = _message_class(_FILE, "TaskMessage")
    ServerInfo = _message_class(_FILE, "ServerInfo")
    WorkerInfo = _message_class(_FILE, "WorkerInfo")
    SchedulerEntry = _message_class(_FILE, "SchedulerEntry")
    SchedulerEnqueueEvent = _message_class(_FILE, "SchedulerEnqueueEvent")
