"""Tasks whose stored message cannot be decoded, in every state: the inspector and ``framework jobs`` show
them as rows with the decode error, log it, and can still run, archive and delete them one by one."""

from __future__ import annotations

import json
import subprocess
from typing import TYPE_CHECKING, Any

import pytest
from structlog.testing import capture_logs

from framework.broker.broker import RedisBroker
from framework.clock import SystemClock
from framework.errors import TaskNotFound
from framework.inspector import Inspector, InvalidTaskState, TaskState
from framework.protocol.message import encode_message, new_message
from tests.fixtures.cli import Cli
from tests.framework.corrupt import GROUP, KINDS, STATES, seed_corrupt

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from framework.protocol.keys import Schema

QUEUE = "broken"
_ARCHIVABLE = {TaskState.PENDING, TaskState.SCHEDULED, TaskState.RETRY, TaskState.COMPLETED, TaskState.AGGREGATING}
_ERRORS = {
    "garbage": "invalid asynq.TaskMessage",
    "truncated": "invalid asynq.TaskMessage",
    "empty": "empty task message",
}


@pytest.fixture
def inspector(redis: Redis, schema: Schema) -> Inspector:
    return Inspector(redis, schema)


@pytest.fixture
async def broken(redis: Redis, schema: Schema) -> dict[tuple[str, TaskState], str]:
    """The broken tasks, next to one healthy pending task that must still read normally."""
    ids = await seed_corrupt(redis, schema, QUEUE)
    msg = new_message(type="fine:task", payload=b'{"ok":1}', id="healthy", queue=QUEUE, retry=1, timeout=60, deadline=0)
    broker = RedisBroker(redis, schema, SystemClock(), wakeup=False)
    assert await broker.enqueue(QUEUE, "healthy", encode_message(msg)) == 1
    return ids


def _undecodable_warnings(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == "task_message_undecodable"]


async def test_every_state_lists_and_reads_broken_tasks(
    inspector: Inspector, broken: dict[tuple[str, TaskState], str]
) -> None:
    for state in STATES:
        with capture_logs() as logs:
            page = await inspector.list_tasks(QUEUE, state, size=50)
        rows = {t.id: t for t in page.tasks}
        expected = {broken[kind, state] for kind in KINDS} | ({"healthy"} if state is TaskState.PENDING else set())
        assert set(rows) == expected, state
        assert page.total == len(expected)
        [warning] = _undecodable_warnings(logs)  # one warning per read, naming every broken task on it
        assert warning["log_level"] == "warning" and warning["queue"] == QUEUE and warning["count"] == 3
        assert sorted(warning["task_ids"]) == sorted(broken[kind, state] for kind in KINDS)
        for kind in KINDS:
            row = rows[broken[kind, state]]
            assert row.state is state and row.queue == QUEUE
            assert _ERRORS[kind] in row.decode_error, (kind, state, row.decode_error)
            assert (row.type, row.payload, row.headers) == ("", b"", {})
            assert row.group == (GROUP if state is TaskState.AGGREGATING else "")
            assert (row.next_process_at is not None) == (state in (TaskState.SCHEDULED, TaskState.RETRY))
            assert (row.pending_since is not None) == (state is TaskState.PENDING)
            with capture_logs() as logs:
                one = await inspector.get_task(QUEUE, row.id)
            assert one == row
            assert len(_undecodable_warnings(logs)) == 1
    healthy = await inspector.get_task(QUEUE, "healthy")
    assert (healthy.type, healthy.decode_error, healthy.payload_json) == ("fine:task", "", {"ok": 1})
    assert [t.group for t in await inspector.list_groups(QUEUE)] == [GROUP]


async def test_stats_of_a_queue_with_broken_tasks(
    inspector: Inspector, broken: dict[tuple[str, TaskState], str]
) -> None:
    info = await inspector.queue_info(QUEUE)  # with the sampled memory estimate
    assert (info.pending, info.active, info.scheduled, info.retry) == (4, 3, 3, 3)
    assert (info.archived, info.completed, info.aggregating, info.groups, info.size) == (3, 3, 3, 1, 22)
    assert info.memory_usage > 0
    assert [i.queue for i in await inspector.all_queue_info()] == [QUEUE]
    assert await inspector.count_tasks(QUEUE, "aggregating") == 3
    assert await inspector.count_tasks(QUEUE, "pending") == 4
    assert await inspector.count_tasks(QUEUE, "retry") == 3
    assert await inspector.count_tasks(QUEUE, "aggregating", group="nope") == 0


