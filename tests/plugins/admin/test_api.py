"""The admin's JSON API against real Valkey: every endpoint, with seeded tasks, and its status codes."""

from __future__ import annotations

from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from structlog.testing import capture_logs

from framework.web.app import create_app
from tests.plugins.admin.conftest import (
    AUTH,
    BLOCK,
    FAILS,
    OK,
    RO_AUTH,
    XSS,
    Job,
    admin_pm,
    login,
    stats,
    wait_for,
)

API = "/api/admin"


async def test_stats_count_every_state_and_queue(seeded: Any) -> None:
    data = await stats(seeded)
    queues = {q["queue"]: q for q in data["queues"]}
    assert set(queues) >= {"default", "parked"}
    d = queues["default"]
    assert (d["completed"], d["archived"], d["retry"], d["scheduled"], d["pending"]) == (2, 1, 1, 1, 0)
    assert queues["parked"]["pending"] == 1
    assert queues["parked"]["latency"] is not None and queues["parked"]["latency"] >= 0
    totals = data["totals"]
    assert totals["completed"] == 2 and totals["archived"] == 1 and totals["pending"] == 1
    assert totals["processed_today"] >= 3 and totals["failed_today"] >= 2
    assert totals["queues"] == len(data["queues"])


async def test_list_by_status_filters_and_pages(seeded: Any) -> None:
    r = await seeded.get(f"{API}/jobs/completed", headers=AUTH)
    assert r.status_code == 200
    body = r.json()
    assert body["total"] == 2 and {t["id"] for t in body["tasks"]} == {"ok-1", "ok-2"}
    assert body["tasks"][0]["result"]["echo"] in {"one", "two"}

    failed = (await seeded.get(f"{API}/jobs/failed", headers=AUTH)).json()
    assert failed["state"] == "archived" and [t["id"] for t in failed["tasks"]] == ["bad-1"]
    task = failed["tasks"][0]
    assert task["payload"]["text"] == XSS and "boom" in task["error"] and task["retried"] == 0

    page1 = (await seeded.get(f"{API}/jobs/completed?page_size=1&page=1", headers=AUTH)).json()
    page2 = (await seeded.get(f"{API}/jobs/completed?page_size=1&page=2", headers=AUTH)).json()
    assert page1["total"] == page2["total"] == 2
    assert {page1["tasks"][0]["id"], page2["tasks"][0]["id"]} == {"ok-1", "ok-2"}

    by_queue = (await seeded.get(f"{API}/jobs/pending?queue=parked", headers=AUTH)).json()
    assert [t["id"] for t in by_queue["tasks"]] == ["park-1"] and by_queue["queue"] == "parked"
    by_type = (await seeded.get(f"{API}/jobs/retry?type=admin-test:later", headers=AUTH)).json()
    assert [t["id"] for t in by_type["tasks"]] == ["later-1"] and by_type["tasks"][0]["next_process_at"]
    none = (await seeded.get(f"{API}/jobs/retry?type=nope", headers=AUTH)).json()
    assert none["total"] == 0 and none["tasks"] == []
    for state in ("active", "scheduled", "archived", "aggregating"):
        assert (await seeded.get(f"{API}/jobs/{state}", headers=AUTH)).status_code == 200

    assert (await seeded.get(f"{API}/jobs/bogus", headers=AUTH)).status_code == 400
    assert (await seeded.get(f"{API}/jobs/pending?queue=nope", headers=AUTH)).status_code == 404
    assert (await seeded.get(f"{API}/jobs/pending?page=0", headers=AUTH)).status_code == 400


async def test_task_detail_with_and_without_queue(seeded: Any, client: Any) -> None:
    r = await seeded.get(f"{API}/tasks/bad-1?queue=default", headers=AUTH)
    assert r.status_code == 200 and r.json()["state"] == "archived" and r.json()["type"] == "admin-test:flaky"
    assert (await seeded.get(f"{API}/tasks/park-1", headers=AUTH)).json()["queue"] == "parked"
    assert (await seeded.get(f"{API}/tasks/nope", headers=AUTH)).status_code == 404
    assert (await seeded.get(f"{API}/tasks/nope?queue=default", headers=AUTH)).status_code == 404
    assert (await seeded.get(f"{API}/tasks/bad-1?queue=nope", headers=AUTH)).status_code == 404
    await client.enqueue(OK, Job(), task_id="park-1", queue="parked2")
    ambiguous = await seeded.get(f"{API}/tasks/park-1", headers=AUTH)
    assert ambiguous.status_code == 409 and "queue" in ambiguous.json()["detail"]


