"""The enqueue client: every asynq option, asynq's defaults, typed errors, one round trip per batch.

State is read back from Redis and compared with what Go's asynq v0.26 writes for the same enqueue
(``tests/data/asynq-golden.json``), so a Go worker and the ``asynq`` CLI read our tasks as their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
import redis as redis_sync
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import Connection

import framework
from framework.client.client import Client, Job, TaskCall, TaskInfo
from framework.client.sync import SyncClient
from framework.embedded.launch import free_port
from framework.embedded.process import start_test_server
from framework.errors import (
    DuplicateTask,
    FrameworkError,
    InvalidOption,
    PayloadTooLarge,
    PayloadTypeError,
    RedisUnavailable,
    TaskIdConflict,
)
from framework.protocol.keys import Schema
from framework.protocol.message import TaskMessage, TaskState, decode_message, encode_message
from framework.settings import MAX_PAYLOAD_SIZE, Settings, TaskDefaults
from framework.task import PayloadDecodeError, TaskDef
from framework.transport.connection import open_redis
from tests.framework.golden import GOLDEN_NS, golden, golden_keys, golden_tasks, rename
from tests.framework.test_lua import snapshot

if TYPE_CHECKING:
    from pathlib import Path

    from framework.registry import Registry


class SendEmail(msgspec.Struct, frozen=True, kw_only=True):
    to: str
    subject: str = ""


class Other(msgspec.Struct, frozen=True, kw_only=True):
    n: int


async def _handler(ctx: Any, payload: Any) -> None:
    return None


SEND = TaskDef("email:send", SendEmail, _handler)


async def stored(redis: Redis, schema: Schema, queue: str, task_id: str) -> tuple[dict[str, bytes], TaskMessage]:
    fields = {k.decode(): v for k, v in (await redis.hgetall(schema.queue(queue).task(task_id))).items()}
    return fields, decode_message(fields["msg"])


# --- enqueue and its options -------------------------------------------------------------------------------------


async def test_enqueue_typed_task_with_asynq_defaults(client: Client, redis: Redis, schema: Schema) -> None:
    before = time.time()
    info = await SEND.enqueue(client, SendEmail(to="a@example.com"))
    after = time.time()
    assert uuid.UUID(info.id).version == 4
    assert str(uuid.UUID(info.id)) == info.id  # lower-case, hyphenated, as Go's uuid.NewString()
    assert info == TaskInfo(
        id=info.id,
        queue="default",
        type="email:send",
        state=TaskState.PENDING,
        next_process_at=info.next_process_at,
        max_retry=25,
        timeout=1800,
        deadline=0,
        retention=0,
        group="",
        headers={},
        payload=b'{"to":"a@example.com","subject":""}',
    )
    assert before <= info.next_process_at <= after
    qk = schema.queue("default")
    snap = await snapshot(redis, schema.ns)
    assert set(snap) == {schema.all_queues, qk.pending, qk.task(info.id)}
    assert snap[schema.all_queues] == {"default"}
    assert snap[qk.pending] == [info.id]
    fields, msg = await stored(redis, schema, "default", info.id)
    assert set(fields) == {"msg", "state", "pending_since"}
    assert fields["state"] == b"pending"
    assert int(before * 1e9) - 1e9 <= int(fields["pending_since"]) <= int(after * 1e9) + 1e9
    assert msg == TaskMessage(
        type="email:send",
        payload=b'{"to":"a@example.com","subject":""}',
        id=info.id,
        queue="default",
        retry=25,
        timeout=1800,
    )


async def test_every_option(client: Client, redis: Redis, schema: Schema) -> None:
    deadline = datetime.now(UTC) + timedelta(hours=2)
    info = await client.enqueue(
        SEND,
        SendEmail(to="b@example.com"),
        queue="critical",
        max_retry=5,
        timeout=30,
        deadline=deadline,
        unique=600,
        task_id="every-option",
        retention=3600,
        headers={"trace": "abc", "empty": "", "ünï": "cödé"},
    )
    qk = schema.queue("critical")
    lock = qk.unique("email:send", info.payload)
    assert (info.id, info.queue, info.state) == ("every-option", "critical", TaskState.PENDING)
    assert (info.max_retry, info.timeout, info.deadline, info.retention) == (5, 30, int(deadline.timestamp()), 3600)
    assert info.headers == {"trace": "abc", "empty": "", "ünï": "cödé"}
    fields, msg = await stored(redis, schema, "critical", "every-option")
    assert fields["unique_key"] == lock.encode()
    assert msg == TaskMessage(
        type="email:send",
        payload=info.payload,
        id="every-option",
        queue="critical",
        retry=5,
        timeout=30,
        deadline=int(deadline.timestamp()),
        unique_key=lock,
        retention=3600,
        headers={"trace": "abc", "empty": "", "ünï": "cödé"},
    )
    assert await redis.get(lock) == b"every-option"
    assert 598 <= await redis.ttl(lock) <= 600


@pytest.mark.parametrize(
    "when",
    [
        {"process_in": 120},
        {"process_in": timedelta(minutes=2)},
        {"process_at": "in-120"},
    ],
    ids=["process_in", "process_in-timedelta", "process_at"],
)
async def test_scheduled(client: Client, redis: Redis, schema: Schema, when: dict[str, Any]) -> None:
    if when.get("process_at") == "in-120":
        when = {"process_at": datetime.now(UTC) + timedelta(seconds=120)}
    now = time.time()
    info = await client.enqueue(SEND, SendEmail(to="c@example.com"), **when)
    assert info.state == TaskState.SCHEDULED
    assert now + 119 <= info.next_process_at <= now + 122
    assert info.next_process_at == int(info.next_process_at)
    qk = schema.queue("default")
    snap = await snapshot(redis, schema.ns)
    assert set(snap) == {schema.all_queues, qk.scheduled, qk.task(info.id)}
    assert snap[qk.scheduled] == [(info.id, info.next_process_at)]
    fields, _ = await stored(redis, schema, "default", info.id)
    assert fields.keys() == {"msg", "state"}
    assert fields["state"] == b"scheduled"


async def test_deadline_only_means_timeout_zero(client: Client, redis: Redis, schema: Schema) -> None:
    deadline = int(time.time()) + 300
    info = await client.enqueue(SEND, SendEmail(to="d@example.com"), deadline=deadline)
    _, msg = await stored(redis, schema, "default", info.id)
    assert (msg.timeout, msg.deadline) == (0, deadline)
    assert (info.timeout, info.deadline) == (0, deadline)


async def test_group(client: Client, redis: Redis, schema: Schema) -> None:
    now = int(time.time())
    info = await client.enqueue(SEND, SendEmail(to="e@example.com"), group="g1")
    assert (info.state, info.group) == (TaskState.AGGREGATING, "g1")
    qk = schema.queue("default")
    snap = await snapshot(redis, schema.ns)
    assert set(snap) == {schema.all_queues, qk.group("g1"), qk.groups, qk.task(info.id)}
    ((member, score),) = snap[qk.group("g1")]
    assert member == info.id
    assert now <= score <= now + 2
    assert snap[qk.groups] == {"g1"}
    fields, msg = await stored(redis, schema, "default", info.id)
    assert (fields["state"], fields["group"], msg.group_key) == (b"aggregating", b"g1", "g1")


async def test_group_with_a_delay_is_scheduled_then_joins_the_group(
    client: Client, redis: Redis, schema: Schema
) -> None:
    info = await client.enqueue(SEND, SendEmail(to="f@example.com"), group="g1", process_in=60)
    assert info.state == TaskState.SCHEDULED
    fields, msg = await stored(redis, schema, "default", info.id)
    assert (fields["state"], fields["group"], msg.group_key) == (b"scheduled", b"g1", "g1")
    assert await redis.zscore(schema.queue("default").scheduled, info.id) == info.next_process_at


async def test_unique_lock_of_a_scheduled_task_covers_the_wait(client: Client, redis: Redis, schema: Schema) -> None:
    """asynq: the lock of a scheduled unique task lasts until process_at, then the TTL."""
    info = await client.enqueue(SEND, SendEmail(to="g@example.com"), unique=60, process_in=100)
    lock = schema.queue("default").unique("email:send", info.payload)
    assert await redis.get(lock) == info.id.encode()
    assert 158 <= await redis.ttl(lock) <= 161


async def test_unique_key_of_no_payload_ends_in_colon(client: Client, redis: Redis, schema: Schema) -> None:
    """Go's nil payload locks ``...:unique:<type>:``; an empty payload locks md5("")."""
    info = await client.enqueue("ping:all", unique=30)
    qk = schema.queue("default")
    _, msg = await stored(redis, schema, "default", info.id)
    assert msg.unique_key == qk.unique("ping:all", None) == f"{schema.ns}:{{default}}:unique:ping:all:"
    assert await redis.get(qk.unique("ping:all", None)) == info.id.encode()
    empty = await client.enqueue("ping:all", b"", unique=30)
    _, msg = await stored(redis, schema, "default", empty.id)
    assert msg.unique_key.endswith(":unique:ping:all:d41d8cd98f00b204e9800998ecf8427e")


