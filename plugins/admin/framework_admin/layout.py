"""The dashboard's layout, shared by every admin page (other plugins' pages too).

:func:`admin_template` renders a page with the menu, who is signed in, the CSRF token and a one-shot
flash message. It also sets the CSRF cookie (double submit) when the browser has none yet.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

from litestar.datastructures import Cookie
from litestar.response import Template

from framework import StashKey
from framework_admin import panels
from framework_admin.auth import CSRF_COOKIE, current_actor, services_of
from framework_admin.config import MOUNT_OPT, PLUGIN_NAME, AdminConfig, Mount, load_config
from framework_admin.models import MenuItem
from framework_admin.session import new_csrf_token

if TYPE_CHECKING:
    from litestar import Request

    from framework_admin.models import Actor

__all__ = (
    "FLASH_COOKIE",
    "STATIC_PREFIX",
    "admin_template",
    "flash_cookie",
    "mount_of",
    "render_admin",
    "secure_cookies",
)

FLASH_COOKIE = "framework_admin_flash"
STATIC_PREFIX = f"/static/{PLUGIN_NAME}/admin"
"""Where the dashboard's CSS and JavaScript are served (the plugin's ``static/admin/`` folder)."""
_MENU: StashKey[list[MenuItem]] = StashKey("framework_admin.menu")


def mount_of(request: Request[Any, Any, Any]) -> Mount:
    """The admin mount serving ``request`` (paths and config), from the route's ``opt``."""
    mount = request.route_handler.opt.get(MOUNT_OPT)
    if isinstance(mount, Mount):
        return mount
    config = load_config(services_of(request).settings)
    return Mount(path=config.path, api_path=config.api_path, config=config)


def secure_cookies(request: Request[Any, Any, Any], config: AdminConfig) -> bool:
    """Whether cookies get the ``Secure`` flag (the setting, or whether the request came over HTTPS)."""
    if config.secure_cookies is not None:
        return config.secure_cookies
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto", "") == "https"


def flash_cookie(mount: Mount, message: str, *, error: bool = False, secure: bool = False) -> Cookie:
    """A one-shot cookie carrying a message to show on the next page."""
    text = ("E" if error else "I") + message[:300]
    value = base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")
    return Cookie(key=FLASH_COOKIE, value=value, path=mount.path, max_age=60, httponly=True, secure=secure)


def _read_flash(request: Request[Any, Any, Any]) -> tuple[str, bool] | None:
    raw = request.cookies.get(FLASH_COOKIE, "")
    if not raw:
        return None
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
    except ValueError:
        return None
    return (text[1:], text[:1] == "E") if text else None


def _menu(request: Request[Any, Any, Any], mount: Mount) -> list[dict[str, Any]]:
    services = services_of(request)
    items = services.stash.get(_MENU)
    if items is None:
        items = [
            MenuItem(label="Overview", href="", order=10),
            MenuItem(label="Tasks", href="jobs/pending", order=20),
            MenuItem(label="Failed", href="jobs/failed", order=30),
            MenuItem(label="Workflows", href="workflows", order=35),
            MenuItem(label="Limits", href="limits", order=38),
            MenuItem(label="Servers", href="servers", order=40),
            MenuItem(label="Cron", href="cron", order=50),
        ]
        if panels.outbox_dir(services) is not None:
            items.append(MenuItem(label="Outbox", href="outbox", order=60))
        if panels.cleanup_enabled(services):
            items.append(MenuItem(label="Cleanup", href="cleanup", order=70))
        pm = services.plugin_manager
        caller = getattr(pm.hook, "admin_menu_items", None) if pm is not None else None
        for contributed in caller(settings=services.settings) if caller is not None else []:
            items.extend(i for i in contributed or [] if isinstance(i, MenuItem))
        items = services.stash[_MENU] = sorted(items, key=lambda i: (i.order, i.label))
    out = []
    for item in items:
        href = (
            item.href if item.href.startswith(("/", "http://", "https://")) else f"{mount.path}/{item.href}".rstrip("/")
        )
        here = request.url.path.rstrip("/") or "/"
        active = here == href or (bool(item.href) and here.startswith(href + "/"))
        out.append({"label": item.label, "href": href, "active": active, "description": item.description})
    return out


def render_admin(
    request: Request[Any, Any, Any],
    template_name: str,
    context: dict[str, Any] | None = None,
    *,
    status_code: int = 200,
    actor: Actor | None = None,
) -> Template:
    """Render ``template_name`` with the layout's values for ``actor`` (``None``: a public page, no menu).

    Synchronous, for exception handlers; handlers use :func:`admin_template`.
    """
    mount = mount_of(request)
    services = services_of(request)
    cookies: list[Cookie] = []
    csrf = request.cookies.get(CSRF_COOKIE, "")
    secure = secure_cookies(request, mount.config)
    if len(csrf) < 32:
        csrf = new_csrf_token()
        cookies.append(Cookie(key=CSRF_COOKIE, value=csrf, path="/", httponly=True, samesite="strict", secure=secure))
    flash = _read_flash(request)
    if flash is not None:
        cookies.append(Cookie(key=FLASH_COOKIE, value="", path=mount.path, max_age=0, httponly=True, secure=secure))
    layout = {
        "path": mount.path,
        "api": mount.api_path,
        "static": STATIC_PREFIX,
        "actor": actor,
        "can_act": actor is not None and actor.can_act,
        "csrf": csrf,
        "menu": [] if actor is None else _menu(request, mount),
        "flash": flash,
        "refresh_ms": int(mount.config.refresh_seconds * 1000),
        "chart_hours": mount.config.chart_hours,
        "env": services.settings.env,
        "here": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
    }
    return Template(
        template_name=template_name,
        context={**(context or {}), "admin": layout},
        cookies=cookies,
        status_code=status_code,
    )


async def admin_template(
    request: Request[Any, Any, Any],
    template_name: str,
    context: dict[str, Any] | None = None,
    *,
    status_code: int = 200,
    public: bool = False,
) -> Template:
    """Render ``template_name`` (which extends ``admin/base.html``) with the admin layout's values.

    The template sees ``admin``: ``path``, ``api``, ``static``, ``actor``, ``can_act``, ``csrf`` (put it
    in a ``_csrf`` field of every form that changes something), ``menu``, ``flash``, ``refresh_ms``,
    ``chart_hours`` and ``env``.

    Args:
        request: the request being answered.
        template_name: the template, for example ``"myplugin/admin.html"``.
        context: the template's own values.
        status_code: the response's status.
        public: a page for people not signed in (login, "admin is off"): no actor and no menu.
    """
    actor = None if public else await current_actor(request)
    return render_admin(request, template_name, context, status_code=status_code, actor=actor)
