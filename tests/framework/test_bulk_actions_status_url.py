"""Inspector bulk actions while producers keep adding tasks, and the status URL of a task still running."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import msgspec
import pytest
import redis as sync_redis

from framework import enqueue_and_wait
from framework.inspector import BATCH_SIZE, Inspector
from framework.protocol.message import encode_message, new_message
from framework.task import TaskDef

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from framework.client.client import Client
    from framework.protocol.keys import Schema


def _msg(queue: str, task_id: str) -> bytes:
    return encode_message(
        new_message(type="actions:task", payload=b"{}", id=task_id, queue=queue, retry=25, timeout=1800, deadline=0)
    )


def _push_pending(r: sync_redis.Redis, schema: Schema, queue: str, ids: list[str]) -> None:
    """Store pending tasks the way an enqueue leaves them (record + LPUSH), from a synchronous client."""
    qk = schema.queue(queue)
    with r.pipeline(transaction=False) as pipe:
        pipe.sadd(schema.all_queues, queue)
        for task_id in ids:
            pipe.hset(qk.task(task_id), mapping={"msg": _msg(queue, task_id), "state": "pending"})
            pipe.lpush(qk.pending, task_id)
        pipe.execute()


@pytest.mark.parametrize("action", ["archive_all", "delete_all"])
async def test_bulk_action_on_pending_stops_at_the_tasks_it_counted(
    action: str, redis: Redis, redis_url: str, schema: Schema
) -> None:
    """ "Archive/delete all pending" counts the tasks (the CLI asks "Delete N tasks?") and then loops batch by
    batch until a batch comes back short. Tasks enqueued while it runs keep every batch full, so it also
    archives/deletes tasks that arrived after the count (after the user confirmed N), and under a steady
    producer it never finishes. Here a producer adds one batch of new tasks after each of the first 4 batches:
    the call handles 5 x BATCH_SIZE tasks for a count of BATCH_SIZE, and reports done > total."""
    inspector = Inspector(redis, schema)
    r = sync_redis.Redis.from_url(redis_url)
    try:
        _push_pending(r, schema, "bulkq", [f"old-{i}" for i in range(BATCH_SIZE)])
        seen: list[tuple[int, int]] = []
        extra = iter(range(4))

        def progress(done: int, total: int) -> None:
            seen.append((done, total))
            if done and (n := next(extra, None)) is not None:  # a producer enqueues while the action runs
                _push_pending(r, schema, "bulkq", [f"new-{n}-{i}" for i in range(BATCH_SIZE)])

        count = await getattr(inspector, action)("bulkq", "pending", progress=progress)
        total = seen[0][1]
        assert total == BATCH_SIZE
        leftover_new = await redis.llen(schema.queue("bulkq").pending)
        assert count <= total, f"{action} handled {count} tasks for a count of {total}: {leftover_new} left pending"
        assert all(done <= t for done, t in seen), seen
    finally:
        r.close()


class Nothing(msgspec.Struct, frozen=True):
    """An empty payload."""


async def _never(ctx: Any, p: Nothing) -> None:  # pragma: no cover - no worker runs in this test
    return None


SLOW = TaskDef("actions:slow", Nothing, _never, queue="actions-parked", retention=60)


@pytest.mark.parametrize("task_id", ["order/42", "a?b=1", "x#y", "50% off", "r\u00e9sum\u00e9"])
async def test_status_url_escapes_the_task_id(client: Client, task_id: str) -> None:
    """enqueue_and_wait answers 202 with ``status_url.format(id=task_id)``: the id is put in the path raw, so an
    id chosen by the app (any non-blank string is a valid id) with ``/``, ``?``, ``#``, ``%`` or a space gives a
    Location that points at another route, drops part of the id into the query or fragment, or is not a
    valid URL at all. The id should be percent-encoded as a path segment."""
    try:
        response = await enqueue_and_wait(
            client, SLOW, Nothing(), wait_timeout=0.01, status_url="/reports/{id}", task_id=task_id
        )
    finally:
        await client.close()  # stop the result listener apply() started
    assert response.status_code == 202
    expected = "/reports/" + quote(task_id, safe="")
    assert response.headers["Location"] == expected
