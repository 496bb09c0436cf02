"""The hot-path Redis adapter: the only code that changes task state, one method per Lua script.

Every transition is atomic in Redis; nothing here uses WATCH/MULTI. Methods take the encoded
``TaskMessage`` bytes where a script stores a message, so callers encode once.

:class:`RedisBroker` is put together from its sides on their shared state (:mod:`framework.broker_base`):
the enqueue side (:mod:`framework.broker_enqueue`), the worker's transitions (:mod:`framework.broker_transitions`)
and maintenance (:mod:`framework.broker_maintenance`); their names are importable from here as well.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Protocol

from framework.broker_base import INFLIGHT_TTL, LEASE_SECONDS
from framework.broker_enqueue import ENQUEUE_BATCH, EnqueueSide
from framework.broker_maintenance import AGGREGATION_SET_TTL, Maintenance
from framework.broker_transitions import ARCHIVE_MAX_AGE, ARCHIVE_MAX_SIZE, MINUTE_TTL, WorkerTransitions

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from framework.keys import Schema

__all__ = (
    "AGGREGATION_SET_TTL",
    "ARCHIVE_MAX_AGE",
    "ARCHIVE_MAX_SIZE",
    "ENQUEUE_BATCH",
    "INFLIGHT_TTL",
    "LEASE_SECONDS",
    "MINUTE_TTL",
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
            (:mod:`framework.resp`) when ``redis`` talks to a single server over TCP or a Unix socket.

    Attributes:
        hot: what the hot paths run on: a :class:`~framework.resp.RespClient`, or ``redis`` itself.
    """


def now_seconds() -> int:
    """Integer Unix seconds of the wall clock."""
    return int(time.time())
