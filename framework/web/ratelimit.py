"""Sliding-window rate limits per client, kept in Redis so every web process of an app shares them.

A :class:`RateLimit` allows at most ``limit`` events per ``window`` seconds for one client (an IP
address, usually). Events are members of a ZSET scored by their time,
:meth:`Schema.rate_limit(name, client) <framework.protocol.keys.Schema.rate_limit>`, which expires one window
after the latest event, so idle clients cost nothing::

    logins = RateLimit(services.redis, services.schema, "admin-login", limit=10, window=300)
    if wait := await logins.retry_after(address):
        ...  # answer 429 with Retry-After: ceil(wait)
    if not password_ok:
        await logins.hit(address)

    uploads = RateLimit(services.redis, services.schema, "uploads", limit=30, window=600)
    if wait := await uploads.take(address):  # counts this upload, unless over the limit
        ...  # answer 429

Two ways to use it: count failures only (:meth:`hit` after a failure, :meth:`retry_after` before
trying), or count every event (:meth:`take`, which records the event only when it is allowed, so a
refused client does not push its own wait further out).

Clients are counted by address, as a client can change it: an IPv6 address counts for its whole ``/64``
network (the block one home or server gets, every address of which it may use), and an IPv4 address
counts the same whether it comes as ``192.0.2.1`` or mapped into IPv6 (``::ffff:192.0.2.1``). Clients that
are not IP addresses (``unknown``, a user id) are counted as given.

If Redis cannot be reached the limit is not applied: the call logs ``rate_limit_unavailable`` and
lets the request through, since a request that needs Redis fails on its own anyway, and one that
does not (a sign-in) should not fail because the limiter is down.
"""

from __future__ import annotations

import ipaddress
import math
import secrets
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from framework.clock import Clock, SystemClock
from framework.logging import get_logger

if TYPE_CHECKING:
    from litestar.connection import ASGIConnection
    from redis.asyncio import Redis

    from framework.protocol.keys import Schema

__all__ = ("MAX_WINDOW", "RateLimit", "client_address", "limited_client", "retry_after_seconds")

MAX_WINDOW = 100 * 365 * 24 * 3600
"""The longest window a limit may have, in seconds (a hundred years): Redis refuses an expiry much further off."""
_MAX_CLIENT_CHARS = 128
_IPV6_PREFIX = 64
"""IPv6 clients are counted per network of this prefix length: one subscriber's or one server's block."""


def client_address(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """The address a request came from, as the ASGI server reports it (the usual client of a limit)."""
    client = connection.client
    return client.host if client is not None and client.host else "unknown"


def limited_client(client: str) -> str:
    """What a limit counts ``client`` as: an IPv6 address's ``/64`` network, an IPv4-mapped address's IPv4 form.

    Any other string (an IPv4 address, ``unknown``, a user id) is counted as it is.
    """
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return client
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address.packed, _IPV6_PREFIX), strict=False))
    return str(address)


def retry_after_seconds(wait: float) -> int:
    """A wait in seconds as the whole number a ``Retry-After`` header gives (rounded up, at least 1)."""
    return max(1, math.ceil(wait))


