"""The bulk path of ``enqueue_many`` writes exactly what the general path writes, and falls back when it must.

The general path (``Client._build``, ``RedisBroker.prepare_enqueue``, the merge into ``enqueue_many.lua``
calls and ``hiredis.pack_command``) is checked against Go's bytes elsewhere; here the bulk path's command
is checked against it byte for byte, then end to end on a real server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import hiredis
import msgspec
import pytest

from framework.broker.broker import RedisBroker
from framework.client import bulk as bulk_module
from framework.client.client import Client, TaskCall, TaskInfo
from framework.client.options import resolve_options
from framework.client.prepared import PlainEnqueue, new_task_ids
from framework.clock import SimulatedClock
from framework.errors import DuplicateTask, PayloadTooLarge, PayloadTypeError
from framework.protocol.keys import Schema
from framework.protocol.message import TaskState, decode_message
from framework.protocol.scripts import SCRIPTS
from framework.task import TaskDef
from framework.transport.connection import open_redis

if TYPE_CHECKING:
    from redis.asyncio import Redis


class Item(msgspec.Struct, frozen=True):
    text: str = ""


async def _noop(ctx: Any, payload: Any) -> None:
    return None


ITEM = TaskDef("bulk:item", Item, _noop)
RAW = TaskDef("bulk:raw", bytes, _noop, retention=60)


@pytest.mark.parametrize("handoff", [True, False])
@pytest.mark.parametrize("namespace_", ["asynq", "a%b%%c%d"])
@pytest.mark.parametrize("size", [0, 1, 200])
def test_batch_is_what_the_general_path_sends(redis_url: str, handoff: bool, namespace_: str, size: int) -> None:
    broker = RedisBroker(open_redis(redis_url), Schema(namespace_), SimulatedClock(1_700_000_000.25))
    broker.handoff = handoff
    opts = resolve_options(RAW, {"queue": "mail%s"}, None, 0.0)
    plain = PlainEnqueue(broker, RAW, opts)
    ids = new_task_ids(5)
    datas = [bytes([i]) * size for i in range(5)]
    pairs = list(zip(ids, datas, strict=True))
    calls = [broker.prepare_enqueue(opts.queue, i, plain.message(i.encode(), d)) for i, d in pairs]
    [(script, keys, args)], spans = broker.enqueuing._group_plain_enqueues(calls)
    assert spans == [5] and script is SCRIPTS["enqueue_many"]
    expected = hiredis.pack_command(("EVALSHA", script.sha, len(keys), *keys, *args))
    pieces = [plain.bulk_args(i.encode(), d) for i, d in pairs]
    assert broker.plain_batch(opts.queue, pieces, 5) == expected


async def test_bulk_stores_what_the_general_path_stores(client: Client, redis: Redis, schema: Schema) -> None:
    n = bulk_module.BULK_BATCH * 2 + 7  # several merged calls
    results = await client.enqueue_many([TaskCall(ITEM, Item(text=str(i))) for i in range(n)])
    assert client._plain[ITEM] is not None
    general = await ITEM.enqueue(client, Item(text="0"), task_id="explicit-id")
    infos = [r for r in results if isinstance(r, TaskInfo)]
    assert len(infos) == n and len({i.id for i in infos}) == n
    qk = schema.queue("default")
    a: dict[Any, Any] = await redis.hgetall(qk.task(infos[0].id))
    b: dict[Any, Any] = await redis.hgetall(qk.task(general.id))
    assert set(a) == set(b) == {b"msg", b"state", b"pending_since"}
    assert a[b"state"] == b"pending"
    ma, mb = decode_message(a[b"msg"]), decode_message(b[b"msg"])
    mb.id = ma.id
    assert ma == mb
    pending: list[Any] = await redis.lrange(qk.pending, 0, -1)
    assert pending[0] == b"explicit-id"  # LPUSH: the newest first
    assert [p.decode() for p in pending[1:]][::-1] == [i.id for i in infos]
    first = infos[0]
    assert (first.state, first.queue, first.type, first.max_retry) == (TaskState.PENDING, "default", ITEM.type, 25)
    assert first.payload == ITEM.encode(Item(text="0"))


async def test_options_are_resolved_once_per_set(client: Client, redis: Redis, schema: Schema) -> None:
    options: Any = {"queue": "low", "max_retry": 3, "retention": 30}
    results = await client.enqueue_many([TaskCall(RAW, b"x%d" % i, options) for i in range(10)])
    assert sum(isinstance(k, tuple) and k[0] is RAW for k in client._plain) == 1
    infos = [r for r in results if isinstance(r, TaskInfo)]
    assert {(i.queue, i.max_retry, i.retention) for i in infos} == {("low", 3, 30)}
    stored: Any = await redis.hget(schema.queue("low").task(infos[3].id), "msg")
    msg = decode_message(stored)
    assert (msg.queue, msg.retry, msg.retention, msg.payload) == ("low", 3, 30, b"x3")
    assert await redis.llen(schema.queue("low").pending) == 10


async def test_options_that_need_the_general_path_still_apply(client: Client, redis: Redis, schema: Schema) -> None:
    calls = [
        TaskCall(ITEM, Item(text="a")),
        TaskCall(ITEM, Item(text="u"), {"unique": 60}),
        TaskCall(ITEM, Item(text="u"), {"unique": 60}),
        TaskCall(ITEM, Item(text="id"), {"task_id": "mine"}),
        TaskCall(ITEM, Item(text="later"), {"process_in": 3600}),
        TaskCall(ITEM, Item(text="g"), {"group": "g1"}),
    ]
    results = await client.enqueue_many(calls)
    assert isinstance(results[2], DuplicateTask)
    assert isinstance(results[3], TaskInfo) and results[3].id == "mine"
    assert isinstance(results[4], TaskInfo) and results[4].state is TaskState.SCHEDULED
    assert isinstance(results[5], TaskInfo) and results[5].state is TaskState.AGGREGATING
    qk = schema.queue("default")
    assert await redis.llen(qk.pending) == 3 and await redis.zcard(qk.scheduled) == 1


async def test_a_bad_payload_anywhere_sends_nothing(client: Client, redis: Redis, schema: Schema) -> None:
    calls: list[TaskCall] = [TaskCall(ITEM, Item()) for _ in range(300)]
    with pytest.raises(PayloadTypeError):
        await client.enqueue_many([*calls, TaskCall(ITEM, {"text": "a dict"})])
    small = Client(client.redis, schema=schema)
    small.max_payload_size = 10
    with pytest.raises(PayloadTooLarge):
        await small.enqueue_many([*calls, TaskCall(RAW, b"x" * 11)])
    assert await redis.exists(schema.queue("default").pending) == 0


async def test_a_flushed_script_cache_is_reloaded(client: Client, redis: Redis, schema: Schema) -> None:
    await client.enqueue_many([TaskCall(ITEM, Item())])
    await redis.script_flush()
    results = await client.enqueue_many([TaskCall(ITEM, Item(text=str(i))) for i in range(600)])
    assert all(isinstance(r, TaskInfo) for r in results)
    assert await redis.llen(schema.queue("default").pending) == 601