async def test_untyped_payloads(client: Client, redis: Redis, schema: Schema) -> None:
    raw = await client.enqueue("blob:raw", b"\x00\xff\x10\x80\x7f")
    as_json = await client.enqueue("report:make", {"user_id": 7, "kind": "monthly"})
    none = await client.enqueue("ping:all")
    assert (await stored(redis, schema, "default", raw.id))[1].payload == b"\x00\xff\x10\x80\x7f"
    assert (await stored(redis, schema, "default", as_json.id))[1].payload == b'{"user_id":7,"kind":"monthly"}'
    assert (await stored(redis, schema, "default", none.id))[1].payload == b""


async def test_registered_type_string_is_checked_against_its_payload_type(
    client: Client, registry: Registry, redis: Redis, schema: Schema
) -> None:
    registry.add(SEND)
    info = await client.enqueue("email:send", {"to": "h@example.com"})
    assert info.payload == b'{"to":"h@example.com","subject":""}'
    with pytest.raises(PayloadDecodeError, match="to"):
        await client.enqueue("email:send", {"subject": "no recipient"})
    assert await redis.llen(schema.queue("default").pending) == 1


async def test_defaults_per_task_type_and_per_queue(redis: Redis, schema: Schema, settings: Settings) -> None:
    settings = settings.replace(
        queue_defaults={"low": TaskDefaults(max_retry=2, timeout=40, retention=50), "default": TaskDefaults(timeout=9)}
    )
    client = Client(redis, schema=schema, settings=settings)
    low_task = TaskDef("report:low", Other, _handler, queue="low", max_retry=7)
    info = await client.enqueue(low_task, Other(n=1))
    _, msg = await stored(redis, schema, "low", info.id)
    assert (msg.queue, msg.retry, msg.timeout, msg.retention) == ("low", 7, 40, 50)  # task type, then queue
    info = await client.enqueue(low_task, Other(n=1), max_retry=1, timeout=5, queue="default")
    _, msg = await stored(redis, schema, "default", info.id)
    assert (msg.queue, msg.retry, msg.timeout, msg.retention) == ("default", 1, 5, 0)  # call site wins
    info = await client.enqueue("plain:task", queue="default")
    _, msg = await stored(redis, schema, "default", info.id)
    assert (msg.retry, msg.timeout) == (25, 9)


