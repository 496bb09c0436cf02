"""Queue names with any characters ("/", "." and "..", "%", "?#", markup, non-ASCII) are reachable in the admin:
the links and forms every page renders open the queue, pause and resume it and run its bulk actions, and the JSON
API does the same, as for the queue named "default"."""

from __future__ import annotations

import html
import re
from typing import Any
from urllib.parse import quote

from playwright.sync_api import Page, expect

from tests.plugins.admin.conftest import AUTH, OK, Job, login
from tests.plugins.admin.server import LiveServer
from tests.plugins.admin.test_browser import enqueue, sign_in

ADMIN = "/admin"
API = "/api/admin"
NAMES = ["emails/high", "..", ".", "50% off", "?x=1#y", "<b>q</b>&amp;", "ü", "a\\b"]


def _links(page: str, cls: str) -> dict[str, str]:
    """Queue name -> the address its link of class ``cls`` points to, as the browser would follow it."""
    found = re.findall(rf'<a class="{cls}" href="([^"]*)">([^<]*)</a>', page)
    return {html.unescape(name): html.unescape(href) for href, name in found}


def _forms(page: str) -> list[str]:
    """The addresses the page's forms post to."""
    return [html.unescape(u) for u in re.findall(r'<form method="post" action="([^"]+)"', page)]


async def _paused(api: Any, name: str) -> bool:
    r = await api.get(f"{API}/queue", params={"queue": name}, headers=AUTH)
    assert r.status_code == 200, (name, r.text)
    paused: bool = r.json()["queue"]["paused"]
    return paused


async def test_odd_queue_names_open_pause_and_act_from_the_pages(api: Any, client: Any) -> None:
    for name in NAMES:
        await client.enqueue(OK, Job(text="odd"), task_id="t1", queue=name, process_in=3600)
        await client.enqueue(OK, Job(text="odd"), task_id="t2", queue=name, process_in=3600)
    csrf = await login(api)
    home = await api.get(ADMIN)
    assert home.status_code == 200
    links = _links(home.text, "qname")
    assert set(NAMES) <= set(links)
    for name in NAMES:
        href = links[name]
        assert href == f"{ADMIN}/queue?queue={quote(name, safe='')}"
        page = await api.get(href)
        assert page.status_code == 200, (name, page.text[:1000])
        assert f'<span id="queue-name">{html.escape(name, quote=False)}</span>' in page.text.replace("&#39;", "'")

        [pause] = [u for u in _forms(page.text) if "/pause" in u]
        done = await api.post(pause, data={"_csrf": csrf, "next": href}, follow_redirects=False)
        assert done.status_code == 303 and done.headers["location"] == href
        assert await _paused(api, name)
        page = await api.get(href)
        assert f"Queue {html.escape(name, quote=False)} paused." in page.text.replace("&#39;", "'")
        [resume] = [u for u in _forms(page.text) if "/unpause" in u]
        done = await api.post(resume, data={"_csrf": csrf}, follow_redirects=False)
        assert done.status_code == 303 and done.headers["location"] == href  # back to the queue's page
        assert not await _paused(api, name)

        [archive_all] = [u for u in _forms(page.text) if u.split("?")[0].endswith("/scheduled/archive-all")]
        done = await api.post(archive_all, data={"_csrf": csrf, "next": href}, follow_redirects=False)
        assert done.status_code == 303
        assert "2 scheduled task(s) of" in (await api.get(href)).text

        listing = await api.get(f"{ADMIN}/jobs/archived", params={"queue": name})
        assert listing.status_code == 200
        [delete_all] = [u for u in _forms(listing.text) if u.split("?")[0].endswith("/archived/delete-all")]
        done = await api.post(delete_all, data={"_csrf": csrf}, follow_redirects=False)
        assert done.status_code == 303 and done.headers["location"] == href
        counts = (await api.get(f"{API}/queue", params={"queue": name}, headers=AUTH)).json()["queue"]
        assert (counts["scheduled"], counts["archived"], counts["size"]) == (0, 0, 0)


async def test_odd_queue_names_through_the_json_api(api: Any, client: Any) -> None:
    for name in NAMES:
        await client.enqueue(OK, Job(text="odd"), task_id="t1", queue=name, process_in=3600)
    for name in NAMES:
        query = f"queue={quote(name, safe='')}"  # as the dashboard's script builds it
        detail = await api.get(f"{API}/queue?{query}", headers=AUTH)
        assert detail.status_code == 200 and detail.json()["queue"]["queue"] == name, (name, detail.text)
        r = await api.post(f"{API}/queue/pause?{query}", headers=AUTH)
        assert r.status_code == 200 and r.json()["queue"] == name and await _paused(api, name)
        r = await api.post(f"{API}/queue/unpause?{query}", headers=AUTH)
        assert r.status_code == 200 and not await _paused(api, name)
        r = await api.post(f"{API}/queue/scheduled/run-all?{query}", headers=AUTH)
        assert r.status_code == 200 and r.json()["count"] == 1, r.text
        r = await api.post(f"{API}/queue/pending/delete-all?{query}", headers=AUTH)
        assert r.status_code == 200 and r.json()["count"] == 1
        assert (await api.post(f"{API}/queue/explode?{query}", headers=AUTH)).status_code == 404
        assert (await api.post(f"{API}/queue/pending/explode?{query}", headers=AUTH)).status_code == 404
    missing = await api.get(f"{API}/queue", params={"queue": "nope/nope"}, headers=AUTH)
    assert missing.status_code == 404 and "nope/nope" in missing.json()["detail"]
    assert (await api.get(f"{API}/queue", headers=AUTH)).status_code == 400  # the queue is required


def test_a_queue_with_a_slash_in_the_browser(page: Page, live: LiveServer, page_errors: list[str]) -> None:
    enqueue(live, OK, Job(text="odd"), task_id="t1", queue="emails/high", process_in=3600)
    sign_in(page, live)
    card = page.locator('#queues .qcard[data-queue="emails/high"]')
    expect(card.locator('[data-field="scheduled"]')).to_have_text("1")
    expect(page.locator("#live")).to_have_attribute("data-state", "ok")  # the cards were redrawn by the script
    page.on("dialog", lambda dialog: dialog.accept())
    card.get_by_role("button", name="Pause").click()  # the form the script drew
    expect(page.locator("#flash")).to_have_text("Queue emails/high paused.")
    card.get_by_role("link", name="emails/high").click()
    expect(page.locator("#queue-name")).to_have_text("emails/high")
    expect(page.locator("#paused")).to_be_visible()
    expect(page.locator("#live")).to_have_attribute("data-state", "ok")  # refreshed from the API
    page.get_by_role("button", name="Resume queue").click()
    expect(page.locator("#flash")).to_have_text("Queue emails/high resumed.")
    page.get_by_role("button", name="Run all").click()
    expect(page.locator("#flash")).to_have_text("1 scheduled task(s) of emails/high will run now.")
