"""What every side of :class:`~framework.broker.broker.RedisBroker` shares: its clients, schema, clock, queues seen.

Also the lease constants the enqueue, worker and maintenance sides all use. Everything here is importable
from :mod:`framework.broker.broker`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from framework.transport.lean.client import RespClient, fast_path_for

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from framework.clock import Clock
    from framework.protocol.keys import Schema

__all__ = ("INFLIGHT_TTL", "LEASE_SECONDS", "BrokerBase")

LEASE_SECONDS = 30
"""asynq's fixed lease length; Go recoverers rely on it."""
INFLIGHT_TTL = 24 * 3600
"""Seconds a worker's per-queue in-flight set outlives its last dequeue or heartbeat."""


class BrokerBase:
    """The state of a :class:`~framework.broker.broker.RedisBroker` (see there for the arguments), and closing it."""

    def __init__(self, redis: Redis, schema: Schema, clock: Clock, *, wakeup: bool = True, fast: bool = True) -> None:
        self.redis = redis
        self.schema = schema
        self.clock = clock
        self._channel = schema.wakeup_channel if wakeup else ""
        self._known_queues: set[str] = set()
        self.fast = fast_path_for(redis) if fast else None
        """The lean connection's client, or None (redis-py serves everything)."""
        self.hot: Redis | RespClient = self.fast or redis
        self.handoff = self.fast is not None
        """Whether plain enqueues offer their task to an idle worker (single server; not Cluster or Sentinel)."""

    def close(self) -> None:
        """Close the hot-path connection, if any (the redis-py client is the caller's to close)."""
        if self.fast is not None:
            self.fast.close()