# --- same bytes as Go ------------------------------------------------------------------------------------------


def _golden_enqueue_steps() -> list[tuple[str, Any, dict[str, Any]]]:
    """The snapshot's "enqueue" steps (asynqctl flags) as (type, payload, options), for queues no Go worker ran."""
    units = {"s": 1, "m": 60, "h": 3600}
    out = []
    for step in golden()["steps"]:
        if step[0] != "enqueue":
            continue
        flags: dict[str, Any] = {"headers": {}}
        args = iter(step[1:])
        for flag in args:
            value = next(args)
            if flag == "-header":
                key, _, val = value.partition("=")
                flags["headers"][key] = val
            else:
                flags[flag.lstrip("-")] = value
        if flags.get("queue", "default").startswith("t_"):
            continue
        options: dict[str, Any] = {"task_id": flags["id"]}
        simple = {"queue": "queue", "group": "group"}
        options.update({ours: flags[go] for go, ours in simple.items() if go in flags})
        durations = {"timeout": "timeout", "unique": "unique", "in": "process_in", "retention": "retention"}
        for go, ours in durations.items():
            if go in flags:
                options[ours] = int(flags[go][:-1]) * units[flags[go][-1]]
        if "retry" in flags:
            options["max_retry"] = int(flags["retry"])
        if "deadline" in flags:
            options["deadline"] = int(flags["deadline"])
        if flags["headers"]:
            options["headers"] = flags["headers"]
        payload = bytes.fromhex(flags["payload-hex"]) if "payload-hex" in flags else flags.get("payload")
        out.append((flags["type"], payload.encode() if isinstance(payload, str) else payload, options))
    return out


