"""A Redis that stalls without going away (``CLIENT PAUSE``, as in a failover): stopping processes, waiting clients.

Each test has a Valkey of its own, since a pause holds every client of the server. A ``WRITE`` pause is ended
with ``CLIENT UNPAUSE`` as soon as the test has seen what it waits for; an ``ALL`` pause holds that command
too (Valkey), so it lasts as long as it was set for.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from framework.client.client import Client
from framework.embedded.process import ValkeyProcess, start_test_server
from framework.errors import RedisUnavailable, WaitTimeout
from framework.protocol.keys import Schema
from framework.settings import Settings
from tests.framework.worker_app import JOB, ROOT, Job, start_worker, stop_process, wait_until

FAST = {"heartbeat_interval": 0.5, "recoverer_interval": 0.5, "shutdown_timeout": 1.0, "cancel_grace": 1.0}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ValkeyProcess]:
    """A Valkey for this test alone."""
    server = start_test_server(tmp_path / "valkey")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def admin(server: ValkeyProcess) -> AsyncIterator[Any]:
    """A client that pauses and unpauses the server (and reads what the test checks).

    One connection, opened now: a connection opened during a pause would wait for its handshake, and the
    pool's health-check PING, like any other command, until the pause ends.
    """
    conn = Redis.from_url(server.url, single_connection_client=True, socket_timeout=None)
    await conn.ping()
    try:
        yield conn
    finally:
        await conn.execute_command("CLIENT", "UNPAUSE")
        await conn.aclose()


# (mode, pause in ms): a WRITE pause is ended as soon as the worker is gone; an ALL pause holds CLIENT UNPAUSE
# too, so it is only as long as the test needs to tell a bounded shutdown from one that waits for the pause
PAUSES = [("WRITE", 60_000), ("ALL", 10_000)]


@pytest.mark.parametrize(("mode", "pause"), PAUSES)
async def test_an_idle_worker_stops_in_time_while_redis_is_paused_and_loses_nothing(
    server: ValkeyProcess, admin: Any, namespace: str, tmp_path: Path, mode: str, pause: int
) -> None:
    """SIGTERM reaches an idle worker while the server is paused for longer than its shutdown may take.

    The worker withdraws from the queue's waiters and waits for its dequeue on the way out; neither gets an
    answer, and it exits within ``shutdown_timeout + cancel_grace`` (with a wide margin) rather than when the
    pause ends. An enqueue sent during the pause completes when the pause ends, and its task runs once.
    """
    settings = Settings(redis_url=server.url, namespace=namespace, data_dir=str(tmp_path / "data"), **FAST)
    schema = Schema(namespace)
    qk = schema.queue("default")
    first = start_worker(settings, tmp_path / "first.log")
    second = None
    client = Client.from_settings(settings)
    try:

        async def waiting() -> bool:
            return bool(await admin.llen(qk.waiters))

        warm = await client.enqueue(JOB, Job(), queue="low")  # the client's queue records are written now

        async def idle() -> bool:
            done = await admin.lrange(f"{namespace}:test:done", 0, -1)
            return done == [warm.id.encode()] and await waiting()

        await wait_until(idle, timeout=30)  # ran the first task, then registered for hand-offs
        await admin.execute_command("CLIENT", "PAUSE", pause, mode)
        enqueue = asyncio.create_task(client.enqueue(JOB, Job()))
        stopped_at = time.monotonic()
        first.send_signal(signal.SIGTERM)
        status = await asyncio.to_thread(first.wait, 30)
        took = time.monotonic() - stopped_at
        await admin.execute_command("CLIENT", "UNPAUSE")
        assert status == 0
        assert took < settings.shutdown_timeout + settings.cancel_grace + 6, f"stopped after {took:.1f} s"
        assert not enqueue.done() or enqueue.exception() is None
        info = await enqueue
        log = (tmp_path / "first.log").read_text()
        assert "worker_withdraw_failed" in log
        assert "worker_stopped" in log
        # the heartbeat's beat held by the pause ends when the worker closes its client: not an outage to report
        assert "redis_unavailable" not in log.split("worker_stopped", 1)[1]

        second = start_worker(settings, tmp_path / "second.log")

        async def ran() -> bool:
            return {warm.id, info.id} <= {i.decode() for i in await admin.lrange(f"{namespace}:test:done", 0, -1)}

        await wait_until(ran, timeout=30)
        runs = await admin.hgetall(f"{namespace}:test:runs")
        assert {k.decode(): int(v) for k, v in runs.items()} == {warm.id: 1, info.id: 1}
    finally:
        await admin.execute_command("CLIENT", "UNPAUSE")
        stop_process(first)
        if second is not None:
            stop_process(second)
        await client.close()


async def test_a_waiter_whose_marker_write_is_paused_times_out_on_time(
    server: ValkeyProcess, admin: Any, namespace: str, tmp_path: Path
) -> None:
    """``Client.wait`` started while writes are paused for longer than its timeout.

    Its marker write gets no answer until the pause ends; the wait still ends with :class:`WaitTimeout` when
    its own timeout is up, not when the pause ends (the guard is far longer than the timeout, far shorter than
    the pause). Once the pause ends, waiting again gets the task's outcome.
    """
    settings = Settings(redis_url=server.url, namespace=namespace, data_dir=str(tmp_path / "data"), **FAST)
    client = Client.from_settings(settings)
    worker = None
    try:
        info = await client.enqueue(JOB, Job(), retention=60)
        await admin.execute_command("CLIENT", "PAUSE", 120_000, "WRITE")
        with pytest.raises(WaitTimeout):
            await asyncio.wait_for(client.wait(info, timeout=1.0), 30)
        await admin.execute_command("CLIENT", "UNPAUSE")
        worker = start_worker(settings, tmp_path / "worker.log")
        assert await client.wait(info, timeout=30) is None
        assert await admin.lrange(f"{namespace}:test:done", 0, -1) == [info.id.encode()]
    finally:
        await admin.execute_command("CLIENT", "UNPAUSE")
        if worker is not None:
            stop_process(worker)
        await client.close()


async def test_a_waiter_held_past_the_socket_timeout_gets_redis_unavailable(
    server: ValkeyProcess, admin: Any, namespace: str, tmp_path: Path
) -> None:
    """``Client.wait`` started while every command is paused for longer than redis-py's 5 s socket timeout.

    Its subscription gets no answer: it fails with :class:`RedisUnavailable` naming the server, not with
    redis-py's ``TimeoutError`` (which a caller would take for neither a lost link nor a ``WaitTimeout``), and
    before its own timeout. Once the pause ends, waiting again gets the task's outcome.
    """
    settings = Settings(redis_url=server.url, namespace=namespace, data_dir=str(tmp_path / "data"), **FAST)
    client = Client.from_settings(settings)
    worker = None
    try:
        info = await client.enqueue(JOB, Job(), retention=60)
        await admin.execute_command("CLIENT", "PAUSE", 6_000, "ALL")  # ALL holds CLIENT UNPAUSE too: it runs out
        with pytest.raises(RedisUnavailable, match=server.url.removeprefix("redis://")):
            await client.wait(info, timeout=50)
        worker = start_worker(settings, tmp_path / "worker.log")
        assert await client.wait(info, timeout=30) is None
        assert await admin.lrange(f"{namespace}:test:done", 0, -1) == [info.id.encode()]
    finally:
        if worker is not None:
            stop_process(worker)
        await client.close()


def _start_scheduler(url: str, namespace: str, log: Path) -> subprocess.Popen[bytes]:
    """A scheduler process (tests/framework/scheduler_app.py: entry ``tick``, every second, queue ``cron``)."""
    with log.open("wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.framework.scheduler_app", url, namespace],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


async def test_a_scheduler_stops_in_time_while_redis_is_paused_and_no_tick_fires_twice_or_is_lost(
    server: ValkeyProcess, admin: Any, namespace: str, tmp_path: Path
) -> None:
    """Two schedulers; SIGTERM reaches one while writes are paused for longer than its stop may take.

    It exits without waiting for the pause to end (its tick in flight and the removal of its records get no
    answer). The other goes on: the ticks that came due during the pause fire late, each once, none lost.
    """
    schema = Schema(namespace)
    stopping = _start_scheduler(server.url, namespace, tmp_path / "stopping.log")
    staying = _start_scheduler(server.url, namespace, tmp_path / "staying.log")
    try:

        async def both() -> bool:
            return bool(await admin.zcard(schema.schedulers) == 2 and await admin.llen(schema.queue("cron").pending))

        await wait_until(both, timeout=30)
        await admin.execute_command("CLIENT", "PAUSE", 120_000, "WRITE")
        paused_at = time.time()
        stopping.send_signal(signal.SIGTERM)
        status = await asyncio.to_thread(stopping.wait, 60)
        assert status == 0
        took = time.time() - paused_at
        await admin.execute_command("CLIENT", "UNPAUSE")
        assert took < 30, f"stopped after {took:.1f} s"  # two 5 s waits at most, far from the 120 s pause
        resumed_at = time.time()

        async def caught_up() -> bool:
            ids = await admin.lrange(schema.queue("cron").pending, 0, -1)
            return max(int(i.rsplit(b":", 1)[1]) for i in ids) >= resumed_at + 1

        await wait_until(caught_up, timeout=30)
        ids = await admin.lrange(schema.queue("cron").pending, 0, -1)
        ticks = sorted(int(i.rsplit(b":", 1)[1]) for i in ids)
        assert len(ticks) == len(set(ticks)), "a tick was enqueued twice"
        assert ticks == list(range(ticks[0], ticks[-1] + 1)), "a tick was lost"
        assert ticks[0] < paused_at < resumed_at < ticks[-1]
    finally:
        await admin.execute_command("CLIENT", "UNPAUSE")
        for proc in (stopping, staying):
            stop_process(proc)
