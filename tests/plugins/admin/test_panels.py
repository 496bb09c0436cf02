"""Panels for other plugins, offered through ``register_admin_panels``: the email outbox and cleanup results."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import msgspec
from litestar.testing import AsyncTestClient

from framework.hookspecs import hookimpl
from framework.protocol.keys import Schema
from framework.web.app import create_app
from tests.plugins.admin.conftest import AUTH, admin_pm, wait_for


async def test_outbox_lists_and_previews_emails(api: Any, client: Any, admin_settings: Any) -> None:
    from framework_email.tasks import send_email

    info = await send_email(client, "Ada <ada@example.test>", "Hi <b>Ada</b>", "welcome", {"name": "<i>Ada</i>"})

    async def listed() -> list[Any]:
        r = await api.get("/api/admin/outbox", headers=AUTH)
        assert r.status_code == 200
        return list(r.json())

    [email] = await wait_for(listed)
    assert email["name"] == f"{info.id}.eml" and email["subject"] == "Hi <b>Ada</b>" and email["has_html"]
    detail = (await api.get(f"/api/admin/outbox/{email['name']}", headers=AUTH)).json()
    assert "&lt;i&gt;Ada&lt;/i&gt;" in detail["html"] and "<i>Ada</i>" in detail["text"]
    page = await api.get(f"/admin/outbox/{email['name']}", headers=AUTH)
    assert page.status_code == 200 and "Hi &lt;b&gt;Ada&lt;/b&gt;" in page.text
    assert f'sandbox src="/admin/outbox/{email["name"]}/body.html"' in page.text
    assert "&lt;i&gt;Ada&lt;/i&gt;" in page.text  # the text body, escaped
    body = await api.get(f"/admin/outbox/{email['name']}/body.html", headers=AUTH)
    assert body.status_code == 200 and body.headers["content-type"].startswith("text/html")
    assert "sandbox" in body.headers["content-security-policy"] and body.headers["x-frame-options"] == "SAMEORIGIN"
    overview = (await api.get("/admin", headers=AUTH)).text
    assert 'id="outbox-panel"' in overview and 'href="/admin/outbox"' in overview
    for bad in ("../../etc/passwd", ".hidden.eml", "nope.eml", "x.txt"):
        assert (await api.get(f"/api/admin/outbox/{bad}", headers=AUTH)).status_code == 404


async def test_no_outbox_without_the_email_plugin(admin_settings: Any) -> None:
    settings = admin_settings.replace(load_plugins=["admin"])
    async with AsyncTestClient(create_app(settings, plugin_manager=admin_pm(settings))) as tc:
        assert (await tc.get("/api/admin/outbox", headers=AUTH)).status_code == 404
        assert (await tc.get("/admin/outbox", headers=AUTH)).status_code == 404
        page = (await tc.get("/admin", headers=AUTH)).text
        assert 'id="outbox-panel"' not in page and "/admin/outbox" not in page
    smtp = admin_settings.replace(plugins={"email": {"backend": "smtp"}})
    async with AsyncTestClient(create_app(smtp, plugin_manager=admin_pm(smtp))) as tc:
        assert (await tc.get("/api/admin/outbox", headers=AUTH)).status_code == 404


REPORT = {
    "sweeper": "uploads",
    "time": 0.0,
    "duration": 0.25,
    "dry_run": False,
    "removed": 3,
    "bytes": 4096,
    "items": ["a", "b", "c"],
    "errors": ["<b>cannot remove x</b>"],
    "failed": False,
}


async def test_cleanup_results_when_the_cleanup_plugin_is_loaded(admin_settings: Any, redis: Any) -> None:
    """The real cleanup plugin offers its reports, read from the key they were always stored under."""
    old_key = f"{Schema(admin_settings.namespace).ext}:cleanup:last"
    await redis.hset(old_key, "uploads", msgspec.json.encode({**REPORT, "time": time.time() - 60}))
    settings = admin_settings.replace(load_plugins=["admin", "email", "cleanup"])
    async with AsyncTestClient(create_app(settings, plugin_manager=admin_pm(settings))) as tc:
        [got] = (await tc.get("/api/admin/cleanup", headers=AUTH)).json()
        assert got["sweeper"] == "uploads" and got["removed"] == 3 and got["bytes"] == 4096
        page = await tc.get("/admin/cleanup", headers=AUTH)
        assert page.status_code == 200 and "4.0 KiB" in page.text and "&lt;b&gt;cannot remove x" in page.text
        overview = (await tc.get("/admin", headers=AUTH)).text
        assert 'id="cleanup-panel"' in overview and 'href="/admin/cleanup"' in overview
    async with AsyncTestClient(create_app(admin_settings, plugin_manager=admin_pm(admin_settings))) as tc:
        assert (await tc.get("/api/admin/cleanup", headers=AUTH)).status_code == 404
        assert 'id="cleanup-panel"' not in (await tc.get("/admin", headers=AUTH)).text


class OwnPanels:
    """An app offering the panels itself: its own outbox folder and cleanup reports."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @hookimpl(optionalhook=True)
    def register_admin_panels(self, settings: Any) -> dict[str, Any]:
        async def reports(services: Any) -> list[dict[str, Any]]:
            return [{**REPORT, "sweeper": "exports", "time": time.time()}]

        return {"outbox": self.folder, "cleanup": reports, "unknown": object()}


async def test_hook_register_admin_panels(admin_settings: Any, tmp_path: Path) -> None:
    """Panels come from the hook; the app, loaded last, is asked first, so its offer wins over the email plugin's."""
    (tmp_path / "hello.eml").write_bytes(b"Subject: From the app\r\nTo: a@example.test\r\n\r\nHi\r\n")
    pm = admin_pm(admin_settings, ("app", OwnPanels(tmp_path)))
    async with AsyncTestClient(create_app(admin_settings, plugin_manager=pm)) as tc:
        [listed] = (await tc.get("/api/admin/outbox", headers=AUTH)).json()
        assert listed["name"] == "hello.eml" and listed["subject"] == "From the app"
        [report] = (await tc.get("/api/admin/cleanup", headers=AUTH)).json()
        assert report["sweeper"] == "exports"
        nav = (await tc.get("/admin", headers=AUTH)).text
        assert 'href="/admin/outbox"' in nav and 'href="/admin/cleanup"' in nav


def test_the_email_and_cleanup_plugins_offer_panels_without_importing_the_admin() -> None:
    import framework_cleanup.hooks
    import framework_email.hooks

    for module in (framework_email.hooks, framework_cleanup.hooks):
        source = Path(module.__file__ or "").read_text(encoding="utf-8")
        assert "framework_admin" not in source
        assert module.register_admin_panels.framework_impl["optionalhook"]  # type: ignore[attr-defined]
