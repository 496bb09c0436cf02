"""A backlog of tasks whose type no handler here serves is logged per type, not per task.

Each such task is put back (see ``OutcomeWriter.unknown_type``) and used to be logged each time: 20,000 of
them (a rolling deploy whose new code enqueues a type the old workers do not know yet) made 20,000 warning
lines every time the backlog came round. Now the first deferral of a type in a queue is logged at once and
the rest at most once per ``UNKNOWN_TYPE_LOG_INTERVAL``, counted in ``also_deferred``.
"""

from __future__ import annotations

from typing import Any

import pytest
from structlog.testing import capture_logs

from framework.inspector import Inspector
from framework.protocol.keys import Schema
from tests.framework.worker_app import wait_until

N = 50


def _deferrals(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == "task_type_unknown" and e["outcome"] == "deferred"]


async def test_a_backlog_of_unknown_tasks_is_logged_once_per_interval_with_a_count(
    start: Any, client: Any, redis: Any, schema: Schema, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("framework.worker.outcomes.UNKNOWN_TYPE_DELAYS", (600, 600))  # no round comes by itself
    monkeypatch.setattr("framework.worker.outcomes.UNKNOWN_TYPE_LOG_INTERVAL", 3600.0)
    await start(settings=settings.replace(load_plugins=[]))
    retry = schema.queue("default").retry
    with capture_logs() as logs:
        for _ in range(N):
            await client.enqueue("p:nobody", b"{}")

        async def all_put_back() -> bool:
            return await redis.zcard(retry) == N and bool(_deferrals(logs))

        await wait_until(all_put_back)
        [first] = _deferrals(logs)  # one line for the whole round
        assert first["type"] == "p:nobody" and first["queue"] == "default" and first["log_level"] == "warning"
        assert "also_deferred" not in first

        monkeypatch.setattr("framework.worker.outcomes.UNKNOWN_TYPE_LOG_INTERVAL", 0.0)  # every deferral a line
        inspector = Inspector(redis, schema=schema)
        assert await inspector.run_all("default", "retry") == N  # the backlog comes round again

        async def round_two_under_way() -> bool:  # its first deferral's line, then one for each (interval 0)
            return len(_deferrals(logs)) >= 3

        await wait_until(round_two_under_way, timeout=60)
    lines = _deferrals(logs)
    assert lines[1]["also_deferred"] == N - 1  # the first round's other deferrals, counted, not lost
    assert "also_deferred" not in lines[2]
