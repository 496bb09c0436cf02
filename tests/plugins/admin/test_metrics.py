"""The Prometheus endpoint: real counters through the inspector, behind the admin's rules or its own token."""

from __future__ import annotations

from typing import Any

from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families

from framework.web.app import create_app
from tests.plugins.admin.conftest import AUTH, RO_AUTH, admin_pm


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics_expose_queue_sizes_totals_latency_and_servers(seeded: Any) -> None:
    r = await seeded.get("/metrics", headers=AUTH)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    m = samples(r.text)
    tasks = "framework_queue_tasks"
    assert m[(tasks, (("queue", "default"), ("state", "completed")))] == 2
    assert m[(tasks, (("queue", "default"), ("state", "archived")))] == 1
    assert m[(tasks, (("queue", "default"), ("state", "retry")))] == 1
    assert m[(tasks, (("queue", "parked"), ("state", "pending")))] == 1
    assert m[("framework_queue_size", (("queue", "parked"),))] == 1
    assert m[("framework_queue_latency_seconds", (("queue", "parked"),))] > 0
    assert m[("framework_queue_paused", (("queue", "default"),))] == 0
    assert m[("framework_tasks_processed_total", (("queue", "default"),))] >= 4
    assert m[("framework_tasks_failed_total", (("queue", "default"),))] >= 2
    assert m[("framework_servers", ())] >= 1
    assert m[("framework_worker_slots", (("state", "total"),))] >= 10
    assert (await seeded.get("/metrics", headers=RO_AUTH)).status_code == 200
    assert (await seeded.get("/metrics")).status_code == 401


async def test_metrics_token_opens_only_the_metrics(admin_settings: Any) -> None:
    settings = admin_settings.replace(plugins={"admin": {"metrics_token": "scrape-token-0123456789"}})
    app = create_app(settings, plugin_manager=admin_pm(settings))
    async with AsyncTestClient(app) as tc:
        scrape = {"Authorization": "Bearer scrape-token-0123456789"}
        assert (await tc.get("/metrics", headers=scrape)).status_code == 200
        assert (await tc.get("/api/admin/jobs/stats", headers=scrape)).status_code == 401
        assert (await tc.get("/metrics", headers={"Authorization": "Bearer wrong"})).status_code == 401


async def test_metrics_only_deployment_and_no_metrics(admin_settings: Any) -> None:
    only = admin_settings.replace(
        env="production", admin_token=None, admin_readonly_token=None, plugins={"admin": {"metrics_token": "m" * 24}}
    )
    app = create_app(only, plugin_manager=admin_pm(only))
    async with AsyncTestClient(app) as tc:
        assert (await tc.get("/metrics", headers={"Authorization": "Bearer " + "m" * 24})).status_code == 200
        assert (await tc.get("/metrics")).status_code == 401
        assert (await tc.get("/api/admin/jobs/stats")).status_code == 403
    off = admin_settings.replace(plugins={"admin": {"metrics_path": ""}})
    app = create_app(off, plugin_manager=admin_pm(off))
    async with AsyncTestClient(app) as tc:
        assert (await tc.get("/metrics", headers=AUTH)).status_code == 404
