"""The icon: ``/favicon.ico`` answers over HTTP (no 404 in the browser's console), the admin links its own."""

from __future__ import annotations

import re
import urllib.request
from typing import Any

from litestar import get
from litestar.testing import AsyncTestClient

from framework.web.app import create_app
from tests.plugins.admin.server import LiveServer


def _fetch(url: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.headers.get("Content-Type", ""), response.read()


def test_favicon_is_served_over_http(live: LiveServer) -> None:
    status, kind, body = _fetch(f"{live.url}/favicon.ico")
    assert (status, kind) == (200, "image/svg+xml")
    assert body.startswith(b"<svg ") and body.rstrip().endswith(b"</svg>")

    _, _, login = _fetch(f"{live.url}/admin/login")
    link = re.search(rb'<link rel="icon" href="([^"]+)" type="image/svg\+xml">', login)
    assert link is not None, login[:600]
    status, kind, linked = _fetch(f"{live.url}{link.group(1).decode()}")
    assert (status, kind, linked) == (200, "image/svg+xml", body)


async def test_an_app_keeps_its_own_favicon(settings: Any) -> None:
    @get("/favicon.ico", sync_to_thread=False)
    def own() -> str:
        return "mine"

    async with AsyncTestClient(create_app(settings, route_handlers=[own])) as tc:
        response = await tc.get("/favicon.ico")
    assert response.status_code == 200
    assert response.text == "mine"
