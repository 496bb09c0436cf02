"""Payloads and results of many MiB: the task page and ``GET /task`` show their first MiB, say how large they are,
and offer the whole value as a download, to whoever may read the task (real Valkey, the app served)."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import msgspec
from framework_admin.schemas import TASK_PREVIEW_BYTES
from playwright.sync_api import Page, expect

from framework.broker.broker import RedisBroker
from framework.clock import SystemClock
from framework.protocol.message import encode_message, new_message
from tests.plugins.admin.conftest import AUTH, RO_AUTH, login
from tests.plugins.admin.test_browser import sign_in

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from framework.protocol.keys import Schema
    from tests.plugins.admin.server import LiveServer

ADMIN = "/admin"
API = "/api/admin"
QUEUE = "large"  # no worker serves it: the tasks stay where they were put
BIG_PAYLOAD = msgspec.json.encode({"text": "é" * (3 * 1024 * 1024 // 2)})  # 3 MiB, two bytes a character
BIG_RESULT = b"\xff\x00<b>" + bytes(range(256)) * (20 * 1024 * 1024 // 256)  # 20 MiB, not UTF-8, markup
MOST_SHOWN = 2 * 6 * TASK_PREVIEW_BYTES + 64 * 1024
"""The most a task's view can be: two values cut at a MiB, each stored byte at most six bytes escaped (``\\u0000``,
``&#34;``), and the rest of the page."""
ODD_ID = 'odd "id"/../\r\nSet-Cookie: x=1; ü'


async def _enqueue(redis: Redis, schema: Schema, task_id: str, payload: bytes, result: bytes | None = None) -> None:
    msg = new_message(type="large:task", payload=payload, id=task_id, queue=QUEUE, retry=1, timeout=60, deadline=0)
    broker = RedisBroker(redis, schema, SystemClock(), wakeup=False)
    assert await broker.enqueue(QUEUE, task_id, encode_message(msg)) == 1
    if result is not None:
        await redis.hset(schema.queue(QUEUE).task(task_id), "result", result)


def _where(task_id: str) -> dict[str, str]:
    return {"id": task_id, "queue": QUEUE}


async def test_the_task_api_cuts_large_values_at_a_mib_and_gives_their_sizes(
    api: Any, redis: Redis, schema: Schema
) -> None:
    """A 20 MiB result was sent whole, as JSON and as text, on every refresh of the task page."""
    await _enqueue(redis, schema, "big", BIG_PAYLOAD, BIG_RESULT)
    answer = await api.get(f"{API}/task", params=_where("big"), headers=AUTH)
    assert answer.status_code == 200, answer.text[:500]
    assert len(answer.content) < MOST_SHOWN  # not the 23 MiB stored
    task = answer.json()
    assert (task["truncated"], task["payload_truncated"], task["result_truncated"]) == (True, True, True)
    assert (task["payload_size"], task["result_size"]) == (len(BIG_PAYLOAD), len(BIG_RESULT))
    assert (task["payload"], task["payload_is_json"], task["result"]) == (None, True, None)
    assert 0 < len(task["payload_text"].encode()) <= TASK_PREVIEW_BYTES
    assert BIG_PAYLOAD.decode().startswith(task["payload_text"])  # cut on a character boundary
    shown = BIG_RESULT[:TASK_PREVIEW_BYTES].decode("utf-8", errors="replace")
    assert task["result_text"] == shown


async def test_the_task_page_shows_the_start_says_the_size_and_links_the_downloads(
    api: Any, redis: Redis, schema: Schema
) -> None:
    await _enqueue(redis, schema, "big", BIG_PAYLOAD, BIG_RESULT)
    await login(api)
    page = await api.get(f"{ADMIN}/task", params=_where("big"))
    assert page.status_code == 200, page.text[:500]
    assert len(page.content) < MOST_SHOWN  # not the 23 MiB stored, escaped
    assert f"{len(BIG_PAYLOAD):,} bytes" in page.text and f"{len(BIG_RESULT):,} bytes" in page.text
    assert 'id="task-payload-cut"' in page.text and 'id="task-result-cut"' in page.text
    assert f'href="{ADMIN}/task/payload?queue={QUEUE}&amp;id=big"' in page.text
    assert f'href="{ADMIN}/task/result?queue={QUEUE}&amp;id=big"' in page.text
    payload_pre = html.unescape(page.text.split('<pre id="task-payload">', 1)[1].split("</pre>", 1)[0])
    assert BIG_PAYLOAD.decode().startswith(payload_pre)  # its text, not JSON pretty-printed
    assert 0 < len(payload_pre.encode()) <= TASK_PREVIEW_BYTES


