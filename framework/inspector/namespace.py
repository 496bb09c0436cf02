"""What every part of the inspector reads through: one namespace of one Redis, and the decoding helpers they share."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from framework.errors import QueueNotFound
from framework.protocol.message import TaskState

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from framework.clock import Clock
    from framework.protocol.keys import QueueKeys, Schema

__all__ = (
    "MAX_JSON_DEPTH",
    "STATE_NAMES",
    "Namespace",
    "Part",
    "as_state",
    "from_unix",
    "json_value",
    "names_a_state",
    "text",
)

MAX_JSON_DEPTH = 100
"""Stored JSON (a payload, a result) nested deeper than this is shown as text, not as a JSON value.

Whatever shows or sends such a value (a page's template, the API's encoder) walks it recursively, and a
document nested a thousand levels deep, which anyone may enqueue, would exhaust Python's stack there.
"""


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


def json_value(data: bytes) -> tuple[Any, bool]:
    """``(value, True)`` when ``data`` is a JSON document, else ``(None, False)``.

    A document nested deeper than :data:`MAX_JSON_DEPTH` counts as not JSON (it is shown as text).
    """
    try:
        value = msgspec.json.decode(data)
    except (msgspec.DecodeError, RecursionError):
        return None, False
    if data.count(b"[") + data.count(b"{") > MAX_JSON_DEPTH and not _nested_within(value, MAX_JSON_DEPTH):
        return None, False
    return value, True


def _nested_within(value: Any, limit: int) -> bool:
    """Whether no list or object in ``value`` lies more than ``limit`` levels deep (walked without recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)] if isinstance(value, (list, dict)) else []
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return False
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, (list, dict)))
    return True


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


STATE_NAMES = frozenset(s.value for s in TaskState)
"""The names a task record's ``state`` field may hold."""


def names_a_state(value: Any) -> bool:
    """Whether a record's ``state`` field (bytes or text) names a task state (another client may write others)."""
    return text(value) in STATE_NAMES


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
