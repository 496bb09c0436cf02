"""The hot-path Redis adapter: the only code that changes task state, one method per Lua script.

Every transition is atomic in Redis; nothing here uses WATCH/MULTI. Methods take the encoded
``TaskMessage`` bytes where a script stores a message, so callers encode once.

:class:`RedisBroker` is put together from its sides on their shared state (:mod:`framework.broker.base`):
the enqueue side (:mod:`framework.broker.enqueue`), the worker's transitions (:mod:`framework.broker.transitions`)
and maintenance (:mod:`framework.broker.maintenance`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Protocol

from framework.broker.enqueue import EnqueueSide
from framework.broker.maintenance import Maintenance
from framework.broker.transitions import WorkerTransitions

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from framework.protocol.keys import Schema

__all__ = (
    "Broker",
    "EnqueueCall",
    "RedisBroker",
)


class EnqueueCall(Protocol):
    """One prepared enqueue: which script, keys and args (built by :meth:`RedisBroker.prepare_enqueue`)."""


class Broker(Protocol):
    """The operations the worker and client need; :class:`RedisBroker` is the implementation.

    A Protocol so a fault-injecting broker can wrap the real one in tests.
    """

    schema: Schema

    async def register_queues(self, queues: Iterable[str]) -> None: ...  # noqa: D102
    async def enqueue(  # noqa: D102
        self,
        queue: str,
        task_id: str,
        data: bytes,
        *,
        process_at: int | None = ...,
        unique_key: str = ...,
        unique_ttl: int = ...,
        group: str = ...,
    ) -> int: ...
    async def dequeue(  # noqa: D102
        self, queue: str, count: int, inflight_key: str = ..., waiter: str = ..., *, alone: bool = ...
    ) -> list[tuple[str, bytes]]: ...
    async def done(self, queue: str, tasks: Sequence[tuple[str, str]], inflight: str = "") -> list[int]: ...  # noqa: D102
    async def mark_complete(  # noqa: D102
        self, queue: str, task_id: str, data: bytes, expires_at: int, unique_key: str
    ) -> int: ...
    async def requeue(self, queue: str, task_id: str, *, wake: bool = ...) -> int: ...  # noqa: D102
    async def retry(self, queue: str, task_id: str, data: bytes, retry_at: int, *, failure: bool) -> int: ...  # noqa: D102
    async def archive(self, queue: str, task_id: str, data: bytes) -> int: ...  # noqa: D102


class RedisBroker(EnqueueSide, WorkerTransitions, Maintenance):
    """The Redis implementation of :class:`Broker`.

    Args:
        redis: an asyncio Redis client (a pool).
        schema: the key schema.
        clock: where time comes from.
        wakeup: publish on the wake-up channel when a queue goes from empty to non-empty.
        fast: run the hot paths (enqueue, dequeue, done) on a lean auto-pipelining connection
            (:mod:`framework.transport.lean.connection`) when ``redis`` talks to a single server over TCP or a Unix
            socket.

    Attributes:
        hot: what the hot paths run on: a :class:`~framework.transport.lean.connection.RespClient`, or ``redis`` itself.
    """


def now_seconds() -> int:
    """Integer Unix seconds of the wall clock."""
    return int(time.time())
