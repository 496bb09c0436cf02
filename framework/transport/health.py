"""Redis health as the worker's components see it: one clear log line when Redis goes away and one when it is back.

Every component (fetch loop, heartbeat thread, forwarder, recoverer, janitor, listener, aggregator)
reports its Redis calls here. The first failure logs ``redis_unavailable`` (warning) naming the
component and the error; further failures while Redis is down log at debug level only, so an outage
does not flood the log; the first success afterwards logs ``redis_reconnected`` with the outage's
length. Each component backs off on its own schedule. Thread-safe (the heartbeat runs in a thread).

A server that answers with an error is up, but refusing: full (``OOM ... maxmemory``), unable to persist
(``MISCONF``), denying a command (``NOPERM``), or a script failing on what it found. Such a refusal is told
apart (``redis_refusing``, warning, once, with the error), because reads and writes that need no memory keep
succeeding meanwhile: counted as outages, a full server made a ``redis_unavailable``/``redis_reconnected``
pair every few seconds for as long as it stayed full. The refusals are over once none came for
:data:`REFUSALS_QUIET` seconds (``redis_refusals_stopped``, info, with how many there were). A replica's
``READONLY`` and a Cluster's redirections and ``CLUSTERDOWN`` are a failover under way: outages.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from redis.exceptions import AskError, ClusterDownError, ReadOnlyError, ResponseError, TryAgainError

if TYPE_CHECKING:
    from collections.abc import Mapping

    import structlog

__all__ = ("EVICTION_FIX", "REFUSALS_QUIET", "RedisHealth", "eviction_risk", "is_refusal")

REFUSALS_QUIET = 60.0
"""Seconds without a refusal after which the server counts as accepting again (``redis_refusals_stopped``)."""
_FAILOVER = (ReadOnlyError, AskError, TryAgainError, ClusterDownError)
"""Error replies that mean a failover or a Cluster's moving slots, not a server refusing the work."""


EVICTION_FIX = (
    "set maxmemory-policy noeviction: a full Redis then refuses writes (the workers log redis_refusing and carry "
    "on once there is room) instead of dropping keys"
)
"""What to do about :func:`eviction_risk`."""


async def eviction_risk(redis: Any) -> str | None:
    """What the server's eviction policy puts at risk, or None when it evicts nothing.

    A server with ``maxmemory`` set and any ``maxmemory-policy`` but ``noeviction`` drops keys when it is full:
    ``allkeys-*`` any key, a queued task's hash and list entries included (the task is lost, with no error
    anywhere); ``volatile-*`` the keys with a time to live, which here are uniqueness locks, cron tick claims and
    in-flight records (a unique task or a cron tick can then run twice). Read from ``INFO memory`` (allowed where
    ``CONFIG`` is not, as on managed services); on a Cluster, the node the client asks.
    """
    info: Mapping[str, Any] = await redis.info("memory")
    policy = str(info.get("maxmemory_policy", "noeviction"))
    maxmemory = int(info.get("maxmemory", 0) or 0)
    if policy == "noeviction" or maxmemory <= 0:
        return None
    if policy.startswith("allkeys"):
        risk = "any key when it is full, a queued task's included: tasks can be lost without an error"
    else:
        risk = (
            "keys with a time to live when it is full: uniqueness locks, cron tick claims and in-flight records, "
            "so a unique task or a cron tick can run twice"
        )
    return f"Redis evicts {risk} (maxmemory {maxmemory} bytes, maxmemory-policy {policy})"


def is_refusal(exc: BaseException) -> bool:
    """Whether ``exc`` is the server answering with an error (up, but refusing), not a lost or moving server."""
    return isinstance(exc, ResponseError) and not isinstance(exc, _FAILOVER)


class RedisHealth:
    """Tracks whether Redis answers, and logs the changes.

    Args:
        logger: the worker's logger.
    """

    def __init__(self, logger: structlog.typing.FilteringBoundLogger) -> None:
        self.log = logger
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self.outages = 0
        self._refusing_since: float | None = None
        self._last_refusal = 0.0
        self._refusals = 0

    @property
    def refusals(self) -> int:
        """Refusals since the server started refusing (the last time it did, once it stopped)."""
        return self._refusals

    @property
    def up(self) -> bool:
        """False from the first failure until the next success (refusals aside: the server answers)."""
        return self._down_since is None

    def failed(self, component: str, exc: BaseException, **extra: object) -> None:
        """Record a failed Redis call of ``component``."""
        error = f"{type(exc).__name__}: {exc}"
        if is_refusal(exc):
            self._refused(component, error, extra)
            return
        with self._lock:
            first = self._down_since is None
            if first:
                self._down_since = time.monotonic()
                self.outages += 1
        if first:
            self.log.warning("redis_unavailable", component=component, error=error, **extra)
        else:
            self.log.debug("redis_still_unavailable", component=component, error=error, **extra)

    def _refused(self, component: str, error: str, extra: dict[str, object]) -> None:
        now = time.monotonic()
        with self._lock:
            first = self._refusing_since is None
            if first:
                self._refusing_since = now
                self._refusals = 0
            self._refusals += 1
            self._last_refusal = now
        if first:
            self.log.warning("redis_refusing", component=component, error=error, **extra)
        else:
            self.log.debug("redis_still_refusing", component=component, error=error, **extra)

    def ok(self, component: str) -> None:
        """Record a successful Redis call of ``component``."""
        if self._refusing_since is not None:
            self._refusals_over(component)
        if self._down_since is None:
            return
        with self._lock:
            since, self._down_since = self._down_since, None
        if since is not None:
            self.log.info("redis_reconnected", component=component, down_for_s=round(time.monotonic() - since, 3))

    def _refusals_over(self, component: str) -> None:
        """Log the end of the refusals once :data:`REFUSALS_QUIET` seconds passed without one."""
        with self._lock:
            since = self._refusing_since
            if since is None or time.monotonic() - self._last_refusal < REFUSALS_QUIET:
                return
            self._refusing_since = None
            last, count = self._last_refusal, self._refusals
        self.log.info(
            "redis_refusals_stopped", component=component, refused_for_s=round(last - since, 3), refusals=count
        )
