"""An upload whose processing task is still queued is waiting, not abandoned, however old it is.

Through the images plugin's real upload route (no worker runs, as when workers are down over a weekend):
the uploads sweeper keeps the upload while its ``image:process`` task is pending, and removes it once
that task has been archived without processing it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import httpx
from framework_cleanup.sweepers import run_sweeper
from framework_images.storage import read_record
from framework_images.tasks import PROCESS_IMAGE

from framework.inspector import Inspector
from framework.web.app import create_app
from tests.fixtures.web import serve
from tests.plugins.cleanup.conftest import builtin

if TYPE_CHECKING:
    from tests.plugins.cleanup.conftest import Store

DAY = 86400.0
PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"
    b"\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00\x00\x00IEND\xaeB`\x82"
)


async def test_an_upload_waiting_for_its_task_is_kept_until_it_is_gone(local_store: Store, monkeypatch: Any) -> None:
    monkeypatch.setenv("FRAMEWORK_LOAD_PLUGINS", "images,cleanup")
    services = local_store.services
    app = create_app(services.settings, run_worker=False)
    async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
        created = await http.post("/uploads/", files={"file": ("dot.png", PNG, "image/png")})
        assert created.status_code == 202, created.text
    upload_id = created.json()["id"]
    record = await read_record(services.storage, upload_id)
    assert record is not None
    assert (record.state, record.task_id, record.queue) == ("processing", upload_id, "default")
    inspector = Inspector(services.redis, services.schema)
    task = await inspector.get_task(record.queue, record.task_id)
    assert (task.type, task.state) == (PROCESS_IMAGE, "pending")
    folder = f"uploads/{upload_id}/"
    stored = await local_store.keys(folder)
    assert len(stored) == 2  # the original and the record

    sweeper = builtin(services.settings, "uploads")
    later = time.time() + 3 * DAY  # far past abandoned_after, and every object older than the grace period
    report = await run_sweeper(services, sweeper, now=later)
    assert (report.removed, report.errors) == (0, [])
    assert await local_store.keys(folder) == stored

    await inspector.archive_task(record.queue, record.task_id)  # given up on: nothing will process it
    report = await run_sweeper(services, sweeper, now=later)
    assert (report.removed, report.errors) == (2, [])
    assert await local_store.keys(folder) == set()
