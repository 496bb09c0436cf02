"""Stored user files in Debian's Chromium: an uploaded HTML or SVG file cannot run script on the app's origin.

The app (with the admin, signed in, so there is a session worth stealing) is served for real; objects
are written through the storage API, the way an upload route would, then opened the ways an attacker
would get a victim to open them: a link, and a frame on a page of the app's own origin.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image
from playwright.sync_api import Dialog, Download, Page, expect
from playwright.sync_api import Error as PlaywrightError

from framework.web.app import create_app
from tests.plugins.admin.conftest import TOKEN, admin_pm
from tests.plugins.admin.server import LiveServer

EVIL_HTML = b"""<!doctype html><html><body><p id="owned">owned</p><script>
  window.top.__pwned = "html";
  fetch("/api/admin/me").then((r) => r.text()).then((t) => { window.top.__stolen = t; });
  alert("xss from html");
</script></body></html>"""

EVIL_SVG = b"""<svg xmlns="http://www.w3.org/2000/svg" width="50" height="50" onload="alert('xss from svg onload')">
  <script>window.top.__pwned = "svg"; alert("xss from svg");</script>
  <rect width="50" height="50" fill="red"/>
</svg>"""


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), (0, 128, 255)).save(out, "PNG")
    return out.getvalue()


@pytest.fixture
def live(admin_settings: Any) -> Iterator[LiveServer]:
    """The app with the admin, served by uvicorn, holding hostile files in its (local) storage."""
    server = LiveServer(create_app(admin_settings, plugin_manager=admin_pm(admin_settings))).start()

    async def store(services: Any) -> None:
        put = services.storage.put
        await put("userfiles/evil.html", EVIL_HTML, content_type="text/html")
        await put("userfiles/evil.svg", EVIL_SVG, content_type="image/svg+xml")
        await put("userfiles/disguised.png", EVIL_HTML, content_type="image/png")  # HTML bytes, claimed PNG
        await put("userfiles/photo.png", _png(), content_type="image/png")

    try:
        server.call(store)
        yield server
    finally:
        server.stop()


@pytest.fixture
def dialogs(page: Page) -> list[str]:
    """Every alert() any frame of the page opens (dismissed, so nothing blocks)."""
    seen: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        seen.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    return seen


def _sign_in(page: Page, live: LiveServer) -> None:
    page.goto(f"{live.url}/admin/login")
    page.fill("#token", TOKEN)
    page.click("#sign-in")
    expect(page).to_have_url(f"{live.url}/admin")


def _navigate_expecting_download(page: Page, url: str) -> Download:
    # Chromium aborts the navigation with "Download is starting"
    with page.expect_download() as info, contextlib.suppress(PlaywrightError):
        page.goto(url)
    return info.value


@pytest.mark.parametrize(("name", "media_type"), [("evil.html", "text/html"), ("evil.svg", "image/svg+xml")])
def test_a_link_to_a_stored_script_downloads_it_instead_of_running_it(
    page: Page, live: LiveServer, dialogs: list[str], name: str, media_type: str
) -> None:
    _sign_in(page, live)
    response = page.request.get(f"{live.url}/storage/userfiles/{name}")
    assert response.headers["content-type"] == media_type  # the stored type, honoured
    assert response.headers["content-disposition"] == f'attachment; filename="{name}"'

    download = _navigate_expecting_download(page, f"{live.url}/storage/userfiles/{name}")
    assert download.suggested_filename == name
    expect(page).to_have_url(f"{live.url}/admin")  # still on the dashboard; nothing rendered
    page.wait_for_timeout(300)
    assert dialogs == []
    assert page.evaluate("[window.__pwned, window.__stolen]") == [None, None]


@pytest.mark.parametrize("name", ["evil.html", "evil.svg"])
def test_a_stored_script_framed_by_a_page_of_the_app_does_not_run(
    page: Page, live: LiveServer, dialogs: list[str], name: str
) -> None:
    """The attack that worked before: the app's own page (no CSP of its own) frames the stored file."""
    _sign_in(page, live)
    page.goto(f"{live.url}/")  # the app's home page: same origin as the admin
    downloads: list[Download] = []

    def on_download(download: Download) -> None:  # Playwright wants a Python function, not a bound builtin
        downloads.append(download)

    page.on("download", on_download)
    page.evaluate(
        """(src) => { const f = document.createElement("iframe"); f.src = src; document.body.append(f); }""",
        f"/storage/userfiles/{name}",
    )
    page.wait_for_timeout(1000)  # what a script in the frame would do, it would have done by now
    assert dialogs == []
    assert page.evaluate("[window.__pwned, window.__stolen]") == [None, None]
    assert page.frame_locator("iframe").locator("#owned").count() == 0
    assert [d.suggested_filename for d in downloads] == [name]  # the browser downloaded it instead


def test_html_claimed_as_png_is_shown_as_an_image_in_a_sandbox(
    page: Page, live: LiveServer, dialogs: list[str]
) -> None:
    _sign_in(page, live)
    page.goto(f"{live.url}/storage/userfiles/disguised.png")  # inline: PNG is a safe type, and nosniff holds
    page.wait_for_timeout(300)
    assert dialogs == []
    assert page.locator("#owned").count() == 0  # not parsed as HTML
    assert page.evaluate("self.origin") == "null"  # the sandbox: an opaque origin, not the app's

    page.goto(f"{live.url}/storage/userfiles/photo.png")  # a real image still displays
    expect(page.locator("img")).to_have_count(1)
    assert page.evaluate("document.images[0].naturalWidth") == 40
    assert page.evaluate("self.origin") == "null"
