"""asynq's protobuf schema (``asynq.proto``) and its message classes, built without ``protoc``.

Use ``framework.protocol.message`` to encode and decode; this package only declares the wire types.
"""

from __future__ import annotations

from framework.protocol.proto.asynq import SchedulerEnqueueEvent, SchedulerEntry, ServerInfo, TaskMessage, WorkerInfo

__all__ = ("SchedulerEnqueueEvent", "SchedulerEntry", "ServerInfo", "TaskMessage", "WorkerInfo")