async def test_broken_tasks_are_run_archived_and_deleted_one_by_one(
    inspector: Inspector, broken: dict[tuple[str, TaskState], str]
) -> None:
    for (_, state), task_id in broken.items():
        if state is TaskState.ACTIVE:  # its worker's: refused, as for any active task
            for call in (inspector.run_task, inspector.archive_task, inspector.delete_task):
                with pytest.raises(InvalidTaskState, match="active"):
                    await call(QUEUE, task_id)
            continue
        if state in _ARCHIVABLE:
            await inspector.archive_task(QUEUE, task_id)
            assert (await inspector.get_task(QUEUE, task_id)).state is TaskState.ARCHIVED
        await inspector.run_task(QUEUE, task_id)  # every archived task can be run again
        moved = await inspector.get_task(QUEUE, task_id)
        assert moved.state is TaskState.PENDING and moved.decode_error
        await inspector.delete_task(QUEUE, task_id)
        with pytest.raises(TaskNotFound):
            await inspector.get_task(QUEUE, task_id)
    info = await inspector.queue_info(QUEUE)
    assert (info.size, info.active, info.pending) == (4, 3, 1)  # the active ones and the healthy task
    assert await inspector.list_groups(QUEUE) == []


async def test_bulk_actions_handle_broken_tasks(inspector: Inspector, broken: dict[tuple[str, TaskState], str]) -> None:
    assert await inspector.archive_all(QUEUE, "retry") == 3
    assert await inspector.run_all(QUEUE, "archived") == 6
    assert await inspector.delete_all(QUEUE, "pending") == 10
    assert await inspector.count_tasks(QUEUE, "pending") == 0


# -- framework jobs ------------------------------------------------------------------------------


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout


async def test_cli_lists_shows_and_acts_on_broken_tasks(
    cli: Cli, broken: dict[tuple[str, TaskState], str], redis: Redis, schema: Schema
) -> None:
    for state in STATES:
        listed = cli("jobs", "ls", QUEUE, state.value)
        table = ok(listed)
        assert "task_message_undecodable" in listed.stderr  # logged, on stderr
        for kind in KINDS:
            assert broken[kind, state] in table, (kind, state, table)
        assert table.count("undecodable message:") == 3, table
        data = json.loads(ok(cli("jobs", "ls", QUEUE, state.value, "--json")))
        errors = {t["id"]: t["decode_error"] for t in data["tasks"]}
        for kind in KINDS:
            assert _ERRORS[kind] in errors[broken[kind, state]]
    shown = ok(cli("jobs", "show", QUEUE, broken["garbage", TaskState.ARCHIVED]))
    for needle in ("garbage-archived", "decode error", "invalid asynq.TaskMessage", "archived", QUEUE):
        assert needle in shown, needle
    empty = json.loads(ok(cli("jobs", "show", QUEUE, broken["empty", TaskState.AGGREGATING], "--json")))
    assert (empty["state"], empty["group"]) == ("aggregating", GROUP)
    assert empty["decode_error"] == "empty task message (0 bytes)"
    stats = json.loads(ok(cli("jobs", "stats", "--json")))
    assert [(q["queue"], q["size"]) for q in stats] == [(QUEUE, 22)]

    assert "is archived" in ok(cli("jobs", "archive", QUEUE, broken["truncated", TaskState.PENDING]))
    assert await redis.zscore(schema.queue(QUEUE).archived, broken["truncated", TaskState.PENDING]) is not None
    assert "is pending now" in ok(cli("jobs", "retry", QUEUE, broken["garbage", TaskState.RETRY]))
    assert "is deleted" in ok(cli("jobs", "delete", QUEUE, broken["empty", TaskState.ARCHIVED]))
    assert not await redis.exists(schema.queue(QUEUE).task(broken["empty", TaskState.ARCHIVED]))
