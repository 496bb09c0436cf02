"""Task progress on the dashboard, in Chromium: the task page and the servers page follow it live."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from framework import hookimpl
from framework.task import TaskDef
from framework.web.app import create_app
from tests.plugins.admin.conftest import Job, admin_pm
from tests.plugins.admin.server import LiveServer
from tests.plugins.admin.test_browser import enqueue, sign_in

STEPS = ("fetching", "resizing", "uploading", "done")


async def _steps(ctx: Any, p: Job) -> None:
    for i, step in enumerate(STEPS, 1):
        await asyncio.sleep(p.sleep)
        await ctx.progress(i / len(STEPS), step)
    await asyncio.sleep(p.sleep)


STEPPED = TaskDef("admin-test:stepped", Job, _steps, queue="default", retention=3600)


class SteppedTasks:
    """A plugin contributing the task that reports its progress."""

    @hookimpl
    def register_task_types(self, settings: Any) -> list[Any]:
        return [STEPPED]


@pytest.fixture
def live_progress(admin_settings: Any) -> Iterator[LiveServer]:
    """The app with its worker and the stepped task; the dashboard refreshes every half second."""
    settings = admin_settings.replace(plugins={"admin": {"refresh_seconds": 0.5}})
    pm = admin_pm(settings, ("stepped_tasks", SteppedTasks()))
    server = LiveServer(create_app(settings, plugin_manager=pm, run_worker=True)).start()
    try:
        yield server
    finally:
        server.stop()


def test_the_task_page_and_the_servers_page_show_progress_live(
    page: Page, live_progress: LiveServer, page_errors: list[str]
) -> None:
    live = live_progress
    sign_in(page, live)
    task_id = enqueue(live, STEPPED, Job(sleep=1.5), task_id="stepped")
    page.goto(f"{live.url}/admin/tasks/default/{task_id}")
    box = page.locator("#task-progress")
    expect(box).to_be_visible(timeout=10_000)
    expect(page.locator("#task-progress-message")).to_have_text("resizing", timeout=10_000)  # refreshed in place
    expect(page.locator("#task-progress-percent")).to_have_text("50%")
    expect(page.locator("#task-state")).to_have_attribute("data-state", "completed", timeout=15_000)
    expect(page.locator("#task-progress-percent")).to_have_text("100%")
    expect(page.locator("#task-progress-message")).to_have_text("done")
    expect(page.locator("#task-progress-meta")).to_contain_text("ended")
    assert page.locator("#task-progress-bar").evaluate("el => el.value") == 1

    enqueue(live, STEPPED, Job(sleep=2.0), task_id="stepped-2")
    page.goto(f"{live.url}/admin/servers")
    cell = page.locator('#server-list tr[data-id="stepped-2"] td[data-label="Progress"]')
    expect(cell).to_contain_text("25% fetching", timeout=10_000)
    expect(cell).to_contain_text("50% resizing", timeout=10_000)  # the page refreshed itself
    assert page_errors == []
