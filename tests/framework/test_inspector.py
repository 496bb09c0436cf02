"""The inspector against real Valkey: Go asynq's golden data, our own seeded states, and a 100,000-task queue."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import pytest
from redis.asyncio.client import Pipeline, Redis

from framework.broker.broker import RedisBroker
from framework.clock import SimulatedClock
from framework.errors import QueueNotFound, TaskNotFound
from framework.inspector import (
    BATCH_SIZE,
    Inspector,
    InvalidTaskState,
    QueueNotEmpty,
    TaskState,
)
from framework.inspector.actions import TaskActions
from framework.inspector.namespace import Namespace
from framework.inspector.queues import QueueOps
from framework.inspector.tasks import TaskReads
from framework.protocol.keys import day_stamp
from framework.protocol.message import (
    decode_message,
    encode_enqueue_event,
    encode_message,
    encode_scheduler_entry,
    encode_server_info,
    encode_worker_info,
    new_message,
)
from tests.framework.golden import GOLDEN_TIME, golden, golden_ids, golden_keys, golden_tasks, load_golden

if TYPE_CHECKING:
    from collections.abc import Iterator

    from framework.client.client import Client
    from framework.protocol.keys import Schema
    from framework.settings import Settings

NOW = GOLDEN_TIME + 10
GOLDEN_QUEUES = sorted(golden()["keys"]["asynq:queues"]["items"])


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock(NOW)


@pytest.fixture
def inspector(redis: Redis, schema: Schema, clock: SimulatedClock) -> Inspector:
    return Inspector(redis, schema, clock=clock)


@pytest.fixture
def broker(redis: Redis, schema: Schema, clock: SimulatedClock) -> RedisBroker:
    return RedisBroker(redis, schema, clock, wakeup=False)


@pytest.fixture
async def gold(redis: Redis, namespace: str) -> dict[str, dict[str, Any]]:
    return await load_golden(redis, namespace)


async def _enqueue(broker: RedisBroker, queue: str, task_id: str, **kw: Any) -> None:
    extra = {k: kw.pop(k) for k in ("process_at", "unique_key", "unique_ttl", "group") if k in kw}
    msg = new_message(
        type=kw.pop("type", "test:task"),
        payload=kw.pop("payload", b'{"i":1}'),
        id=task_id,
        queue=queue,
        retry=kw.pop("retry", 25),
        timeout=1800,
        deadline=0,
        unique_key=extra.get("unique_key", ""),
    )
    assert await broker.enqueue(queue, task_id, encode_message(msg), **extra) == 1


# -- golden data (written by Go asynq v0.26) -----------------------------------------------------


def _golden_count(queue: str, collection: str) -> int:
    return len(golden_ids(queue, collection))


async def test_golden_queue_stats(inspector: Inspector, gold: dict[str, Any], namespace: str) -> None:
    assert await inspector.queues() == GOLDEN_QUEUES
    infos = {q.queue: q for q in await inspector.all_queue_info()}
    assert sorted(infos) == GOLDEN_QUEUES
    today = golden()["made"]
    assert day_stamp(NOW) == today
    for queue, info in infos.items():
        for state in ("pending", "active", "scheduled", "retry", "archived", "completed"):
            assert getattr(info, state) == _golden_count(queue, state), (queue, state)
        groups = [k for k in golden()["keys"] if k.startswith(f"asynq:{{{queue}}}:g:")]
        assert info.aggregating == sum(len(golden()["keys"][g]["items"]) for g in groups)
        assert info.groups == len(groups)
        assert info.size == len([key for key in golden_tasks() if key[0] == queue])

        def counter(name: str, q: str = queue) -> int:
            rec = golden()["keys"].get(f"asynq:{{{q}}}:{name}")
            return int(bytes.fromhex(rec["hex"])) if rec else 0

        assert (info.processed_today, info.failed_today) == (counter(f"processed:{today}"), counter(f"failed:{today}"))
        assert (info.processed_total, info.failed_total) == (counter("processed"), counter("failed"))
        assert info.memory_usage > 0
        assert info.paused is False
        assert info.timestamp == datetime.fromtimestamp(NOW, UTC)
    # latency: the oldest pending task of "default" is golden-plain (the right end of the list)
    since_ns = int(golden_tasks()["default", "golden-plain"]["fields"]["pending_since"])
    assert infos["default"].latency == pytest.approx(NOW - since_ns / 1e9)
    assert infos["t_retry"].latency is None
    assert (infos["t_retry"].processed_today, infos["t_retry"].failed_today) == (1, 1)


async def test_golden_latency_tolerates_missing_pending_since(
    inspector: Inspector, gold: dict[str, Any], redis: Redis, schema: Schema
) -> None:
    await redis.hdel(schema.queue("default").task("golden-plain"), "pending_since")
    assert (await inspector.queue_info("default")).latency is None


def _time(unix: int) -> datetime | None:
    return datetime.fromtimestamp(unix, UTC) if unix else None


def _assert_matches_golden(task: Any, queue: str) -> None:
    rec = golden_tasks()[queue, task.id]
    msg, decoded = rec["msg"], rec["msg_decoded"]
    assert task.queue == queue
    assert task.state == rec["state"]
    assert task.type == msg.type
    assert task.payload == bytes(msg.payload) == bytes.fromhex(decoded["payload_hex"])
    assert task.headers == decoded["headers"]
    assert (task.retried, task.max_retry, task.error) == (decoded["retried"], decoded["retry"], decoded["error_msg"])
    assert (task.timeout, task.retention) == (decoded["timeout"], decoded["retention"])
    assert task.deadline == _time(decoded["deadline"])
    assert task.last_failed_at == _time(decoded["last_failed_at"])
    assert task.completed_at == _time(decoded["completed_at"])
    assert task.group == decoded["group_key"]
    assert task.result == rec["fields"].get("result")


async def test_golden_list_every_state(inspector: Inspector, gold: dict[str, Any]) -> None:
    seen = set()
    for queue in GOLDEN_QUEUES:
        for state in TaskState:
            page = await inspector.list_tasks(queue, state, size=50)
            if state is TaskState.AGGREGATING:
                expected = [i for g in ("g:g1",) for i in golden_ids(queue, g)]
            elif state in (TaskState.PENDING, TaskState.ACTIVE):
                expected = list(reversed(golden_ids(queue, state.value)))  # oldest (next to run) first
            else:
                expected = golden_ids(queue, state.value)
            assert [t.id for t in page.tasks] == expected, (queue, state)
            assert page.total == len(expected)
            for task in page.tasks:
                _assert_matches_golden(task, queue)
                seen.add((queue, task.id))
                if state in (TaskState.SCHEDULED, TaskState.RETRY):
                    score = dict(golden()["keys"][f"asynq:{{{queue}}}:{state.value}"]["items"])[task.id]
                    assert task.next_process_at == datetime.fromtimestamp(score, UTC)
                else:
                    assert task.next_process_at is None
    assert seen == set(golden_tasks())


async def test_golden_get_task(inspector: Inspector, gold: dict[str, Any], namespace: str) -> None:
    for queue, task_id in golden_tasks():
        _assert_matches_golden(await inspector.get_task(queue, task_id), queue)
    plain = await inspector.get_task("default", "golden-plain")
    assert plain.payload_is_json
    assert plain.payload_json == {
        "to": "a@example.com",
        "subject": "Hi",
        "template": "welcome",
        "data": {"Name": "Ann"},
    }
    assert plain.pending_since is not None
    binary = await inspector.get_task("low", "golden-binary")
    assert (binary.payload, binary.payload_is_json, binary.payload_json) == (b"\x00\xff\x10\x80\x7f", False, None)
    empty = await inspector.get_task("nopayload", "golden-nopayload")
    assert (empty.payload, empty.payload_is_json) == (b"", False)
    options = await inspector.get_task("critical", "golden-options")
    assert options.headers == {"trace": "abc", "empty": "", "ünï": "cödé"}
    assert options.deadline == datetime(2100, 1, 1, tzinfo=UTC)
    done = await inspector.get_task("t_completed", "golden-completed")
    assert (done.state, done.result, done.retention) == (TaskState.COMPLETED, b"done!", 3600)
    unique = await inspector.get_task("default", "golden-unique")
    assert unique.unique_key == f"{namespace}:{{default}}:unique:email:send:a64cf318e15f3ff4697d9a55ea753855"
    assert (await inspector.get_task("weird:name {x}", "golden-weird")).type == "weird:q"
    group = await inspector.get_task("default", "golden-group")
    assert (group.state, group.group) == (TaskState.AGGREGATING, "g1")
    with pytest.raises(TaskNotFound, match="golden-nope"):
        await inspector.get_task("default", "golden-nope")
    with pytest.raises(QueueNotFound, match="nope"):
        await inspector.get_task("nope", "golden-plain")


async def _state(redis: Redis, schema: Schema, queue: str, task_id: str) -> str | None:
    value = await redis.hget(schema.queue(queue).task(task_id), "state")
    return value.decode() if value else None


async def test_golden_run_archive_delete(
    inspector: Inspector, gold: dict[str, Any], redis: Redis, schema: Schema, namespace: str
) -> None:
    default, retry, archived = schema.queue("default"), schema.queue("t_retry"), schema.queue("t_archive")
    # run: retry, archived, scheduled and aggregating tasks become pending; the message is untouched
    await inspector.run_task("t_retry", "golden-retry")
    assert await redis.lrange(retry.pending, 0, -1) == [b"golden-retry"]
    assert await redis.zcard(retry.retry) == 0
    assert (
        await redis.hget(retry.task("golden-retry"), "msg")
        == golden_tasks()["t_retry", "golden-retry"]["fields"]["msg"]
    )
    assert int(await redis.hget(retry.task("golden-retry"), "pending_since")) == NOW * 10**9
    await inspector.run_task("t_archive", "golden-archived")
    assert await _state(redis, schema, "t_archive", "golden-archived") == "pending"
    assert await redis.zcard(archived.archived) == 0
    await inspector.run_task("default", "golden-scheduled")
    await inspector.run_task("default", "golden-group")
    assert not await redis.exists(default.group("g1"))
    assert await redis.smembers(default.groups) == set()
    assert await redis.lrange(default.pending, 0, 1) == [b"golden-group", b"golden-scheduled"]
    with pytest.raises(InvalidTaskState, match="already pending"):
        await inspector.run_task("default", "golden-plain")
    # archive: any non-active task; the archive score is now
    await inspector.archive_task("default", "golden-plain")
    assert await redis.zscore(default.archived, "golden-plain") == NOW
    assert b"golden-plain" not in await redis.lrange(default.pending, 0, -1)
    assert await redis.hget(default.task("golden-plain"), "pending_since") is None
    await inspector.archive_task("t_completed", "golden-completed")
    assert await redis.zcard(schema.queue("t_completed").completed) == 0
    with pytest.raises(InvalidTaskState, match="already archived"):
        await inspector.archive_task("default", "golden-plain")
    # delete releases the unique lock Go took, and only that
    lock = f"{namespace}:{{default}}:unique:email:send:a64cf318e15f3ff4697d9a55ea753855"
    assert await redis.get(lock) == b"golden-unique"
    await inspector.delete_task("default", "golden-unique")
    assert not await redis.exists(lock)
    assert not await redis.exists(default.task("golden-unique"))
    await inspector.delete_task("low", "golden-binary")
    assert await redis.llen(schema.queue("low").pending) == 0
    for call in (inspector.run_task, inspector.archive_task, inspector.delete_task):
        with pytest.raises(TaskNotFound):
            await call("default", "golden-unique")
        with pytest.raises(QueueNotFound):
            await call("nope", "golden-plain")
    info = await inspector.queue_info("default")
    assert (info.pending, info.archived, info.scheduled, info.aggregating) == (2, 1, 0, 0)


async def test_golden_bulk(
    inspector: Inspector, gold: dict[str, Any], redis: Redis, schema: Schema, namespace: str
) -> None:
    default = schema.queue("default")
    calls: list[tuple[int, int]] = []
    assert await inspector.run_all("default", "aggregating", progress=lambda d, t: calls.append((d, t))) == 1
    assert calls[0] == (0, 1)
    assert calls[-1] == (1, 1)
    assert await redis.smembers(default.groups) == set()
    assert await inspector.archive_all("default", "scheduled") == 1
    assert await inspector.delete_all("default", "pending") == 3
    assert not await redis.exists(f"{namespace}:{{default}}:unique:email:send:a64cf318e15f3ff4697d9a55ea753855")
    assert await inspector.run_all("default", "archived") == 1
    assert [t.id for t in (await inspector.list_tasks("default", "pending")).tasks] == ["golden-scheduled"]
    assert await inspector.archive_all("t_retry", "retry") == 1
    assert await inspector.delete_all("t_archive", "archived") == 1
    with pytest.raises(InvalidTaskState, match="cannot run pending"):
        await inspector.run_all("default", "pending")
    with pytest.raises(InvalidTaskState, match="cannot delete active"):
        await inspector.delete_all("default", "active")
    with pytest.raises(InvalidTaskState, match="cannot archive archived"):
        await inspector.archive_all("default", "archived")


async def test_golden_history(inspector: Inspector, gold: dict[str, Any]) -> None:
    days = await inspector.history("t_retry", days=3)
    assert [d.date for d in days] == [date(2026, 11, 20), date(2026, 11, 21), date(2026, 11, 22)]
    assert [(d.processed, d.failed) for d in days] == [(0, 0), (0, 0), (1, 1)]
    completed = await inspector.history("t_completed", days=1)
    assert [(d.processed, d.failed) for d in completed] == [(1, 0)]
    with pytest.raises(ValueError, match="days"):
        await inspector.history("t_retry", days=0)
    with pytest.raises(QueueNotFound):
        await inspector.history("nope")


def test_golden_keys_renamed() -> None:
    keys = golden_keys("ns1")
    assert "ns1:{weird:name {x}}:pending" in keys
    assert all(k.startswith("ns1:") for k in keys)


# -- our own seeded states -----------------------------------------------------------------------


async def test_paging_lists_and_zsets(inspector: Inspector, broker: RedisBroker) -> None:
    for i in range(25):
        await _enqueue(broker, "q", f"p{i:02d}")
        await _enqueue(broker, "q", f"s{i:02d}", process_at=NOW + 100 - i)
    page = await inspector.list_tasks("q", "pending", page=1, size=10)
    assert [t.id for t in page.tasks] == [f"p{i:02d}" for i in range(10)]
    assert page.total == 25
    last = await inspector.list_tasks("q", "pending", page=3, size=10)
    assert [t.id for t in last.tasks] == [f"p{i:02d}" for i in range(20, 25)]
    assert (await inspector.list_tasks("q", "pending", page=4, size=10)).tasks == []
    sched = await inspector.list_tasks("q", TaskState.SCHEDULED, page=2, size=10)
    assert [t.id for t in sched.tasks] == [f"s{i:02d}" for i in range(14, 4, -1)]
    assert sched.tasks[0].next_process_at == datetime.fromtimestamp(NOW + 86, UTC)
    for bad in ({"page": 0}, {"size": 0}, {"size": 1001}):
        with pytest.raises(ValueError, match="invalid"):
            await inspector.list_tasks("q", "pending", **bad)
    with pytest.raises(ValueError, match="unknown task state"):
        await inspector.list_tasks("q", "nope")
    with pytest.raises(QueueNotFound):
        await inspector.list_tasks("nope", "pending")


async def test_aggregating_pages_across_groups(inspector: Inspector, broker: RedisBroker) -> None:
    for group, n in (("a", 3), ("b", 4), ("c", 2)):
        for i in range(n):
            await _enqueue(broker, "q", f"{group}{i}", group=group)
    assert [(g.group, g.size) for g in await inspector.list_groups("q")] == [("a", 3), ("b", 4), ("c", 2)]
    pages = [await inspector.list_tasks("q", "aggregating", page=p, size=4) for p in (1, 2, 3)]
    assert [[t.id for t in p.tasks] for p in pages] == [["a0", "a1", "a2", "b0"], ["b1", "b2", "b3", "c0"], ["c1"]]
    assert {p.total for p in pages} == {9}
    only_b = await inspector.list_tasks("q", "aggregating", group="b", size=10)
    assert (only_b.total, only_b.group, [t.group for t in only_b.tasks]) == (4, "b", ["b"] * 4)
    assert await inspector.delete_all("q", "aggregating", group="b") == 4
    assert [g.group for g in await inspector.list_groups("q")] == ["a", "c"]
    assert await inspector.archive_all("q", "aggregating") == 5
    assert await inspector.list_groups("q") == []
    assert (await inspector.queue_info("q")).archived == 5


async def test_active_tasks_are_left_to_their_worker(
    inspector: Inspector, broker: RedisBroker, redis: Redis, schema: Schema
) -> None:
    await _enqueue(broker, "q", "a1")
    assert len(await broker.dequeue("q", 1)) == 1
    for call in (inspector.run_task, inspector.archive_task, inspector.delete_task):
        with pytest.raises(InvalidTaskState, match="active; cancel it"):
            await call("q", "a1")
    assert (await inspector.get_task("q", "a1")).state is TaskState.ACTIVE
    assert [t.id for t in (await inspector.list_tasks("q", "active")).tasks] == ["a1"]
    with pytest.raises(QueueNotEmpty, match="active"):
        await inspector.delete_queue("q", force=True)
    async with redis.pubsub() as pubsub:
        await pubsub.subscribe(schema.cancel_channel)
        assert (await pubsub.get_message(timeout=1.0))["type"] == "subscribe"
        assert await inspector.cancel("a1") == 1
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2.0)
        assert message is not None
        assert message["data"] == b"a1"


async def test_pause_and_unpause(inspector: Inspector, broker: RedisBroker, redis: Redis, schema: Schema) -> None:
    await _enqueue(broker, "q", "t1")
    assert await inspector.pause("q") is True
    assert await inspector.pause("q") is False
    assert int(await redis.get(schema.queue("q").paused)) == NOW
    assert (await inspector.queue_info("q")).paused is True
    assert await broker.dequeue("q", 1) == []
    assert await inspector.unpause("q") is True
    assert await inspector.unpause("q") is False
    assert len(await broker.dequeue("q", 1)) == 1
    with pytest.raises(QueueNotFound):
        await inspector.pause("nope")


async def test_delete_releases_only_own_unique_lock(
    inspector: Inspector, broker: RedisBroker, redis: Redis, schema: Schema
) -> None:
    lock = schema.queue("q").unique("test:task", b'{"i":1}')
    await _enqueue(broker, "q", "u1", unique_key=lock, unique_ttl=60)
    await redis.set(lock, "someone-else")
    await inspector.delete_task("q", "u1")
    assert await redis.get(lock) == b"someone-else"
    await redis.delete(lock)
    await _enqueue(broker, "q", "u2", unique_key=lock, unique_ttl=60, process_at=NOW + 60)
    await inspector.delete_all("q", "scheduled")
    assert not await redis.exists(lock)


async def test_archive_keeps_the_caps(inspector: Inspector, broker: RedisBroker, redis: Redis, schema: Schema) -> None:
    qk = schema.queue("q")
    await _enqueue(broker, "q", "old", process_at=NOW + 10)
    await inspector.archive_task("q", "old")
    await redis.zadd(qk.archived, {"old": NOW - 91 * 86400})
    await _enqueue(broker, "q", "new")
    await inspector.archive_task("q", "new")
    assert await redis.zrange(qk.archived, 0, -1) == [b"new"]
    assert not await redis.exists(qk.task("old"))


async def test_bulk_batches_and_progress(
    inspector: Inspector, broker: RedisBroker, redis: Redis, schema: Schema
) -> None:
    qk = schema.queue("q")
    n = BATCH_SIZE * 2 + 5
    calls = [broker.prepare_enqueue("q", f"r{i}", _msg("q", f"r{i}"), process_at=NOW + 5) for i in range(n)]
    assert set(await broker.enqueue_many(calls, ["q"])) == {1}
    progress: list[tuple[int, int]] = []
    assert await inspector.run_all("q", "scheduled", progress=lambda d, t: progress.append((d, t))) == n
    assert progress == [(0, n), (BATCH_SIZE, n), (2 * BATCH_SIZE, n), (n, n)]
    assert await redis.llen(qk.pending) == n
    progress.clear()
    assert await inspector.delete_all("q", "pending", progress=lambda d, t: progress.append((d, t))) == n
    assert progress[-1] == (n, n)
    assert await redis.llen(qk.pending) == 0
    assert await redis.exists(qk.task("r0")) == 0


def _msg(queue: str, task_id: str, task_type: str = "test:task") -> bytes:
    return encode_message(
        new_message(type=task_type, payload=b"{}", id=task_id, queue=queue, retry=25, timeout=1800, deadline=0)
    )


async def test_minute_stats_follow_the_broker(inspector: Inspector, broker: RedisBroker, clock: SimulatedClock) -> None:
    for i in range(3):
        await _enqueue(broker, "q", f"m{i}")
    msgs = [decode_message(m) for _, m in await broker.dequeue("q", 3)]
    assert await broker.done("q", [(msgs[0].id, ""), (msgs[1].id, "")]) == [1, 1]
    clock.advance(60)
    assert await broker.retry("q", msgs[2].id, encode_message(msgs[2]), int(clock.now()) + 10, failure=True) == 1
    minutes = await inspector.minute_stats("q", hours=1)
    assert len(minutes) == 60
    assert minutes[-1].minute == datetime.fromtimestamp(int(clock.now()) // 60 * 60, UTC)
    assert [(m.processed, m.failed) for m in minutes[-2:]] == [(2, 0), (1, 1)]
    assert sum(m.processed for m in minutes) == 3
    info = await inspector.queue_info("q")
    assert (info.processed_today, info.failed_today, info.processed_total, info.failed_total) == (3, 1, 3, 1)
    with pytest.raises(ValueError, match="hours"):
        await inspector.minute_stats("q", hours=25)


async def test_delete_queue(inspector: Inspector, broker: RedisBroker, redis: Redis, schema: Schema) -> None:
    await _enqueue(broker, "full", "f1")
    await _enqueue(broker, "full", "f2", process_at=NOW + 30)
    await _enqueue(broker, "full", "f3", group="g")
    await _enqueue(broker, "empty", "e1")
    await inspector.delete_task("empty", "e1")
    await inspector.delete_queue("empty")
    assert "empty" not in await inspector.queues()
    with pytest.raises(QueueNotFound):
        await inspector.delete_queue("empty")
    with pytest.raises(QueueNotEmpty, match="use force"):
        await inspector.delete_queue("full")
    await inspector.pause("full")
    await inspector.delete_queue("full", force=True)
    assert "full" not in await inspector.queues()
    assert await redis.keys(f"{schema.ns}:{{full}}:*") == []


async def test_servers(inspector: Inspector, redis: Redis, schema: Schema) -> None:
    async def announce(server_id: str, expires: int, tasks: list[str]) -> None:
        key = schema.server("host-a", 42, server_id)
        wkey = schema.worker_set("host-a", 42, server_id)
        info = encode_server_info(
            host="host-a",
            pid=42,
            server_id=server_id,
            concurrency=10,
            queues={"default": 3, "critical": 6},
            strict_priority=False,
            status="active",
            start_time=NOW - 100,
            active_worker_count=len(tasks),
        )
        await redis.zadd(schema.servers, {key: expires})
        await redis.zadd(schema.workers, {wkey: expires})
        await redis.set(key, info)
        for i, task_id in enumerate(tasks):
            worker = encode_worker_info(
                host="host-a",
                pid=42,
                server_id=server_id,
                task_id=task_id,
                task_type="test:task",
                task_payload=b"{}",
                queue="default",
                start_time=NOW - 10 + i,
                deadline=NOW + 1800,
            )
            await redis.hset(wkey, task_id, worker)

    await announce("live", NOW + 10, ["t2", "t1"])
    await announce("dead", NOW - 1, ["t3"])
    await redis.zadd(schema.servers, {schema.server("host-b", 1, "gone"): NOW + 10})  # record already expired
    servers = await inspector.servers()
    assert [s.server.server_id for s in servers] == ["live"]
    live = servers[0]
    assert (live.server.queues, live.server.concurrency, live.server.status) == (
        {"default": 3, "critical": 6},
        10,
        "active",
    )
    assert [w.task_id for w in live.workers] == ["t2", "t1"]
    assert live.workers[0].deadline == datetime.fromtimestamp(NOW + 1800, UTC)


async def test_scheduler_entries_and_history(inspector: Inspector, redis: Redis, schema: Schema) -> None:
    live = schema.scheduler_entries("host", 7, "s-live")
    dead = schema.scheduler_entries("host", 8, "s-dead")
    for key, entry_id, expires in ((live, "e1", NOW + 20), (dead, "e2", NOW - 1)):
        entry = encode_scheduler_entry(
            id=entry_id,
            spec="@every 30s",
            task_type="test:task",
            task_payload=b"{}",
            enqueue_options=['Queue("default")', "MaxRetry(5)"],
            next_enqueue_time=NOW + 30,
            prev_enqueue_time=None,
        )
        await redis.zadd(schema.schedulers, {key: expires})
        await redis.lpush(key, entry)
    entries = await inspector.scheduler_entries()
    assert [(e.id, e.spec, e.enqueue_options, e.prev_enqueue_time) for e in entries] == [
        ("e1", "@every 30s", ('Queue("default")', "MaxRetry(5)"), None)
    ]
    history = schema.scheduler_history("e1")
    for i in range(5):
        await redis.zadd(history, {encode_enqueue_event(f"task-{i}", NOW - 100 + i): NOW - 100 + i})
    events = await inspector.scheduler_history("e1", size=2)
    assert [e.task_id for e in events] == ["task-4", "task-3"]
    assert events[0].enqueue_time == datetime.fromtimestamp(NOW - 96, UTC)
    assert [e.task_id for e in await inspector.scheduler_history("e1", page=3, size=2)] == ["task-0"]
    assert await inspector.scheduler_history("nope") == []


async def test_client_enqueued_tasks_read_back(inspector: Inspector, client: Client) -> None:
    info = await client.enqueue("test:json", {"a": [1, 2]}, queue="c", headers={"k": "v"}, retention=60, max_retry=2)
    task = await inspector.get_task("c", info.id)
    assert (task.type, task.payload_json, task.headers, task.retention, task.max_retry) == (
        "test:json",
        {"a": [1, 2]},
        {"k": "v"},
        60,
        2,
    )


# -- assembly: from settings, and parts that stand on their own -----------------------------------


async def _connections(redis: Redis) -> int:
    return len(await redis.client_list())


async def test_from_settings_opens_its_own_connection_and_closes_it(
    settings: Settings, client: Client, redis: Redis
) -> None:
    await client.enqueue("test:json", {"a": 1}, queue="mail")
    before = await _connections(redis)
    async with Inspector.from_settings(settings) as inspector:
        assert inspector.schema.ns == settings.namespace
        assert await inspector.queues() == ["mail"]
        assert (await inspector.queue_info("mail", memory=False)).pending == 1
        assert await _connections(redis) == before + 1
    assert await _connections(redis) == before


async def test_each_part_works_on_its_own_namespace(
    inspector: Inspector, broker: RedisBroker, redis: Redis, schema: Schema, clock: SimulatedClock
) -> None:
    await _enqueue(broker, "q", "t1")
    await _enqueue(broker, "q", "t2", process_at=NOW + 30)
    ns = Namespace(redis, schema, clock)
    reads, actions, queues = TaskReads(ns), TaskActions(ns), QueueOps(ns)
    assert [t.id for t in (await reads.list_tasks("q", "pending")).tasks] == ["t1"]
    await actions.run_task("q", "t2")
    assert await queues.pause("q")
    info = await inspector.queue_info("q", memory=False)  # the inspector sees what its parts did
    assert (info.pending, info.scheduled, info.paused) == (2, 0, True)
    with pytest.raises(QueueNotFound, match=f"namespace {schema.ns!r}"):
        await ns.queue_keys("nope")


# -- scale: 100,000 tasks in one queue -----------------------------------------------------------


class CommandLog:
    """Every command the client sends (direct calls and pipelined ones)."""

    def __init__(self) -> None:
        self.commands: list[tuple[Any, ...]] = []

    def names(self) -> list[str]:
        return [str(c[0]).upper() for c in self.commands]

    def clear(self) -> None:
        self.commands.clear()


@contextmanager
def record_commands(monkeypatch: pytest.MonkeyPatch) -> Iterator[CommandLog]:
    log = CommandLog()
    direct = Redis.execute_command
    pipelined = Pipeline.execute

    async def execute_command(self: Redis, *args: Any, **options: Any) -> Any:
        log.commands.append(args)
        return await direct(self, *args, **options)

    async def execute(self: Pipeline, raise_on_error: bool = True) -> Any:
        log.commands.extend(args for args, _ in self.command_stack)
        return await pipelined(self, raise_on_error)

    with monkeypatch.context() as m:
        m.setattr(Redis, "execute_command", execute_command)
        m.setattr(Pipeline, "execute", execute)
        yield log


async def _server_calls(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return sum(int(v["calls"]) for v in stats.values())


async def _seed_pending(redis: Redis, schema: Schema, queue: str, n: int) -> None:
    """Write ``n`` pending tasks quickly: one template message, its id bytes spliced in (10,000 per pipeline)."""
    qk = schema.queue(queue)
    template = _msg(queue, "\x00", "bulk:item")
    head, tail = template.split(b"\x1a\x01\x00")  # field 3 (id), length 1, the placeholder byte
    await redis.sadd(schema.all_queues, queue)
    for start in range(0, n, 10_000):
        ids = [f"task-{i:06d}" for i in range(start, min(n, start + 10_000))]
        async with redis.pipeline(transaction=False) as pipe:
            for task_id in ids:
                raw = task_id.encode()
                msg = head + b"\x1a" + bytes([len(raw)]) + raw + tail
                pipe.execute_command("HSET", qk.task_prefix + task_id, "msg", msg, "state", "pending")
            pipe.execute_command("LPUSH", qk.pending, *ids)
            await pipe.execute()
    assert decode_message(await redis.hget(qk.task("task-000007"), "msg")).id == "task-000007"


def _assert_bounded_reads(log: CommandLog, limit: int) -> None:
    assert len(log.commands) <= limit, log.names()
    assert not {"KEYS", "SCAN", "HGETALL", "HKEYS", "HVALS"} & set(log.names())
    for command in log.commands:
        name = str(command[0]).upper()
        if name in ("LRANGE", "ZRANGE", "ZREVRANGE"):
            start, stop = int(command[2]), int(command[3])
            assert (start < 0) == (stop < 0), command  # never "to the end" from the other side
            assert stop - start + 1 <= 1000, command


@pytest.mark.slow
async def test_100k_tasks_stay_cheap(
    inspector: Inspector, redis: Redis, schema: Schema, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 100_000
    await _seed_pending(redis, schema, "big", n)
    await _enqueue(RedisBroker(redis, schema, SimulatedClock(NOW)), "big", "late", process_at=NOW + 60)
    with record_commands(monkeypatch) as log:
        before = await _server_calls(redis)
        info = await inspector.queue_info("big")
        after = await _server_calls(redis)
        assert (info.pending, info.scheduled, info.size) == (n, 1, n + 1)
        assert info.memory_usage > n * 50  # the sample average times 100,000 records
        _assert_bounded_reads(log, 200)
        assert after - before - 1 <= 200  # server side too: no per-task work behind the client's back

        log.clear()
        page = await inspector.list_tasks("big", "pending", page=900, size=100)
        assert [t.id for t in page.tasks][:2] == ["task-089900", "task-089901"]
        assert page.total == n
        _assert_bounded_reads(log, 110)

        log.clear()
        await inspector.get_task("big", "task-054321")
        stats = await inspector.all_queue_info()
        assert [q.queue for q in stats] == ["big"]
        _assert_bounded_reads(log, 210)
    progress: list[tuple[int, int]] = []
    assert await inspector.delete_all("big", "pending", progress=lambda d, t: progress.append((d, t))) == n
    assert len(progress) == n // BATCH_SIZE + 1  # the start, then one per batch: it stops at the count it made
    assert await redis.llen(schema.queue("big").pending) == 0


async def _snapshot(redis: Redis, ns: str) -> dict[str, Any]:
    """Every key of the namespace with its type and full value."""
    out: dict[str, Any] = {}
    async for raw in redis.scan_iter(match=f"{ns}:*", count=1000):
        kind = (await redis.type(raw)).decode()
        reader = {
            "string": redis.get,
            "hash": redis.hgetall,
            "set": redis.smembers,
            "list": lambda k: redis.lrange(k, 0, -1),
            "zset": lambda k: redis.zrange(k, 0, -1, withscores=True),
        }[kind]
        out[raw.decode()] = (kind, await reader(raw))
    return out


async def test_refused_actions_change_nothing(
    inspector: Inspector, gold: dict[str, Any], broker: RedisBroker, redis: Redis, namespace: str
) -> None:
    await _enqueue(broker, "default", "busy")
    await broker.dequeue("default", 3)  # golden-plain, golden-unique and busy are active now
    before = await _snapshot(redis, namespace)
    refused = [
        (inspector.run_task, "default", "golden-plain", InvalidTaskState),
        (inspector.archive_task, "default", "busy", InvalidTaskState),
        (inspector.delete_task, "default", "golden-unique", InvalidTaskState),
        (inspector.run_task, "default", "nope", TaskNotFound),
        (inspector.archive_task, "t_archive", "golden-archived", InvalidTaskState),
        (inspector.delete_task, "t_retry", "golden-plain", TaskNotFound),
    ]
    for call, queue, task_id, error in refused:
        with pytest.raises(error):
            await call(queue, task_id)
    with pytest.raises(InvalidTaskState):
        await inspector.run_all("default", "active")
    with pytest.raises(QueueNotEmpty):
        await inspector.delete_queue("default")
    assert await _snapshot(redis, namespace) == before