class RateLimit:
    """At most ``limit`` events per ``window`` seconds per client, shared through Redis.

    Args:
        redis: the Redis client.
        schema: the key schema of the app's namespace.
        name: what is limited (``admin-auth``, ``uploads``); part of the key.
        limit: events allowed per window (a whole number); 0 turns the limit off.
        window: the window's length in seconds: more than 0, at most :data:`MAX_WINDOW`.
        clock: where time comes from (tests use a simulated clock).

    Raises:
        ValueError: ``limit`` is not a whole number from 0, or ``window`` is not a number of seconds in range
            (NaN and infinity are not: Redis could not keep the events for them, and no limit would hold).
    """

    __slots__ = ("clock", "limit", "name", "redis", "schema", "window")

    def __init__(
        self, redis: Redis, schema: Schema, name: str, *, limit: int, window: float, clock: Clock | None = None
    ) -> None:
        whole = isinstance(limit, int) and not isinstance(limit, bool) and limit >= 0
        seconds = isinstance(window, int | float) and not isinstance(window, bool) and 0 < window <= MAX_WINDOW
        if not (whole and seconds):
            raise ValueError(
                f"rate limit {name!r}: limit must be a whole number >= 0 and window seconds > 0 (at most "
                f"{MAX_WINDOW}), not {limit!r} per {window!r}"
            )
        self.redis = redis
        self.schema = schema
        self.name = name
        self.limit = limit
        self.window = float(window)
        self.clock: Clock = clock or SystemClock()

    def _key(self, client: str) -> str:
        return self.schema.rate_limit(self.name, limited_client((client or "unknown")[:_MAX_CLIENT_CHARS]))

    async def retry_after(self, client: str) -> float:
        """Seconds until ``client`` is under the limit again; 0 when it is under it now."""
        if not self.limit:
            return 0.0
        now = self.clock.now()
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.zremrangebyscore(self._key(client), "-inf", now - self.window)
                pipe.zrange(self._key(client), 0, -1, withscores=True)
                _, events = await pipe.execute()
        except (RedisError, OSError) as exc:
            self._unavailable(exc)
            return 0.0
        return self._wait(sorted(score for _, score in events), now)

    async def hit(self, client: str) -> None:
        """Record one event of ``client`` (a failed sign-in, say)."""
        if not self.limit:
            return
        now = self.clock.now()
        try:
            await self._add(self._key(client), now, trim=True)
        except (RedisError, OSError) as exc:
            self._unavailable(exc)

    async def take(self, client: str) -> float:
        """Record one event of ``client`` if the limit allows it.

        Returns:
            0 when the event was allowed and recorded; otherwise the seconds until one would be,
            and nothing was recorded.
        """
        if not self.limit:
            return 0.0
        key, now = self._key(client), self.clock.now()
        try:
            member, events = await self._add(key, now)
            if len(events) <= self.limit:
                return 0.0
            await self.redis.zrem(key, member)
        except (RedisError, OSError) as exc:
            self._unavailable(exc)
            return 0.0
        # Concurrent takes each see the others' events, so together they never pass the limit.
        others = sorted(score for name, score in events if name not in (member, member.encode()))
        return self._wait(others, now)

    async def reset(self, client: str) -> None:
        """Forget every event of ``client``."""
        try:
            await self.redis.delete(self._key(client))
        except (RedisError, OSError) as exc:
            self._unavailable(exc)

    async def _add(self, key: str, now: float, *, trim: bool = False) -> tuple[str, list[tuple[bytes, float]]]:
        """Add an event at ``now``; return its member and the events in the window.

        ``trim`` keeps only the newest ``limit + 1`` events, which is all :meth:`_wait` looks at; only
        for :meth:`hit`, whose events are never taken back (a :meth:`take` being undone could
        otherwise leave fewer events than were allowed).
        """
        member = f"{now:.6f}:{secrets.token_hex(4)}"
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zremrangebyscore(key, "-inf", now - self.window)
            pipe.zadd(key, {member: now})
            if trim:
                pipe.zremrangebyrank(key, 0, -(self.limit + 2))
            pipe.zrange(key, 0, -1, withscores=True)
            pipe.pexpire(key, int(self.window * 1000) + 1000)
            *_, events, _ = await pipe.execute()
        return member, events

    def _wait(self, scores: list[float], now: float) -> float:
        """Seconds until fewer than ``limit`` of the events ``scores`` (ascending) are inside the window."""
        if len(scores) < self.limit:
            return 0.0
        return max(scores[len(scores) - self.limit] + self.window - now, 0.001)

    def _unavailable(self, exc: BaseException) -> None:
        get_logger("framework.web.ratelimit").warning("rate_limit_unavailable", limit=self.name, error=str(exc))
