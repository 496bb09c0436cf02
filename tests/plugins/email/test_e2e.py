"""End to end: a request to a running app enqueues email:send, the worker in the app delivers it over SMTP."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from framework.web.app import create_app
from tests.fixtures.web import serve


async def test_signup_route_delivers_the_welcome_email_through_a_real_smtp_server(
    settings: Any, smtp_inbox: Any, monkeypatch: Any
) -> None:
    monkeypatch.setenv("FRAMEWORK_APP", "tests.plugins.email.e2e_app")
    monkeypatch.setenv("FRAMEWORK_LOAD_PLUGINS", "email")
    settings = settings.replace(
        app="tests.plugins.email.e2e_app",
        plugins={
            "email": {
                "backend": "smtp",
                "mail_from": "Shop <shop@example.com>",
                "app_name": "Shop",
                "smtp": {"host": smtp_inbox.host, "port": smtp_inbox.port, "security": "none"},
            }
        },
    )
    app = create_app(settings, run_worker=True)
    async with serve(app) as base, httpx.AsyncClient(base_url=base) as http:
        response = await http.post("/signup", json={"email": "ann@example.com", "name": "<Ann>"})
        assert response.status_code == 202
        deadline = time.monotonic() + 15
        messages: list[Any] = []
        while not messages and time.monotonic() < deadline:
            messages = await asyncio.to_thread(smtp_inbox.wait, 1, 0.5)
    assert len(messages) == 1
    message = messages[0]
    assert message["To"] == "ann@example.com"
    assert message["Subject"] == "Welcome aboard"
    assert "shop@example.com" in message["From"]
    html = message.get_body(("html",)).get_content()
    text = message.get_body(("plain",)).get_content()
    assert "&lt;Ann&gt;" in html
    assert "<Ann>" not in html
    assert "<Ann>" in text
    # the Message-ID comes from the task id, so a retry of the same task cannot produce a second email
    assert message["Message-ID"] == f"<{response.json()['task']}@example.com>"
