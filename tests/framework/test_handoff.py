"""Handoff: an enqueue gives its task straight to an idle, listening worker (one hop instead of three).

The Lua level (who gets a task, what Redis holds afterwards, when nothing is handed off) and the worker
level (idle workers register, a busy or stopping one gives the task back, a SIGKILLed one loses nothing).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from framework.broker.base import INFLIGHT_TTL, LEASE_SECONDS
from framework.broker.broker import RedisBroker
from framework.client.client import TaskCall
from framework.clock import SystemClock
from framework.protocol.keys import Schema
from framework.protocol.message import encode_message, new_message
from framework.task import TaskDef
from framework.transport.lean.subscriber import Subscriber
from framework.worker.worker import Worker, _split_handoff
from tests.framework.worker_app import (
    JOB,
    Job,
    require_password,
    start_worker,
    stop_process,
    task_record,
    wait_until,
)


class P(msgspec.Struct, frozen=True, kw_only=True):
    n: int = 0


@pytest.fixture
def broker(redis: Any, schema: Schema) -> RedisBroker:
    b = RedisBroker(redis, schema, SystemClock())
    assert b.handoff, "the test server is a single server: enqueues offer handoffs"
    return b


class Listener:
    """A raw subscriber on a fake worker's handoff channel."""

    def __init__(self, redis: Any, schema: Schema, server_id: str) -> None:
        self.pubsub = redis.pubsub(ignore_subscribe_messages=True)
        self.channel = schema.handoff_channel(server_id)

    async def __aenter__(self) -> Listener:
        await self.pubsub.subscribe(self.channel)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.pubsub.aclose()

    async def next(self, timeout: float = 2.0) -> tuple[str, str, bytes] | None:
        until = time.monotonic() + timeout
        while (left := until - time.monotonic()) > 0:
            message = await self.pubsub.get_message(timeout=left)  # None also for a skipped confirmation
            if message is not None:
                return _split_handoff(message["data"])
        return None


def _message(queue: str = "default", task_id: str = "t1") -> tuple[str, bytes]:
    msg = new_message(type="h:test", payload=b'{"n":1}', id=task_id, queue=queue, retry=3, timeout=0, deadline=0)
    return task_id, encode_message(msg)


async def test_a_registered_listening_waiter_gets_the_task_stored_as_dequeued(
    broker: RedisBroker, redis: Any, schema: Schema
) -> None:
    qk = schema.queue("default")
    await redis.lpush(qk.waiters, "w-1")
    task_id, data = _message()
    async with Listener(redis, schema, "w-1") as listener:
        before = int(time.time())
        assert await broker.enqueue("default", task_id, data) == 1
        note = await listener.next()
    assert note == ("default", task_id, data)
    record = await redis.hgetall(qk.task(task_id))
    assert record == {b"msg": data, b"state": b"active"}  # what asynq's dequeue leaves: no pending_since
    assert await redis.lrange(qk.active, 0, -1) == [task_id.encode()]
    assert await redis.llen(qk.pending) == 0
    lease = await redis.zscore(qk.lease, task_id)
    assert before + LEASE_SECONDS <= lease <= int(time.time()) + LEASE_SECONDS
    assert await redis.smembers(qk.inflight("w-1")) == {task_id.encode()}
    assert 0 < await redis.ttl(qk.inflight("w-1")) <= INFLIGHT_TTL
    assert await redis.llen(qk.waiters) == 0  # a registration is good for one task


async def test_a_waiter_nobody_listens_for_is_dropped_and_the_task_waits_in_the_queue(
    broker: RedisBroker, redis: Any, schema: Schema
) -> None:
    qk = schema.queue("default")
    await redis.lpush(qk.waiters, "dead-1", "dead-2")
    task_id, data = _message()
    assert await broker.enqueue("default", task_id, data) == 1
    assert await redis.llen(qk.waiters) == 0
    assert await redis.lrange(qk.pending, 0, -1) == [task_id.encode()]
    assert (await redis.hgetall(qk.task(task_id)))[b"state"] == b"pending"
    assert not await redis.exists(qk.inflight("dead-1"))
    assert not await redis.exists(qk.active)