async def test_grit_retry_runs_a_failed_task_to_completion(seeded: Any) -> None:
    FAILS.clear()
    FAILS["bad-1"] = 1
    with capture_logs() as logs:
        r = await seeded.post(f"{API}/jobs/bad-1/retry", headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["action"] == "run" and r.json()["queue"] == "default"
    audit = [e for e in logs if e["event"] == "admin_action"]
    assert audit and audit[0]["actor"] == "token" and audit[0]["task_id"] == "bad-1" and audit[0]["action"] == "run"

    async def completed() -> bool:
        body = (await seeded.get(f"{API}/tasks/bad-1?queue=default", headers=AUTH)).json()
        return bool(body["state"] == "completed")

    await wait_for(completed)
    assert (await seeded.post(f"{API}/jobs/nope/retry", headers=AUTH)).status_code == 404
    conflict = await seeded.post(f"{API}/jobs/park-1/retry", headers=AUTH)  # pending already
    assert conflict.status_code == 409


async def test_grit_clear_queue_deletes_completed_tasks(seeded: Any) -> None:
    r = await seeded.delete(f"{API}/jobs/queue/default", headers=AUTH)
    assert r.status_code == 200 and r.json()["count"] == 2
    d = next(q for q in (await stats(seeded))["queues"] if q["queue"] == "default")
    assert d["completed"] == 0 and d["archived"] == 1
    assert (await seeded.delete(f"{API}/jobs/queue/nope", headers=AUTH)).status_code == 404


async def test_task_actions_archive_delete_and_run(seeded: Any) -> None:
    r = await seeded.post(f"{API}/tasks/sched-1/archive?queue=default", headers=AUTH)
    assert r.status_code == 200
    assert (await seeded.get(f"{API}/tasks/sched-1", headers=AUTH)).json()["state"] == "archived"
    again = await seeded.post(f"{API}/tasks/sched-1/archive", headers=AUTH)
    assert again.status_code == 409
    assert (await seeded.delete(f"{API}/tasks/sched-1", headers=AUTH)).status_code == 200
    assert (await seeded.get(f"{API}/tasks/sched-1", headers=AUTH)).status_code == 404
    assert (await seeded.delete(f"{API}/tasks/sched-1", headers=AUTH)).status_code == 404
    run = await seeded.post(f"{API}/tasks/ok-1/run", headers=AUTH)  # completed -> pending -> runs again
    assert run.status_code == 200
    assert (await seeded.post(f"{API}/tasks/ok-1/explode", headers=AUTH)).status_code == 404
    cancel = await seeded.post(f"{API}/tasks/park-1/cancel", headers=AUTH)
    assert cancel.status_code == 409  # only active tasks can be cancelled


async def test_bulk_actions_per_state(seeded: Any) -> None:
    run = await seeded.post(f"{API}/queues/default/retry/run-all", headers=AUTH)
    assert run.status_code == 200 and run.json()["count"] == 1
    archived = await seeded.post(f"{API}/queues/parked/pending/archive-all", headers=AUTH)
    assert archived.status_code == 200 and archived.json()["count"] == 1
    deleted = await seeded.post(f"{API}/queues/parked/failed/delete-all", headers=AUTH)
    assert deleted.status_code == 200 and deleted.json()["count"] == 1 and deleted.json()["state"] == "archived"
    parked = next(q for q in (await stats(seeded))["queues"] if q["queue"] == "parked")
    assert parked["size"] == 0
    assert (await seeded.post(f"{API}/queues/default/active/delete-all", headers=AUTH)).status_code == 409
    assert (await seeded.post(f"{API}/queues/default/bogus/run-all", headers=AUTH)).status_code == 400
    assert (await seeded.post(f"{API}/queues/default/retry/explode", headers=AUTH)).status_code == 404
    assert (await seeded.post(f"{API}/queues/nope/retry/run-all", headers=AUTH)).status_code == 404


async def test_pause_and_unpause(api: Any, client: Any) -> None:
    await client.enqueue(OK, Job(), task_id="warm", queue="low")
    await wait_for(lambda: _state(api, "warm", "completed"))
    r = await api.post(f"{API}/queues/low/pause", headers=AUTH)
    assert r.status_code == 200 and r.json()["count"] == 1
    assert (await api.post(f"{API}/queues/low/pause", headers=AUTH)).json()["count"] == 0
    await client.enqueue(OK, Job(), task_id="held", queue="low")
    info = (await api.get(f"{API}/queues/low", headers=AUTH)).json()
    assert info["queue"]["paused"] is True and len(info["history"]) == 7
    assert (await _get_state(api, "held")) == "pending"
    assert (await api.post(f"{API}/queues/low/unpause", headers=AUTH)).status_code == 200
    await wait_for(lambda: _state(api, "held", "completed"))
    assert (await api.post(f"{API}/queues/low/explode", headers=AUTH)).status_code == 404
    assert (await api.post(f"{API}/queues/nope/pause", headers=AUTH)).status_code == 404
    assert (await api.get(f"{API}/queues/nope", headers=AUTH)).status_code == 404
    assert (await api.get(f"{API}/queues/low?days=0", headers=AUTH)).status_code == 400
    listed = (await api.get(f"{API}/queues", headers=AUTH)).json()
    assert "low" in {q["queue"] for q in listed}


async def _get_state(api: Any, task_id: str) -> str | None:
    r = await api.get(f"{API}/tasks/{task_id}", headers=AUTH)
    return r.json()["state"] if r.status_code == 200 else None


async def _state(api: Any, task_id: str, want: str) -> bool:
    return await _get_state(api, task_id) == want


async def test_active_task_servers_runs_and_cancel(api: Any, client: Any) -> None:
    await client.enqueue(OK, Job(sleep=0.05), task_id="quick")
    await client.enqueue(BLOCK, Job(sleep=30), task_id="long")
    await wait_for(lambda: _state(api, "long", "active"))

    async def running() -> list[Any]:
        servers = (await api.get(f"{API}/servers", headers=AUTH)).json()
        return [w for s in servers for w in s["tasks"] if w["task_id"] == "long"]

    [worker] = await wait_for(running)
    assert worker["type"] == "admin-test:block" and worker["queue"] == "critical" and worker["elapsed"] >= 0
    await wait_for(lambda: _state(api, "quick", "completed"))

    async def recorded() -> list[Any] | None:  # runs are recorded in batches, a moment after they end
        listed: list[Any] = (await api.get(f"{API}/runs", headers=AUTH)).json()
        return listed if any(r["id"] == "quick" for r in listed) else None

    runs = await wait_for(recorded, timeout=30)
    assert runs[0]["status"] == "active" and runs[0]["id"] == "long"
    quick = next(r for r in runs if r["id"] == "quick")
    # the 0.05 s it slept, in seconds (the upper bound only with room for a loaded machine)
    assert quick["status"] == "succeeded" and 0.04 <= quick["duration"] < 10
    active = (await api.get(f"{API}/jobs/active", headers=AUTH)).json()
    assert [t["id"] for t in active["tasks"]] == ["long"]
    assert (await api.delete(f"{API}/tasks/long", headers=AUTH)).status_code == 409
    cancel = await api.post(f"{API}/tasks/long/cancel", headers=AUTH)
    assert cancel.status_code == 200 and cancel.json()["count"] >= 1

    async def stopped() -> bool:
        return await _get_state(api, "long") in ("retry", "archived")

    await wait_for(stopped)


async def test_throughput_counts_this_minute(seeded: Any) -> None:
    r = await seeded.get(f"{API}/throughput?hours=1", headers=AUTH)
    assert r.status_code == 200
    body = r.json()
    assert len(body["points"]) == 60 and body["processed"] >= 4 and body["failed"] >= 2
    assert body["points"][-1]["processed"] + body["points"][-2]["processed"] >= 1
    one = (await seeded.get(f"{API}/throughput?queue=parked", headers=AUTH)).json()
    assert one["processed"] == 0 and one["queue"] == "parked"
    assert (await seeded.get(f"{API}/throughput?hours=25", headers=AUTH)).status_code == 400


async def test_me_reports_role(api: Any) -> None:
    assert (await api.get(f"{API}/me", headers=AUTH)).json() == {
        "name": "token",
        "role": "admin",
        "via": "bearer",
        "can_act": True,
    }
    assert (await api.get(f"{API}/me", headers=RO_AUTH)).json()["role"] == "readonly"


WRITES = [
    ("post", "/jobs/bad-1/retry"),
    ("delete", "/jobs/queue/default"),
    ("post", "/tasks/bad-1/run"),
    ("post", "/tasks/bad-1/archive"),
    ("post", "/tasks/bad-1/cancel"),
    ("delete", "/tasks/bad-1"),
    ("post", "/queues/default/pause"),
    ("post", "/queues/default/unpause"),
    ("post", "/queues/default/retry/run-all"),
    ("post", "/queues/default/retry/archive-all"),
    ("post", "/queues/default/retry/delete-all"),
]
READS = [
    "/jobs/stats",
    "/jobs/pending",
    "/tasks/bad-1",
    "/queues",
    "/queues/default",
    "/servers",
    "/cron",
    "/cron/x/history",
    "/throughput",
    "/runs",
    "/me",
]


async def test_readonly_token_reads_but_cannot_act(seeded: Any) -> None:
    for path in READS:
        r = await seeded.get(API + path, headers=RO_AUTH)
        assert r.status_code == 200, (path, r.text)
    for method, path in WRITES:
        r = await getattr(seeded, method)(API + path, headers=RO_AUTH)
        assert r.status_code == 403, (method, path, r.text)
        assert "read-only" in r.json()["detail"]
    assert (await stats(seeded))["totals"]["archived"] == 1  # nothing changed


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}])
async def test_no_valid_credential_gets_401(admin_settings: Any, headers: dict[str, str]) -> None:
    settings = admin_settings.replace(plugins={"admin": {"failed_auth_limit": 0}})  # the limit: test_auth.py
    async with AsyncTestClient(create_app(settings, plugin_manager=admin_pm(settings))) as api:
        for path in [*READS, "/outbox", "/cleanup"]:
            r = await api.get(API + path, headers=headers)
            assert r.status_code == 401, path
            assert r.headers["www-authenticate"].startswith("Bearer")
        for method, path in WRITES:
            assert (await getattr(api, method)(API + path, headers=headers)).status_code == 401
        assert (await api.get("/metrics", headers=headers)).status_code == 401


