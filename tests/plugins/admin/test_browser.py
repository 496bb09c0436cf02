"""The dashboard in Debian's Chromium, driven by Playwright, against the app served for real with a worker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.sync_api import Page, expect

from tests.plugins.admin.conftest import FAILS, FLAKY, OK, TOKEN, XSS, Job
from tests.plugins.admin.server import LiveServer

ROOT = Path(__file__).resolve().parents[3]
ARTIFACTS = ROOT / "test-artifacts"


def enqueue(live: LiveServer, task: Any, payload: Job, **options: Any) -> str:
    async def work(services: Any) -> str:
        info = await task.enqueue(services.client, payload, **options)
        return str(info.id)

    result: str = live.call(work)
    return result


def sign_in(page: Page, live: LiveServer) -> None:
    page.goto(f"{live.url}/admin")
    expect(page).to_have_url(f"{live.url}/admin/login?next_path=%2Fadmin")
    page.fill("#token", TOKEN)
    page.fill("#name", "ada")
    page.click("#sign-in")
    expect(page).to_have_url(f"{live.url}/admin")
    expect(page.locator(".who-name")).to_have_text("ada")


def test_sign_in_see_the_queues_and_watch_a_task_complete(page: Page, live: LiveServer, page_errors: list[str]) -> None:
    enqueue(live, OK, Job(text="warm-up"), task_id="warm")
    sign_in(page, live)
    card = page.locator('#queues .qcard[data-queue="default"]')
    expect(card).to_be_visible()
    expect(card.locator('[data-field="completed"]')).to_have_text("1")

    page.on("dialog", lambda dialog: dialog.accept())
    card.get_by_role("button", name="Pause").click()
    expect(page.locator("#flash")).to_contain_text("Queue default paused.")
    expect(card.locator(".badge-paused")).to_be_visible()

    task_id = enqueue(live, OK, Job(text="watch me", sleep=0.3), task_id="watched")
    expect(card.locator('[data-field="pending"]')).to_have_text("1")  # the page refreshed itself
    page.goto(f"{live.url}/admin/tasks/default/{task_id}")
    expect(page.locator("#task-state")).to_have_attribute("data-state", "pending")

    enqueue_resume = page.request.post(
        f"{live.url}/api/admin/queues/default/unpause", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert enqueue_resume.ok
    expect(page.locator("#task-state")).to_have_attribute("data-state", "completed", timeout=10_000)
    expect(page.locator("#task-state .badge")).to_have_text("completed")

    page.goto(f"{live.url}/admin/servers")
    expect(page.locator("#server-list section[data-server]")).to_have_count(1)
    expect(page.locator("#live")).to_have_attribute("data-state", "ok")  # refreshed from /api/admin/servers
    expect(page.locator("#server-list .badge-active")).to_be_visible()


def test_retry_a_failed_task_the_chart_and_markup_shown_as_text(
    page: Page, live: LiveServer, page_errors: list[str]
) -> None:
    FAILS.clear()
    for i in range(3):
        enqueue(live, OK, Job(text=f"ok {i}"), task_id=f"ok-{i}")
    enqueue(live, FLAKY, Job(text=XSS, fail_times=1), task_id="xss")
    sign_in(page, live)

    row = page.locator('#failed tr[data-id="xss"]')
    expect(row).to_be_visible(timeout=10_000)
    expect(row.locator('td[data-label="Payload"]')).to_contain_text("<script>window.__pwned = 1</script>")
    expect(row.locator('td[data-label="Error"]')).to_contain_text("<img src=x onerror=")
    assert page.evaluate("window.__pwned") is None
    assert row.locator("script, img").count() == 0

    chart = page.locator("#chart")
    expect(chart.locator("rect.bar-processed").first).to_be_attached()
    api = page.request.get(f"{live.url}/api/admin/throughput?hours=1").json()  # the session cookie opens the API
    expect(chart).to_have_attribute("data-processed", str(api["processed"]))
    assert api["processed"] >= 4 and api["failed"] >= 1
    drawn = sum(int(r.get_attribute("data-processed") or 0) for r in chart.locator("rect.bar-processed").all())
    assert drawn == api["processed"]
    expect(page.locator("#chart-failed")).to_have_text(str(api["failed"]))
    expect(page.locator('#runs tr[data-id="xss"][data-status="failed"]')).to_be_visible()

    expect(page.locator("#live")).to_have_attribute("data-state", "ok")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "admin-dashboard.png"), full_page=True)

    row.get_by_role("button", name="Retry now").click()
    expect(page.locator("#flash")).to_contain_text("Task xss will run now.")
    expect(page.locator('#failed tr[data-id="xss"]')).to_have_count(0, timeout=10_000)
    page.goto(f"{live.url}/admin/tasks/default/xss")
    expect(page.locator("#task-state")).to_have_attribute("data-state", "completed", timeout=10_000)
    expect(page.locator("#task-payload")).to_contain_text("<script>window.__pwned = 1</script>")
    assert page.evaluate("window.__pwned") is None


def test_phone_sized_screen_and_read_only_user(page: Page, live: LiveServer, page_errors: list[str]) -> None:
    enqueue(live, OK, Job(text="phone"), task_id="p1")
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{live.url}/admin/login")
    page.fill("#token", "readonly-token-for-tests-0123456789")
    page.click("#sign-in")
    expect(page.locator(".role-readonly")).to_be_visible()
    expect(page.locator('#queues .qcard[data-queue="default"]')).to_be_visible()
    expect(page.locator("#live")).to_have_attribute("data-state", "ok")
    assert page.evaluate("document.documentElement.scrollWidth") <= 391
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "admin-dashboard-phone.png"), full_page=True)
    nav = page.locator("#nav")
    expect(nav).to_be_hidden()
    page.click(".menu-toggle")
    expect(nav).to_be_visible()
    nav.get_by_role("link", name="Failed").click()
    expect(page).to_have_url(f"{live.url}/admin/jobs/failed")
    expect(page.get_by_role("button", name="Retry now")).to_have_count(0)
    assert page.evaluate("document.documentElement.scrollWidth") <= 391
    expect(page.locator("#live")).to_have_attribute("data-state", "ok")
