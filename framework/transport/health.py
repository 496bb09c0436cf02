"""Redis health as the worker's components see it: one clear log line when Redis goes away and one when it is back.

Every component (fetch loop, heartbeat thread, forwarder, recoverer, janitor, listener, aggregator)
reports its Redis calls here. The first failure logs ``redis_unavailable`` (warning) naming the
component and the error; further failures while Redis is down log at debug level only, so an outage
does not flood the log; the first success afterwards logs ``redis_reconnected`` with the outage's
length. Each component backs off on its own schedule. Thread-safe (the heartbeat runs in a thread).
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import structlog

__all__ = ("RedisHealth",)


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

    @property
    def up(self) -> bool:
        """False from the first failure until the next success."""
        return self._down_since is None

    def failed(self, component: str, exc: BaseException, **extra: object) -> None:
        """Record a failed Redis call of ``component``."""
        error = f"{type(exc).__name__}: {exc}"
        with self._lock:
            first = self._down_since is None
            if first:
                self._down_since = time.monotonic()
                self.outages += 1
        if first:
            self.log.warning("redis_unavailable", component=component, error=error, **extra)
        else:
            self.log.debug("redis_still_unavailable", component=component, error=error, **extra)

    def ok(self, component: str) -> None:
        """Record a successful Redis call of ``component``."""
        if self._down_since is None:
            return
        with self._lock:
            since, self._down_since = self._down_since, None
        if since is not None:
            self.log.info("redis_reconnected", component=component, down_for_s=round(time.monotonic() - since, 3))
