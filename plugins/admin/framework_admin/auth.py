"""Who may use the admin: credentials from settings, actor resolution, the guards and the CSRF check.

Access, in the order it is checked on every admin request:

1. an ``admin_actor_from_request`` hook implementation (the app's own authentication);
2. ``Authorization: Bearer <token>`` with ``admin_token`` (acts) or ``admin_readonly_token`` (looks);
3. the signed session cookie set by the login form.

Without ``admin_token`` in development, a token is generated at start-up, logged, and kept in
``<data_dir>/admin-token`` (reused across restarts). In production without any credential (and no
hook) the admin is off: every page and endpoint answers 403 and says how to turn it on.

Wrong tokens (in the sign-in form or as bearer tokens) are counted per client address; too many
in a short time and that address gets 429 for a while (see :mod:`framework_admin.throttle`).

State-changing requests also pass :func:`require_admin_role`: read-only actors get 403, and every
request not authenticated by a bearer token must carry the double-submit CSRF token (the
``framework_admin_csrf`` cookie, repeated in the ``_csrf`` form field or the ``X-CSRF-Token`` header).

Why not Litestar's CSRF middleware (``litestar.config.csrf.CSRFConfig``, Litestar 2.25): as the app's
``csrf_config`` it would guard the user's own endpoints too, and an app has only one. Mounted on the
admin's routers it still runs before the guards, so it cannot exempt callers by who they are (a bearer
token, or an app guard that records ``via="bearer"``) while still checking cookie-based hook actors;
it reads the form field ``_csrf_token`` only, which breaks the ``_csrf`` field that plugin templates
use; and it signs tokens with a secret every web process must share, which the admin may not have
(production with only the ``admin_actor_from_request`` hook). What the middleware does better, cover
every unsafe route by default, ``tests/plugins/admin/test_csrf.py`` checks by walking the route table.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from litestar.connection import Request
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException

from framework import await_me_maybe, plugin_callers
from framework_admin.credentials import CREDENTIALS, Credentials, load_credentials
from framework_admin.models import Actor
from framework_admin.session import same_token, verify_session
from framework_admin.throttle import record_failure, refuse_if_throttled

if TYPE_CHECKING:
    from litestar.connection import ASGIConnection
    from litestar.handlers.base import BaseRouteHandler

    from framework import Services

__all__ = (
    "CSRF_COOKIE",
    "CSRF_FIELD",
    "CSRF_HEADER",
    "SESSION_COOKIE",
    "AdminDisabled",
    "AdminLoginRequired",
    "admin_guard",
    "check_csrf",
    "current_actor",
    "get_credentials",
    "metrics_guard",
    "recorded_actor",
    "require_admin_role",
    "resolve_actor",
    "services_of",
    "set_actor",
)

SESSION_COOKIE = "framework_admin_session"
CSRF_COOKIE = "framework_admin_csrf"
CSRF_FIELD = "_csrf"
CSRF_HEADER = "x-csrf-token"

_ACTOR_KEY = "framework_admin.actor"
_ENABLE_HINT = (
    "The admin is off: no admin credential is configured. Set admin_token (or FRAMEWORK_ADMIN_TOKEN) "
    "to a long random secret, or admin_readonly_token for read-only access, and restart."
)


class AdminLoginRequired(NotAuthorizedException):
    """The request carries no valid credential (401; the dashboard redirects to its login page)."""


class AdminDisabled(PermissionDeniedException):
    """No credential is configured in production, so the admin is off (403 explaining how to turn it on)."""


def services_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Services:
    """The framework services of the app serving ``connection``."""
    services: Services = connection.app.state.framework_services
    return services


def get_credentials(connection: ASGIConnection[Any, Any, Any, Any]) -> Credentials:
    """The credentials loaded at start-up (loaded now, without generating, if start-up did not run)."""
    services = services_of(connection)
    creds = services.stash.get(CREDENTIALS)
    if creds is None:
        creds = services.stash[CREDENTIALS] = load_credentials(services.settings)
    return creds


def set_actor(connection: ASGIConnection[Any, Any, Any, Any], actor: Actor) -> None:
    """Record who is calling; an app's own guard may call it to name the actor or make it read-only."""
    connection.scope.setdefault("state", {})[_ACTOR_KEY] = actor


