"""The route factory: the dashboard, the JSON API and ``/metrics``, mounted where you want, behind your guards.

The plugin mounts ``admin_routes()`` itself (``[plugins.admin] mount = true``). To use your own
authentication instead, either implement the ``admin_actor_from_request`` hook (recommended: the
admin's read-only role, CSRF check and audit log keep working), or set ``mount = false`` and mount
the factory's routers from your app's ``register_routes`` with your own guards::

    @hookimpl
    def register_routes(settings):
        return admin_routes("/ops", "/api/ops", guards=[my_staff_guard], settings=settings)

Your guards then replace the admin's (state-changing handlers still pass
:func:`~framework_admin.auth.require_admin_role`; call :func:`~framework_admin.auth.set_actor` in
your guard to name the person in the audit log or to make them read-only).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar import Response, Router, get
from litestar.datastructures import ResponseHeader
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException
from prometheus_client import CONTENT_TYPE_LATEST

from framework.inspector import Inspector
from framework_admin.api import API_HANDLERS
from framework_admin.auth import AdminDisabled, AdminLoginRequired, admin_guard, metrics_guard
from framework_admin.config import MOUNT_OPT, AdminConfig, Mount, load_config
from framework_admin.forms import ACTION_HANDLERS, PUBLIC_HANDLERS, disabled_page, error_page, login_redirect
from framework_admin.limits import LIMIT_API_HANDLERS, LIMIT_PAGE_HANDLERS
from framework_admin.metrics import render_metrics
from framework_admin.pages import PAGE_HANDLERS
from framework_admin.unavailable import REDIS_ERRORS, redis_down_json, redis_down_page
from framework_admin.workflows import WORKFLOW_ACTION_HANDLERS, WORKFLOW_API_HANDLERS, WORKFLOW_PAGE_HANDLERS

if TYPE_CHECKING:
    from collections.abc import Sequence

    from litestar.types import ControllerRouterHandler, Guard

    from framework.settings import Settings

__all__ = ("PAGE_CSP", "admin_pages", "admin_routes")

PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
"""The dashboard's Content-Security-Policy: only its own script and styles, nothing from elsewhere."""

_PAGE_HEADERS = [
    ResponseHeader(name="Content-Security-Policy", value=PAGE_CSP),
    ResponseHeader(name="X-Frame-Options", value="DENY"),
    ResponseHeader(name="X-Content-Type-Options", value="nosniff"),
    ResponseHeader(name="Referrer-Policy", value="same-origin"),
    ResponseHeader(name="Cache-Control", value="no-store"),
]
_API_HEADERS = [
    ResponseHeader(name="X-Content-Type-Options", value="nosniff"),
    ResponseHeader(name="Cache-Control", value="no-store"),
]
_PAGE_ERRORS: dict[Any, Any] = {
    AdminLoginRequired: login_redirect,
    AdminDisabled: disabled_page,
    HTTPException: error_page,
    **dict.fromkeys(REDIS_ERRORS, redis_down_page),
}
_API_ERRORS: dict[Any, Any] = dict.fromkeys(REDIS_ERRORS, redis_down_json)


def _mount(path: str, api_path: str, settings: Settings | None, config: AdminConfig | None) -> Mount:
    if config is None:
        config = load_config(settings) if settings is not None else AdminConfig()
    return Mount(path=path.rstrip("/") or "/admin", api_path=api_path.rstrip("/") or "/api/admin", config=config)


def admin_pages(
    settings: Settings,
    route_handlers: Sequence[ControllerRouterHandler],
    *,
    guards: Sequence[Guard] | None = None,
) -> Router:
    """Mount another plugin's admin pages under the admin's path, behind the admin's guards and layout.

    Args:
        settings: the app's settings (for the admin's path).
        route_handlers: the pages; their paths are relative to the admin's path.
        guards: guards instead of the admin's (default: :func:`~framework_admin.auth.admin_guard`).

    Returns:
        A router to return from your plugin's ``register_routes``.
    """
    config = load_config(settings)
    mount = _mount(config.path, config.api_path, settings, config)
    return Router(
        path=mount.path,
        route_handlers=list(route_handlers),
        guards=list(guards) if guards is not None else [admin_guard],
        opt={MOUNT_OPT: mount},
        response_headers=_PAGE_HEADERS,
        exception_handlers=_PAGE_ERRORS,
        include_in_schema=False,
    )


async def _metrics(inspector: NamedDependency[Inspector]) -> Response[bytes]:
    """Queue sizes per state, processed and failed totals, latency and worker slots, for Prometheus."""
    return Response(
        await render_metrics(inspector), media_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"}
    )


def admin_routes(
    path: str = "/admin",
    api_path: str = "/api/admin",
    guards: Sequence[Guard] | None = None,
    *,
    settings: Settings | None = None,
    config: AdminConfig | None = None,
    metrics_path: str | None = None,
) -> list[ControllerRouterHandler]:
    """Build the admin's routers: sign-in pages, dashboard pages and form actions, the JSON API, ``/metrics``.

    Args:
        path: URL prefix of the dashboard.
        api_path: URL prefix of the JSON API.
        guards: guards for every page and endpoint except sign-in (default: the admin's own
            :func:`~framework_admin.auth.admin_guard`: hooks, bearer tokens, the signed session).
        settings: the app's settings (for ``[plugins.admin]``).
        config: the plugin's settings (default: read from ``settings``).
        metrics_path: where to serve Prometheus metrics (default: ``config.metrics_path``; "" for none).

    Returns:
        Routers to return from a ``register_routes`` hook.
    """
    mount = _mount(path, api_path, settings, config)
    chosen: list[Guard] = list(guards) if guards is not None else [admin_guard]
    opt = {MOUNT_OPT: mount}
    routes: list[ControllerRouterHandler] = [
        Router(
            path=mount.path,
            route_handlers=list(PUBLIC_HANDLERS),
            opt=opt,
            response_headers=_PAGE_HEADERS,
            exception_handlers=_PAGE_ERRORS,
            include_in_schema=False,
        ),
        Router(
            path=mount.path,
            route_handlers=[
                *PAGE_HANDLERS,
                *WORKFLOW_PAGE_HANDLERS,
                *LIMIT_PAGE_HANDLERS,
                *ACTION_HANDLERS,
                *WORKFLOW_ACTION_HANDLERS,
            ],
            guards=chosen,
            opt=opt,
            response_headers=_PAGE_HEADERS,
            exception_handlers=_PAGE_ERRORS,
            include_in_schema=False,
        ),
        Router(
            path=mount.api_path,
            route_handlers=[*API_HANDLERS, *WORKFLOW_API_HANDLERS, *LIMIT_API_HANDLERS],
            guards=chosen,
            opt=opt,
            response_headers=_API_HEADERS,
            exception_handlers=_API_ERRORS,
        ),
    ]
    metrics = mount.config.metrics_path if metrics_path is None else metrics_path
    if metrics:
        handler = get(
            metrics,
            guards=[metrics_guard] if guards is None else chosen,
            include_in_schema=False,
            opt=opt,
            exception_handlers=_API_ERRORS,
        )
        routes.append(handler(_metrics))
    return routes
