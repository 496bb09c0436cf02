"""The hand-over between the processor's event loop and the heartbeat thread (framework.worker.ledger).

Both tests make threads switch as often as the interpreter allows while the loop's side starts and lets go
of tasks and the heartbeat's side copies, takes and (after a failed beat) hands back: no task let go may be
lost or taken twice, and the worker's in-flight set in Redis must end up naming exactly the tasks held.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from framework.broker.broker import RedisBroker
from framework.broker.liveness import Liveness
from framework.clock import SystemClock
from framework.logging import get_logger
from framework.protocol.message import new_message
from framework.transport.health import RedisHealth
from framework.worker.heartbeat import Heartbeat, ServerIdentity, sync_redis
from framework.worker.lease import Lease
from framework.worker.ledger import Ledger
from framework.worker.outcomes import InFlight
from framework.worker.processor import Processor

CLOCK = SystemClock()


@pytest.fixture(autouse=True)
def _switch_often() -> Iterator[None]:
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def _task(queue: str, task_id: str) -> InFlight:
    msg = new_message(type="t", payload=b"", id=task_id, queue=queue, retry=0, timeout=0, deadline=0)
    now = CLOCK.now()
    return InFlight(task_id, msg, queue, Lease(CLOCK, now + 30), now + 60, now)


def test_every_task_let_go_is_taken_once_while_both_threads_run() -> None:
    ledger = Ledger(lambda: None)
    rounds, batch = 3000, 4
    stop = threading.Event()
    taken: list[tuple[str, str]] = []
    errors: list[BaseException] = []

    def heartbeat() -> None:
        beats = 0
        try:
            while not stop.is_set() or ledger.finished:
                for inf in ledger.snapshot():  # a copy: the loop changes the map meanwhile
                    assert isinstance(inf, InFlight)
                finished = ledger.take_finished()
                beats += 1
                if beats % 3 == 0:  # a failed beat hands its batch back; the next one takes it again
                    ledger.return_finished(finished)
                else:
                    taken.extend(finished)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    thread = threading.Thread(target=heartbeat)
    thread.start()
    try:
        released: list[tuple[str, str]] = []
        for r in range(rounds):
            queue = f"q{r % 3}"
            infs = [_task(queue, f"{r}-{i}") for i in range(batch)]
            ledger.hold(queue, infs)
            for inf in infs:
                inf.off_record = inf.id.endswith("-0")  # acknowledged with its in-flight set entry: nothing to trim
                if not inf.off_record:
                    released.append(inf.key)
                assert ledger.release(inf)
            ledger.forget((queue, f"{r}-given-back"))  # put back at once, never held
            released.append((queue, f"{r}-given-back"))
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not errors, errors
    assert not thread.is_alive()
    counts = Counter(taken)
    assert [key for key, n in counts.items() if n > 1] == []  # none taken twice
    assert set(counts) == set(released)  # none lost
    assert ledger.running == 0
    assert ledger.snapshot() == ()


def _beating(
    redis: Any, schema: Any, settings: Any, services: Any, server_id: str, interval: float
) -> tuple[RedisBroker, Processor, Heartbeat]:
    """A processor (not started) and its heartbeat, writing to the test's Redis as ``server_id``."""
    log = get_logger("test")
    broker = RedisBroker(redis, schema, CLOCK)
    ident = ServerIdentity("host", 1, server_id)
    processor = Processor(broker, services.registry, settings, services, [], None, CLOCK, log, server_id=server_id)
    records = Liveness(sync_redis(settings.redis_url), schema, server_id, ident.host, ident.pid)
    return broker, processor, Heartbeat(processor, ident, interval, log, records, RedisHealth(log))


async def test_the_inflight_set_names_what_is_held_after_the_heartbeat_ran_beside_the_loop(
    redis: Any, schema: Any, settings: Any, services: Any
) -> None:
    broker, processor, heartbeat = _beating(redis, schema, settings, services, "hb-sid", 0.001)
    ident = heartbeat.id
    side = sync_redis(settings.redis_url)  # what dequeue.lua does: record the id in the set, lease the task
    ledger = processor.ledger
    held: dict[tuple[str, str], InFlight] = {}
    heartbeat.start()
    try:
        for r in range(400):
            queue = "default"
            qk = schema.queue(queue)
            infs = [_task(queue, f"t{r}-{i}") for i in range(3)]
            ids = [inf.id for inf in infs]
            side.sadd(qk.inflight(ident.server_id), *ids)
            side.zadd(qk.lease, dict.fromkeys(ids, 0))
            ledger.hold(queue, infs)
            held.update((inf.key, inf) for inf in infs)
            for key in list(held)[: len(held) // 2]:  # let go of the older half: the heartbeat trims them
                ledger.release(held.pop(key))
                side.zrem(qk.lease, key[1])  # as the outcome's script does
            await asyncio.sleep(0)
    finally:
        heartbeat.stop()
    assert heartbeat.beats > 10
    heartbeat.beat()  # the last release trimmed too
    heartbeat.close()
    members = {m.decode() for m in await redis.smembers(schema.queue("default").inflight(ident.server_id))}
    assert members == {task_id for _, task_id in held}
    scores = dict(await redis.zrange(schema.queue("default").lease, 0, -1, withscores=True))
    assert {k.decode() for k in scores} == members  # no lease of a released task came back (ZADD XX)
    assert all(score > CLOCK.now() for score in scores.values())  # every lease held is extended
    side.close()
    broker.close()


async def test_a_task_given_back_and_taken_again_before_a_beat_keeps_its_inflight_entry(
    redis: Any, schema: Any, settings: Any, services: Any
) -> None:
    """A handed-off task given back (its entry to trim) and dequeued again is the new run's entry: not trimmed."""
    broker, processor, heartbeat = _beating(redis, schema, settings, services, "again-sid", 60)
    ident = heartbeat.id
    qk = schema.queue("default")
    ledger = processor.ledger
    inf = _task("default", "again")
    ledger.forget(inf.key)  # given back: its in-flight entry is to be trimmed
    await redis.sadd(qk.inflight(ident.server_id), inf.id)  # dequeued again: dequeue.lua records it ...
    ledger.hold("default", [inf])  # ... and the worker holds it
    other = ("default", "gone")
    ledger.forget(other)
    await redis.sadd(qk.inflight(ident.server_id), other[1])
    heartbeat.beat()
    members = {m.decode() for m in await redis.smembers(qk.inflight(ident.server_id))}
    assert members == {"again"}  # the running task's entry stays; the one let go is trimmed
    heartbeat.close()
    broker.close()
