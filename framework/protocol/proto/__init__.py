"""asynq's protobuf schema (``asynq.proto``) and the message classes that ``protoc`` generates from it.

``asynq_pb2.py`` and its types ``asynq_pb2.pyi`` are generated code, checked in as Go's asynq checks in
``asynq.pb.go``: edit ``asynq.proto``, then run ``scripts/protoc``. Use ``framework.protocol.message`` to
encode and decode; this package only declares the wire types.
"""

from __future__ import annotations

from framework.protocol.proto.asynq_pb2 import (
    SchedulerEnqueueEvent,
    SchedulerEntry,
    ServerInfo,
    TaskMessage,
    WorkerInfo,
)

__all__ = ("SchedulerEnqueueEvent", "SchedulerEntry", "ServerInfo", "TaskMessage", "WorkerInfo")