async def test_enqueue_writes_what_go_writes(client: Client, redis: Redis, schema: Schema) -> None:
    steps = _golden_enqueue_steps()
    assert len(steps) == 9
    for task_type, payload, options in steps:
        if options["task_id"] == "golden-unique-dup":
            with pytest.raises(DuplicateTask):
                await client.enqueue(task_type, payload, **options)
        else:
            await client.enqueue(task_type, payload, **options)

    def ours_name(key: str) -> str:
        return rename(key, schema.ns)

    worked = ("{t_retry}", "{t_archive}", "{t_completed}")
    expected = {k: v for k, v in golden_keys(GOLDEN_NS).items() if not any(w in k for w in worked)}
    snap = await snapshot(redis, schema.ns)
    assert set(snap) == {ours_name(k) for k in expected}
    for key, rec in expected.items():
        ours = snap[ours_name(key)]
        if rec["type"] == "set":
            assert ours == {i for i in rec["items"] if not i.startswith("t_")}, key
        elif rec["type"] == "list":
            assert ours == rec["items"], key
        elif rec["type"] == "zset":
            assert [m for m, _ in ours] == [m for m, _ in rec["items"]], key
        elif rec["type"] == "string":  # the uniqueness lock
            assert ours == bytes.fromhex(rec["hex"])
            assert rec["ttl"] - 2 <= await redis.ttl(ours_name(key)) <= rec["ttl"] + 1
    for (queue, task_id), go in golden_tasks().items():
        if any(w in f"{{{queue}}}" for w in worked):
            continue
        fields, msg = await stored(redis, schema, queue, task_id)
        assert set(fields) == set(go["fields"]), task_id
        assert fields["state"] == go["fields"]["state"], task_id
        if "unique_key" in fields:
            assert fields["unique_key"].decode() == rename(go["fields"]["unique_key"].decode(), schema.ns)
            msg.unique_key = go["msg"].unique_key  # the lock's name carries our test namespace
        assert msg == go["msg"], task_id
        if not msg.headers:  # Go writes map entries in random order; every other message is byte-exact
            assert encode_message(msg) == go["fields"]["msg"], task_id


def test_go_written_message_decodes() -> None:
    go = golden()["keys"]["asynq:{critical}:t:golden-options"]
    msg = decode_message(bytes.fromhex(go["fields_hex"]["msg"]))
    decoded = go["msg_decoded"]
    assert msg.type == decoded["type"] == "report:generate"
    assert msg.payload == bytes.fromhex(decoded["payload_hex"])
    assert (msg.id, msg.queue, msg.retry, msg.retried) == ("golden-options", "critical", 5, 0)
    assert (msg.timeout, msg.deadline, msg.retention) == (30, 4102444800, 0)
    assert dict(msg.headers) == {"trace": "abc", "empty": "", "ünï": "cödé"}
    for key, rec in golden()["keys"].items():
        if rec["type"] == "hash":
            msg = decode_message(bytes.fromhex(rec["fields_hex"]["msg"]))
            assert key.endswith(f":t:{msg.id}")
            assert msg.retry == rec["msg_decoded"]["retry"]
            assert msg.error_msg == rec["msg_decoded"]["error_msg"]


# --- batches ----------------------------------------------------------------------------------------------------


def counting_redis(url: str) -> tuple[Redis, list[int]]:
    """An asyncio Redis whose connections count their socket writes (one per command or pipeline)."""
    writes: list[int] = []

    class CountingConnection(Connection):
        async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            writes.append(1)
            await super().send_packed_command(command, check_health)

    pool = ConnectionPool.from_url(url, connection_class=CountingConnection)
    return Redis.from_pool(pool), writes


@pytest.mark.parametrize("n", [1, 250])
async def test_batch_is_one_round_trip(redis_url: str, schema: Schema, redis: Redis, n: int) -> None:
    conn, writes = counting_redis(redis_url)
    try:
        client = Client(conn, schema=schema)
        await client.enqueue("warm:up", b"")  # connect, register the queue, load the script
        writes.clear()
        results = await client.enqueue_many(TaskCall("batch:item", {"i": i}) for i in range(n))
        assert len(writes) == 1
        assert all(isinstance(r, TaskInfo) for r in results)
        assert await redis.llen(schema.queue("default").pending) == n + 1
    finally:
        await conn.aclose()


