"""The overview's failed tasks are the latest failures, across queues, not the oldest ones (real Valkey)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from framework.broker.broker import RedisBroker
from framework.clock import SimulatedClock, SystemClock
from framework.inspector import Inspector
from framework.protocol.message import encode_message, new_message
from tests.plugins.admin.conftest import AUTH, login

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from framework.protocol.keys import Schema

API = "/api/admin"
T0 = 1_800_000_000.0


async def _fail(redis: Redis, schema: Schema, queue: str, task_id: str, at: float) -> None:
    """Put a task in ``queue`` that failed at ``at``, and archive it then (as a worker giving up on it would)."""
    msg = new_message(type="latest:task", payload=b"{}", id=task_id, queue=queue, retry=0, timeout=60, deadline=0)
    msg.error_msg, msg.last_failed_at = "boom", int(at)
    assert await RedisBroker(redis, schema, SystemClock(), wakeup=False).enqueue(queue, task_id, encode_message(msg))
    await Inspector(redis, schema, clock=SimulatedClock(at)).archive_task(queue, task_id)


async def test_the_overview_shows_the_latest_failures_across_queues(api: Any, redis: Redis, schema: Schema) -> None:
    for i in range(12):  # an old burst of failures in one queue ...
        await _fail(redis, schema, "a-old", f"old-{i:02}", T0 + i)
    for i in range(3):  # ... then the latest ones, in a queue named after it
        await _fail(redis, schema, "b-new", f"new-{i}", T0 + 1000 + i)
    await _fail(redis, schema, "a-old", "old-latest", T0 + 2000)  # and the very latest back in the first
    latest = ["old-latest", "new-2", "new-1", "new-0", *(f"old-{i:02}" for i in range(11, 5, -1))]
    await login(api)

    page = await api.get(f"{API}/jobs/archived", params={"page_size": 10, "newest": "true"}, headers=AUTH)
    assert page.status_code == 200, page.text[:300]
    assert [t["id"] for t in page.json()["tasks"]] == latest
    assert page.json()["total"] == 16
    second = await api.get(f"{API}/jobs/archived", params={"page_size": 10, "page": 2, "newest": "true"}, headers=AUTH)
    assert [t["id"] for t in second.json()["tasks"]] == [f"old-{i:02}" for i in range(5, -1, -1)]
    one = await api.get(f"{API}/jobs/failed", params={"queue": "a-old", "page_size": 3, "newest": "true"}, headers=AUTH)
    assert [t["id"] for t in one.json()["tasks"]] == ["old-latest", "old-11", "old-10"]
    typed = await api.get(
        f"{API}/jobs/archived", params={"type": "latest:task", "page_size": 2, "newest": "true"}, headers=AUTH
    )
    assert [t["id"] for t in typed.json()["tasks"]] == ["old-latest", "new-2"]
    oldest = await api.get(f"{API}/jobs/archived", params={"page_size": 2}, headers=AUTH)  # the default order
    assert [t["id"] for t in oldest.json()["tasks"]] == ["old-00", "old-01"]
    far = await api.get(f"{API}/jobs/archived", params={"page_size": 100, "page": 11, "newest": "true"}, headers=AUTH)
    assert far.status_code == 400 and "newest first" in far.text

    overview = await api.get("/admin")
    assert overview.status_code == 200
    panel = overview.text.split('id="failed"', 1)[1].split("</table>", 1)[0]
    assert re.findall(r'data-id="([^"]+)"', panel) == latest


async def test_the_inspector_lists_pending_tasks_last_first(redis: Redis, schema: Schema) -> None:
    broker = RedisBroker(redis, schema, SystemClock(), wakeup=False)
    for i in range(5):
        msg = new_message(type="latest:task", payload=b"{}", id=f"p{i}", queue="lifo", retry=0, timeout=60, deadline=0)
        await broker.enqueue("lifo", f"p{i}", encode_message(msg))
    inspector = Inspector(redis, schema)
    assert [t.id for t in (await inspector.list_tasks("lifo", "pending", size=2)).tasks] == ["p0", "p1"]
    last = await inspector.list_tasks("lifo", "pending", size=2, page=1, reverse=True)
    assert [t.id for t in last.tasks] == ["p4", "p3"]
    assert [t.id for t in (await inspector.list_tasks("lifo", "pending", size=2, page=3, reverse=True)).tasks] == ["p0"]
