"""The dashboard's pages and forms: sign-in, sessions, CSRF, read-only users, escaping, actions with messages."""

from __future__ import annotations

import re
from typing import Any

from tests.plugins.admin.conftest import AUTH, READONLY, TOKEN, csrf_of, login, stats

ADMIN = "/admin"


async def test_pages_redirect_to_login_and_the_form_signs_in(api: Any) -> None:
    r = await api.get(f"{ADMIN}/jobs/failed?queue=default", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"].startswith(f"{ADMIN}/login?next_path=")
    page = await api.get(r.headers["location"])
    assert 'name="next" value="/admin/jobs/failed?queue=default"' in page.text
    csrf = csrf_of(page.text)
    no_csrf = await api.post(f"{ADMIN}/login", data={"token": TOKEN}, follow_redirects=False)
    assert no_csrf.status_code == 403
    wrong = await api.post(f"{ADMIN}/login", data={"token": "nope", "_csrf": csrf}, follow_redirects=False)
    assert wrong.status_code == 401 and "not valid" in wrong.text
    ok = await api.post(
        f"{ADMIN}/login",
        data={"token": TOKEN, "_csrf": csrf, "name": "Ada <b>", "next": "https://evil.example/"},
        follow_redirects=False,
    )
    assert ok.status_code == 303 and ok.headers["location"] == ADMIN  # no open redirect
    cookie = ok.headers["set-cookie"]
    assert "framework_admin_session=v1." in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    home = await api.get(ADMIN)
    assert home.status_code == 200 and "Overview" in home.text
    assert "Ada b" in home.text and "<b>" not in home.text.split("who-name")[1][:40]
    assert home.headers["content-security-policy"].startswith("default-src 'none'; script-src 'self'")
    assert home.headers["x-frame-options"] == "DENY"


async def test_tampered_or_stale_sessions_are_refused(api: Any) -> None:
    await login(api)
    value = api.cookies.get("framework_admin_session")
    version, payload, signature = value.split(".")
    forged = f"{version}.{payload}.{'A' * len(signature)}"
    api.cookies.set("framework_admin_session", forged)
    assert (await api.get(ADMIN, follow_redirects=False)).status_code == 303
    api.cookies.set("framework_admin_session", "garbage")
    assert (await api.get(f"{ADMIN}/servers", follow_redirects=False)).status_code == 303


async def test_readonly_session_cannot_forge_an_admin_one(api: Any) -> None:
    import base64
    import json

    from framework_admin.session import sign_session

    forged = sign_session("admin", "mallory", READONLY, 4_000_000_000)
    api.cookies.set("framework_admin_session", forged)
    assert (await api.get(ADMIN, follow_redirects=False)).status_code == 303
    # and a read-only session edited to say "admin" no longer verifies
    good = sign_session("readonly", "viewer", READONLY, 4_000_000_000)
    version, payload, signature = good.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=="))
    body["r"] = "admin"
    edited = base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")
    api.cookies.set("framework_admin_session", f"{version}.{edited}.{signature}")
    assert (await api.get(ADMIN, follow_redirects=False)).status_code == 303


async def test_overview_shows_queues_failed_tasks_as_text(seeded: Any) -> None:
    await login(seeded)
    page = (await seeded.get(ADMIN)).text
    for part in (
        'data-queue="default"',
        'data-queue="parked"',
        'id="chart"',
        'id="runs"',
        'id="failed"',
        'id="servers"',
    ):
        assert part in page
    assert "<script>window.__pwned" not in page  # the payload is escaped, never markup
    assert "&lt;script&gt;window.__pwned" in page
    assert 'data-id="bad-1"' in page and "/admin/task/run?queue=default&amp;id=bad-1" in page
    assert page.count("<script") == 1  # only the dashboard's own script
    assert re.search(r'<script src="/static/admin/admin/admin.js" defer></script>', page)
    js = await seeded.get("/static/admin/admin/admin.js")
    assert js.status_code == 200 and "innerHTML" not in js.text and "textContent" in js.text
    assert (await seeded.get("/static/admin/admin/admin.css")).status_code == 200


async def test_every_page_renders(seeded: Any) -> None:
    await login(seeded)
    for path in (
        "",
        "/jobs/pending",
        "/jobs/failed?queue=default",
        "/jobs/retry?type=admin-test:later",
        "/jobs/completed?page=2",
        "/queues/default",
        "/tasks/default/bad-1",
        "/task?queue=default&id=bad-1",
        "/servers",
        "/cron",
        "/outbox",
    ):
        r = await seeded.get(ADMIN + path)
        assert r.status_code == 200, (path, r.text[:500])
        assert "&lt;script&gt;" in r.text or "bad-1" not in r.text
    task = (await seeded.get(f"{ADMIN}/tasks/default/bad-1")).text
    assert "RuntimeError" in task or "boom" in task
    assert "&lt;img src=x onerror=" in task
    missing = await seeded.get(f"{ADMIN}/tasks/default/nope")
    assert missing.status_code == 404 and "Not found" in missing.text
    assert (await seeded.get(f"{ADMIN}/queues/nope")).status_code == 404
    assert (await seeded.get(f"{ADMIN}/jobs/bogus")).status_code == 400
    assert (await seeded.get(f"{ADMIN}/cleanup")).status_code == 404  # the cleanup plugin is not loaded


async def test_form_actions_need_csrf_and_redirect_with_a_message(seeded: Any) -> None:
    csrf = await login(seeded)
    url = f"{ADMIN}/tasks/default/later-1/archive"
    refused = await seeded.post(url, data={"next": f"{ADMIN}/jobs/retry"}, follow_redirects=False)
    assert refused.status_code == 403 and "CSRF" in refused.text
    wrong = await seeded.post(url, data={"_csrf": "x" * 43}, follow_redirects=False)
    assert wrong.status_code == 403
    ok = await seeded.post(url, data={"_csrf": csrf, "next": f"{ADMIN}/jobs/retry"}, follow_redirects=False)
    assert ok.status_code == 303 and ok.headers["location"] == f"{ADMIN}/jobs/retry"
    page = await seeded.get(ok.headers["location"])
    assert 'id="flash"' in page.text and "archived" in page.text
    assert 'id="flash"' not in (await seeded.get(f"{ADMIN}/jobs/retry")).text  # shown once
    again = await seeded.post(url, data={"_csrf": csrf}, follow_redirects=False)
    assert again.status_code == 303 and again.headers["location"] == f"{ADMIN}/task?queue=default&id=later-1"
    assert "flash-error" in (await seeded.get(again.headers["location"])).text
    header = await seeded.post(
        f"{ADMIN}/queues/parked/pending/delete-all", headers={"X-CSRF-Token": csrf}, follow_redirects=False
    )
    assert header.status_code == 303
    pause = await seeded.post(f"{ADMIN}/queues/default/pause", data={"_csrf": csrf}, follow_redirects=False)
    assert pause.status_code == 303
    data = await stats(seeded)
    queues = {q["queue"]: q for q in data["queues"]}
    assert queues["parked"]["pending"] == 0 and queues["default"]["paused"] is True
    assert queues["default"]["archived"] == 2


async def test_readonly_session_sees_pages_without_actions(seeded: Any) -> None:
    csrf = await login(seeded, READONLY, name="viewer")
    page = await seeded.get(ADMIN)
    assert page.status_code == 200 and 'data-can-act="false"' in page.text
    assert "/admin/task/run?" not in page.text and "role-readonly" in page.text
    r = await seeded.post(f"{ADMIN}/tasks/default/bad-1/run", data={"_csrf": csrf}, follow_redirects=False)
    assert r.status_code == 403 and "read-only" in r.text
    assert (await stats(seeded))["totals"]["archived"] == 1


async def test_sign_out_ends_the_session(api: Any) -> None:
    csrf = await login(api)
    r = await api.post(f"{ADMIN}/logout", data={"_csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"{ADMIN}/login"
    api.cookies.delete("framework_admin_session")
    assert (await api.get(ADMIN, follow_redirects=False)).status_code == 303
    assert (await api.get(ADMIN, headers=AUTH)).status_code == 200  # a bearer token opens the pages too
