"""A Redis that answers with errors (full, unable to persist) is told apart from one that is gone.

Out of memory, the server keeps answering reads and writes that need no memory, and refuses the rest:
the worker's components then alternated failures and successes, and each pair was logged as an outage and a
reconnection, ``redis_unavailable``/``redis_reconnected`` every few seconds for as long as the server stayed
full. Now the first refusal is logged once (``redis_refusing``, with the server's error), the rest at debug
level, and ``redis_refusals_stopped`` once none came for ``REFUSALS_QUIET`` seconds. No task is lost.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
import pytest
from structlog.testing import capture_logs

from framework.client.client import Client
from framework.embedded.process import start_test_server
from framework.protocol.keys import Schema
from framework.settings import Settings
from framework.task import TaskDef
from framework.transport.connection import open_redis
from framework.worker.worker import Worker
from tests.framework.worker_app import wait_until

if TYPE_CHECKING:
    from pathlib import Path


class P(msgspec.Struct, frozen=True):
    n: int = 0


ran: set[int] = set()


async def _note(ctx: Any, p: P) -> None:
    ran.add(p.n)  # no Redis of its own: only the framework's calls meet the refusals


NOTE = TaskDef("refusals:note", P, _note)


def _events(logs: list[dict[str, Any]], *names: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] in names]


async def test_a_full_server_is_logged_as_refusing_once_not_as_an_outage_each_time(
    tmp_path: Path, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("framework.transport.health.REFUSALS_QUIET", 1.0)
    ran.clear()
    server = start_test_server(tmp_path / "full")
    admin = open_redis(server.url)
    settings = Settings(
        redis_url=server.url,
        namespace=namespace,
        data_dir=str(tmp_path / "data"),
        heartbeat_interval=0.2,
        forward_interval=0.1,
        recoverer_interval=0.2,
        load_plugins=[],
    )
    client = Client.from_url(server.url, schema=Schema(namespace))
    worker = Worker(settings, tasks=[NOTE])
    try:
        await worker.start()
        with capture_logs() as logs:
            await client.enqueue(NOTE, P(n=1))
            await wait_until(lambda: _true(1 in ran))
            await admin.config_set("maxmemory-policy", "noeviction")
            await admin.config_set("maxmemory", "1")

            async def refused_many_times() -> bool:
                return worker.health.refusals >= 10

            await wait_until(refused_many_times, timeout=30)
            await admin.config_set("maxmemory", "0")
            await client.enqueue(NOTE, P(n=2))

            async def over() -> bool:
                return 2 in ran and bool(_events(logs, "redis_refusals_stopped"))

            await wait_until(over, timeout=30)
        [refusing] = _events(logs, "redis_refusing")
        assert refusing["log_level"] == "warning"
        assert "maxmemory" in refusing["error"]
        assert _events(logs, "redis_unavailable", "redis_reconnected") == []  # the server never went away
        [stopped] = _events(logs, "redis_refusals_stopped")
        assert stopped["log_level"] == "info"
        assert stopped["refusals"] >= 10
        assert ran == {1, 2}
    finally:
        await worker.stop()
        await client.close()
        await admin.aclose()
        server.stop()


async def _true(value: bool) -> bool:
    return value
