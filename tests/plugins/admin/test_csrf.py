"""The admin's CSRF and session cookies, end to end: every unsafe route, cookie flags, per-role sign-out.

The CSRF check is a guard on each state-changing handler rather than an app-wide middleware, so the
first test walks the app's route table: a route added later without the check fails here.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from litestar.routes import HTTPRoute
from litestar.testing import AsyncTestClient

from framework.web.app import create_app
from tests.plugins.admin.conftest import READONLY, TOKEN, admin_pm, csrf_of, login

SAFE = {"GET", "HEAD", "OPTIONS"}
_PARAM = re.compile(r"\{(\w+):\w+\}")


def app_with(settings: Any, **admin: Any) -> AsyncTestClient[Any]:
    """A test client for the app with the admin configured by ``admin`` (no worker)."""
    settings = settings.replace(plugins={"admin": admin})
    return AsyncTestClient(create_app(settings, plugin_manager=admin_pm(settings)))


def unsafe_admin_routes(app: Any) -> list[tuple[str, str]]:
    """(method, concrete path) of every route under the admin's paths that is not GET, HEAD or OPTIONS."""
    found: list[tuple[str, str]] = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or not route.path.startswith(("/admin", "/api/admin")):
            continue
        path = _PARAM.sub(lambda m: "default" if m.group(1) == "queue" else "x", route.path)
        found += [(str(method), path) for method in sorted(route.methods - SAFE)]
    return found


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({}, {}),
        ({"HX-Request": "true", "HX-Current-URL": "http://testserver.local/admin"}, {}),  # an HTMX request
        ({"X-Requested-With": "XMLHttpRequest"}, {"json": {"queue": "default"}}),  # a JSON API call
        ({"X-CSRF-Token": "x" * 43}, {}),  # a token that is not the cookie's
        ({}, {"data": {"_csrf": ""}}),
    ],
)
async def test_every_unsafe_admin_route_refuses_a_session_without_the_token(
    admin_settings: Any, headers: dict[str, str], body: dict[str, Any]
) -> None:
    async with app_with(admin_settings) as tc:
        await login(tc)
        routes = unsafe_admin_routes(tc.app)
        assert len(routes) >= 10 and ("POST", "/admin/login") in routes and ("DELETE", "/api/admin/task") in routes
        for method, path in routes:
            r = await tc.request(method, path, params={"queue": "default", "id": "x"}, headers=headers, **body)
            assert r.status_code == 403 and "CSRF" in r.text, (method, path, r.status_code)


def set_cookie(response: Any, name: str) -> str:
    """The ``Set-Cookie`` header of ``response`` that sets cookie ``name``."""
    headers: list[str] = response.headers.get_list("set-cookie")
    [header] = [h for h in headers if h.startswith(f"{name}=")]
    return header


async def test_the_cookies_are_http_only_same_site_and_secure_over_https(admin_settings: Any) -> None:
    async with app_with(admin_settings) as tc:
        plain = set_cookie(await tc.get("/admin/login"), "framework_admin_csrf")
        assert "HttpOnly" in plain and "SameSite=strict" in plain and "Path=/" in plain and "Secure" not in plain
        tc.cookies.clear()  # a browser without the cookie yet, behind a proxy that ends TLS
        proxied = await tc.get("/admin/login", headers={"X-Forwarded-Proto": "https"})
        assert "Secure" in set_cookie(proxied, "framework_admin_csrf")
    settings = admin_settings.replace(plugins={"admin": {}})
    app = create_app(settings, plugin_manager=admin_pm(settings))
    async with AsyncTestClient(app, base_url="https://testserver.local") as tc:
        page = await tc.get("/admin/login")
        assert "Secure" in set_cookie(page, "framework_admin_csrf")
        form = {"token": TOKEN, "_csrf": csrf_of(page.text)}
        signed_in = await tc.post("/admin/login", data=form, follow_redirects=False)
        session = set_cookie(signed_in, "framework_admin_session")
        assert "Secure" in session and "HttpOnly" in session and "SameSite=lax" in session
    async with app_with(admin_settings, secure_cookies=True) as tc:  # the setting, over plain HTTP
        assert "Secure" in set_cookie(await tc.get("/admin/login"), "framework_admin_csrf")


async def test_changing_one_roles_token_signs_out_that_role_only(admin_settings: Any) -> None:
    sessions: dict[str, str] = {}
    for token, name in ((TOKEN, "ada"), (READONLY, "viewer")):
        async with app_with(admin_settings) as tc:
            await login(tc, token, name)
            sessions[name] = tc.cookies["framework_admin_session"]

    async def me(settings: Any, name: str) -> int:
        async with app_with(settings) as tc:
            tc.cookies.set("framework_admin_session", sessions[name])
            return (await tc.get("/api/admin/me")).status_code

    new_readonly = admin_settings.replace(admin_readonly_token="another-readonly-token-0123456789")
    assert (await me(new_readonly, "ada"), await me(new_readonly, "viewer")) == (200, 401)
    new_admin = admin_settings.replace(admin_token="another-admin-token-0123456789")
    assert (await me(new_admin, "ada"), await me(new_admin, "viewer")) == (401, 200)
    assert (await me(admin_settings, "ada"), await me(admin_settings, "viewer")) == (200, 200)
