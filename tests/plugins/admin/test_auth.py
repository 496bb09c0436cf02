"""Credentials: the generated development token, production without credentials, sessions, config checks."""

from __future__ import annotations

import os
import stat
from typing import Any

import pytest
from framework_admin.config import load_admin_config
from framework_admin.credentials import TOKEN_FILE, load_credentials
from framework_admin.session import sign_session, verify_session
from litestar.testing import AsyncTestClient
from structlog.testing import capture_logs

from framework.errors import ConfigError
from framework.web.app import create_app
from tests.plugins.admin.conftest import READONLY, RO_AUTH, admin_pm, login


async def test_development_generates_logs_and_reuses_a_token(admin_settings: Any) -> None:
    settings = admin_settings.replace(env="development", admin_token=None, admin_readonly_token=None)
    with capture_logs() as logs:
        async with AsyncTestClient(create_app(settings, plugin_manager=admin_pm(settings))) as tc:
            path = settings.data_path / TOKEN_FILE
            token = path.read_text().strip()
            assert len(token) >= 24 and stat.S_IMODE(os.stat(path).st_mode) == 0o600
            ok = await tc.get("/api/admin/me", headers={"Authorization": f"Bearer {token}"})
            assert ok.status_code == 200 and ok.json()["role"] == "admin"
    [line] = [e for e in logs if e["event"] == "admin_token"]
    assert line["token"] == token and line["file"] == str(path)
    async with AsyncTestClient(create_app(settings, plugin_manager=admin_pm(settings))) as tc:
        assert path.read_text().strip() == token  # reused across restarts
        assert (await tc.get("/api/admin/me", headers={"Authorization": f"Bearer {token}"})).status_code == 200


async def test_production_without_credentials_is_off_and_says_so(admin_settings: Any) -> None:
    settings = admin_settings.replace(env="production", admin_token=None, admin_readonly_token=None)
    with capture_logs() as logs:
        async with AsyncTestClient(create_app(settings, plugin_manager=admin_pm(settings))) as tc:
            api = await tc.get("/api/admin/jobs/stats")
            assert api.status_code == 403 and "admin_token" in api.json()["detail"]
            page = await tc.get("/admin", follow_redirects=False)
            assert page.status_code == 403 and "The admin is off" in page.text and "FRAMEWORK_ADMIN_TOKEN" in page.text
            assert (await tc.get("/admin/login")).status_code == 403
            assert (await tc.post("/admin/login", data={"token": "x"})).status_code == 403
            assert (await tc.get("/metrics")).status_code == 403
            assert (await tc.get("/api/admin/jobs/stats", headers={"Authorization": "Bearer x"})).status_code == 401
    assert any(e["event"] == "admin_disabled" for e in logs)
    assert not (settings.data_path / TOKEN_FILE).exists()


async def test_production_with_a_readonly_token_only(admin_settings: Any) -> None:
    settings = admin_settings.replace(env="production", admin_token=None)
    async with AsyncTestClient(create_app(settings, plugin_manager=admin_pm(settings))) as tc:
        assert (await tc.get("/api/admin/jobs/stats", headers=RO_AUTH)).status_code == 200
        assert (await tc.post("/api/admin/queues/default/pause", headers=RO_AUTH)).status_code == 403
        await login(tc, READONLY, "viewer")
        assert (await tc.get("/api/admin/me")).json()["role"] == "readonly"


def test_sessions_expire_and_bind_to_the_token() -> None:
    value = sign_session("admin", "ada", "tok-1", 2000)
    assert verify_session(value, {"admin": "tok-1"}, 1000).name == "ada"  # type: ignore[union-attr]
    assert verify_session(value, {"admin": "tok-1"}, 2001) is None  # expired
    assert verify_session(value, {"admin": "tok-2"}, 1000) is None  # token changed: signed out
    assert verify_session(value, {"readonly": "tok-1"}, 1000) is None  # role without a token
    for bad in ("", "v1.x.y", "v2." + value[3:], value + "x", "a.b", "v1.!!!.sig"):
        assert verify_session(bad, {"admin": "tok-1"}, 1000) is None


def test_credentials_compare_digests(admin_settings: Any) -> None:
    creds = load_credentials(admin_settings)
    assert creds.role_for(admin_settings.admin_token) == "admin"
    assert creds.role_for(READONLY) == "readonly"
    assert creds.role_for("") is None and creds.role_for(admin_settings.admin_token + " ") is None


@pytest.mark.parametrize(
    "section",
    [{"path": "admin"}, {"path": "/admin/"}, {"api_path": "/"}, {"chart_hours": 0}, {"metrics_path": "metrics"}],
)
def test_bad_admin_settings_fail_fast(admin_settings: Any, section: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=r"plugins\.admin"):
        load_admin_config(admin_settings.replace(plugins={"admin": section}))