async def test_the_most_recent_live_waiter_is_chosen(broker: RedisBroker, redis: Any, schema: Schema) -> None:
    qk = schema.queue("default")
    async with Listener(redis, schema, "old") as old, Listener(redis, schema, "new") as new:
        await redis.lpush(qk.waiters, "old")
        await redis.lpush(qk.waiters, "gone")
        await redis.lpush(qk.waiters, "new")
        await broker.enqueue("default", *_message(task_id="a"))
        await broker.enqueue("default", *_message(task_id="b"))
        assert (await new.next())[1] == "a"  # type: ignore[index]
        assert (await old.next())[1] == "b"  # type: ignore[index] # "gone" was skipped and dropped
    assert await redis.llen(qk.waiters) == 0


@pytest.mark.parametrize("blocker", ["paused", "pending"])
async def test_no_handoff_when_paused_or_when_older_tasks_wait(
    broker: RedisBroker, redis: Any, schema: Schema, blocker: str
) -> None:
    qk = schema.queue("default")
    if blocker == "paused":
        await redis.set(qk.paused, int(time.time()))
    else:
        await broker.enqueue("default", *_message(task_id="older"))  # no waiter yet: it waits in the list
    await redis.lpush(qk.waiters, "w-1")
    async with Listener(redis, schema, "w-1") as listener:
        await broker.enqueue("default", *_message(task_id="newer"))
        assert await listener.next(timeout=0.3) is None
    assert b"newer" in await redis.lrange(qk.pending, 0, -1)
    assert await redis.lrange(qk.waiters, 0, -1) == [b"w-1"]  # still waiting for its turn


async def test_a_batch_hands_its_first_tasks_to_the_waiters_and_queues_the_rest_in_order(
    broker: RedisBroker, client: Any, redis: Any, schema: Schema
) -> None:
    task = TaskDef("h:batch", P, _noop)
    qk = schema.queue("default")
    async with Listener(redis, schema, "w-1") as one, Listener(redis, schema, "w-2") as two:
        await redis.lpush(qk.waiters, "w-1", "w-2")
        infos = await client.enqueue_many([TaskCall(task, P(n=i)) for i in range(5)])
        first, second = await two.next(), await one.next()
    assert first is not None and second is not None
    assert [first[1], second[1]] == [infos[0].id, infos[1].id]
    assert await redis.lrange(qk.pending, 0, -1) == [i.id.encode() for i in reversed(infos[2:])]  # RPOP order
    assert sorted(await redis.lrange(qk.active, 0, -1)) == sorted([infos[0].id.encode(), infos[1].id.encode()])


async def test_an_empty_dequeue_registers_the_worker_once(broker: RedisBroker, redis: Any, schema: Schema) -> None:
    qk = schema.queue("default")
    for _ in range(3):
        assert await broker.dequeue("default", 4, qk.inflight("w-1"), "w-1") == []
    assert await redis.lrange(qk.waiters, 0, -1) == [b"w-1"]
    await broker.enqueue("default", *_message(task_id="x"))  # nobody listens: back to the list
    assert [t for t, _ in await broker.dequeue("default", 4, qk.inflight("w-1"), "w-1")] == ["x"]
    assert await redis.llen(qk.waiters) == 0  # a dequeue that took something does not register
    await broker.withdraw(["default"], "w-1")


async def _noop(ctx: Any, p: P) -> None:
    return None


async def _registered(redis: Any, schema: Schema, worker: Worker) -> bool:
    return worker.identity.server_id.encode() in await redis.lrange(schema.queue("default").waiters, 0, -1)


async def test_an_idle_worker_runs_handed_off_tasks_and_registers_again(
    start: Any, client: Any, redis: Any, schema: Schema
) -> None:
    ran: list[int] = []

    async def handle(ctx: Any, p: P) -> None:
        ran.append(p.n)

    task = TaskDef("h:run", P, handle)
    worker = await start(task)
    await wait_until(lambda: _registered(redis, schema, worker))
    for i in range(5):
        await client.enqueue(task, P(n=i))

        async def done(n: int = i + 1) -> bool:
            return len(ran) == n and await _registered(redis, schema, worker)

        await wait_until(done)
    assert ran == [0, 1, 2, 3, 4]
    assert worker.processor is not None and worker.processor.handed_off == 5
    qk = schema.queue("default")

    async def acknowledged() -> bool:
        return not await redis.exists(qk.active) and not await redis.zcard(qk.lease)

    await wait_until(acknowledged)
    await worker.stop()
    assert await redis.llen(qk.waiters) == 0  # withdrawn on stop: no task is handed to a stopped worker
    info = await client.enqueue(task, P(n=9))
    assert await redis.lrange(qk.pending, 0, -1) == [info.id.encode()]


