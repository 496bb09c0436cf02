"""Task ids with any characters ("/", "." and "..", "%2F", spaces, non-ASCII, "?#", markup) are reachable in the
admin: every link and form the pages render, and the JSON API, open, run, archive and delete them."""

from __future__ import annotations

import html
import re
from typing import Any
from urllib.parse import quote

import pytest
from playwright.sync_api import Page, expect

from tests.plugins.admin.conftest import AUTH, OK, Job, login, task_state
from tests.plugins.admin.server import LiveServer
from tests.plugins.admin.test_browser import enqueue, sign_in

ADMIN = "/admin"
API = "/api/admin"
QUEUE = "odd"  # no worker serves it: the tasks stay where they were put
IDS = ["a/b", "..", ".", "%2F", "a b", "ü", "?x=1#y", "<script>", "a+b&c=d;e", "/", "a\\b"]


def _rows(page: str) -> dict[str, str]:
    """The task rows of a listing: id -> the address its link points to, as the browser would follow it."""
    rows = re.findall(r'<tr data-id="([^"]*)" data-state="[^"]*">\s*<td data-label="Task"><a href="([^"]*)"', page)
    return {html.unescape(task_id): html.unescape(href) for task_id, href in rows}


def _forms(page: str) -> dict[str, str]:
    """The task forms of a task's page: action name -> the address the form posts to."""
    urls = (html.unescape(u) for u in re.findall(r'<form method="post" action="([^"]+)"', page))
    return {url.split("?", 1)[0].rsplit("/", 1)[1]: url for url in urls if f"{ADMIN}/task/" in url}


async def _state(api: Any, task_id: str) -> str | None:
    return await task_state(api, task_id, QUEUE)


async def test_odd_ids_open_run_archive_and_delete_from_the_pages(api: Any, client: Any) -> None:
    for task_id in IDS:
        await client.enqueue(OK, Job(text="odd"), task_id=task_id, queue=QUEUE, process_in=3600)
    csrf = await login(api)
    listing = await api.get(f"{ADMIN}/jobs/scheduled", params={"queue": QUEUE})
    assert listing.status_code == 200
    links = _rows(listing.text)
    assert set(links) == set(IDS)
    for task_id, href in links.items():
        assert href == f"{ADMIN}/task?queue={QUEUE}&id={quote(task_id, safe='')}"
        page = await api.get(href)
        assert page.status_code == 200, (task_id, page.text[:1000])
        assert f'<code id="task-id">{html.escape(task_id, quote=False)}</code>' in page.text.replace("&#39;", "'")

        forms = _forms(page.text)
        assert set(forms) == {"run", "archive", "delete"}, (task_id, forms)
        ran = await api.post(forms["run"], data={"_csrf": csrf}, follow_redirects=False)
        assert ran.status_code == 303 and ran.headers["location"] == href  # back to the task's page
        assert await _state(api, task_id) == "pending"
        page = await api.get(href)
        assert f"Task {html.escape(task_id, quote=False)} will run now." in page.text

        forms = _forms(page.text)
        assert set(forms) == {"archive", "delete"}
        archived = await api.post(forms["archive"], data={"_csrf": csrf, "next": href}, follow_redirects=False)
        assert archived.status_code == 303 and archived.headers["location"] == href
        assert await _state(api, task_id) == "archived"

        forms = _forms((await api.get(href)).text)
        assert set(forms) == {"run", "delete"}  # "Retry now"
        retried = await api.post(forms["run"], data={"_csrf": csrf, "next": href}, follow_redirects=False)
        assert retried.status_code == 303 and await _state(api, task_id) == "pending"

        forms = _forms((await api.get(href)).text)
        deleted = await api.post(forms["delete"], data={"_csrf": csrf}, follow_redirects=False)
        assert deleted.status_code == 303 and await _state(api, task_id) is None
        assert (await api.get(href)).status_code == 404
    assert _rows((await api.get(f"{ADMIN}/jobs/scheduled", params={"queue": QUEUE})).text) == {}


