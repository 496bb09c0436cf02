"""The state every part of the inspector shares: the Redis client, the key schema and the clock."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from framework.clock import SystemClock
from framework.errors import QueueNotFound
from framework.protocol.keys import Schema
from framework.protocol.message import TaskState

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from framework.clock import Clock
    from framework.protocol.keys import QueueKeys

__all__ = ("InspectorBase", "as_state", "from_unix", "text")


class InspectorBase:
    """Holds the connection, schema and clock; the query and action mixins build on it.

    Args:
        redis: an asyncio Redis client (bytes replies).
        schema: the key schema (default: asynq's namespace).
        clock: where "now" comes from (default: the wall clock).
    """

    def __init__(self, redis: Redis, schema: Schema | None = None, *, clock: Clock | None = None) -> None:
        self.redis = redis
        self.schema = schema or Schema()
        self.clock: Clock = clock or SystemClock()

    def _now(self) -> float:
        return self.clock.now()

    async def _queue_keys(self, queue: str) -> QueueKeys:
        """The keys of ``queue``, after checking that the queue exists.

        Raises:
            QueueNotFound: ``queue`` is not in the ``<ns>:queues`` set.
        """
        if not await self.redis.sismember(self.schema.all_queues, queue):
            raise QueueNotFound(f"queue {queue!r} does not exist (namespace {self.schema.ns!r})")
        return self.schema.queue(queue)


def text(value: Any) -> str:
    """Decode a Redis reply to ``str`` (``""`` for none)."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def from_unix(seconds: float | None) -> datetime | None:
    """An aware UTC datetime for Unix seconds; ``None`` for ``None`` and for 0 (asynq's "unset")."""
    if not seconds:
        return None
    return datetime.fromtimestamp(seconds, UTC)


def as_state(state: TaskState | str) -> TaskState:
    """Parse a task state name.

    Raises:
        ValueError: ``state`` is not one of the task states; the message lists them.
    """
    try:
        return TaskState(state)
    except ValueError:
        allowed = ", ".join(s.value for s in TaskState)
        raise ValueError(f"unknown task state {state!r}; use one of: {allowed}") from None
