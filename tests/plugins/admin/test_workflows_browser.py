"""Workflows on the dashboard, in Chromium: the graph drawn with live states, and Cancel from the page."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from playwright.sync_api import Page, expect

from framework import hookimpl
from framework.task import TaskDef
from framework.web.app import create_app
from framework.workflow import chord
from tests.plugins.admin.conftest import admin_pm
from tests.plugins.admin.server import LiveServer
from tests.plugins.admin.test_browser import sign_in


class Part(msgspec.Struct, frozen=True, kw_only=True):
    n: int = 0


class Parts(msgspec.Struct, frozen=True, kw_only=True):
    values: list[int] = []


GATES: dict[str, asyncio.Event] = {}
"""The gate each test's gated steps wait for (made on the server's loop, opened by the test)."""


async def _gated(ctx: Any, p: Part) -> int:
    await GATES.setdefault("gate", asyncio.Event()).wait()
    return p.n


async def _sum(ctx: Any, p: Parts) -> int:
    return sum(p.values)


GATED = TaskDef("admin-wf:gated", Part, _gated, result=int, max_retry=0)
SUM = TaskDef("admin-wf:sum", Parts, _sum, result=int)


class WorkflowTasks:
    """A plugin contributing the workflow test tasks."""

    @hookimpl
    def register_task_types(self, settings: Any) -> list[Any]:
        return [GATED, SUM]


@pytest.fixture
def live_wf(admin_settings: Any) -> Iterator[LiveServer]:
    """The app with its worker and the workflow tasks; the dashboard refreshes every half second."""
    GATES.clear()
    settings = admin_settings.replace(plugins={"admin": {"refresh_seconds": 0.5}})
    server = LiveServer(
        create_app(settings, plugin_manager=admin_pm(settings, ("wf_tasks", WorkflowTasks())), run_worker=True)
    ).start()
    try:
        yield server
    finally:
        open_gate(server)
        server.stop()


def open_gate(live: LiveServer) -> None:
    async def work(services: Any) -> None:
        GATES.setdefault("gate", asyncio.Event()).set()

    live.call(work)


def start_fan_in(live: LiveServer, workflow_id: str) -> None:
    async def work(services: Any) -> None:
        steps = [GATED.step(Part(n=i), name=f"part-{i}") for i in range(3)]
        await services.client.start_workflow(
            chord(steps, SUM.step(Parts(), input="values", name="total")), workflow_id=workflow_id
        )

    live.call(work)


def _node(page: Page, key: str) -> Any:
    return page.locator(f'#wf-graph [data-node="{key}"]')


def test_the_graph_shows_each_step_and_follows_it_live(page: Page, live_wf: LiveServer, page_errors: list[str]) -> None:
    live = live_wf
    sign_in(page, live)
    start_fan_in(live, "wf-live")
    page.click('nav a:text("Workflows")')
    row = page.locator('#workflows tr[data-id="wf-live"]')
    expect(row).to_have_attribute("data-status", "running")
    row.get_by_role("link").click()
    expect(page.locator("#wf-graph [data-node]")).to_have_count(4)
    expect(page.locator("#wf-graph .wf-edge")).to_have_count(3)
    for i in range(3):
        expect(_node(page, f"part-{i}")).to_have_attribute("data-state", "active", timeout=10_000)
    expect(_node(page, "total")).to_have_attribute("data-state", "waiting")
    expect(_node(page, "total").locator('[data-field="sub"]')).to_have_text("waiting")
    expect(page.locator("#wf-status")).to_have_attribute("data-status", "running")
    page.evaluate("window.__same_page = true")

    open_gate(live)
    for key in ("part-0", "part-1", "part-2", "total"):
        expect(_node(page, key)).to_have_attribute("data-state", "succeeded", timeout=10_000)
    expect(_node(page, "total").locator('[data-field="sub"]')).to_have_text("succeeded")
    expect(page.locator("#wf-status")).to_have_attribute("data-status", "succeeded")
    expect(page.locator("#wf-done")).to_have_text("4/4")
    expect(page.locator('#wf-steps tr[data-step="total"] [data-field="state"]')).to_have_text("succeeded")
    expect(page.locator('[data-wf-action="cancel"]')).to_be_hidden()
    assert page.evaluate("window.__same_page") is True  # changed in place, never reloaded


def test_cancel_from_the_page(page: Page, live_wf: LiveServer, page_errors: list[str]) -> None:
    live = live_wf
    sign_in(page, live)
    start_fan_in(live, "wf-cancel")
    page.goto(f"{live.url}/admin/workflow?queue=default&id=wf-cancel")
    expect(_node(page, "part-0")).to_have_attribute("data-state", "active", timeout=10_000)
    expect(page.locator('[data-wf-action="retry"]')).to_be_hidden()
    page.on("dialog", lambda dialog: dialog.accept())
    page.locator('[data-wf-action="cancel"]').get_by_role("button", name="Cancel").click()
    expect(page.locator("#flash")).to_contain_text("Workflow wf-cancel cancelled")
    expect(page.locator("#wf-status")).to_have_attribute("data-status", "cancelled")
    # the running steps are asked to stop; every step ends cancelled, and the page follows
    for key in ("part-0", "part-1", "part-2", "total"):
        expect(_node(page, key)).to_have_attribute("data-state", "cancelled", timeout=15_000)
    expect(page.locator('[data-wf-action="retry"]')).to_be_visible()
    expect(page.locator('[data-wf-action="cancel"]')).to_be_hidden()