def _bearer(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    header = connection.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


async def _from_hooks(connection: ASGIConnection[Any, Any, Any, Any]) -> Actor | None:
    """Ask each plugin in pluggy's order (the app first) through the plugin manager; the first actor wins.

    One plugin at a time, because an implementation may answer with an awaitable that resolves to ``None``.
    """
    pm = services_of(connection).plugin_manager
    if pm is None:
        return None
    for plugin, call in reversed(plugin_callers(pm, "admin_actor_from_request")):
        actor = await await_me_maybe(call(request=connection))
        if actor is not None:
            if not isinstance(actor, Actor):
                raise TypeError(f"plugin {plugin!r}: admin_actor_from_request must return an Actor or None")
            return actor
    return None


async def resolve_actor(connection: ASGIConnection[Any, Any, Any, Any]) -> Actor | None:
    """Who is calling, from the hooks, a bearer token or the session cookie; ``None`` if nobody valid.

    Raises:
        AdminLoginRequired: a bearer token was sent but is not valid (the failure is counted).
        TooManyFailures: a bearer token was sent from an address with too many recent failures (429).
    """
    actor = await _from_hooks(connection)
    if actor is not None:
        return actor
    creds = get_credentials(connection)
    token = _bearer(connection)
    if token is not None:
        await refuse_if_throttled(connection)
        role = creds.role_for(token)
        if role is None:
            await record_failure(connection)
            raise AdminLoginRequired("invalid bearer token", headers={"WWW-Authenticate": 'Bearer realm="admin"'})
        return Actor(name="token" if role == "admin" else "readonly-token", role=role, via="bearer")
    cookie = connection.cookies.get(SESSION_COOKIE, "")
    session = verify_session(cookie, creds.tokens, time.time()) if cookie else None
    if session is not None:
        return Actor(name=session.name, role=session.role, via="session")
    return None


async def admin_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """The admin's default guard: let in a recognised actor; otherwise 401, or 403 when the admin is off.

    Raises:
        AdminLoginRequired: nobody valid is calling (the dashboard turns this into its login page).
        AdminDisabled: production without any credential.
    """
    actor = await resolve_actor(connection)
    if actor is None:
        if not get_credentials(connection).enabled:
            raise AdminDisabled(_ENABLE_HINT)
        raise AdminLoginRequired(
            "sign in to the admin or send Authorization: Bearer <token>",
            headers={"WWW-Authenticate": 'Bearer realm="admin"'},
        )
    set_actor(connection, actor)


def recorded_actor(connection: ASGIConnection[Any, Any, Any, Any]) -> Actor | None:
    """The actor a guard recorded for this request, if any."""
    actor = connection.scope.get("state", {}).get(_ACTOR_KEY)
    return actor if isinstance(actor, Actor) else None


async def current_actor(connection: ASGIConnection[Any, Any, Any, Any]) -> Actor:
    """The actor a guard recorded; with an app's own guards that recorded none, an ``admin`` named ``app``."""
    actor = recorded_actor(connection) or await resolve_actor(connection)
    if actor is None:
        actor = Actor(name="app", role="admin", via="guard")
    set_actor(connection, actor)
    return actor


async def check_csrf(connection: ASGIConnection[Any, Any, Any, Any]) -> None:
    """The double-submit check: the CSRF cookie must be repeated in the header or the ``_csrf`` field.

    Raises:
        PermissionDeniedException: the token is missing or does not match.
    """
    expected = connection.cookies.get(CSRF_COOKIE, "")
    given = connection.headers.get(CSRF_HEADER, "")
    if not given and isinstance(connection, Request):
        content_type = connection.headers.get("content-type", "")
        if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await connection.form()
            value = form.get(CSRF_FIELD, "")
            given = value if isinstance(value, str) else ""
    if not same_token(given, expected):
        raise PermissionDeniedException("CSRF token missing or invalid: reload the page and try again")


async def require_admin_role(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard of every state-changing handler: an ``admin`` actor, and a valid CSRF token unless bearer.

    Raises:
        PermissionDeniedException: a read-only actor, or a missing or wrong CSRF token.
    """
    actor = await current_actor(connection)
    if not actor.can_act:
        raise PermissionDeniedException(f"{actor.name!r} has read-only access to the admin")
    if actor.via != "bearer":
        await check_csrf(connection)


async def metrics_guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """Guard of ``/metrics``: the metrics token, or anything the admin itself accepts.

    Raises:
        AdminLoginRequired: no valid credential.
        AdminDisabled: no credential is configured at all.
    """
    creds = get_credentials(connection)
    token = _bearer(connection)
    if token is not None:
        await refuse_if_throttled(connection)
    if token is not None and creds.opens_metrics(token):
        set_actor(connection, Actor(name="metrics-token", role="readonly", via="bearer"))
        return
    if creds.metrics_token and not creds.enabled and token is None:
        raise AdminLoginRequired("send Authorization: Bearer <metrics token>")
    await admin_guard(connection, handler)
