"""The Prometheus endpoint: real counters through the inspector, behind the admin's rules or its own token."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families

from framework.limits import Limit
from framework.task import TaskDef
from framework.web.app import create_app
from tests.plugins.admin.conftest import AUTH, RO_AUTH, admin_pm, wait_for


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


class _Call(msgspec.Struct, frozen=True):
    n: int = 0


async def test_metrics_expose_each_limit_in_use_waiting_and_counters(
    admin_settings: Any, start: Any, client: Any
) -> None:
    gate = asyncio.Event()

    async def gated(ctx: Any, p: _Call) -> None:
        await gate.wait()

    task = TaskDef("metrics:capped", _Call, gated, limit=Limit(concurrency=1, name="capped"))
    await start(task)
    for n in range(3):
        await client.enqueue(task, _Call(n))
    app = create_app(admin_settings, plugin_manager=admin_pm(admin_settings))
    async with AsyncTestClient(app) as tc:

        async def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
            r = await tc.get("/metrics", headers=AUTH)
            assert r.status_code == 200
            return samples(r.text)

        async def held() -> bool:
            m = await scrape()
            return m.get(("framework_limit_in_use", (("limit", "capped"),))) == 1 and (
                m.get(("framework_limit_waiting", (("limit", "capped"),))) == 2
            )

        await wait_for(held)
        m = await scrape()
        assert m[("framework_limit_started_total", (("limit", "capped"),))] == 1
        assert m[("framework_limit_parked_total", (("limit", "capped"),))] == 2
        assert m[("framework_limit_delayed_total", (("limit", "capped"),))] == 0
        gate.set()

        async def drained() -> bool:
            m = await scrape()
            return (
                m[("framework_limit_in_use", (("limit", "capped"),))],
                m[("framework_limit_waiting", (("limit", "capped"),))],
                m[("framework_limit_started_total", (("limit", "capped"),))],
            ) == (0, 0, 3)

        await wait_for(drained)
