"""The admin while its Redis is down, then back: pages say so in the layout and reload themselves, the API and
``/metrics`` answer a JSON 503, form actions answer a 503 page, all with ``Retry-After``; nothing is a 500, and
everything works again once Redis is back (a Valkey of the test's own, stopped and started again)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from structlog.testing import capture_logs

from framework.embedded.process import ValkeyProcess, start_test_server
from framework.web.app import create_app
from tests.plugins.admin.conftest import AUTH, OK, Job, admin_pm, login

ADMIN = "/admin"
API = "/api/admin"
PAGES = [ADMIN, f"{ADMIN}/jobs/pending", f"{ADMIN}/queue?queue=default", f"{ADMIN}/task?queue=default&id=t1"]
API_READS = [f"{API}/jobs/stats", f"{API}/jobs/pending", f"{API}/task?queue=default&id=t1", "/metrics"]


@pytest.fixture
def own_valkey(tmp_path: Path) -> Iterator[ValkeyProcess]:
    """A Valkey of this test's own (the session's is shared), with an AOF so a restart keeps the tasks."""
    server = start_test_server(tmp_path / "valkey", appendonly=True)
    try:
        yield server
    finally:
        server.stop()


async def test_pages_and_api_answer_503_while_redis_is_down_then_work_again(
    admin_settings: Any, own_valkey: ValkeyProcess
) -> None:
    settings = admin_settings.replace(redis_url=own_valkey.url)
    app = create_app(settings, plugin_manager=admin_pm(settings))
    async with AsyncTestClient(app) as tc:
        services = app.state.framework_services
        await services.client.enqueue(OK, Job(text="kept"), task_id="t1")
        csrf = await login(tc)
        for url in PAGES:
            assert (await tc.get(url)).status_code == 200, url

        own_valkey.stop()
        with capture_logs() as logs:
            for url in PAGES:
                page = await tc.get(url)
                assert page.status_code == 503, (url, page.status_code, page.text[:300])
                assert page.headers["content-type"].startswith("text/html")
                assert page.headers["retry-after"] == "5"
                assert "Redis is unreachable" in page.text and "Redis cannot be reached right now" in page.text
                assert '<meta http-equiv="refresh" content="5">' in page.text  # it reloads itself
                assert 'class="who-name">ada<' in page.text  # inside the layout, signed in
            for url in API_READS:
                r = await tc.get(url, headers=AUTH)
                assert r.status_code == 503, (url, r.status_code, r.text[:300])
                assert r.headers["retry-after"] == "5"
                assert r.json() == {"status_code": 503, "detail": r.json()["detail"]}
                assert "Redis cannot be reached" in r.json()["detail"]
            acted = await tc.post(f"{ADMIN}/queue/pause?queue=default", data={"_csrf": csrf}, follow_redirects=False)
            assert acted.status_code == 503 and "Redis is unreachable" in acted.text
            assert "http-equiv" not in acted.text  # a form's answer does not post itself again
            r = await tc.post(f"{API}/queue/pause?queue=default", headers=AUTH)
            assert r.status_code == 503
        assert len([e for e in logs if e["event"] == "admin_redis_unavailable"]) == len(PAGES) + len(API_READS) + 2
        assert (await tc.get(f"{ADMIN}/login")).status_code == 200  # the sign-in form needs no Redis

        own_valkey.start()
        for url in PAGES:
            page = await tc.get(url)
            assert page.status_code == 200 and "http-equiv" not in page.text, url
        detail = await tc.get(f"{API}/task", params={"queue": "default", "id": "t1"}, headers=AUTH)
        assert detail.status_code == 200 and detail.json()["payload"] == {"text": "kept", "fail_times": 0, "sleep": 0.0}
        assert (await tc.post(f"{API}/queue/pause?queue=default", headers=AUTH)).json()["count"] == 1