async def test_batch_results_per_task(client: Client, redis: Redis, schema: Schema) -> None:
    await client.enqueue("x:y", b"1", task_id="taken")
    results = await client.enqueue_many(
        [
            TaskCall("x:y", b"a", {"task_id": "j1"}),
            TaskCall("x:y", b"b", {"task_id": "taken"}),
            TaskCall(SEND, SendEmail(to="u@example.com"), {"unique": 60, "queue": "low"}),
            TaskCall(SEND, SendEmail(to="u@example.com"), {"unique": 60, "queue": "low"}),
            TaskCall("x:y", b"c", {"process_in": 60, "task_id": "j5"}),
        ]
    )
    assert isinstance(results[0], TaskInfo)
    assert results[0].id == "j1"
    assert isinstance(results[1], TaskIdConflict)
    assert isinstance(results[2], TaskInfo)
    assert isinstance(results[3], DuplicateTask)
    assert isinstance(results[4], TaskInfo)
    assert results[4].state == TaskState.SCHEDULED
    assert await redis.smembers(schema.all_queues) == {b"default", b"low"}
    assert await redis.lrange(schema.queue("default").pending, 0, -1) == [b"j1", b"taken"]
    assert await client.enqueue_many([]) == []


async def test_invalid_task_in_a_batch_sends_nothing(client: Client, redis: Redis, schema: Schema) -> None:
    with pytest.raises(InvalidOption, match="process_in"):
        await client.enqueue_many([TaskCall("x:y", b"1"), TaskCall("x:y", b"2", {"process_in": -5})])
    with pytest.raises(PayloadTypeError):
        await client.enqueue_many([TaskCall("x:y", b"1"), TaskCall(SEND, Other(n=1))])
    untyped: dict[str, Any] = {"priorty": 1}  # a caller without a type checker
    with pytest.raises(InvalidOption, match=r"unknown enqueue option\(s\): priorty;"):
        await client.enqueue_many([TaskCall("x:y", b"1"), TaskCall("x:y", b"2", untyped)])  # type: ignore[arg-type]
    assert await snapshot(redis, schema.ns) == {}


def test_job_is_the_deprecated_name_of_task_call() -> None:
    assert Job is TaskCall
    assert framework.Job is framework.TaskCall is TaskCall
    assert TaskCall("x:y").options == {}


# --- payload size ---------------------------------------------------------------------------------------------

BLOB = TaskDef("blob:raw", bytes, _handler)
LIMIT = 100


@pytest.fixture
def small(redis: Redis, schema: Schema, settings: Settings, registry: Registry) -> Client:
    """A client whose settings allow payloads of at most ``LIMIT`` bytes."""
    return Client(redis, schema=schema, settings=settings.replace(max_payload_size=LIMIT), registry=registry)


def _too_large(task_type: str, size: int) -> str:
    return (
        f"the payload of a {task_type!r} task is {size:,} bytes, over the limit of {LIMIT:,} bytes "
        "(setting max_payload_size; 0 = no limit)"
    )


@pytest.mark.parametrize(
    ("task", "options"),
    [
        ("blob:raw", {}),
        (BLOB, {"unique": 60}),
        (BLOB, {"process_in": 60}),
        (BLOB, {"process_in": 60, "unique": 60}),
        (BLOB, {"group": "g"}),
        (BLOB, {"queue": "low", "max_retry": 3}),
    ],
    ids=["type-string", "unique", "scheduled", "scheduled-unique", "group", "options"],
)
async def test_a_payload_over_the_limit_sends_nothing(
    small: Client, redis: Redis, schema: Schema, task: Any, options: dict[str, Any]
) -> None:
    with pytest.raises(PayloadTooLarge) as err:
        await small.enqueue(task, b"x" * (LIMIT + 1), **options)
    assert str(err.value) == _too_large("blob:raw", LIMIT + 1)
    assert await snapshot(redis, schema.ns) == {}  # no task, no unique lock, no queue registered