async def test_a_busy_worker_gives_a_handed_off_task_back_to_the_queue(
    start: Any, client: Any, redis: Any, schema: Schema, settings: Any
) -> None:
    release = asyncio.Event()
    ran: list[int] = []

    async def handle(ctx: Any, p: P) -> None:
        ran.append(p.n)
        if p.n == 0:
            await release.wait()

    task = TaskDef("h:busy", P, handle)
    worker = await start(task, settings=settings.replace(concurrency=1))
    await wait_until(lambda: _registered(redis, schema, worker))
    await client.enqueue(task, P(n=0))

    async def first_running() -> bool:
        return ran == [0]

    await wait_until(first_running)
    # a stale registration (as when the worker got busy right after registering): it must not run a second
    # task beyond its concurrency, nor sit on it
    qk = schema.queue("default")
    await redis.lpush(qk.waiters, worker.identity.server_id)
    info = await client.enqueue(task, P(n=1))

    async def given_back() -> bool:
        return await redis.lrange(qk.pending, 0, -1) == [info.id.encode()]

    await wait_until(given_back)
    record = await task_record(redis, schema, "default", info.id)
    assert record["state"] == "pending" and record["msg"].retried == 0
    assert ran == [0]
    release.set()

    async def both() -> bool:
        return sorted(ran) == [0, 1]

    await wait_until(both)


async def test_a_handoff_during_a_dequeue_in_flight_does_not_overfill_the_workers_slots(
    start: Any, client: Any, redis: Any, schema: Schema, settings: Any
) -> None:
    """The dequeue's tasks start when it returns; a handoff arriving meanwhile must count its slots as taken."""
    running = most = 0
    ran: list[int] = []

    async def handle(ctx: Any, p: P) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        ran.append(p.n)
        await asyncio.sleep(0.2)
        running -= 1

    task = TaskDef("h:race", P, handle)
    worker = await start(task, settings=settings.replace(concurrency=1))
    processor = worker.processor
    assert processor is not None
    await wait_until(lambda: _registered(redis, schema, worker))
    real, entered, go = processor.broker.dequeue, asyncio.Event(), asyncio.Event()

    async def held(*args: Any, **kwargs: Any) -> Any:  # a dequeue that reaches Redis only once told to
        entered.set()
        await go.wait()
        return await real(*args, **kwargs)

    processor.broker.dequeue = held  # type: ignore[method-assign]
    processor.wake("default")
    await entered.wait()  # the fetch loop's dequeue of one task is in flight
    first = await client.enqueue(task, P(n=0))  # handed to the registered worker while that dequeue is out
    await client.enqueue(task, P(n=1))  # pending: the dequeue will take it
    qk = schema.queue("default")

    async def handoff_taken() -> bool:  # the worker got it: started it (too many) or gave it back to the queue
        return processor.handed_off > 0 or first.id.encode() in await redis.lrange(qk.pending, 0, -1)

    await wait_until(handoff_taken, timeout=30)
    go.set()

    async def both() -> bool:
        return sorted(ran) == [0, 1]

    await wait_until(both)
    processor.broker.dequeue = real  # type: ignore[method-assign]
    assert most == 1  # concurrency 1 held: the handed-off task went back to the queue


async def test_a_sigkilled_idle_worker_loses_no_task(
    settings: Any, client: Any, redis: Any, schema: Schema, tmp_path: Path
) -> None:
    s = settings.replace(heartbeat_interval=0.5, recoverer_interval=0.5)
    qk = schema.queue("default")
    victim = start_worker(s, tmp_path / "victim.log")
    try:

        async def registered() -> bool:
            return await redis.llen(qk.waiters) == 1

        await wait_until(registered, timeout=30)
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(10)
        info = await client.enqueue(JOB, Job())  # its registration is stale: nobody listens on its channel
        assert await redis.lrange(qk.pending, 0, -1) == [info.id.encode()]
        survivor = start_worker(s, tmp_path / "survivor.log")
        try:

            async def ran() -> bool:
                return await redis.llen(f"{s.namespace}:test:done") == 1

            await wait_until(ran, timeout=30)
        finally:
            stop_process(survivor)
    finally:
        stop_process(victim)