async def test_session_cookie_without_csrf_token_cannot_act(api: Any) -> None:

    await login(api)
    assert (await api.get(f"{API}/jobs/stats")).status_code == 200  # the cookie opens the API
    refused = await api.post(f"{API}/queues/default/pause")
    assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
    csrf = api.cookies.get("framework_admin_csrf")
    allowed = await api.post(f"{API}/queues/default/unpause", headers={"X-CSRF-Token": csrf})
    assert allowed.status_code in (200, 404)  # 404: no task ever made "default" a queue


async def test_openapi_documents_the_api(api: Any) -> None:
    response = await api.get("/schema/openapi.json", headers=AUTH)
    assert response.status_code == 200
    schema = response.json()
    paths = schema["paths"]
    for path in ("/api/admin/jobs/stats", "/api/admin/jobs/{status}", "/api/admin/jobs/{task_id}/retry"):
        assert path in paths
    assert "delete" in paths["/api/admin/jobs/queue/{queue}"]
    assert not any(p.startswith("/admin") for p in paths)


async def test_cron_entries_with_last_and_next_run_and_history(admin_settings: Any) -> None:
    from litestar.testing import AsyncTestClient

    from framework.settings import CronEntrySettings
    from framework.web.app import create_app
    from tests.plugins.admin.conftest import admin_pm

    entry = CronEntrySettings(name="tick", spec="@every 1s", task="admin-test:ok", payload={"text": "<tick>"})
    settings = admin_settings.replace(cron=[entry])
    app = create_app(settings, plugin_manager=admin_pm(settings), run_worker=True, run_scheduler=True)
    async with AsyncTestClient(app) as tc:

        async def fired() -> list[Any]:
            entries = (await tc.get(f"{API}/cron?history=5", headers=AUTH)).json()
            return [e for e in entries if e["history"]]

        [cron] = await wait_for(fired)
        assert cron["task_type"] == "admin-test:ok" and cron["payload"]["text"] == "<tick>"
        assert cron["last_run"] and cron["next_run"]
        history = (await tc.get(f"{API}/cron/{cron['id']}/history?page_size=5", headers=AUTH)).json()
        assert history and history[0]["task_id"] == cron["history"][0]["task_id"]
        assert (await tc.get(f"{API}/cron/{cron['id']}/history?page=0", headers=AUTH)).status_code == 400
        page = await tc.get("/admin/cron", headers=AUTH)
        assert page.status_code == 200 and "admin-test:ok" in page.text and "&lt;tick&gt;" in page.text
        assert history[0]["task_id"] in page.text
