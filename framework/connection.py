"""Opening Redis: the configured URL, or the embedded Valkey when none is set."""

from __future__ import annotations

from typing import TYPE_CHECKING

from redis.asyncio import Redis
from redis.exceptions import AuthenticationError, ConnectionError, TimeoutError  # noqa: A004

from framework.errors import RedisUnavailable

if TYPE_CHECKING:
    from framework.settings import Settings

__all__ = ("check_connection", "open_redis", "redact_url", "resolve_redis_url")


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0] if ":" in creds else ""
    return f"{scheme}://{user}:***@{host}" if user else f"{scheme}://***@{host}"


def resolve_redis_url(settings: Settings) -> str:
    """The Redis URL to use: ``settings.redis_url``, or the embedded Valkey in the data directory.

    The embedded server is started, or found running and reused, when no URL is configured.
    """
    if settings.redis_url:
        return settings.redis_url
    from framework.embedded import EmbeddedValkey  # noqa: PLC0415 - only without an external Redis

    return EmbeddedValkey(settings.data_path / "valkey").ensure()


def open_redis(url: str, *, max_connections: int | None = None) -> Redis:
    """Create an asyncio Redis pool for ``url`` (bytes replies; connections open lazily)."""
    return Redis.from_url(
        url,
        decode_responses=False,
        max_connections=max_connections,
        socket_connect_timeout=5,
        health_check_interval=30,
    )


async def check_connection(redis: Redis, url: str) -> None:
    """PING Redis; raise :class:`RedisUnavailable` naming the URL (without its password) if it fails."""
    try:
        await redis.ping()
    except (ConnectionError, TimeoutError, AuthenticationError, OSError) as exc:
        raise RedisUnavailable(f"cannot reach Redis at {redact_url(url)}: {exc}") from exc
