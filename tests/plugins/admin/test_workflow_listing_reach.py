"""A workflow listing reaches the newest workflows only: a page far past that is refused at once, not walked to."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from framework.inspector import Inspector
from framework.inspector.workflows import MAX_OFFSET
from tests.plugins.admin.conftest import AUTH, login

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from framework.protocol.keys import Schema


async def test_an_offset_past_the_reach_is_refused_naming_it(redis: Redis, schema: Schema) -> None:
    inspector = Inspector(redis, schema)
    assert await inspector.workflows(offset=MAX_OFFSET) == []
    with pytest.raises(ValueError, match=f"must be 0 to {MAX_OFFSET}.*filter by queue or status"):
        await inspector.workflows(offset=MAX_OFFSET + 1)


async def test_a_page_far_past_the_reach_answers_400(api: Any) -> None:
    await login(api)
    page = await api.get("/admin/workflows", params={"page": 10**9})
    assert page.status_code == 400, page.text[:300]
    assert "filter by queue or status" in page.text
    assert (await api.get("/admin/workflows", params={"page": 2})).status_code == 200
    listed = await api.get("/api/admin/workflows", params={"offset": 10**12}, headers=AUTH)
    assert listed.status_code == 400
