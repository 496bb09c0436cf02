"""Uploads whose ``image:process`` task is archived end ``failed``, whatever archived it.

A real app (the uploads route) is served on real storage and real Valkey; a real worker with the images
plugin loaded runs the task. An unexpected error is made by storing an object *under* a thumbnail's key,
so the local store refuses the thumbnail (a failure the handler does not recognise).
"""

from __future__ import annotations

import asyncio
import io
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import structlog
from framework_images import hooks
from framework_images.archived import ARCHIVED_WITHOUT_ERROR, TASK_GONE
from framework_images.storage import read_record
from framework_images.tasks import PROCESS_IMAGE
from PIL import Image

from framework.context import TaskContext
from framework.inspector import Inspector
from framework.plugins.manager import get_plugin_manager
from framework.web.app import create_app
from tests.fixtures.web import serve

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from redis.asyncio import Redis

    from framework.protocol.keys import Schema
    from framework.settings import Settings

QUEUE = "default"


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


async def until(check: Callable[[], Awaitable[Any]], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Setup:
    def __init__(self, settings: Settings, http: httpx.AsyncClient, inspector: Inspector, start: Any) -> None:
        self.settings = settings
        self.http = http
        self.inspector = inspector
        self._start = start

    async def upload(self) -> str:
        created = await self.http.post("/uploads/", files={"file": ("photo.png", _png(), "image/png")})
        assert created.status_code == 202, created.text
        return str(created.json()["id"])

    async def status(self, upload_id: str) -> dict[str, Any]:
        response = await self.http.get(f"/uploads/{upload_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def task_state(self, upload_id: str) -> str:
        return str((await self.inspector.get_task(QUEUE, upload_id)).state)

    async def worker(self, retry_delay: float) -> None:
        pm = get_plugin_manager(self.settings)
        await self._start(settings=self.settings, plugin_manager=pm, retry_delay=lambda _n, _e: retry_delay)


@pytest.fixture
async def images(
    settings: Settings, redis: Redis, schema: Schema, start: Any, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Setup, Any]]:
    monkeypatch.setenv("FRAMEWORK_LOAD_PLUGINS", "images")
    settings = settings.replace(plugins={"images": {"sizes": {"small": 32}}})
    app = create_app(settings)
    async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
        setup = Setup(settings, http, Inspector(redis, schema), start)
        yield setup, app


def storage_of(app: Any) -> Any:
    return app.state.framework_services.storage


async def block_thumbnail(storage: Any, upload_id: str) -> None:
    """Store an object under ``uploads/<id>/small.webp/``: the local store then refuses the thumbnail itself."""
    await storage.put(f"uploads/{upload_id}/small.webp/blocker", b"x")


async def test_retries_exhausted_on_an_unexpected_error_mark_the_upload_failed(
    images: tuple[Setup, Any],
) -> None:
    setup, app = images
    storage = storage_of(app)
    upload_id = await setup.upload()
    await block_thumbnail(storage, upload_id)
    await setup.worker(retry_delay=0.0)

    async def archived_record() -> Any:
        record = await read_record(storage, upload_id)
        return record if record is not None and record.state != "processing" else None

    record = await until(archived_record, "the record to leave 'processing'")
    task = await setup.inspector.get_task(QUEUE, upload_id)
    assert str(task.state) == "archived" and task.retried == task.max_retry == 2
    assert record.state == "failed"
    assert record.error == task.error and record.error.startswith("InvalidKey: "), record.error
    assert (record.thumbnails, record.filename, record.task_id) == ([], "photo.png", upload_id)
    status = await setup.status(upload_id)
    assert (status["state"], status["error"], status["original"]) == ("failed", task.error, "")
    assert (status["thumbnails"], status["files"]) == ({}, [])


@pytest.mark.parametrize("action", ["archive", "delete"])
async def test_a_task_archived_or_deleted_while_it_waits_is_reported_failed(
    images: tuple[Setup, Any], action: str
) -> None:
    setup, app = images
    upload_id = await setup.upload()  # no worker runs: the task waits
    assert (await setup.status(upload_id))["state"] == "processing"
    if action == "archive":
        await setup.inspector.archive_task(QUEUE, upload_id)
    else:
        await setup.inspector.delete_task(QUEUE, upload_id)
    status = await setup.status(upload_id)
    want = ARCHIVED_WITHOUT_ERROR if action == "archive" else TASK_GONE
    assert (status["state"], status["error"], status["original"]) == ("failed", want, "")
    record = await read_record(storage_of(app), upload_id)  # written back
    assert record is not None and (record.state, record.error) == ("failed", want)


async def test_success_after_one_failure_ends_done(images: tuple[Setup, Any]) -> None:
    setup, app = images
    storage = storage_of(app)
    upload_id = await setup.upload()
    await block_thumbnail(storage, upload_id)
    await setup.worker(retry_delay=3600.0)

    async def retrying() -> bool:
        return await setup.task_state(upload_id) == "retry"

    await until(retrying, "the first failure")
    assert (await setup.status(upload_id))["state"] == "processing"
    await storage.delete(f"uploads/{upload_id}/small.webp/blocker")
    await setup.inspector.run_task(QUEUE, upload_id)

    async def finished() -> dict[str, Any] | None:
        status = await setup.status(upload_id)
        return status if status["state"] != "processing" else None

    status = await until(finished, "the retry to finish")
    assert status["state"] == "done", status
    assert set(status["thumbnails"]) == {"small"}
    record = await read_record(storage, upload_id)
    assert record is not None and (record.state, record.error) == ("done", None)
    assert (await setup.status(upload_id))["state"] == "done"  # its task is gone (done): the record stands


async def test_a_rejection_keeps_the_handlers_reason(images: tuple[Setup, Any]) -> None:
    """The hook fires for the handler's own ``SkipRetry`` too: the failed record it wrote is not replaced."""
    setup, app = images
    storage = storage_of(app)
    created = await setup.http.post("/uploads/", files={"file": ("cut.png", _png()[:60], "image/png")})
    assert created.status_code == 202, created.text
    upload_id = created.json()["id"]
    await setup.worker(retry_delay=0.0)

    async def archived() -> bool:
        return await setup.task_state(upload_id) == "archived"

    await until(archived, "the rejection")
    task = await setup.inspector.get_task(QUEUE, upload_id)
    assert task.error.startswith("SkipRetry: ")
    status = await setup.status(upload_id)
    assert status["state"] == "failed"
    assert status["error"] == task.error.removeprefix("SkipRetry: "), status
    record = await read_record(storage, upload_id)
    assert record is not None and record.error == status["error"]


async def test_a_store_down_through_every_retry_is_reported_failed_once_it_is_back(images: tuple[Setup, Any]) -> None:
    """Every write fails (the thumbnails, then the hook's record): the route reconciles once the store is back."""
    setup, app = images
    storage = storage_of(app)
    upload_id = await setup.upload()
    tmp = storage.root / ".local-storage" / "tmp"
    tmp.rmdir()
    tmp.write_bytes(b"")  # every put now fails; reads still work
    await setup.worker(retry_delay=0.0)

    async def archived() -> bool:
        return await setup.task_state(upload_id) == "archived"

    await until(archived, "the retries to run out")
    task = await setup.inspector.get_task(QUEUE, upload_id)
    assert task.error.startswith("StorageUnavailable: "), task.error
    tmp.unlink()  # the store is back
    status = await setup.status(upload_id)
    assert (status["state"], status["error"]) == ("failed", task.error)
    record = await read_record(storage, upload_id)
    assert record is not None and (record.state, record.error) == ("failed", task.error)


async def test_a_late_archive_never_replaces_a_finished_record(images: tuple[Setup, Any]) -> None:
    """The hook fires for an upload already ``done`` (a handler that finished after the worker gave up on it)."""
    setup, app = images
    storage = storage_of(app)
    upload_id = await setup.upload()
    await setup.worker(retry_delay=0.0)

    async def done() -> bool:
        return (await setup.status(upload_id))["state"] == "done"

    await until(done, "the thumbnails")
    before = await read_record(storage, upload_id)
    services = app.state.framework_services
    ctx = TaskContext(
        id=upload_id,
        type=PROCESS_IMAGE,
        queue=QUEUE,
        retried=2,
        max_retry=2,
        deadline=time.time() + 60,
        headers={},
        logger=structlog.get_logger("test"),
        services=services,
    )
    await hooks.task_archived(ctx, MemoryError())
    assert await read_record(storage, upload_id) == before
    assert (await setup.status(upload_id))["state"] == "done"