async def test_a_worker_killed_while_running_a_handed_off_task_has_it_recovered(
    settings: Any, client: Any, redis: Any, schema: Schema, tmp_path: Path
) -> None:
    s = settings.replace(heartbeat_interval=0.5, recoverer_interval=0.5, shutdown_timeout=0.5)
    qk = schema.queue("default")
    victim = start_worker(s, tmp_path / "victim.log")
    survivor = None
    try:

        async def registered() -> bool:
            return await redis.llen(qk.waiters) == 1

        await wait_until(registered, timeout=30)
        info = await client.enqueue(JOB, Job(sleep=30))
        assert await redis.llen(qk.pending) == 0  # handed off, not queued

        async def started() -> bool:
            return int(await redis.hget(f"{s.namespace}:test:runs", info.id) or 0) == 1

        await wait_until(started)
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(10)
        survivor = start_worker(s, tmp_path / "survivor.log")

        async def ran_again() -> bool:
            return int(await redis.hget(f"{s.namespace}:test:runs", info.id) or 0) == 2

        await wait_until(ran_again, timeout=30)
        record = await task_record(redis, schema, "default", info.id)
        assert record["state"] == "active" and record["msg"].retried == 0
    finally:
        if survivor is not None:
            stop_process(survivor)
        stop_process(victim)


async def test_the_subscriber_delivers_messages_and_reports_a_lost_connection(redis: Any, broker: RedisBroker) -> None:
    got: list[tuple[bytes, bytes]] = []
    assert broker.fast is not None
    sub = Subscriber(broker.fast, lambda channel, data: got.append((channel, data)))
    try:
        await sub.subscribe(["h:one", b"h:two"])
        assert await redis.publish("h:two", b"\x00bytes") == 1
        await redis.publish("h:one", "text")

        async def both() -> bool:
            return len(got) == 2

        await wait_until(both, timeout=2)
        assert got == [(b"h:two", b"\x00bytes"), (b"h:one", b"text")]
        await redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        reason = await asyncio.wait_for(sub.wait_closed(), 2)
        assert "closed" in str(reason)
    finally:
        sub.close()


async def test_a_worker_whose_subscriber_was_cut_off_listens_again_and_takes_handoffs(
    start: Any, client: Any, redis: Any, schema: Schema
) -> None:
    ran: list[int] = []

    async def handle(ctx: Any, p: P) -> None:
        ran.append(p.n)

    task = TaskDef("h:cut", P, handle)
    worker = await start(task)
    await wait_until(lambda: _registered(redis, schema, worker))
    await redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")  # as a Redis restart or a proxy would
    await redis.delete(schema.queue("default").waiters)

    async def listening_again() -> bool:
        return await _registered(redis, schema, worker)

    await wait_until(listening_again)
    await client.enqueue(task, P(n=1))

    async def ran_it() -> bool:
        return ran == [1]

    await wait_until(ran_it)
    assert worker.processor is not None and worker.processor.handed_off == 1


async def test_handoffs_work_on_a_password_protected_server_and_another_database(
    tmp_path: Path, namespace: str
) -> None:
    from framework.client.client import Client
    from framework.embedded.process import start_test_server
    from framework.settings import Settings
    from framework.transport.connection import open_redis

    server = start_test_server(tmp_path / "valkey")
    try:
        url = await require_password(server.url, "pw") + "/3"
        settings = Settings(redis_url=url, namespace=namespace, data_dir=str(tmp_path / "data"))
        ran: list[int] = []

        async def handle(ctx: Any, p: P) -> None:
            ran.append(p.n)

        task = TaskDef("h:auth", P, handle)
        redis = open_redis(url)
        schema = Schema(namespace)
        client = Client(redis, schema=schema, settings=settings)
        worker = Worker(settings, tasks=[task])
        await worker.start()
        try:
            await wait_until(lambda: _registered(redis, schema, worker))
            await client.enqueue(task, P(n=7))

            async def done() -> bool:
                return ran == [7]

            await wait_until(done)
            assert worker.processor is not None and worker.processor.handed_off == 1
        finally:
            await worker.stop()
            await client.close()
            await redis.aclose()
    finally:
        server.stop()
