"""A form posted after the session expired: the action is not done, the sign-in form comes back to the page the
form was on (never to the form's address, which only answers POST), and never leaves the admin."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from framework_admin.session import sign_session

from tests.plugins.admin.conftest import AUTH, OK, TOKEN, Job, csrf_of

ADMIN = "/admin"
QUEUE_PAGE = f"{ADMIN}/queue?queue=park"


def _expire(api: Any) -> None:
    """Replace the browser's session with one signed by the right key that ended a minute ago."""
    api.cookies.set("framework_admin_session", sign_session("admin", "ada", TOKEN, time.time() - 60))


async def _sign_in(api: Any, next_path: str) -> Any:
    page = await api.get(f"{ADMIN}/login", params={"next_path": next_path})
    assert page.status_code == 200
    form = {"token": TOKEN, "_csrf": csrf_of(page.text), "next": next_path}
    return await api.post(f"{ADMIN}/login", data=form, follow_redirects=False)


@pytest.mark.parametrize(
    ("referer", "back_to"),
    [
        (f"http://testserver.local{QUEUE_PAGE}", QUEUE_PAGE),
        ("http://testserver.local/admin/jobs/scheduled?queue=park&page=2", "/admin/jobs/scheduled?queue=park&page=2"),
        ("http://evil.example/admin/../../steal", ADMIN),
        ("http://testserver.local/elsewhere", ADMIN),
        (None, ADMIN),
    ],
)
async def test_a_form_posted_with_an_expired_session_comes_back_to_its_page(
    api: Any, client: Any, referer: str | None, back_to: str
) -> None:
    await client.enqueue(OK, Job(text="x"), task_id="s1", queue="park", process_in=3600)
    csrf = csrf_of((await api.get(f"{ADMIN}/login")).text)
    _expire(api)
    headers = {"Referer": referer} if referer else {}
    posted = await api.post(
        f"{ADMIN}/queue/pause?queue=park", data={"_csrf": csrf}, headers=headers, follow_redirects=False
    )
    assert posted.status_code == 303
    where = urlsplit(posted.headers["location"])
    assert where.path == f"{ADMIN}/login"
    [next_path] = parse_qs(where.query)["next_path"]
    assert next_path == back_to

    signed_in = await _sign_in(api, next_path)
    assert signed_in.status_code == 303 and signed_in.headers["location"] == back_to
    page = await api.get(back_to)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    detail = await api.get("/api/admin/queue", params={"queue": "park"}, headers=AUTH)
    assert detail.json()["queue"]["paused"] is False  # the form posted without a session did nothing


async def test_a_page_opened_with_an_expired_session_comes_back_to_itself(api: Any) -> None:
    _expire(api)
    opened = await api.get(f"{ADMIN}/servers", follow_redirects=False)
    assert opened.status_code == 303
    [next_path] = parse_qs(urlsplit(opened.headers["location"]).query)["next_path"]
    assert next_path == f"{ADMIN}/servers"
