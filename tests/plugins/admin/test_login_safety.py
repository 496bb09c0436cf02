"""Hostile input at the admin's door: post-login redirects, the OpenAPI schema, guessing tokens (real Valkey)."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import httpx
import pytest
from framework_admin.config import AdminConfig, Mount
from framework_admin.forms import safe_next
from litestar.testing import AsyncTestClient
from structlog.testing import capture_logs

from framework.web.app import create_app
from tests.fixtures.web import serve
from tests.plugins.admin.conftest import AUTH, READONLY, RO_AUTH, TOKEN, admin_pm, csrf_of, login

MOUNT = Mount(path="/admin", api_path="/api/admin", config=AdminConfig())
BAD = {"Authorization": "Bearer not-the-token"}


def app_with(settings: Any, **admin: Any) -> AsyncTestClient[Any]:
    """A test client for the app with the admin configured by ``admin`` (no worker)."""
    settings = settings.replace(plugins={"admin": admin})
    return AsyncTestClient(create_app(settings, plugin_manager=admin_pm(settings)))


# -- where the login form sends you -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("/admin", "/admin"),
        ("/admin/jobs/failed?queue=default&page=2", "/admin/jobs/failed?queue=default&page=2"),
        ("/admin/./servers", "/admin/servers"),
        ("/admin/jobs/../servers", "/admin/servers"),
        ("/admin/x/..", "/admin/"),
        ("/admin/tasks/default/a%2Fb", "/admin/tasks/default/a%2Fb"),  # an encoded slash stays one segment
        ("/admin/tasks/default/a b", "/admin/tasks/default/a%20b"),
        ("/admin/task?queue=q&id=r\u00e9sum\u00e9 #1", "/admin/task?queue=q&id=r%C3%A9sum%C3%A9%20#1"),
    ],
)
def test_next_inside_the_admin_is_kept_normalised(given: str, expected: str) -> None:
    assert safe_next(given, MOUNT) == expected


@pytest.mark.parametrize(
    "given",
    [
        "/admin/../../evil",
        "/admin/..",
        "/admin/../admin-other",
        "/admin/jobs/../../../evil",
        "/adminx",
        "/",
        "/evil?next=/admin",
        "https://evil.example/admin",
        "javascript:alert(1)//admin",
        "//evil.example/admin",
        "///evil.example/admin",
        "/\\evil.example/admin",
        "/admin\\..\\..\\evil",
        "/admin/%2e%2e/%2e%2e/evil",
        "/admin/.%2E/evil",
        "/admin/%2E/x",
        "/admin//evil.example",
        "/admin/\r\nSet-Cookie: x=1",
        "/admin/\t",
        "",
        None,
        42,
        ["/admin"],
    ],
)
def test_next_outside_the_admin_falls_back_to_its_home(given: Any) -> None:
    assert safe_next(given, MOUNT) == "/admin"
    assert safe_next(given, MOUNT, "/admin/queues/q") == "/admin/queues/q"


async def test_login_redirects_only_inside_the_admin(admin_settings: Any) -> None:
    async with app_with(admin_settings) as tc:
        for given, location in [
            ("/admin/../../evil", "/admin"),
            ("/admin/%2e%2e/evil", "/admin"),
            ("//evil.example/", "/admin"),
            ("/admin/./servers", "/admin/servers"),
        ]:
            csrf = csrf_of((await tc.get("/admin/login")).text)
            ok = await tc.post(
                "/admin/login", data={"token": TOKEN, "_csrf": csrf, "next": given}, follow_redirects=False
            )
            assert (ok.status_code, ok.headers["location"]) == (303, location), given
        page = await tc.get("/admin/login", params={"next_path": "/admin/../../evil"})
        assert 'name="next" value="/admin"' in page.text


# -- the OpenAPI schema -----------------------------------------------------------------------------

SCHEMA_PATHS = ("/schema/openapi.json", "/schema", "/schema/swagger", "/schema/anything")


async def test_schema_needs_an_admin_credential(admin_settings: Any) -> None:
    async with app_with(admin_settings) as tc:
        for path in SCHEMA_PATHS:
            refused = await tc.get(path)
            assert refused.status_code == 401, path
            assert refused.headers["www-authenticate"].startswith("Bearer")
            assert "/api/admin" not in refused.text
        assert (await tc.get("/schema/openapi.json", headers=BAD)).status_code == 401
        for headers in (AUTH, RO_AUTH):
            schema = await tc.get("/schema/openapi.json", headers=headers)
            assert schema.status_code == 200 and "/api/admin/jobs/stats" in schema.json()["paths"]
        await login(tc)  # a signed-in browser can read it too
        assert (await tc.get("/schema/openapi.json")).status_code == 200


async def test_schema_is_off_with_the_admin_in_production_without_credentials(admin_settings: Any) -> None:
    settings = admin_settings.replace(env="production", admin_token=None, admin_readonly_token=None)
    async with app_with(settings) as tc:
        refused = await tc.get("/schema/openapi.json")
        assert refused.status_code == 403 and "admin_token" in refused.json()["detail"]


async def test_schema_can_be_made_public(admin_settings: Any) -> None:
    async with app_with(admin_settings, protect_schema=False) as tc:
        assert (await tc.get("/schema/openapi.json")).status_code == 200


# -- guessing tokens --------------------------------------------------------------------------------


async def _login_form(tc: AsyncTestClient[Any], token: str) -> httpx.Response:
    csrf = csrf_of((await tc.get("/admin/login")).text)
    return await tc.post("/admin/login", data={"token": token, "_csrf": csrf}, follow_redirects=False)


def _retry_after(response: httpx.Response, window: float) -> int:
    assert response.status_code == 429, response.text
    seconds = int(response.headers["retry-after"])
    assert 1 <= seconds <= math.ceil(window)
    return seconds


async def test_failed_logins_are_limited_per_address(admin_settings: Any) -> None:
    async with app_with(admin_settings, failed_auth_limit=3, failed_auth_window=300) as tc:
        await login(tc)  # a session from before the attack
        session = tc.cookies.get("framework_admin_session")
        tc.cookies.delete("framework_admin_session")
        for _ in range(3):
            assert (await _login_form(tc, "guess")).status_code == 401
        with capture_logs() as logs:
            blocked = await _login_form(tc, TOKEN)  # even the right token: the answer must not tell
        _retry_after(blocked, 300)
        assert "Too many failed attempts" in blocked.text and "framework_admin_session" not in blocked.headers.get(
            "set-cookie", ""
        )
        assert any(e["event"] == "admin_auth_throttled" for e in logs)
        _retry_after(await tc.get("/api/admin/me", headers=AUTH), 300)  # bearer tokens share the count
        _retry_after(await tc.get("/metrics", headers=AUTH), 300)
        page = await tc.get("/admin/servers", headers=AUTH)  # a dashboard page: HTML, still with Retry-After
        _retry_after(page, 300)
        assert "text/html" in page.headers["content-type"]
        tc.cookies.set("framework_admin_session", session)
        assert (await tc.get("/api/admin/me")).json()["name"] == "ada"  # signed-in sessions carry on


async def test_successful_logins_are_not_counted(admin_settings: Any) -> None:
    async with app_with(admin_settings, failed_auth_limit=2) as tc:
        for _ in range(5):
            assert (await _login_form(tc, TOKEN)).status_code == 303
            assert (await tc.get("/api/admin/me", headers=AUTH)).status_code == 200
        assert (await _login_form(tc, READONLY)).status_code == 303
        assert (await _login_form(tc, "guess")).status_code == 401  # the first failure: no 429 yet


async def test_bad_bearer_tokens_are_limited_and_the_window_slides(admin_settings: Any) -> None:
    async with app_with(admin_settings, failed_auth_limit=3, failed_auth_window=1.5) as tc:
        for path in ("/api/admin/me", "/api/admin/jobs/stats", "/metrics"):
            assert (await tc.get(path, headers=BAD)).status_code == 401
        wait = _retry_after(await tc.get("/api/admin/me", headers=AUTH), 1.5)
        _retry_after(await tc.post("/api/admin/queues/default/pause", headers=AUTH), 1.5)
        _retry_after(await _login_form(tc, TOKEN), 1.5)  # and the sign-in form
        await asyncio.sleep(wait + 0.1)
        assert (await tc.get("/api/admin/me", headers=AUTH)).status_code == 200


async def test_the_count_is_shared_by_web_processes(admin_settings: Any) -> None:
    async with (
        app_with(admin_settings, failed_auth_limit=2) as one,
        app_with(admin_settings, failed_auth_limit=2) as two,
    ):
        assert (await one.get("/api/admin/me", headers=BAD)).status_code == 401
        assert (await two.get("/api/admin/me", headers=BAD)).status_code == 401
        _retry_after(await one.get("/api/admin/me", headers=AUTH), 300)
        _retry_after(await two.get("/api/admin/me", headers=AUTH), 300)


async def test_other_addresses_are_not_affected(admin_settings: Any) -> None:
    """Served by uvicorn, which takes the client address from X-Forwarded-For sent by a trusted proxy (loopback)."""
    settings = admin_settings.replace(plugins={"admin": {"failed_auth_limit": 2}})
    app = create_app(settings, plugin_manager=admin_pm(settings))
    async with serve(app) as base, httpx.AsyncClient(base_url=base) as http:
        attacker = {**BAD, "X-Forwarded-For": "203.0.113.7"}
        for _ in range(2):
            assert (await http.get("/api/admin/me", headers=attacker)).status_code == 401
        _retry_after(await http.get("/api/admin/me", headers={**AUTH, "X-Forwarded-For": "203.0.113.7"}), 300)
        admin = {**AUTH, "X-Forwarded-For": "198.51.100.20"}
        assert (await http.get("/api/admin/me", headers=admin)).status_code == 200
        wrong_once = {**BAD, "X-Forwarded-For": "198.51.100.20"}
        assert (await http.get("/api/admin/me", headers=wrong_once)).status_code == 401


@pytest.mark.parametrize(
    "section",
    [
        {"failed_auth_limit": -1},
        {"failed_auth_window": 0},
        {"failed_auth_window": float("inf")},  # a window that never ends: an address locked out for good
        {"failed_auth_window": float("nan")},
        {"session_hours": float("nan")},
        {"refresh_seconds": float("inf")},
    ],
)
def test_bad_limit_settings_fail_fast(admin_settings: Any, section: dict[str, Any]) -> None:
    from framework_admin.config import load_admin_config

    from framework.errors import ConfigError

    with pytest.raises(ConfigError, match="|".join(section)):
        load_admin_config(admin_settings.replace(plugins={"admin": section}))
