"""Races between a task handed off to an idle worker and the dequeue it has in flight: slots and crash suspects."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from framework.protocol.keys import Schema
from framework.settings import QueueLimit
from framework.task import TaskDef
from framework.worker.worker import Worker
from tests.framework.test_handoff import Listener
from tests.framework.worker_app import wait_until


class P(msgspec.Struct, frozen=True, kw_only=True):
    n: int = 0


async def test_a_handoff_during_a_queue_capped_dequeue_does_not_overfill_the_slots(
    settings: Any, client: Any, redis: Any, schema: Schema
) -> None:
    """concurrency=2; queue "a" (tried first) capped at 1 slot, so its dequeue reserves only 1 slot.

    A handoff for "b" arriving while that dequeue is out takes the other slot and starts. "a" is empty; the
    fetch then asks "b" for what is free now (1, not the 2 free before the handoff): never more than 2 run.
    """
    release = asyncio.Event()
    running = most = 0
    ran: list[int] = []

    async def handle(ctx: Any, p: P) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        ran.append(p.n)
        try:
            await release.wait()
        finally:
            running -= 1

    task = TaskDef("rv:cap", P, handle)
    s = settings.replace(
        concurrency=2, queues={"a": 2, "b": 1}, strict_priority=True, queue_limits={"a": QueueLimit(max=1)}
    )
    # a task handed to some idle worker (its note is what a worker's subscriber passes to Processor.handoff)
    fake = "handoff-fake-server"
    qb = schema.queue("b")
    async with Listener(redis, schema, fake) as listener:
        await redis.lpush(qb.waiters, fake)
        await client.enqueue(task, P(n=100), queue="b")
        note = await listener.next()
    assert note is not None and note[0] == "b"
    for i in range(2):  # pending in "b" for the fetch
        await client.enqueue(task, P(n=i), queue="b")

    worker = Worker(s, tasks=[task])
    delivered = asyncio.Event()

    async def deliver_during_the_dequeue_of_a() -> None:
        # the subscriber delivers the handoff while the fetch's dequeue of "a" (1 slot) is in flight
        while worker.processor is None or worker.processor._dequeuing != 1:
            await asyncio.sleep(0)
        worker.processor.handoff(*note)
        delivered.set()

    watcher = asyncio.create_task(deliver_during_the_dequeue_of_a())
    await worker.start()
    try:
        await asyncio.wait_for(delivered.wait(), 5)

        async def settled() -> bool:
            return len(ran) >= 2

        await wait_until(settled)
        await asyncio.sleep(0.3)
        assert worker.processor is not None
        assert most <= 2, f"{most} handlers ran at once with concurrency=2 (ran {ran})"
        assert worker.processor.running <= 2
    finally:
        release.set()
        watcher.cancel()
        await worker.stop()


async def test_a_handoff_during_the_dequeue_that_takes_a_crash_suspect_does_not_run_beside_it(
    settings: Any, client: Any, redis: Any, schema: Schema
) -> None:
    """A crash suspect runs alone. A task handed off while the dequeue that returns the suspect is out (1 slot
    reserved of 2) starts at once; the suspect then goes back to the head of its queue and runs, alone, once
    the handed-off task has finished."""
    release = asyncio.Event()
    running: set[int] = set()
    beside_suspect: list[set[int]] = []

    async def handle(ctx: Any, p: P) -> None:
        running.add(p.n)
        if p.n == 7:  # the suspect
            beside_suspect.append(set(running) - {7})
        try:
            if p.n != 7:
                await release.wait()
        finally:
            running.discard(p.n)

    task = TaskDef("rv:suspect", P, handle)
    s = settings.replace(concurrency=2, dequeue_batch=1, queues={"a": 2, "b": 1}, strict_priority=True)
    fake = "handoff-fake-server-2"
    async with Listener(redis, schema, fake) as listener:
        await redis.lpush(schema.queue("b").waiters, fake)
        await client.enqueue(task, P(n=100), queue="b")
        note = await listener.next()
    assert note is not None
    suspect = await client.enqueue(task, P(n=7), queue="a")
    await redis.sadd(schema.queue("a").suspects, suspect.id)

    worker = Worker(s, tasks=[task])
    delivered = asyncio.Event()

    async def deliver_during_the_dequeue() -> None:
        while worker.processor is None or worker.processor._dequeuing != 1:
            await asyncio.sleep(0)
        worker.processor.handoff(*note)
        delivered.set()

    watcher = asyncio.create_task(deliver_during_the_dequeue())
    await worker.start()
    try:
        await asyncio.wait_for(delivered.wait(), 5)

        async def given_back() -> bool:
            return await redis.lindex(schema.queue("a").pending, -1) == suspect.id.encode()

        await wait_until(given_back)  # back at the head of its queue while the handed-off task runs
        assert running == {100} and not beside_suspect
        release.set()

        async def suspect_ran() -> bool:
            return bool(beside_suspect)

        await wait_until(suspect_ran)
        assert beside_suspect == [set()], f"the suspect ran beside {beside_suspect}"
    finally:
        release.set()
        watcher.cancel()
        await worker.stop()
