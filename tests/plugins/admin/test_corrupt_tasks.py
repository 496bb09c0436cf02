"""Tasks whose stored message cannot be decoded, in every state: the dashboard, the JSON API and the
metrics keep working, show each as a row with its decode error, and act on each one by one."""

from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING, Any

import pytest
from structlog.testing import capture_logs

from framework.protocol.message import TaskState
from tests.framework.corrupt import GROUP, KINDS, STATES, seed_corrupt
from tests.plugins.admin.conftest import AUTH, login, task_state

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from framework.protocol.keys import Schema

ADMIN = "/admin"
API = "/api/admin"
QUEUE = "broken"  # no worker serves it: the tasks stay where they were put
_ARCHIVABLE = {TaskState.PENDING, TaskState.SCHEDULED, TaskState.RETRY, TaskState.COMPLETED, TaskState.AGGREGATING}
_RUNNABLE = {TaskState.SCHEDULED, TaskState.RETRY, TaskState.ARCHIVED, TaskState.COMPLETED, TaskState.AGGREGATING}


@pytest.fixture
async def broken(api: Any, redis: Redis, schema: Schema) -> dict[tuple[str, TaskState], str]:
    return await seed_corrupt(redis, schema, QUEUE)


def _form_actions(page: str) -> dict[str, str]:
    """The task forms of a page: action name -> the form's address, as the browser would post to it."""
    return {
        url.rsplit("?", 1)[0].rsplit("/", 1)[1]: url
        for url in (html.unescape(u) for u in re.findall(r'<form method="post" action="([^"]+)"', page))
        if "/task/" in url
    }


async def _state(api: Any, task_id: str) -> str | None:
    return await task_state(api, task_id, QUEUE)


async def test_pages_api_and_metrics_show_every_broken_task(api: Any, broken: dict[tuple[str, TaskState], str]) -> None:
    await login(api)
    home = await api.get(ADMIN)
    assert home.status_code == 200, home.text[:2000]
    for kind in KINDS:  # the overview's failed tasks: retry and archived
        for state in (TaskState.RETRY, TaskState.ARCHIVED):
            assert f'data-id="{broken[kind, state]}"' in home.text
    assert "cannot decode the message: empty task message (0 bytes)" in home.text
    assert (await api.get(f"{ADMIN}/queues/{QUEUE}")).status_code == 200

    for state in STATES:
        for query in (f"?queue={QUEUE}", ""):
            name = "failed" if state is TaskState.ARCHIVED else state.value
            page = await api.get(f"{ADMIN}/jobs/{name}{query}")
            assert page.status_code == 200, (state, page.text[:2000])
            for kind in KINDS:
                assert f'data-id="{broken[kind, state]}" data-state="{state.value}"' in page.text
            assert page.text.count(">cannot decode the message: ") == 3  # the cell text (and its title)
            assert page.text.count("badge-undecodable") == 3
        with capture_logs() as logs:
            listed = await api.get(f"{API}/jobs/{state.value}", params={"queue": QUEUE}, headers=AUTH)
        assert listed.status_code == 200, listed.text
        warnings = [e for e in logs if e["event"] == "task_message_undecodable"]
        assert len(warnings) == 1 and warnings[0]["log_level"] == "warning" and warnings[0]["count"] == 3
        rows = {t["id"]: t for t in listed.json()["tasks"]}
        assert set(rows) == {broken[kind, state] for kind in KINDS}
        for kind in KINDS:
            row = rows[broken[kind, state]]
            assert row["decode_error"] and row["state"] == state.value and row["queue"] == QUEUE
            assert row["type"] == "" and row["payload"] is None and row["payload_text"] == ""
            assert row["group"] == (GROUP if state is TaskState.AGGREGATING else "")

            task_id = broken[kind, state]
            detail = await api.get(f"{API}/task", params={"id": task_id, "queue": QUEUE}, headers=AUTH)
            assert detail.status_code == 200 and detail.json() == row
            by_path = await api.get(f"{API}/tasks/{task_id}", headers=AUTH)  # the older address, no queue given
            assert by_path.status_code == 200 and by_path.json()["decode_error"] == row["decode_error"]
            shown = await api.get(f"{ADMIN}/task", params={"queue": QUEUE, "id": task_id})
            assert shown.status_code == 200, shown.text[:2000]
            assert 'id="task-decode-error"' in shown.text and row["decode_error"] in html.unescape(shown.text)
            assert (await api.get(f"{ADMIN}/tasks/{QUEUE}/{task_id}")).status_code == 200

    stats = (await api.get(f"{API}/jobs/stats", headers=AUTH)).json()
    info = next(q for q in stats["queues"] if q["queue"] == QUEUE)
    assert (info["pending"], info["active"], info["archived"], info["aggregating"], info["size"]) == (3, 3, 3, 3, 21)
    detail = await api.get(f"{API}/queues/{QUEUE}", headers=AUTH)
    assert detail.status_code == 200 and detail.json()["queue"]["memory_usage"] > 0
    runs = await api.get(f"{API}/runs", headers=AUTH)  # nothing recorded yet: read from the completed and archived
    assert runs.status_code == 200
    assert {broken[kind, TaskState.ARCHIVED] for kind in KINDS} <= {r["id"] for r in runs.json()}
    metrics = await api.get("/metrics", headers=AUTH)
    assert metrics.status_code == 200 and f'queue="{QUEUE}"' in metrics.text


