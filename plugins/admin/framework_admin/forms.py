"""The dashboard's forms: sign in and out, and the task and queue actions (each redirects back with a message).

Forms post ordinary ``application/x-www-form-urlencoded`` bodies, so the dashboard works without
JavaScript; the script only adds a confirmation before destructive ones. Every form carries the CSRF
token in ``_csrf``; the action handlers are behind :func:`~framework_admin.auth.require_admin_role`.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from litestar import Request, get, post
from litestar.datastructures import Cookie
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template

from framework.inspector import Inspector
from framework.logging import get_logger
from framework.web.ratelimit import client_address, retry_after_seconds
from framework_admin import actions, queries
from framework_admin.auth import (
    SESSION_COOKIE,
    AdminDisabled,
    AdminLoginRequired,
    check_csrf,
    current_actor,
    get_credentials,
    recorded_actor,
    require_admin_role,
)
from framework_admin.config import Mount
from framework_admin.layout import admin_template, flash_cookie, mount_of, render_admin, secure_cookies
from framework_admin.session import sign_session
from framework_admin.throttle import failure_wait, record_failure
from framework_admin.urls import QueueQuery, TaskIdQuery, queue_page_url, task_page_url

__all__ = (
    "ACTION_HANDLERS",
    "PUBLIC_HANDLERS",
    "back",
    "disabled_page",
    "error_page",
    "form_fields",
    "login_redirect",
    "safe_next",
)

_W = [require_admin_role]
_NAME = re.compile(r"[^\w .@+-]")
_LOGIN_DELAY = 0.25
_URL_SAFE = "/%:@!$&'()*+,;=-._~"


def _remove_dot_segments(path: str) -> str | None:
    """``path`` with its ``.`` and ``..`` segments resolved as a browser resolves them.

    Returns None when a segment is a percent-encoded dot segment (``%2e``, ``.%2E``), which servers
    and browsers disagree about.
    """
    out: list[str] = []
    segments = path.split("/")[1:]
    for i, segment in enumerate(segments):
        if segment in (".", ".."):
            if segment == ".." and out:
                out.pop()
            if i == len(segments) - 1:
                out.append("")
        elif unquote(segment) in (".", ".."):
            return None
        else:
            out.append(segment)
    return "/" + "/".join(out)


def safe_next(value: Any, mount: Mount, default: str | None = None) -> str:
    """Where to go after a form: ``value`` when it is a path inside the admin, else ``default`` (the admin's home).

    The check is made on the path as the browser will resolve it, so no open redirect slips through:
    only a path starting with ``/`` (no scheme, no ``//host``, no backslash, no control character)
    whose dot segments, once resolved, leave it inside the admin's mount. Encoded dot segments are
    refused. Characters that are not allowed in a URL (spaces, non-ASCII) are percent-encoded.
    """
    fallback = default or mount.path
    text = value if isinstance(value, str) else ""
    if not text.startswith("/") or text.startswith("//") or "\\" in text or not text.isprintable():
        return fallback
    cut = min((i for i in (text.find("?"), text.find("#")) if i >= 0), default=len(text))
    path = _remove_dot_segments(quote(text[:cut], safe=_URL_SAFE))
    if path is None or "//" in path or not (path == mount.path or path.startswith(mount.path + "/")):
        return fallback
    return path + quote(text[cut:], safe=_URL_SAFE + "?#")


async def form_fields(request: Request[Any, Any, Any]) -> dict[str, str]:
    """The text fields of a posted form (files are left out)."""
    form = await request.form()
    return {key: value for key, value in form.items() if isinstance(value, str)}


@post("/login", include_in_schema=False, status_code=303)
async def login_submit(request: Request[Any, Any, Any]) -> Redirect | Template:
    """Check the token and start a signed session (a wrong token gets the form again, with a 401).

    An address with too many recent failures gets the form with a 429 and ``Retry-After``, without
    its token being checked (see :mod:`framework_admin.throttle`).
    """
    mount = mount_of(request)
    creds = get_credentials(request)
    if not creds.enabled:
        raise AdminDisabled("the admin is off: no admin credential is configured")
    await check_csrf(request)
    form = await form_fields(request)
    target = safe_next(form.get("next"), mount)
    client = client_address(request)
    wait = await failure_wait(request)
    if wait:
        seconds = retry_after_seconds(wait)
        context = {"error": f"Too many failed attempts from your address. Try again in {seconds} s.", "next": target}
        page = await admin_template(request, "admin/login.html", context, status_code=429, public=True)
        page.set_header("Retry-After", str(seconds))
        return page
    role = creds.role_for(form.get("token", ""))
    if role is None:
        await record_failure(request)
        await asyncio.sleep(_LOGIN_DELAY)
        get_logger("framework_admin").warning("admin_login_failed", client=client)
        context = {"error": "That token is not valid.", "next": target}
        return await admin_template(request, "admin/login.html", context, status_code=401, public=True)
    name = _NAME.sub("", form.get("name", "")).strip()[:40] or ("admin" if role == "admin" else "viewer")
    hours = mount.config.session_hours
    value = sign_session(role, name, creds.tokens[role], time.time() + hours * 3600)
    get_logger("framework_admin").info("admin_login", actor=name, role=role, client=client)
    cookie = Cookie(
        key=SESSION_COOKIE,
        value=value,
        path="/",
        max_age=int(hours * 3600),
        httponly=True,
        samesite="lax",
        secure=secure_cookies(request, mount.config),
    )
    return Redirect(target, status_code=303, cookies=[cookie])


@post("/logout", include_in_schema=False, status_code=303)
async def logout(request: Request[Any, Any, Any]) -> Redirect:
    """End the session."""
    mount = mount_of(request)
    await check_csrf(request)
    cookie = Cookie(key=SESSION_COOKIE, value="", path="/", max_age=0, httponly=True, samesite="lax")
    return Redirect(f"{mount.path}/login", status_code=303, cookies=[cookie])


def back(request: Request[Any, Any, Any], mount: Mount, target: str, message: str, *, error: bool = False) -> Redirect:
    """Go to ``target`` (303), showing ``message`` there once (as an error with ``error``)."""
    secure = secure_cookies(request, mount.config)
    return Redirect(target, status_code=303, cookies=[flash_cookie(mount, message, error=error, secure=secure)])


async def _task_action(
    request: Request[Any, Any, Any], inspector: Inspector, queue: str, task_id: str, action: str
) -> Redirect:
    mount = mount_of(request)
    form = await form_fields(request)
    target = safe_next(form.get("next"), mount, task_page_url(mount.path, queue, task_id))
    if action not in actions.TASK_ACTIONS:
        return back(request, mount, target, f"Unknown action {action!r}.", error=True)
    try:
        result = await actions.task_action(inspector, await current_actor(request), action, task_id, queue or None)
    except HTTPException as exc:
        return back(request, mount, target, str(exc.detail), error=True)
    return back(request, mount, target, result.message)


@post("/task/{action:str}", guards=_W, include_in_schema=False, status_code=303)
async def task_form(
    request: Request[Any, Any, Any],
    inspector: NamedDependency[Inspector],
    action: FromPath[str],
    task_id: TaskIdQuery,
    queue: FromQuery[str | None] = None,
) -> Redirect:
    """Run now, archive, delete or cancel one task (``?queue=&id=``, so any id works), then go back."""
    return await _task_action(request, inspector, queue or "", task_id, action)


@post("/tasks/{queue:str}/{task_id:str}/{action:str}", guards=_W, include_in_schema=False, status_code=303)
async def task_path_form(
    request: Request[Any, Any, Any],
    inspector: NamedDependency[Inspector],
    queue: FromPath[str],
    task_id: FromPath[str],
    action: FromPath[str],
) -> Redirect:
    """:func:`task_form` at the older address, for ids that fit in a path segment."""
    return await _task_action(request, inspector, queue, task_id, action)


async def _queue_action(request: Request[Any, Any, Any], inspector: Inspector, queue: str, action: str) -> Redirect:
    mount = mount_of(request)
    form = await form_fields(request)
    target = safe_next(form.get("next"), mount, queue_page_url(mount.path, queue))
    if action not in actions.QUEUE_ACTIONS:
        return back(request, mount, target, f"Unknown action {action!r}.", error=True)
    try:
        result = await actions.queue_action(inspector, await current_actor(request), action, queue)
    except HTTPException as exc:
        return back(request, mount, target, str(exc.detail), error=True)
    return back(request, mount, target, result.message)


async def _bulk_action(
    request: Request[Any, Any, Any], inspector: Inspector, queue: str, task_state: str, action: str
) -> Redirect:
    mount = mount_of(request)
    form = await form_fields(request)
    target = safe_next(form.get("next"), mount, queue_page_url(mount.path, queue))
    if action not in actions.BULK_ACTIONS:
        return back(request, mount, target, f"Unknown action {action!r}.", error=True)
    try:
        st = queries.parse_state(task_state).value
        result = await actions.bulk_action(inspector, await current_actor(request), action, queue, st)
    except HTTPException as exc:
        return back(request, mount, target, str(exc.detail), error=True)
    return back(request, mount, target, result.message)


@post("/queue/{action:str}", guards=_W, include_in_schema=False, status_code=303)
async def queue_form(
    request: Request[Any, Any, Any], inspector: NamedDependency[Inspector], action: FromPath[str], queue: QueueQuery
) -> Redirect:
    """Pause or unpause a queue (``?queue=``, so any name works), then go back."""
    return await _queue_action(request, inspector, queue, action)


@post("/queue/{task_state:str}/{action:str}", guards=_W, include_in_schema=False, status_code=303)
async def bulk_form(
    request: Request[Any, Any, Any],
    inspector: NamedDependency[Inspector],
    task_state: FromPath[str],
    action: FromPath[str],
    queue: QueueQuery,
) -> Redirect:
    """Run, archive or delete every task of one state of a queue (``?queue=``), then go back."""
    return await _bulk_action(request, inspector, queue, task_state, action)


@post("/queues/{queue:str}/{action:str}", guards=_W, include_in_schema=False, status_code=303)
async def queue_path_form(
    request: Request[Any, Any, Any], inspector: NamedDependency[Inspector], queue: FromPath[str], action: FromPath[str]
) -> Redirect:
    """:func:`queue_form` at the older address, for names that fit in a path segment."""
    return await _queue_action(request, inspector, queue, action)


@post("/queues/{queue:str}/{task_state:str}/{action:str}", guards=_W, include_in_schema=False, status_code=303)
async def bulk_path_form(
    request: Request[Any, Any, Any],
    inspector: NamedDependency[Inspector],
    queue: FromPath[str],
    task_state: FromPath[str],
    action: FromPath[str],
) -> Redirect:
    """:func:`bulk_form` at the older address, for names that fit in a path segment."""
    return await _bulk_action(request, inspector, queue, task_state, action)


@get("/login", include_in_schema=False)
async def login_page(request: Request[Any, Any, Any], next_path: FromQuery[str | None] = None) -> Template:
    """The sign-in form (or the "admin is off" page when no credential is configured)."""
    if not get_credentials(request).enabled:
        return disabled_page(request, AdminDisabled())
    context = {"next": safe_next(next_path, mount_of(request)), "error": ""}
    return await admin_template(request, "admin/login.html", context, public=True)


def login_redirect(request: Request[Any, Any, Any], _: AdminLoginRequired) -> Redirect:
    """Send someone who is not signed in to the sign-in form, coming back here afterwards.

    A form posted once the session had expired comes back to the page the form was on (its ``Referer``,
    when that is inside the admin), not to the form's own address, which only answers POST; the action
    itself is not done.
    """
    mount = mount_of(request)
    if request.method in ("GET", "HEAD"):
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    else:
        referer = urlsplit(request.headers.get("referer", ""))
        here = referer.path + (f"?{referer.query}" if referer.query else "")
    return Redirect(f"{mount.path}/login", status_code=303, query_params={"next_path": safe_next(here, mount)})


def disabled_page(request: Request[Any, Any, Any], _: AdminDisabled) -> Template:
    """403: the admin is off in production until a credential is configured."""
    return render_admin(request, "admin/disabled.html", {}, status_code=403)


def error_page(request: Request[Any, Any, Any], exc: HTTPException) -> Template:
    """An HTML error page inside the layout (404, 409, 403 for read-only users or a bad CSRF token, 429).

    The exception's headers (``Retry-After`` of a 429) are kept.
    """
    context = {"status": exc.status_code, "detail": exc.detail}
    page = render_admin(
        request, "admin/error.html", context, status_code=exc.status_code, actor=recorded_actor(request)
    )
    for name, value in (exc.headers or {}).items():
        page.set_header(name, value)
    return page


PUBLIC_HANDLERS = (login_page, login_submit, logout)
"""Handlers reachable without signing in."""
ACTION_HANDLERS = (task_form, task_path_form, queue_form, bulk_form, queue_path_form, bulk_path_form)
"""The form actions (behind the admin's guards and ``require_admin_role``)."""
