"""What every part of :class:`~framework.broker.broker.RedisBroker` shares: its clients, schema, clock, queues seen.

Also the lease constants the enqueue, worker and maintenance parts all use. Everything here is importable
from :mod:`framework.broker.broker`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from framework.transport.commands import RedisCommands
from framework.transport.lean.client import RespClient
from framework.transport.lean.paths import fast_path_for

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from framework.clock import Clock
    from framework.protocol.keys import Schema
    from framework.transport.commands import Commands
    from framework.transport.lean.cluster import ClusterRespClient

__all__ = ("INFLIGHT_TTL", "LEASE_SECONDS", "BrokerPart", "BrokerState")

LEASE_SECONDS = 30
"""asynq's fixed lease length; Go recoverers rely on it."""
INFLIGHT_TTL = 24 * 3600
"""Seconds a worker's per-queue in-flight set outlives its last dequeue or heartbeat."""


class BrokerState:
    """The state a :class:`~framework.broker.broker.RedisBroker`'s parts share (see there for the arguments).

    Attributes:
        redis: the redis-py client, for the commands whose replies its response callbacks parse.
        schema: the key schema.
        clock: where time comes from.
        channel: the wake-up channel scripts publish on ("" when wake-ups are off).
        known_queues: queues this process registered (``SADD <ns>:queues``) already.
        lean: the lean connections' client, or None (redis-py serves everything): one server's (a
            :class:`~framework.transport.lean.client.RespClient`) or a Cluster's, routed by slot (a
            :class:`~framework.transport.lean.cluster.ClusterRespClient`).
        fast: ``lean`` when it is one server's (single or Sentinel-managed), else None.
        hot: what the hot paths (enqueue, dequeue, done) run on: ``lean`` when there is one, else ``pool``.
        pool: redis-py's pool, as :class:`~framework.transport.commands.Commands`: the other scripts run there.
        handoff: whether plain enqueues offer their task to an idle worker (a single server or a
            Sentinel-managed primary; not Cluster): the lean connection's subscriber is what hears the offer.
    """

    __slots__ = ("channel", "clock", "fast", "handoff", "hot", "known_queues", "lean", "pool", "redis", "schema")

    def __init__(self, redis: Redis, schema: Schema, clock: Clock, *, wakeup: bool = True, fast: bool = True) -> None:
        self.redis = redis
        self.schema = schema
        self.clock = clock
        self.channel = schema.wakeup_channel if wakeup else ""
        self.known_queues: set[str] = set()
        self.lean: RespClient | ClusterRespClient | None = fast_path_for(redis) if fast else None
        self.fast = self.lean if isinstance(self.lean, RespClient) else None
        self.pool: Commands = RedisCommands(redis)
        self.hot: Commands = self.lean if self.lean is not None else self.pool
        self.handoff = self.fast is not None

    def close(self) -> None:
        """Close the hot-path connection, if it is ours (the redis-py client is the caller's to close)."""
        self.hot.close()


class BrokerPart:
    """The base of each part of the broker: the shared state's clients, schema, clock and channel, as attributes.

    Copied once, so the hot paths read them off ``self``; a part adds what only it needs.
    """

    def __init__(self, state: BrokerState) -> None:
        self.redis = state.redis
        self.schema = state.schema
        self.clock = state.clock
        self.hot = state.hot
        self.pool = state.pool
        self._channel = state.channel

    async def claim(self, key: str, ttl: float, holder: str = "1") -> bool:
        """Claim ``key`` for ``ttl`` seconds (``SET NX PX``); False when someone holds it already.

        What the workers serving the same queues share a periodic look with: the first to claim it looks for
        all of them, the others skip theirs.
        """
        return bool(await self.redis.set(key, holder, nx=True, px=max(1, int(ttl * 1000))))
