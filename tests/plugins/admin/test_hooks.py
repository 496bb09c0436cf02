"""The admin's own hooks (menu items, pluggable auth), extension pages and the route factory's guards."""

from __future__ import annotations

import inspect
from typing import Any

from framework_admin import hookspecs
from framework_admin.auth import set_actor
from framework_admin.layout import admin_template
from framework_admin.models import Actor, MenuItem
from framework_admin.routes import admin_pages, admin_routes
from litestar import Request, get
from litestar.connection import ASGIConnection
from litestar.exceptions import PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.response import Template
from litestar.testing import AsyncTestClient
from structlog.testing import capture_logs

from framework.hookspecs import hookimpl
from framework.web.app import create_app
from tests.plugins.admin.conftest import AUTH, admin_pm, login


def test_admin_hookspecs_are_documented() -> None:
    for name in ("admin_menu_items", "register_admin_panels", "admin_actor_from_request"):
        doc = getattr(hookspecs, name).__doc__ or ""
        assert "Args:" in doc and "Returns:" in doc and "Kind:" in doc and "Fires:" in doc
    assert "first result" in (hookspecs.admin_actor_from_request.__doc__ or "")


@get("/reports")
async def reports(request: Request[Any, Any, Any]) -> Template:
    """A plugin's admin page, rendered inside the admin's layout."""
    return await admin_template(request, "admin/error.html", {"status": 200, "detail": "Reports <for> you"})


class ReportsPlugin:
    @hookimpl(optionalhook=True)
    def admin_menu_items(self, settings: Any) -> list[MenuItem]:
        return [MenuItem(label="Reports <x>", href="reports", order=95), MenuItem(label="Docs", href="/docs", order=5)]

    @hookimpl
    def register_routes(self, settings: Any) -> list[Any]:
        return [admin_pages(settings, [reports])]


async def test_hook_admin_menu_items(admin_settings: Any) -> None:
    app = create_app(admin_settings, plugin_manager=admin_pm(admin_settings, ("reports", ReportsPlugin())))
    async with AsyncTestClient(app) as tc:
        assert (await tc.get("/admin/reports", follow_redirects=False)).status_code == 303  # behind the admin's guard
        page = await tc.get("/admin/reports", headers=AUTH)
        assert page.status_code == 200 and "Reports &lt;for&gt; you" in page.text
        nav = page.text.split('<nav id="nav"', 1)[1].split("</nav>", 1)[0]
        assert '<a href="/admin/reports" aria-current="page">Reports &lt;x&gt;</a>' in nav
        assert nav.index("Docs") < nav.index("Overview") < nav.index("Reports")  # sorted by order
        assert 'href="/docs"' in nav
        assert page.headers["content-security-policy"].startswith("default-src 'none'")


class HeaderAuth:
    """An app's own authentication: X-User names the person, X-Role may make them read-only."""

    @hookimpl(optionalhook=True)
    async def admin_actor_from_request(self, request: Any) -> Actor | None:
        user = request.headers.get("x-user")
        if not user:
            return None
        return Actor(name=user, role=request.headers.get("x-role", "admin"), via="hook")


async def test_hook_admin_actor_from_request(admin_settings: Any) -> None:
    settings = admin_settings.replace(env="production", admin_token=None, admin_readonly_token=None)
    app = create_app(settings, plugin_manager=admin_pm(settings, ("sso", HeaderAuth())))
    async with AsyncTestClient(app) as tc:
        assert (await tc.get("/api/admin/jobs/stats")).status_code == 403  # no credential: the admin is off
        me = await tc.get("/api/admin/me", headers={"X-User": "alice"})
        assert me.status_code == 200 and me.json() == {"name": "alice", "role": "admin", "via": "hook", "can_act": True}
        page = await tc.get("/admin", headers={"X-User": "alice"})
        assert page.status_code == 200 and "alice" in page.text
        viewer = {"X-User": "bob", "X-Role": "readonly"}
        assert (await tc.post("/api/admin/queues/default/pause", headers=viewer)).status_code == 403
        no_csrf = await tc.post("/api/admin/queues/default/pause", headers={"X-User": "alice"})
        assert no_csrf.status_code == 403 and "CSRF" in no_csrf.json()["detail"]  # hook auth may be cookie-based
        csrf = tc.cookies.get("framework_admin_csrf")
        with capture_logs() as logs:
            r = await tc.post("/api/admin/queues/default/pause", headers={"X-User": "alice", "X-CSRF-Token": csrf})
        assert r.status_code in (200, 404)
        [line] = [e for e in logs if e["event"] == "admin_action"]
        assert line["actor"] == "alice" and line["via"] == "hook" and line["action"] == "pause"


