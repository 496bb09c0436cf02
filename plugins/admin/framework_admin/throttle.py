"""A limit on guessing the admin's credentials: failed sign-ins and bad bearer tokens, per client address.

Each failure (a wrong token in the sign-in form, or an ``Authorization: Bearer`` token that opens
nothing) is counted for the client's address in a sliding window kept in Redis
(:class:`framework.web.ratelimit.RateLimit`, key ``<ext>:ratelimit:admin-auth:<address>``), so every web
process of the app shares the count. Once an address has ``failed_auth_limit`` failures within
``failed_auth_window`` seconds, every attempt from it to present a credential (the sign-in form, any
bearer token, even a valid one, so the answer tells nothing about the guess) gets 429 with
``Retry-After`` until the oldest failure leaves the window. Successes are not counted, and sessions
that are already signed in are not affected.

The address is the ASGI client address: behind a reverse proxy, list the proxy in
``FORWARDED_ALLOW_IPS`` so uvicorn takes the address from ``X-Forwarded-For``, or every client
shares the proxy's address.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar.exceptions import TooManyRequestsException

from framework import StashKey
from framework.logging import get_logger
from framework.web.ratelimit import RateLimit, client_address, retry_after_seconds
from framework_admin.config import load_config

if TYPE_CHECKING:
    from litestar.connection import ASGIConnection

    from framework import Services

__all__ = (
    "TooManyFailures",
    "failure_wait",
    "record_failure",
    "refuse_if_throttled",
)

_LIMIT: StashKey[RateLimit] = StashKey("framework_admin.failed-auth")


class TooManyFailures(TooManyRequestsException):
    """429: the client's address failed to authenticate too often; ``Retry-After`` says when to try again."""

    def __init__(self, wait: float) -> None:
        seconds = retry_after_seconds(wait)
        super().__init__(
            detail=f"too many failed sign-in attempts from your address: try again in {seconds} s",
            headers={"Retry-After": str(seconds)},
        )


def _limit(connection: ASGIConnection[Any, Any, Any, Any]) -> RateLimit:
    services: Services = connection.app.state.framework_services
    limit = services.stash.get(_LIMIT)
    if limit is None:
        config = load_config(services.settings)
        limit = RateLimit(
            services.redis,
            services.schema,
            "admin-auth",
            limit=config.failed_auth_limit,
            window=config.failed_auth_window,
        )
        services.stash[_LIMIT] = limit
    return limit


async def failure_wait(connection: ASGIConnection[Any, Any, Any, Any]) -> float:
    """Seconds until the caller's address may present a credential again; 0 when it may now."""
    wait = await _limit(connection).retry_after(client_address(connection))
    if wait:
        get_logger("framework_admin").warning(
            "admin_auth_throttled", client=client_address(connection), retry_after=retry_after_seconds(wait)
        )
    return wait


async def refuse_if_throttled(connection: ASGIConnection[Any, Any, Any, Any]) -> None:
    """Refuse a credential from an address with too many recent failures.

    Raises:
        TooManyFailures: the address must wait; the exception carries ``Retry-After``.
    """
    wait = await failure_wait(connection)
    if wait:
        raise TooManyFailures(wait)


async def record_failure(connection: ASGIConnection[Any, Any, Any, Any]) -> None:
    """Count one failed attempt for the caller's address."""
    await _limit(connection).hit(client_address(connection))