async def test_a_payload_over_the_limit_on_the_fast_path_sends_nothing(
    small: Client, redis: Redis, schema: Schema
) -> None:
    assert small.broker.fast is not None
    with pytest.raises(PayloadTooLarge) as err:
        await BLOB.enqueue(small, b"x" * (LIMIT + 1))
    assert small._plain[BLOB] is not None  # the prepared fast path was the one taken
    assert str(err.value) == _too_large("blob:raw", LIMIT + 1)
    assert await snapshot(redis, schema.ns) == {}
    info = await BLOB.enqueue(small, b"x" * LIMIT)  # at the limit: stored
    _, msg = await stored(redis, schema, "default", info.id)
    assert msg.payload == b"x" * LIMIT


async def test_a_typed_payload_is_measured_encoded(small: Client, redis: Redis, schema: Schema) -> None:
    address = "a" * 80 + "@example.com"
    size = len(msgspec.json.encode(SendEmail(to=address)))
    with pytest.raises(PayloadTooLarge, match=f"is {size} bytes"):
        await SEND.enqueue(small, SendEmail(to=address))
    with pytest.raises(PayloadTooLarge, match=f"is {size} bytes"):
        await small.enqueue("json:untyped", {"to": address, "subject": ""})
    assert await snapshot(redis, schema.ns) == {}


async def test_a_batch_with_one_payload_over_the_limit_sends_nothing(
    small: Client, redis: Redis, schema: Schema
) -> None:
    with pytest.raises(PayloadTooLarge) as err:
        await small.enqueue_many([TaskCall(BLOB, b"small"), TaskCall("blob:raw", b"x" * 500, {"unique": 60})])
    assert str(err.value) == _too_large("blob:raw", 500)
    assert await snapshot(redis, schema.ns) == {}


async def test_payload_limit_zero_means_no_limit_and_the_default_is_4_mib(
    redis: Redis, schema: Schema, settings: Settings
) -> None:
    unlimited = Client(redis, schema=schema, settings=settings.replace(max_payload_size=0))
    big = b"x" * (MAX_PAYLOAD_SIZE + 1)
    info = await BLOB.enqueue(unlimited, big)
    _, msg = await stored(redis, schema, "default", info.id)
    assert msg.payload == big
    assert MAX_PAYLOAD_SIZE == 4 * 1024 * 1024 == Settings().max_payload_size
    for default in (Client(redis, schema=schema), Client(redis, schema=schema, settings=settings)):
        assert default.max_payload_size == MAX_PAYLOAD_SIZE
        with pytest.raises(PayloadTooLarge, match="is 4,194,305 bytes, over the limit of 4,194,304 bytes"):
            await BLOB.enqueue(default, big)
        with pytest.raises(PayloadTooLarge):
            await default.enqueue_many([TaskCall(BLOB, big)])
    assert await redis.llen(schema.queue("default").pending) == 1


def test_sync_client_refuses_a_payload_over_the_limit(redis_url: str, namespace: str) -> None:
    schema = Schema(namespace)
    settings = Settings(redis_url=redis_url, namespace=namespace, max_payload_size=LIMIT)
    big = b"x" * (LIMIT + 1)
    with SyncClient(redis_url, schema=schema, settings=settings) as client:
        with pytest.raises(PayloadTooLarge, match="'blob:raw' task is 101 bytes"):
            BLOB.enqueue_sync(client, big)
        with pytest.raises(PayloadTooLarge):
            client.enqueue("blob:raw", big, process_in=30)
        with pytest.raises(PayloadTooLarge):
            client.enqueue_many([TaskCall(BLOB, b"ok"), TaskCall(BLOB, big)])
        info = BLOB.enqueue_sync(client, b"x" * LIMIT)
    conn = redis_sync.Redis.from_url(redis_url)
    try:
        assert conn.lrange(schema.queue("default").pending, 0, -1) == [info.id.encode()]
    finally:
        conn.close()


# --- the sync client ---------------------------------------------------------------------------------------------


