"""The dashboard on a phone-sized screen (390 x 844) in Chromium: badges stay one line, words stay whole."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.sync_api import Page, expect

from tests.plugins.admin.conftest import FAILS, FLAKY, OK, TOKEN, Job
from tests.plugins.admin.server import LiveServer

ROOT = Path(__file__).resolve().parents[3]
ARTIFACTS = ROOT / "test-artifacts"

LONG_TOKEN = "https://files.example.com/" + "a1b2c3d4" * 8
ERROR_TEXT = f"the remote service refused the upload of {LONG_TOKEN} because the quota is exhausted"

_BROKEN_WORDS = """(sel) => {
  // words (up to 20 characters) of the matching elements' text that are laid out over two lines
  const out = [];
  for (const el of document.querySelectorAll(sel)) {
    const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      for (const m of node.data.matchAll(/\\S+/g)) {
        if (m[0].length > 20) continue;
        const range = document.createRange();
        range.setStart(node, m.index);
        range.setEnd(node, m.index + m[0].length);
        const tops = new Set([...range.getClientRects()].map((r) => Math.round(r.top)));
        if (tops.size > 1) out.push(m[0]);
      }
    }
  }
  return out;
}"""

_BOXES = """(sel) => [...document.querySelectorAll(sel)].map((el) => {
  const box = el.getBoundingClientRect();
  return {text: el.textContent, height: box.height, width: box.width,
          font: parseFloat(getComputedStyle(el).fontSize)};
})"""


def _enqueue(live: LiveServer, task: Any, payload: Job, task_id: str) -> None:
    async def work(services: Any) -> None:
        await task.enqueue(services.client, payload, task_id=task_id)

    live.call(work)


def test_badges_stay_one_line_and_errors_wrap_between_words(
    page: Page, live: LiveServer, page_errors: list[str]
) -> None:
    FAILS.clear()
    _enqueue(live, OK, Job(text="phone"), "ok-phone")
    _enqueue(live, FLAKY, Job(text=ERROR_TEXT, fail_times=1), "bad-phone")
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{live.url}/admin/login")
    page.fill("#token", TOKEN)
    page.click("#sign-in")
    expect(page.locator('#runs tr[data-id="bad-phone"][data-status="failed"]')).to_be_visible(timeout=10_000)
    expect(page.locator('#runs tr[data-id="ok-phone"][data-status="succeeded"]')).to_be_visible()
    expect(page.locator('#failed tr[data-id="bad-phone"]')).to_be_visible()
    expect(page.locator("#live")).to_have_attribute("data-state", "ok")  # the rows as the script draws them

    badges = page.evaluate(_BOXES, "#runs .badge, #failed .badge, #queues .badge")
    assert badges, "no badges on the page"
    for badge in badges:
        assert badge["height"] <= 2 * badge["font"], badge  # one line, not a tall oval
        assert badge["width"] >= badge["height"], badge
    assert page.evaluate(_BROKEN_WORDS, "#runs code.snip, #failed td, #runs td") == []
    assert page.evaluate("document.documentElement.scrollWidth") <= 391
