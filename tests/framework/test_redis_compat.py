"""The queue on Redis proper (Debian's redis-server 7.0), not only on the embedded Valkey 9.

Every transition script, the worker, the forwarder, the inspector and the scheduler run against it.
CI installs redis-server (scripts/test); a developer machine without it skips this module.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from framework.client.client import Client
from framework.embedded.launch import free_port
from framework.errors import DuplicateTask, SkipRetry
from framework.inspector import Inspector
from framework.protocol.keys import Schema
from framework.settings import Settings
from framework.task import TaskDef
from framework.transport.connection import open_redis
from framework.worker.worker import Worker

REDIS = shutil.which("redis-server")
if REDIS is None:
    if os.environ.get("CI"):
        raise RuntimeError("redis-server is required in CI (scripts/test installs Debian's redis-server)")
    pytest.skip("redis-server is not installed here (CI installs it)", allow_module_level=True)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("redis7")
    port = free_port()
    assert REDIS is not None
    proc = subprocess.Popen(
        [REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while (
            subprocess.run(
                [REDIS.replace("server", "cli"), "-p", str(port), "ping"], capture_output=True, check=False
            ).stdout.strip()
            != b"PONG"
        ):
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


class N(msgspec.Struct, frozen=True, kw_only=True):
    n: int


@pytest.fixture
async def redis7(redis_server: str) -> AsyncIterator[Any]:
    conn = open_redis(redis_server)
    try:
        yield conn
    finally:
        await conn.aclose()


async def test_server_is_redis_7(redis7: Any) -> None:
    info = await redis7.info("server")
    assert str(info["redis_version"]).startswith("7.")


async def test_enqueue_work_retry_archive_inspect_on_redis_7(
    redis_server: str, redis7: Any, namespace: str, tmp_path: Path
) -> None:
    settings = Settings(redis_url=redis_server, namespace=namespace, data_dir=str(tmp_path), concurrency=4)
    seen: list[int] = []

    async def handle(ctx: Any, p: N) -> None:
        seen.append(p.n)
        if p.n == 2:
            raise SkipRetry("permanent")
        if p.n == 3 and ctx.retried == 0:
            raise ValueError("first attempt fails")

    task = TaskDef("compat:n", N, handle, retry_delay=lambda retried, error: 0.0)
    schema = Schema(namespace)
    client = Client(redis7, schema=schema, settings=settings)
    for n in range(4):
        await client.enqueue(task, N(n=n), retention=60 if n == 0 else 0)
    await client.enqueue(task, N(n=9), unique=60, process_in=1)
    with pytest.raises(DuplicateTask):
        await client.enqueue(task, N(n=9), unique=60, process_in=1)
    await client.enqueue(task, N(n=7), group="g1")

    worker = Worker(settings, tasks=[task], redis=redis7)
    await worker.start()
    try:
        deadline = time.monotonic() + 20
        while sorted(set(seen)) != [0, 1, 2, 3, 9] or seen.count(3) < 2:
            assert time.monotonic() < deadline, seen
            await asyncio.sleep(0.05)
    finally:
        await worker.stop()

    inspector = Inspector(redis7, schema)
    info = await inspector.queue_info("default")
    assert info.archived == 1
    assert info.completed == 1
    assert info.aggregating == 1
    assert info.processed_total >= 6
    archived = await inspector.list_tasks("default", "archived")
    assert archived.tasks[0].error == "SkipRetry: permanent"
    await inspector.run_task("default", archived.tasks[0].id)
    assert (await inspector.queue_info("default")).pending == 1
