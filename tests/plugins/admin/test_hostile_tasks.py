"""Task records another client could write, that the admin must show without failing: payloads and results nested
a thousand levels deep or megabytes long, state fields that name no state, and page numbers far past the end (real
Valkey)."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
from framework_admin.schemas import LIST_PREVIEW_BYTES
from structlog.testing import capture_logs

from framework.broker.broker import RedisBroker
from framework.clock import SystemClock
from framework.inspector import MAX_JSON_DEPTH, Inspector, TaskState
from framework.protocol.message import encode_message, new_message
from tests.plugins.admin.conftest import AUTH, login

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from framework.protocol.keys import Schema

ADMIN = "/admin"
API = "/api/admin"
QUEUE = "hostile"  # no worker serves it: the tasks stay where they were put


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


async def _enqueue(redis: Redis, schema: Schema, task_id: str, payload: bytes, queue: str = QUEUE) -> None:
    msg = new_message(type="hostile:task", payload=payload, id=task_id, queue=queue, retry=1, timeout=60, deadline=0)
    broker = RedisBroker(redis, schema, SystemClock(), wakeup=False)
    assert await broker.enqueue(queue, task_id, encode_message(msg)) == 1


# -- large payloads and results ---------------------------------------------------------------------


async def test_listings_cut_large_payloads_and_results_short_and_the_task_view_has_them_whole(
    api: Any, redis: Redis, schema: Schema
) -> None:
    """A page of 100 tasks with 4 MiB payloads was a response of about a gigabyte (each payload as JSON and text)."""
    big = msgspec.json.encode({"text": "é" * 300_000})  # two bytes a character: cuts fall inside characters
    await _enqueue(redis, schema, "big", big)
    await redis.hset(schema.queue(QUEUE).task("big"), "result", big)
    await _enqueue(redis, schema, "small", b'{"n": 1}')
    await login(api)
    listed = await api.get(f"{API}/jobs/pending", params={"queue": QUEUE}, headers=AUTH)
    assert listed.status_code == 200, listed.text[:500]
    assert len(listed.content) < 4 * LIST_PREVIEW_BYTES
    rows = {t["id"]: t for t in listed.json()["tasks"]}
    row = rows["big"]
    assert (row["truncated"], row["payload"], row["payload_is_json"], row["payload_size"]) == (
        True,
        None,
        True,
        len(big),
    )
    assert 0 < len(row["payload_text"].encode()) <= LIST_PREVIEW_BYTES
    assert big.decode().startswith(row["payload_text"])  # cut on a character boundary: no replacement character
    assert row["result"] is None and big.decode().startswith(row["result_text"])
    small = rows["small"]
    assert (small["truncated"], small["payload"], small["payload_size"]) == (False, {"n": 1}, 8)
    detail = await api.get(f"{API}/task", params={"id": "big", "queue": QUEUE}, headers=AUTH)
    assert detail.status_code == 200
    whole = detail.json()
    assert (whole["truncated"], whole["payload"], whole["result_text"]) == (
        False,
        msgspec.json.decode(big),
        big.decode(),
    )
    page = await api.get(f"{ADMIN}/jobs/pending", params={"queue": QUEUE})
    assert page.status_code == 200 and "éééé" in page.text


# -- deeply nested JSON --------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 990, 5000])
async def test_deeply_nested_payloads_and_results_show_as_text(
    api: Any, redis: Redis, schema: Schema, depth: int
) -> None:
    deep = _nested(depth)
    await _enqueue(redis, schema, "deep", deep)
    await redis.hset(schema.queue(QUEUE).task("deep"), "result", deep)
    await _enqueue(redis, schema, "fine", _nested(MAX_JSON_DEPTH))  # as deep as JSON is shown as JSON
    await login(api)

    listed = await api.get(f"{API}/jobs/pending", params={"queue": QUEUE}, headers=AUTH)
    assert listed.status_code == 200, listed.text[:500]
    rows = {t["id"]: t for t in listed.json()["tasks"]}
    assert (rows["deep"]["payload"], rows["deep"]["payload_is_json"]) == (None, False)
    assert rows["deep"]["payload_text"] == deep.decode()[:LIST_PREVIEW_BYTES]  # listings cut long payloads short
    assert rows["deep"]["truncated"] == (len(deep) > LIST_PREVIEW_BYTES)
    assert rows["fine"]["payload_is_json"] and rows["fine"]["payload"] is not None
    detail = await api.get(f"{API}/task", params={"id": "deep", "queue": QUEUE}, headers=AUTH)
    assert detail.status_code == 200, detail.text[:500]
    assert (detail.json()["result"], detail.json()["result_text"]) == (None, deep.decode())

    for url in (f"{ADMIN}/jobs/pending", f"{ADMIN}/jobs/pending?queue={QUEUE}", ADMIN):
        page = await api.get(url)
        assert page.status_code == 200, (url, page.text[:500])
    page = await api.get(f"{ADMIN}/task", params={"id": "deep", "queue": QUEUE})
    assert page.status_code == 200, page.text[:500]
    assert f'<pre id="task-payload">{deep.decode()}</pre>' in page.text
    assert f'<pre id="task-result">{deep.decode()}</pre>' in page.text
    assert (await api.get(f"{ADMIN}/task", params={"id": "fine", "queue": QUEUE})).status_code == 200


# -- state fields that name no state -------------------------------------------------------------------


async def _damage_state(redis: Redis, schema: Schema, task_id: str, state: bytes) -> None:
    await redis.hset(schema.queue(QUEUE).task(task_id), "state", state)


async def test_a_record_whose_state_names_no_state_shows_where_it_is(api: Any, redis: Redis, schema: Schema) -> None:
    for task_id in ("bogus", "binary", "healthy"):
        await _enqueue(redis, schema, task_id, b'{"n": 1}')
    await _damage_state(redis, schema, "bogus", b"PENDING")
    await _damage_state(redis, schema, "binary", b"\xff\xfe")
    qk = schema.queue(QUEUE)
    await _enqueue(redis, schema, "later", b"{}")
    await redis.lrem(qk.pending, 0, "later")  # moved to the scheduled set, its state field damaged
    await redis.zadd(qk.scheduled, {"later": 4_000_000_000})
    await _damage_state(redis, schema, "later", b"waiting")
    await _enqueue(redis, schema, "orphan", b"{}")
    await redis.lrem(qk.pending, 0, "orphan")  # in no state's collection
    await _damage_state(redis, schema, "orphan", b"lost")
    await login(api)

    with capture_logs() as logs:
        listed = await api.get(f"{API}/jobs/pending", params={"queue": QUEUE}, headers=AUTH)
    assert listed.status_code == 200, listed.text[:500]
    assert {t["id"]: t["state"] for t in listed.json()["tasks"]} == {
        "bogus": "pending",
        "binary": "pending",
        "healthy": "pending",
    }
    [warning] = [e for e in logs if e["event"] == "task_state_unknown"]
    assert warning["count"] == 2 and sorted(warning["task_ids"]) == ["binary", "bogus"]
    scheduled = (await api.get(f"{API}/jobs/scheduled", params={"queue": QUEUE}, headers=AUTH)).json()
    assert [(t["id"], t["state"]) for t in scheduled["tasks"]] == [("later", "scheduled")]
    assert scheduled["tasks"][0]["next_process_at"] is not None

    for task_id, state in (("bogus", "pending"), ("binary", "pending"), ("later", "scheduled")):
        detail = await api.get(f"{API}/task", params={"id": task_id, "queue": QUEUE}, headers=AUTH)
        assert detail.status_code == 200 and detail.json()["state"] == state, detail.text[:500]
        assert (await api.get(f"{API}/tasks/{task_id}", headers=AUTH)).json()["state"] == state  # without the queue
        page = await api.get(f"{ADMIN}/task", params={"id": task_id, "queue": QUEUE})
        assert page.status_code == 200 and f'data-state="{state}"' in page.text
    orphan = await api.get(f"{API}/task", params={"id": "orphan", "queue": QUEUE}, headers=AUTH)
    assert orphan.status_code == 404 and "orphan" in orphan.json()["detail"]
    for url in (f"{ADMIN}/jobs/pending?queue={QUEUE}", f"{ADMIN}/jobs/pending", ADMIN, f"{ADMIN}/jobs/scheduled"):
        assert (await api.get(url)).status_code == 200, url

    for action in ("run", "archive"):  # the scripts cannot tell where it is: refused, saying why
        r = await api.post(f"{API}/task/{action}", params={"id": "bogus", "queue": QUEUE}, headers=AUTH)
        assert r.status_code == 409 and "'PENDING' is not a task state" in r.json()["detail"], (action, r.text)
    r = await api.post(f"{API}/task/cancel", params={"id": "bogus", "queue": QUEUE}, headers=AUTH)
    assert r.status_code == 409 and "only active tasks" in r.json()["detail"]
    r = await api.delete(f"{API}/task", params={"id": "binary", "queue": QUEUE}, headers=AUTH)
    assert r.status_code == 200 and not await redis.exists(qk.task("binary"))
    assert b"binary" not in await redis.lrange(qk.pending, 0, -1)  # its id left the pending list too
    assert (await api.get(f"{API}/jobs/pending", params={"queue": QUEUE}, headers=AUTH)).status_code == 200


# -- pages past the end --------------------------------------------------------------------------------


@pytest.mark.parametrize("page_number", [10**18, 10**30])
async def test_a_page_far_past_the_end_is_empty(api: Any, redis: Redis, schema: Schema, page_number: int) -> None:
    await _enqueue(redis, schema, "one", b"{}")
    await login(api)
    for state in ("pending", "scheduled", "aggregating"):
        for params in ({"queue": QUEUE}, {}, {"queue": QUEUE, "type": "hostile:task"}):
            r = await api.get(
                f"{API}/jobs/{state}", params={**params, "page": page_number, "page_size": 100}, headers=AUTH
            )
            assert r.status_code == 200, (state, params, r.text)
            assert r.json()["tasks"] == [] and r.json()["total"] == (1 if state == "pending" else 0)
        shown = await api.get(f"{ADMIN}/jobs/{state}", params={"queue": QUEUE, "page": page_number})
        assert shown.status_code == 200 and f"No {state} tasks." in html.unescape(shown.text)
    history = await api.get(
        f"{API}/cron/some-entry/history", params={"page": page_number, "page_size": 100}, headers=AUTH
    )
    assert history.status_code == 200 and history.json() == []


@pytest.mark.parametrize("page_number", [10**17, 10**18, 10**30])
async def test_the_inspector_reads_a_page_far_past_the_end_as_empty(
    redis: Redis, schema: Schema, page_number: int
) -> None:
    await _enqueue(redis, schema, "one", b"{}")
    inspector = Inspector(redis, schema)
    for state in TaskState:
        read = await inspector.list_tasks(QUEUE, state, page=page_number, size=1000)
        assert read.tasks == [] and read.page == page_number
        assert read.total == (1 if state is TaskState.PENDING else 0)
    assert await inspector.scheduler_history("some-entry", page=page_number, size=1000) == []