def test_sync_client_without_an_event_loop(redis_url: str, namespace: str) -> None:
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()
    schema = Schema(namespace)
    with SyncClient(redis_url, schema=schema) as client:
        info = SEND.enqueue_sync(client, SendEmail(to="s@example.com"), unique=60)
        results = client.enqueue_many([TaskCall("x:y", b"1"), TaskCall("x:y", b"2")])
        with pytest.raises(DuplicateTask):
            client.enqueue(SEND, SendEmail(to="s@example.com"), unique=60)
        with pytest.raises(InvalidOption):
            client.enqueue("x:y", queue="")
    assert all(isinstance(r, TaskInfo) for r in results)
    conn = redis_sync.Redis.from_url(redis_url)
    try:
        pending = schema.queue("default").pending
        assert conn.lrange(pending, 0, -1)[-1] == info.id.encode()
        assert conn.llen(pending) == 3
        assert conn.hget(schema.queue("default").task(info.id), "state") == b"pending"
    finally:
        conn.close()


# --- errors -----------------------------------------------------------------------------------------------------


async def test_duplicate_task(client: Client, redis: Redis, schema: Schema) -> None:
    first = await client.enqueue(SEND, SendEmail(to="dup@example.com"), unique=60)
    with pytest.raises(DuplicateTask) as err:
        await client.enqueue(SEND, SendEmail(to="dup@example.com"), unique=60, task_id="second")
    assert "'email:send'" in str(err.value)
    assert "'default'" in str(err.value)
    assert not await redis.exists(schema.queue("default").task("second"))
    # another payload is another task
    other = await client.enqueue(SEND, SendEmail(to="other@example.com"), unique=60)
    assert await redis.lrange(schema.queue("default").pending, 0, -1) == [other.id.encode(), first.id.encode()]


async def test_task_id_conflict(client: Client, redis: Redis, schema: Schema) -> None:
    await client.enqueue("x:y", b"first", task_id="same")
    with pytest.raises(TaskIdConflict, match=r"'same'.*'default'"):
        await client.enqueue("x:y", b"second", task_id="same")
    _, msg = await stored(redis, schema, "default", "same")
    assert msg.payload == b"first"
    # ids are unique per queue only
    await client.enqueue("x:y", b"elsewhere", task_id="same", queue="low")


@pytest.mark.parametrize(
    ("task", "payload"),
    [
        (SEND, {"to": "dict@example.com"}),
        (SEND, Other(n=1)),
        (SEND, None),
        (TaskDef("blob:bytes", bytes, _handler), "text, not bytes"),
        ("x:y", object()),
        ("", b""),
        (42, b""),
    ],
    ids=["dict-for-struct", "other-struct", "none", "str-for-bytes", "unencodable", "blank-type", "not-a-task"],
)
async def test_wrong_payload_sends_nothing(
    client: Client, redis: Redis, schema: Schema, task: Any, payload: Any
) -> None:
    with pytest.raises(PayloadTypeError):
        await client.enqueue(task, payload)
    assert await snapshot(redis, schema.ns) == {}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"process_in": -1}, "process_in=-1"),
        ({"deadline": datetime.now(UTC) - timedelta(minutes=1)}, "in the past"),
        ({"queue": ""}, "queue=''"),
        ({"priority": 1}, "unknown enqueue option(s): priority"),
        ({"unique": -1}, "unique=-1"),
    ],
)
async def test_invalid_option_sends_nothing(
    client: Client, redis: Redis, schema: Schema, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidOption) as err:
        await client.enqueue(SEND, SendEmail(to="x@example.com"), **options)
    assert message in str(err.value)
    assert await snapshot(redis, schema.ns) == {}


async def test_redis_unavailable_names_the_url_without_its_password() -> None:
    port = free_port()  # nothing listens there
    url = f"redis://alice:hunter2@127.0.0.1:{port}/0"
    client = Client.from_url(url)
    try:
        with pytest.raises(RedisUnavailable) as err:
            await client.enqueue("x:y", b"1")
        text = str(err.value)
        assert f"redis://alice:***@127.0.0.1:{port}/0" in text
        assert "hunter2" not in text
        assert isinstance(err.value, ConnectionError)  # the builtin, for callers that catch that
        with pytest.raises(RedisUnavailable) as err:
            await client.enqueue_many([TaskCall("x:y", b"1")])
        assert "hunter2" not in str(err.value)
    finally:
        await client.close()


def test_sync_client_redis_unavailable() -> None:
    port = free_port()
    with SyncClient(f"redis://:hunter2@127.0.0.1:{port}") as client, pytest.raises(RedisUnavailable) as err:
        client.enqueue("x:y", b"1")
    assert "hunter2" not in str(err.value)
    assert f"127.0.0.1:{port}" in str(err.value)


