"""Task limits on the dashboard, in Chromium: a capped type's slot in use and its waiting tasks, then draining.

The Limits page is rendered on the server, so the test reloads it to see a limit change; the overview's
"Throttled" tile is refreshed in place from the JSON API.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import pytest
from playwright.sync_api import Page, expect

from framework import hookimpl
from framework.limits import Limit
from framework.task import TaskDef
from framework.web.app import create_app
from tests.plugins.admin.conftest import admin_pm
from tests.plugins.admin.server import LiveServer
from tests.plugins.admin.test_browser import sign_in


class Call(msgspec.Struct, frozen=True, kw_only=True):
    n: int = 0


GATES: dict[str, asyncio.Event] = {}
"""The gate the limited handler waits for (made on the server's loop, opened by the test)."""


async def _gated(ctx: Any, p: Call) -> None:
    await GATES.setdefault("gate", asyncio.Event()).wait()


ONE_SLOT = TaskDef("admin-lim:one", Call, _gated, limit=Limit(concurrency=1, name="one-slot"))


class LimitedTasks:
    """A plugin contributing the limited test task."""

    @hookimpl
    def register_task_types(self, settings: Any) -> list[Any]:
        return [ONE_SLOT]


@pytest.fixture
def live_lim(admin_settings: Any) -> Iterator[LiveServer]:
    """The app with its worker and the limited task; the dashboard refreshes every half second."""
    GATES.clear()
    settings = admin_settings.replace(plugins={"admin": {"refresh_seconds": 0.5}})
    pm = admin_pm(settings, ("lim_tasks", LimitedTasks()))
    server = LiveServer(create_app(settings, plugin_manager=pm, run_worker=True)).start()
    try:
        yield server
    finally:
        _open_gate(server)
        server.stop()


def _open_gate(live: LiveServer) -> None:
    async def work(services: Any) -> None:
        GATES.setdefault("gate", asyncio.Event()).set()

    live.call(work)


def _enqueue(live: LiveServer, count: int) -> None:
    async def work(services: Any) -> None:
        for n in range(count):
            await ONE_SLOT.enqueue(services.client, Call(n=n))

    live.call(work)


def _reload_until(page: Page, seen: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not seen():
        assert time.monotonic() < deadline, "the Limits page did not show it in time"
        time.sleep(0.2)
        page.reload()


def test_the_limits_page_shows_a_slot_in_use_and_tasks_waiting_then_draining(
    page: Page, live_lim: LiveServer, page_errors: list[str]
) -> None:
    live = live_lim
    sign_in(page, live)
    _enqueue(live, 3)
    # the overview counts the tasks the limit holds back, refreshed in place
    expect(page.locator('#throttled-tile [data-total="throttled"]')).to_have_text("2", timeout=10_000)
    page.click('nav a:text("Limits")')
    expect(page).to_have_url(f"{live.url}/admin/limits")
    row = page.locator('#limits tr[data-limit="one-slot"]')

    def cell(field: str) -> str:
        return row.locator(f'[data-field="{field}"]').inner_text().strip()

    _reload_until(page, lambda: cell("in_use") == "1/1" and cell("waiting") == "2")
    assert row.locator("meter").get_attribute("value") == "1"
    assert row.locator("meter").get_attribute("max") == "1"
    expect(row).to_contain_text("admin-lim:one")
    assert int(cell("parked")) >= 2

    _open_gate(live)
    _reload_until(page, lambda: (cell("in_use"), cell("waiting"), cell("started")) == ("0/1", "0", "3"))
    expect(page.locator("h1")).to_contain_text("0 tasks waiting")