class WrapsAuth:
    """Wraps the admin's request hook (``wrapper=True``): sees each plugin's answer, may replace it."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    @hookimpl(optionalhook=True, wrapper=True)
    def admin_actor_from_request(self, request: Any) -> Any:
        answer = yield
        self.seen.append(answer)
        if request.headers.get("x-wrapped"):
            if inspect.iscoroutine(answer):
                answer.close()  # replaced, never awaited
            return Actor(name="wrapped", role="readonly", via="hook")
        return answer


async def test_a_wrapper_wraps_the_request_hook_and_tracing_traces_it(
    admin_settings: Any, monkeypatch: Any, capsys: Any
) -> None:
    monkeypatch.setenv("FRAMEWORK_TRACE_PLUGINS", "1")
    wrapper = WrapsAuth()
    settings = admin_settings.replace(env="production", admin_token=None, admin_readonly_token=None)
    app = create_app(settings, plugin_manager=admin_pm(settings, ("sso", HeaderAuth()), ("wrap", wrapper)))
    async with AsyncTestClient(app) as tc:
        me = await tc.get("/api/admin/me", headers={"X-User": "alice"})
        assert me.json()["name"] == "alice"
        assert len(wrapper.seen) == 1 and inspect.iscoroutine(wrapper.seen[0])  # HeaderAuth answers async
        wrapped = await tc.get("/api/admin/me", headers={"X-Wrapped": "1"})
        assert wrapped.json() == {"name": "wrapped", "role": "readonly", "via": "hook", "can_act": False}
    trace = capsys.readouterr().err
    assert "admin_actor_from_request [hook]" in trace
    assert "finish admin_actor_from_request -->" in trace


async def staff_only(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    role = connection.headers.get("x-staff")
    if role not in ("admin", "viewer"):
        raise PermissionDeniedException("staff only")
    set_actor(connection, Actor(name="staff", role="admin" if role == "admin" else "readonly", via="bearer"))


class OwnMount:
    """An app that mounts the admin itself, at other paths and behind its own guard."""

    @hookimpl
    def register_routes(self, settings: Any) -> list[Any]:
        return admin_routes("/ops", "/api/ops", guards=[staff_only], settings=settings, metrics_path="/ops/metrics")


async def test_route_factory_takes_path_and_guards(admin_settings: Any) -> None:
    settings = admin_settings.replace(plugins={"admin": {"mount": False}})
    app = create_app(settings, plugin_manager=admin_pm(settings, ("app", OwnMount())))
    async with AsyncTestClient(app) as tc:
        assert (await tc.get("/api/admin/jobs/stats", headers=AUTH)).status_code == 404  # not mounted there
        assert (await tc.get("/api/ops/jobs/stats", headers=AUTH)).status_code == 403  # the app's guard decides
        assert (await tc.get("/api/ops/jobs/stats", headers={"X-Staff": "viewer"})).status_code == 200
        page = await tc.get("/ops", headers={"X-Staff": "viewer"})
        assert page.status_code == 200 and 'data-admin="/ops"' in page.text and 'href="/ops/servers"' in page.text
        refused = await tc.post("/api/ops/queues/default/pause", headers={"X-Staff": "viewer"})
        assert refused.status_code == 403 and "read-only" in refused.json()["detail"]
        r = await tc.post("/api/ops/queues/default/pause", headers={"X-Staff": "admin"})
        assert r.status_code in (200, 404)
        assert (await tc.get("/ops/metrics", headers={"X-Staff": "viewer"})).status_code == 200


async def test_session_login_works_under_another_path(admin_settings: Any) -> None:
    settings = admin_settings.replace(plugins={"admin": {"path": "/backoffice", "api_path": "/api/bo"}})
    app = create_app(settings, plugin_manager=admin_pm(settings))
    async with AsyncTestClient(app) as tc:
        r = await tc.get("/backoffice", follow_redirects=False)
        assert r.headers["location"].startswith("/backoffice/login")
        page = await tc.get("/backoffice/login")
        assert 'action="/backoffice/login"' in page.text
        assert (await tc.get("/api/bo/jobs/stats", headers=AUTH)).status_code == 200
        assert (await tc.get("/admin", headers=AUTH)).status_code == 404


async def test_login_helper_for_default_path(api: Any) -> None:
    await login(api)
    assert (await api.get("/api/admin/me")).json()["name"] == "ada"