async def test_odd_ids_through_the_json_api(api: Any, client: Any) -> None:
    for task_id in IDS:
        await client.enqueue(OK, Job(text="odd"), task_id=task_id, queue=QUEUE, process_in=3600)
    listed = (await api.get(f"{API}/jobs/scheduled", params={"queue": QUEUE}, headers=AUTH)).json()
    assert {t["id"] for t in listed["tasks"]} == set(IDS)
    for task_id in IDS:
        query = f"id={quote(task_id, safe='')}&queue={QUEUE}"  # as the dashboard's script builds it
        detail = await api.get(f"{API}/task?{query}", headers=AUTH)
        assert detail.status_code == 200 and detail.json()["id"] == task_id
        assert (await api.get(f"{API}/task?id={quote(task_id, safe='')}", headers=AUTH)).json()["queue"] == QUEUE
        for action, state in (("run", "pending"), ("archive", "archived"), ("run", "pending")):
            r = await api.post(f"{API}/task/{action}?{query}", headers=AUTH)
            assert r.status_code == 200 and r.json()["task_id"] == task_id, (task_id, action, r.text)
            assert await _state(api, task_id) == state
        assert (await api.post(f"{API}/task/cancel?{query}", headers=AUTH)).status_code == 409  # not active
        assert (await api.post(f"{API}/task/explode?{query}", headers=AUTH)).status_code == 404
        r = await api.delete(f"{API}/task?{query}", headers=AUTH)
        assert r.status_code == 200 and r.json()["task_id"] == task_id
        assert (await api.get(f"{API}/task?{query}", headers=AUTH)).status_code == 404
    assert (await api.get(f"{API}/task", headers=AUTH)).status_code == 400  # the id is required


# -- in Chromium ---------------------------------------------------------------------------------


@pytest.mark.parametrize("task_id", ["..", "a/b", "?x=1#y"])
def test_odd_id_in_the_browser(page: Page, live: LiveServer, page_errors: list[str], task_id: str) -> None:
    enqueue(live, OK, Job(text="odd"), task_id=task_id, queue=QUEUE, process_in=3600)
    enqueue(live, OK, Job(text="odd"), task_id=".", queue=QUEUE, process_in=3600)
    sign_in(page, live)
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(f"{live.url}{ADMIN}/jobs/scheduled?queue={QUEUE}")
    expect(page.locator("#live")).to_have_attribute("data-state", "ok")  # the rows were redrawn by the script
    row = page.locator("#tasks tbody tr").filter(
        has=page.locator("code.id", has_text=re.compile(f"^{re.escape(task_id)}$"))
    )
    expect(row).to_have_count(1)
    row.get_by_role("link").click()
    expect(page.locator("#task-id")).to_have_text(task_id)
    expect(page.locator("#task-state")).to_have_attribute("data-state", "scheduled")
    expect(page.locator("#live")).to_have_attribute("data-state", "ok")  # refreshed from /api/admin/task?id=

    page.locator("#task-actions").get_by_role("button", name="Run now").click()
    expect(page.locator("#flash")).to_have_text(f"Task {task_id} will run now.")
    expect(page.locator("#task-state")).to_have_attribute("data-state", "pending")
    page.locator("#task-actions").get_by_role("button", name="Archive").click()
    expect(page.locator("#flash")).to_have_text(f"Task {task_id} archived.")
    expect(page.locator("#task-state")).to_have_attribute("data-state", "archived")
    page.locator("#task-actions").get_by_role("button", name="Retry now").click()
    expect(page.locator("#task-state")).to_have_attribute("data-state", "pending")
    expect(page.locator("#task-id")).to_have_text(task_id)
    page.locator("#task-actions").get_by_role("button", name="Delete").click()
    expect(page).to_have_url(f"{live.url}{ADMIN}/jobs/pending?queue={QUEUE}")
    expect(page.locator("#flash")).to_have_text(f"Task {task_id} deleted.")

    page.goto(f"{live.url}{ADMIN}/jobs/scheduled?queue={QUEUE}")  # the other task, "." is untouched
    expect(page.locator("#tasks tbody tr code.id")).to_have_text(["."])