async def test_each_broken_task_is_run_archived_and_deleted_from_the_api(
    api: Any, broken: dict[tuple[str, TaskState], str]
) -> None:
    for (_, state), task_id in broken.items():
        params = {"id": task_id, "queue": QUEUE}
        if state is TaskState.ACTIVE:  # a worker's: refused, not an error
            assert (await api.delete(f"{API}/task", params=params, headers=AUTH)).status_code == 409
            assert (await api.post(f"{API}/task/archive", params=params, headers=AUTH)).status_code == 409
            assert (await api.post(f"{API}/task/run", params=params, headers=AUTH)).status_code == 409
            continue
        if state in _ARCHIVABLE:
            r = await api.post(f"{API}/task/archive", params=params, headers=AUTH)
            assert r.status_code == 200, r.text
            assert await _state(api, task_id) == "archived"
        r = await api.post(f"{API}/task/run", params=params, headers=AUTH)
        assert r.status_code == 200, r.text
        assert await _state(api, task_id) == "pending"
        r = await api.delete(f"{API}/task", params=params, headers=AUTH)
        assert r.status_code == 200 and r.json()["task_id"] == task_id
        assert await _state(api, task_id) is None
    stats = (await api.get(f"{API}/jobs/stats", headers=AUTH)).json()
    assert next(q for q in stats["queues"] if q["queue"] == QUEUE)["size"] == 3  # the active ones


async def test_each_broken_task_is_acted_on_from_its_page(api: Any, broken: dict[tuple[str, TaskState], str]) -> None:
    csrf = await login(api)
    for (_, state), task_id in broken.items():
        page = (await api.get(f"{ADMIN}/task", params={"queue": QUEUE, "id": task_id})).text
        forms = _form_actions(page)
        if state is TaskState.ACTIVE:
            assert set(forms) == {"cancel"}
            continue
        expected = (
            {"delete"} | ({"run"} if state in _RUNNABLE else set()) | ({"archive"} if state in _ARCHIVABLE else set())
        )
        assert set(forms) == expected, (state, forms)
        if "archive" in forms:
            done = await api.post(forms["archive"], data={"_csrf": csrf}, follow_redirects=False)
            assert done.status_code == 303
            back = await api.get(done.headers["location"])  # the task's page again, with the message
            assert back.status_code == 200 and f"Task {task_id} archived." in back.text
            assert await _state(api, task_id) == "archived"
        gone = await api.post(
            forms["delete"], data={"_csrf": csrf, "next": f"{ADMIN}/jobs/failed"}, follow_redirects=False
        )
        assert gone.status_code == 303 and gone.headers["location"] == f"{ADMIN}/jobs/failed"
        assert await _state(api, task_id) is None
