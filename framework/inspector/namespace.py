"""What every part of the inspector reads through: one namespace of one Redis, and the decoding helpers they share."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from framework.errors import QueueNotFound
from framework.protocol.message import TaskState

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from framework.clock import Clock
    from framework.protocol.keys import QueueKeys, Schema

__all__ = ("Namespace", "Part", "as_state", "from_unix", "text")


class Namespace:
    """One key namespace of one Redis, as the inspector's parts see it; each part holds the same one.

    Args:
        redis: an asyncio Redis client (bytes replies).
        schema: the namespace's key schema.
        clock: where "now" comes from.
    """

    __slots__ = ("clock", "redis", "schema")

    def __init__(self, redis: Redis, schema: Schema, clock: Clock) -> None:
        self.redis = redis
        self.schema = schema
        self.clock = clock

    def now(self) -> float:
        """The clock's Unix time."""
        return self.clock.now()

    async def queue_keys(self, queue: str) -> QueueKeys:
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


class Part:
    """One part of the :class:`~framework.inspector.core.Inspector`, split by noun: what every part holds.

    Args:
        ns: the namespace it reads (shared with the inspector's other parts).
    """

    __slots__ = ("_ns", "_redis", "_schema")

    def __init__(self, ns: Namespace) -> None:
        self._ns = ns
        self._redis = ns.redis
        self._schema = ns.schema