async def test_small_values_are_shown_whole_and_not_marked_cut(api: Any, redis: Redis, schema: Schema) -> None:
    value = msgspec.json.encode({"text": "x" * (TASK_PREVIEW_BYTES - 20)})  # just under the cut
    await _enqueue(redis, schema, "small", value, value)
    task = (await api.get(f"{API}/task", params=_where("small"), headers=AUTH)).json()
    assert (task["truncated"], task["payload_truncated"], task["result_truncated"]) == (False, False, False)
    assert task["payload"] == task["result"] == msgspec.json.decode(value)
    assert (task["payload_size"], task["result_size"]) == (len(value), len(value))
    await login(api)
    page = await api.get(f"{ADMIN}/task", params=_where("small"))
    assert "task-payload-cut" not in page.text and "task-result-cut" not in page.text


async def test_downloads_are_the_stored_bytes_as_attachments_of_a_safe_type(
    api: Any, redis: Redis, schema: Schema
) -> None:
    await _enqueue(redis, schema, "big", BIG_PAYLOAD, BIG_RESULT)
    for part, stored, name in (
        ("payload", BIG_PAYLOAD, f"{QUEUE}-big-payload.json"),
        ("result", BIG_RESULT, f"{QUEUE}-big-result.bin"),
    ):
        got = await api.get(f"{ADMIN}/task/{part}", params=_where("big"), headers=AUTH)
        assert got.status_code == 200, got.text[:500]
        assert got.content == stored
        assert got.headers["content-type"] == "application/octet-stream"
        assert got.headers["content-disposition"] == f'attachment; filename="{name}"'
        assert got.headers["x-content-type-options"] == "nosniff"
        assert got.headers["content-length"] == str(len(stored))


async def test_any_task_id_makes_a_safe_file_name(api: Any, redis: Redis, schema: Schema) -> None:
    await _enqueue(redis, schema, ODD_ID, b"<script>alert(1)</script>", b"done")
    got = await api.get(f"{ADMIN}/task/payload", params=_where(ODD_ID), headers=AUTH)
    assert got.status_code == 200, got.text[:500]
    assert got.content == b"<script>alert(1)</script>"
    assert got.headers["content-type"] == "application/octet-stream"
    disposition = got.headers["content-disposition"]
    assert disposition == f'attachment; filename="{QUEUE}-odd_id_.._Set-Cookie_x_1-payload.bin"', disposition
    assert "set-cookie" not in got.headers


async def test_downloads_need_the_same_access_as_the_task_page(api: Any, redis: Redis, schema: Schema) -> None:
    await _enqueue(redis, schema, "big", BIG_PAYLOAD, BIG_RESULT)
    await _enqueue(redis, schema, "no-result", b"{}")
    for part in ("payload", "result"):
        url = f"{ADMIN}/task/{part}"
        anonymous = await api.get(url, params=_where("big"), follow_redirects=False)
        assert anonymous.status_code in (302, 303, 401), anonymous.status_code
        assert BIG_PAYLOAD[:100] not in anonymous.content and BIG_RESULT[:100] not in anonymous.content
        wrong = await api.get(
            url, params=_where("big"), headers={"Authorization": "Bearer wrong"}, follow_redirects=False
        )
        assert wrong.status_code in (302, 303, 401), wrong.status_code
        assert BIG_PAYLOAD[:100] not in wrong.content and BIG_RESULT[:100] not in wrong.content
        readonly = await api.get(url, params=_where("big"), headers=RO_AUTH)  # may read what it may see
        assert readonly.status_code == 200 and len(readonly.content) > TASK_PREVIEW_BYTES
        missing = await api.get(url, params={"id": "nope", "queue": QUEUE}, headers=AUTH)
        assert missing.status_code == 404
    no_result = await api.get(f"{ADMIN}/task/result", params=_where("no-result"), headers=AUTH)
    assert no_result.status_code == 404
    await login(api)  # the session cookie opens them, as it opens the page
    got = await api.get(f"{ADMIN}/task/result", params=_where("big"))
    assert got.status_code == 200 and got.content == BIG_RESULT


def test_the_page_of_a_large_task_opens_and_downloads_the_whole_result(
    page: Page, live: LiveServer, page_errors: list[str], tmp_path: Any
) -> None:
    """A page of tens of MiB hung the browser; now it shows the start, refreshes, and the link saves every byte."""

    async def put(services: Any) -> None:
        redis, schema = services.redis, services.schema
        await _enqueue(redis, schema, "big", BIG_PAYLOAD, BIG_RESULT)

    live.call(put)
    sign_in(page, live)
    page.goto(f"{live.url}{ADMIN}/task?queue={QUEUE}&id=big")
    expect(page.locator("#task-result-cut")).to_contain_text(f"{len(BIG_RESULT):,} bytes")
    expect(page.locator("#task-payload-cut")).to_contain_text(f"{len(BIG_PAYLOAD):,} bytes")
    expect(page.locator("#task-payload")).to_contain_text('{"text":"éééé')
    with page.expect_download() as info:
        page.click("#task-result-download")
    saved = tmp_path / "result"
    info.value.save_as(saved)
    assert info.value.suggested_filename == f"{QUEUE}-big-result.bin"
    assert saved.read_bytes() == BIG_RESULT
