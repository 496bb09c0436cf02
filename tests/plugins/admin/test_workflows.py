"""The dashboard's workflow pages and endpoints, through a test client: lists, the drawn graph, roles, CSRF."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from framework.workflow import Workflow, chord
from tests.plugins.admin.conftest import AUTH, OK, RO_AUTH, Job, login

API = "/api/admin"


class Many(msgspec.Struct, frozen=True, kw_only=True):
    values: list[Any] = []


def _fan(n: int) -> Workflow:
    # steps go to a queue no worker serves: the workflow stays running, its first steps pending
    return chord(
        [OK.step(Job(text=str(i)), queue="parked", name=f"s{i}") for i in range(n)], OK.step(Job(), name="end")
    )


async def test_a_big_fan_out_is_drawn_as_one_counted_box_and_polled_by_counts(api: Any, client: Any) -> None:
    await client.start_workflow(_fan(120), workflow_id="big")
    page = await api.get("/admin/workflow", params={"id": "big", "queue": "parked"}, headers=AUTH)
    assert page.status_code == 200, page.text
    nodes = re.findall(r'data-node="([^"]+)" data-state="([^"]+)"', page.text)
    assert nodes == [("layer:0", "pending"), ("end", "waiting")]
    assert "120 steps: 120 pending" in page.text
    assert page.text.count('class="wf-edge"') == 1
    assert "the first 120 of 121" not in page.text  # 121 steps: all listed (up to 200)

    live = (await api.get(f"{API}/workflow/live", params={"id": "big"}, headers=AUTH)).json()
    assert live["steps"] == {"end": "waiting"}  # never every step's state
    assert live["groups"] == {
        "layer:0": {"state": "pending", "text": "120 steps: 120 pending", "counts": {"pending": 120}}
    }
    assert live["summary"]["status"] == "running"

    listed = (await api.get(f"{API}/workflows", params={"status": "running"}, headers=AUTH)).json()
    assert [w["id"] for w in listed] == ["big"]
    detail = (await api.get(f"{API}/workflow", params={"id": "big", "queue": "parked"}, headers=AUTH)).json()
    assert len(detail["steps"]) == 121 and len(detail["edges"]) == 120
    assert (await api.get(f"{API}/workflows", params={"status": "nope"}, headers=AUTH)).status_code == 400
    paths = (await api.get("/schema/openapi.json", headers=AUTH)).json()["paths"]
    assert {f"{API}/workflows", f"{API}/workflow", f"{API}/workflow/live", f"{API}/workflow/{{action}}"} <= set(paths)


async def test_the_list_page_filters_by_status_and_links_each_workflow(api: Any, client: Any) -> None:
    await client.start_workflow(_fan(2), workflow_id="small/one")
    await client.start_workflow(_fan(2), workflow_id="other")
    await client.cancel_workflow("other", queue="parked")
    page = await api.get("/admin/workflows", headers=AUTH)
    assert page.status_code == 200
    assert re.findall(r'<tr data-id="([^"]+)" data-status="([^"]+)"', page.text) == [
        ("other", "cancelled"),
        ("small/one", "running"),
    ]
    assert "/admin/workflow?queue=parked&amp;id=small%2Fone" in page.text
    assert 'href="/admin/workflows"' in page.text  # the nav link
    running = await api.get("/admin/workflows", params={"status": "running"}, headers=AUTH)
    assert re.findall(r'<tr data-id="([^"]+)"', running.text) == ["small/one"]
    assert (await api.get("/admin/workflow", params={"id": "missing"}, headers=AUTH)).status_code == 404
    shown = await api.get("/admin/workflow", params={"id": "small/one"}, headers=AUTH)
    assert shown.status_code == 200 and 'data-node="end" data-state="waiting"' in shown.text


async def test_cancel_and_retry_need_the_admin_role_and_the_csrf_token(api: Any, client: Any) -> None:
    await client.start_workflow(_fan(2), workflow_id="steer")
    refused = await api.post(f"{API}/workflow/cancel", params={"id": "steer"}, headers=RO_AUTH)
    assert refused.status_code == 403
    page = await api.get("/admin/workflow", params={"id": "steer"}, headers=RO_AUTH)
    assert 'data-wf-action="cancel"' not in page.text  # no buttons for a read-only user

    csrf = await login(api)
    no_token = await api.post("/admin/workflow/cancel", params={"id": "steer"}, data={}, follow_redirects=False)
    assert no_token.status_code == 403
    done = await api.post(
        "/admin/workflow/cancel", params={"id": "steer"}, data={"_csrf": csrf}, follow_redirects=False
    )
    assert done.status_code == 303
    assert done.headers["location"] == "/admin/workflow?queue=parked&id=steer"
    status = (await api.get(f"{API}/workflow/live", params={"id": "steer"})).json()["summary"]["status"]
    assert status == "cancelled"

    again = (await api.post(f"{API}/workflow/retry", params={"id": "steer"}, headers=AUTH)).json()
    assert (again["workflow_id"], again["state"], again["count"]) == ("steer", "cancelled", 2)
    assert "running again" in again["message"]
    twice = (await api.post(f"{API}/workflow/retry", params={"id": "steer"}, headers=AUTH)).json()
    assert "nothing to retry" in twice["message"]
    missing = await api.post(f"{API}/workflow/cancel", params={"id": "nope"}, headers=AUTH)
    assert missing.status_code == 404
    unknown = await api.post(f"{API}/workflow/pause", params={"id": "steer"}, headers=AUTH)
    assert unknown.status_code == 404
