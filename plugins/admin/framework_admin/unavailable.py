"""What the admin answers while Redis cannot be reached: ``503 Service Unavailable``, never a 500.

Every page, form action and API call reads or changes Redis. When Redis is down (stopped, restarting,
still loading its data, or the network between is gone), pages show an error page inside the layout
that says so and reloads itself, and the API and ``/metrics`` answer a JSON 503; both carry
``Retry-After``. Once Redis is back, the next request works again: redis-py reconnects on its own.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response
from litestar.response import Template
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from framework.logging import get_logger
from framework_admin.auth import recorded_actor
from framework_admin.layout import render_admin

__all__ = ("REDIS_DOWN_DETAIL", "REDIS_ERRORS", "RETRY_SECONDS", "redis_down_json", "redis_down_page")

REDIS_ERRORS: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError, ConnectionError)
"""The errors that mean Redis cannot be reached (``ConnectionError`` covers the framework's ``RedisUnavailable``)."""
RETRY_SECONDS = 5
"""The ``Retry-After`` of a 503, and how often its page reloads itself."""
REDIS_DOWN_DETAIL = (
    "Redis cannot be reached right now, so the admin can neither read nor change the queues. "
    "It works again as soon as Redis is back."
)
"""What a 503 says."""


def _log(request: Request[Any, Any, Any], exc: Exception) -> None:
    get_logger("framework_admin").warning(
        "admin_redis_unavailable", method=request.method, path=request.url.path, error=f"{type(exc).__name__}: {exc}"
    )


def redis_down_page(request: Request[Any, Any, Any], exc: Exception) -> Template:
    """503 inside the layout, saying Redis is unreachable; a page (not a form's answer) reloads itself."""
    _log(request, exc)
    context = {
        "status": 503,
        "detail": REDIS_DOWN_DETAIL,
        "reload_seconds": RETRY_SECONDS if request.method == "GET" else 0,
    }
    page = render_admin(request, "admin/error.html", context, status_code=503, actor=recorded_actor(request))
    page.set_header("Retry-After", str(RETRY_SECONDS))
    return page


def redis_down_json(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """503 as the API's errors are shaped (``status_code``, ``detail``)."""
    _log(request, exc)
    return Response(
        {"status_code": 503, "detail": REDIS_DOWN_DETAIL},
        status_code=503,
        headers={"Retry-After": str(RETRY_SECONDS), "Cache-Control": "no-store"},
    )
