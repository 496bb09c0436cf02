"""The prepared fast path of a plain enqueue writes exactly what the general path writes.

The general path (``Client._build`` + ``RedisBroker.prepare_enqueue`` + ``hiredis.pack_command``) is checked
against Go's own bytes in ``test_client.py``; here the fast path is checked against it byte for byte,
then end to end on a real server.
"""

from __future__ import annotations

import os
import uuid
from typing import TYPE_CHECKING, Any

import hiredis
import msgspec
import pytest
import redis as redis_sync

from framework.broker.broker import RedisBroker
from framework.client.client import Client
from framework.client.options import ResolvedOptions
from framework.client.prepared import SCRIPT, PlainEnqueue, eligible, new_task_id
from framework.clock import SimulatedClock
from framework.embedded.process import start_test_server
from framework.errors import DuplicateTask, PayloadTypeError, RedisUnavailable
from framework.protocol.keys import Schema
from framework.protocol.message import decode_message, encode_message, new_message
from framework.task import TaskDef
from framework.transport.connection import open_redis

if TYPE_CHECKING:
    from pathlib import Path

    from redis.asyncio import Redis


class Blob(msgspec.Struct, frozen=True):
    text: str = ""


async def _noop(ctx: Any, payload: Any) -> None:
    return None


BLOB = TaskDef("blob:é", Blob, _noop)
RAW = TaskDef("raw", bytes, _noop)


def _opts(**over: Any) -> ResolvedOptions:
    base: dict[str, Any] = {
        "queue": "default",
        "max_retry": 25,
        "timeout": 1800,
        "deadline": 0,
        "process_at": None,
        "unique_ttl": 0,
        "retention": 0,
        "task_id": None,
        "headers": {},
        "group": "",
    }
    return ResolvedOptions(**(base | over))


OPTION_CASES = [
    _opts(),
    _opts(max_retry=0, timeout=1),
    _opts(retention=86_400, queue="critical"),
    _opts(queue="q" * 300, max_retry=2**31 - 1, timeout=2**40),
    _opts(queue="ünïcode"),
]
SIZES = [0, 1, 127, 128, 300, 16_383, 16_384, 70_000]


@pytest.mark.parametrize("opts", OPTION_CASES)
@pytest.mark.parametrize("size", SIZES)
def test_message_is_what_encode_message_writes(opts: ResolvedOptions, size: int, redis_url: str) -> None:
    broker = RedisBroker(open_redis(redis_url), Schema("t"), SimulatedClock())
    plain = PlainEnqueue(broker, RAW, opts)
    data = os.urandom(size)
    task_id = new_task_id()
    expected = encode_message(
        new_message(
            type=RAW.type,
            payload=data,
            id=task_id,
            queue=opts.queue,
            retry=opts.max_retry,
            timeout=opts.timeout,
            deadline=0,
            retention=opts.retention,
        )
    )
    assert plain.message(task_id.encode(), data) == expected
    assert decode_message(expected).payload == data


@pytest.mark.parametrize("handoff", [True, False])
@pytest.mark.parametrize("namespace_", ["asynq", "a%b%%c%d"])
@pytest.mark.parametrize("now", [1_700_000_000.123456, 5.5])
def test_command_is_what_the_general_path_sends(redis_url: str, handoff: bool, namespace_: str, now: float) -> None:
    broker = RedisBroker(open_redis(redis_url), Schema(namespace_), SimulatedClock(now))
    broker.handoff = handoff
    opts = _opts(queue="mail%s")
    plain = PlainEnqueue(broker, BLOB, opts)
    task_id = new_task_id()
    data = BLOB.encode(Blob(text="x" * 200))
    msg = plain.message(task_id.encode(), data)
    script, keys, args = broker.prepare_enqueue(opts.queue, task_id, msg)
    assert script is SCRIPT
    assert plain.command(task_id, data, now) == hiredis.pack_command(("EVALSHA", script.sha, len(keys), *keys, *args))


def test_only_plain_defaults_take_the_fast_path() -> None:
    assert eligible(_opts())
    assert eligible(_opts(retention=5, queue="x"))
    for over in ({"unique_ttl": 60}, {"process_at": 1}, {"group": "g"}, {"deadline": 9}, {"headers": {"a": "b"}}):
        assert not eligible(_opts(**over)), over


def test_task_ids_are_uuid4_and_differ_after_fork() -> None:
    ids = {new_task_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(uuid.UUID(i).version == 4 and str(uuid.UUID(i)) == i for i in ids)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, new_task_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    os.close(write)
    assert child != new_task_id()
    assert child not in ids


async def test_fast_path_stores_what_the_general_path_stores(client: Client, redis: Redis, schema: Schema) -> None:
    fast = await BLOB.enqueue(client, Blob(text="hi"))
    general = await BLOB.enqueue(client, Blob(text="hi"), task_id="explicit-id")
    assert client._plain[BLOB] is not None
    qk = schema.queue("default")
    a: dict[Any, Any] = await redis.hgetall(qk.task(fast.id))
    b: dict[Any, Any] = await redis.hgetall(qk.task(general.id))
    assert set(a) == set(b) == {b"msg", b"state", b"pending_since"}
    assert a[b"state"] == b[b"state"] == b"pending"
    ma, mb = decode_message(a[b"msg"]), decode_message(b[b"msg"])
    mb.id = ma.id
    assert encode_message(ma) == encode_message(mb)
    assert await redis.lrange(qk.pending, 0, -1) == [general.id.encode(), fast.id.encode()]
    assert fast.state == general.state and fast.payload == general.payload and fast.max_retry == general.max_retry


async def test_task_defaults_that_need_the_general_path_still_apply(client: Client) -> None:
    unique = TaskDef("blob:unique", Blob, _noop, unique=60)
    await unique.enqueue(client, Blob(text="once"))
    assert client._plain[unique] is None
    with pytest.raises(DuplicateTask):
        await unique.enqueue(client, Blob(text="once"))


async def test_a_flushed_script_cache_is_reloaded(client: Client, redis: Redis, schema: Schema) -> None:
    await BLOB.enqueue(client, Blob())
    await redis.script_flush()
    info = await BLOB.enqueue(client, Blob(text="after flush"))
    assert await redis.hget(schema.queue("default").task(info.id), "state") == b"pending"


async def test_a_wrong_payload_sends_nothing(client: Client, redis: Redis, schema: Schema) -> None:
    with pytest.raises(PayloadTypeError, match="takes a Blob payload"):
        await BLOB.enqueue(client, {"text": "a dict"})  # type: ignore[arg-type]
    assert await redis.exists(schema.queue("default").pending) == 0


async def test_redis_gone_at_enqueue_is_redis_unavailable(tmp_path: Path, redis_url: str, schema: Schema) -> None:
    server = start_test_server(tmp_path / "valkey")
    url = f"redis://127.0.0.1:{server.port}"
    client = Client(open_redis(url), schema=schema, url=url)
    try:
        await BLOB.enqueue(client, Blob())  # connected, queue registered
        server.stop()
        with pytest.raises(RedisUnavailable, match="cannot reach Redis"):
            await BLOB.enqueue(client, Blob())
    finally:
        await client.close()
        server.stop()
    assert redis_sync.Redis.from_url(redis_url).ping()