# --- a Redis hiccup never leaves a half-written task ----------------------------------------------------------


class CuttingProxy:
    """A TCP proxy to Redis that, once armed, forwards ``budget`` more client bytes and then drops the link."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.budget: int | None = None
        self.server: asyncio.Server | None = None
        self.port = 0
        self.handlers: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening and end every proxied connection (their sockets closed before the loop ends)."""
        if self.server is not None:
            self.server.close()
        for task in list(self.handlers):
            task.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)
        if self.server is not None:
            await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            await self._forward(reader, writer)
        finally:
            writer.close()
            self.handlers.discard(task)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)

        async def upstream() -> None:
            while data := await reader.read(65536):
                if self.budget is not None:
                    data = data[: self.budget]
                    self.budget -= len(data)
                up_writer.write(data)
                await up_writer.drain()
                if self.budget == 0:
                    await asyncio.sleep(0.2)  # let Redis run what it got, then cut mid-command
                    break

        async def downstream() -> None:
            while data := await up_reader.read(65536):
                writer.write(data)
                await writer.drain()

        tasks = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for w in (writer, up_writer):
                w.close()
                with contextlib.suppress(ConnectionError):
                    await w.wait_closed()


async def assert_whole_or_absent(redis: Redis, schema: Schema, ids: list[str]) -> tuple[int, int]:
    """Each task is fully written (record with msg/state/pending_since, id in pending once) or absent."""
    qk = schema.queue("default")
    pending = [i.decode() for i in await redis.lrange(qk.pending, 0, -1)]
    assert len(pending) == len(set(pending))
    written = absent = 0
    for task_id in ids:
        fields = await redis.hgetall(qk.task(task_id))
        if fields:
            assert set(fields) == {b"msg", b"state", b"pending_since"}, task_id
            assert fields[b"state"] == b"pending"
            assert decode_message(fields[b"msg"]).id == task_id
            assert task_id in pending, task_id
            written += 1
        else:
            assert task_id not in pending, task_id
            absent += 1
    assert set(pending) <= set(ids) | {"warm"}
    return written, absent


async def test_connection_cut_mid_batch(redis_url: str, redis: Redis, schema: Schema) -> None:
    host, port = redis_url.removeprefix("redis://").split(":")
    proxy = CuttingProxy(host, int(port.split("/")[0]))
    await proxy.start()
    client = Client(Redis.from_url(f"redis://127.0.0.1:{proxy.port}"), schema=schema)
    try:
        await client.enqueue("x:y", b"", task_id="warm")  # connected, queue known, script loaded
        await client.enqueue_many([TaskCall("x:y", b"", {"task_id": "warm-batch", "queue": "warm"})])  # its script too
        ids = [f"cut-{i}" for i in range(200)]
        proxy.budget = 20_000  # about a third of the batch, ending inside a command
        with pytest.raises(RedisUnavailable):
            await client.enqueue_many(TaskCall("x:y", {"i": i, "pad": "x" * 40}, {"task_id": i}) for i in ids)
    finally:
        await client.close()
        await proxy.close()
    written, absent = await assert_whole_or_absent(redis, schema, ids)
    assert written > 0
    assert absent > 0


async def test_server_killed_mid_batch(tmp_path: Path, namespace: str) -> None:
    server = start_test_server(tmp_path / "valkey", appendonly=True)
    schema = Schema(namespace)
    try:
        client = Client.from_url(server.url, schema=schema)
        await client.enqueue("x:y", b"", task_id="warm")
        ids = [f"kill-{i}" for i in range(5000)]
        batch = asyncio.create_task(client.enqueue_many(TaskCall("x:y", b"p", {"task_id": i}) for i in ids))
        probe = open_redis(server.url)
        try:
            while await probe.llen(schema.queue("default").pending) < 2 and not batch.done():
                await asyncio.sleep(0.001)
        finally:
            await probe.aclose()
        server.kill()
        with contextlib.suppress(FrameworkError):
            await batch
        await client.close()
        server.start()  # the AOF brings back what was written
        check = open_redis(server.url)
        try:
            written, _ = await assert_whole_or_absent(check, schema, ids)
            assert written > 0
        finally:
            await check.aclose()
    finally:
        server.stop()
