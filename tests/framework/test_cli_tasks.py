"""``framework tasks`` as a user runs it: subprocesses against the test Valkey, on Go's golden data."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from framework.broker.broker import RedisBroker
from framework.client.client import Client
from framework.clock import SystemClock
from framework.inspector import Inspector
from framework.limits import Limit
from framework.protocol.keys import day_stamp
from framework.protocol.message import decode_message, encode_message, encode_server_info, new_message
from framework.task import TaskDef
from tests.fixtures.cli import Cli
from tests.framework.golden import golden, golden_ids, load_golden
from tests.framework.worker_app import wait_until

if TYPE_CHECKING:
    from pathlib import Path

    from redis.asyncio import Redis

    from framework.protocol.keys import Schema

TODAY = day_stamp(int(time.time()))


def run_all(cli: Cli, *commands: tuple[str, ...]) -> list[subprocess.CompletedProcess[str]]:
    """Run independent (read-only) commands side by side; results in order."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda argv: cli(*argv), commands))


@pytest.fixture
async def gold(redis: Redis, namespace: str) -> None:
    await load_golden(redis, namespace, day=TODAY)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(ok(result))


def failed(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)


async def test_stats(cli: Cli, gold: None) -> None:
    as_data, as_table = run_all(cli, ("tasks", "stats", "--json"), ("tasks", "stats"))
    stats = {q["queue"]: q for q in as_json(as_data)}
    assert sorted(stats) == sorted(golden()["keys"]["asynq:queues"]["items"])
    for queue, info in stats.items():
        for state in ("pending", "scheduled", "retry", "archived", "completed"):
            assert info[state] == len(golden_ids(queue, state)), (queue, state)
    assert (stats["default"]["aggregating"], stats["default"]["groups"]) == (1, 1)
    assert (stats["t_retry"]["processed_today"], stats["t_retry"]["failed_today"]) == (1, 1)
    assert stats["default"]["latency"] > 0
    assert stats["t_retry"]["latency"] is None
    table = ok(as_table)
    for needle in ("Queues", "pending", "processed today", "weird:name {x}", "t_completed"):
        assert needle in table
    row = next(line for line in table.splitlines() if "│ default" in line)
    assert [c.strip() for c in row.split("│")[2:9]] == ["2", "0", "1", "0", "0", "0", "1"]


async def test_empty_namespace(cli: Cli) -> None:
    assert ok(cli("tasks", "stats")).strip() == "no queues"


async def test_ls_and_show(cli: Cli, gold: None) -> None:
    page, second, retry, shown, details = run_all(
        cli,
        ("tasks", "ls", "default", "pending", "--json"),
        ("tasks", "ls", "default", "pending", "--page", "2", "--size", "1"),
        ("tasks", "ls", "t_retry", "retry"),
        ("tasks", "show", "critical", "golden-options"),
        ("tasks", "show", "critical", "golden-options", "--json"),
    )
    data = as_json(page)
    assert [t["id"] for t in data["tasks"]] == ["golden-plain", "golden-unique"]
    assert data["total"] == 2
    assert data["tasks"][0]["payload_json"]["data"] == {"Name": "Ann"}
    assert "golden-unique" in ok(second)
    assert "golden-plain" not in ok(second)
    assert "page 2 of 2, 2 task(s)" in ok(second)
    assert "next 2026-11-22 04:55:05 UTC" in ok(retry)
    assert "1/3" in ok(retry)
    for needle in ("report:generate", "ünï=cödé", "2100-01-01 00:00:00 UTC", '"user_id": 7', "0 of 5", "30s"):
        assert needle in ok(shown), needle
    assert as_json(details)["headers"] == {"trace": "abc", "empty": "", "ünï": "cödé"}
    assert as_json(details)["deadline"] == "2100-01-01T00:00:00Z"


async def test_exit_codes(cli: Cli, gold: None) -> None:
    no_task, no_queue, bad_state = run_all(
        cli,
        ("tasks", "show", "default", "nope"),
        ("tasks", "retry", "nope", "golden-plain"),
        ("tasks", "ls", "default", "bogus"),
    )
    failed(no_task, 1, "queue 'default' has no task 'nope'")
    failed(no_queue, 1, "queue 'nope' does not exist")
    failed(bad_state, 2, "'bogus' is not one of")


async def test_single_task_actions(cli: Cli, gold: None, redis: Redis, schema: Schema, namespace: str) -> None:
    default = schema.queue("default")
    lock = f"{namespace}:{{default}}:unique:email:send:a64cf318e15f3ff4697d9a55ea753855"
    broker = RedisBroker(redis, schema, SystemClock(), wakeup=False)
    [(active_id, _)] = await broker.dequeue("critical", 1)
    retried, archived, deleted, refused = run_all(
        cli,
        ("tasks", "retry", "t_retry", "golden-retry"),
        ("tasks", "archive", "default", "golden-plain", "--json"),
        ("tasks", "delete", "default", "golden-unique"),
        ("tasks", "delete", "critical", active_id),
    )
    assert "task golden-retry of queue 't_retry' is pending now" in ok(retried)
    assert await redis.lrange(schema.queue("t_retry").pending, 0, -1) == [b"golden-retry"]
    assert as_json(archived) == {"queue": "default", "id": "golden-plain", "action": "archive", "ok": True}
    assert await redis.zscore(default.archived, "golden-plain") is not None
    assert "is deleted" in ok(deleted)
    assert not await redis.exists(lock)
    assert not await redis.exists(default.task("golden-unique"))
    failed(refused, 1, "is active; cancel it instead")


async def test_bulk_actions(cli: Cli, gold: None, redis: Redis, schema: Schema) -> None:
    default = schema.queue("default")
    refused = cli("tasks", "delete-all", "default", "pending", stdin="n\n")
    failed(refused, 1, "Delete 2 pending task(s) of queue 'default'?", "Aborted")
    assert await redis.llen(default.pending) == 2
    deleted = cli("tasks", "delete-all", "default", "pending", "--yes")
    assert "2 pending task(s) of queue 'default' deleted" in ok(deleted)
    assert "delete pending tasks of default" in deleted.stderr  # the progress bar, on stderr
    assert await redis.llen(default.pending) == 0
    confirmed = cli("tasks", "archive-all", "default", "scheduled", "--json", stdin="y\n")
    assert "Archive 1 scheduled task(s) of queue 'default'?" in confirmed.stderr
    result = as_json(confirmed)
    assert result == {"queue": "default", "state": "scheduled", "action": "archive", "count": 1}
    result = as_json(cli("tasks", "run-all", "default", "failed", "--json"))  # the dashboard's word for archived
    assert (result["state"], result["count"]) == ("archived", 1)
    assert await redis.lrange(default.pending, 0, -1) == [b"golden-scheduled"]


async def test_pause_unpause_and_cancel(cli: Cli, gold: None, redis: Redis, schema: Schema) -> None:
    assert ok(cli("tasks", "pause", "default")).strip() == "queue 'default' paused"
    assert await redis.exists(schema.queue("default").paused)
    assert as_json(cli("tasks", "pause", "default", "--json")) == {"queue": "default", "paused": True, "changed": False}
    assert ok(cli("tasks", "unpause", "default")).strip() == "queue 'default' resumed"
    assert not await redis.exists(schema.queue("default").paused)
    async with redis.pubsub() as pubsub:
        await pubsub.subscribe(schema.cancel_channel)
        assert (await pubsub.get_message(timeout=2.0))["type"] == "subscribe"
        assert as_json(cli("tasks", "cancel", "task-123", "--json")) == {"id": "task-123", "receivers": 1}
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2.0)
        assert message is not None
        assert message["data"] == b"task-123"


async def test_servers_and_history(cli: Cli, gold: None, redis: Redis, schema: Schema) -> None:
    key = schema.server("go-host", 99, "srv-1")
    info = encode_server_info(
        host="go-host",
        pid=99,
        server_id="srv-1",
        concurrency=8,
        queues={"default": 1},
        strict_priority=False,
        status="active",
        start_time=time.time() - 60,
        active_worker_count=0,
    )
    await redis.zadd(schema.servers, {key: int(time.time()) + 30})
    await redis.set(key, info)
    table, data, history = run_all(
        cli,
        ("tasks", "servers"),
        ("tasks", "servers", "--json"),
        ("tasks", "history", "--days", "2", "-q", "t_retry", "-q", "t_archive", "--json"),
    )
    for needle in ("go-host", "default=1", "0/8", "srv-1", "active"):
        assert needle in ok(table), needle
    [server] = as_json(data)
    assert (server["server"]["server_id"], server["server"]["concurrency"], server["workers"]) == ("srv-1", 8, [])
    rows = as_json(history)
    assert len(rows) == 4
    assert [(r["queue"], r["processed"], r["failed"]) for r in rows if r["date"] == TODAY] == [
        ("t_retry", 1, 1),
        ("t_archive", 1, 1),
    ]


async def test_enqueue(cli: Cli, redis: Redis, schema: Schema) -> None:
    default = schema.queue("default")
    bad_payload, bad_in = run_all(
        cli,
        ("tasks", "enqueue", "demo:hello", "--payload", '{"name": 5}'),
        ("tasks", "enqueue", "x:y", "--force", "--in", "soon"),
    )
    failed(bad_payload, 2, "$.name")
    failed(bad_in, 2, "Go duration")
    forced = ("tasks", "enqueue", "x:y", "--force")  # a type no loaded plugin registers
    info, later, at, first = run_all(
        cli,
        ("tasks", "enqueue", "demo:hello", "--payload", '{"name": "Ann"}', "--json"),
        ("tasks", "enqueue", "demo:hello", "--in", "1h30m", "--json"),
        (*forced, "--at", "2100-01-01T00:00:00", "-q", "low", "--header", "k=v", "--timeout", "30s"),
        (*forced, "--payload", '{"a": 1}', "--unique", "1h", "--task-id", "u1", "--max-retry", "2"),
    )
    data = as_json(info)
    assert (data["type"], data["queue"], data["state"], data["max_retry"]) == ("demo:hello", "default", "pending", 3)
    msg = decode_message(await redis.hget(default.task(data["id"]), "msg"))
    assert json.loads(msg.payload) == {"name": "Ann", "work_seconds": 0.5}
    scheduled = as_json(later)
    assert scheduled["state"] == "scheduled"
    assert await redis.zscore(default.scheduled, scheduled["id"]) == pytest.approx(time.time() + 5400, abs=60)
    assert "in queue 'low': scheduled at 2100-01-01 00:00:00 UTC" in ok(at)
    assert "no loaded plugin handles task type 'x:y'" in at.stderr
    assert "enqueued x:y task u1 in queue 'default': pending" in ok(first)
    stored = decode_message(await redis.hget(default.task("u1"), "msg"))
    assert (stored.payload, stored.retry) == (b'{"a": 1}', 2)
    failed(cli(*forced, "--payload", '{"a": 1}', "--unique", "3600"), 1, "unique lock held")


async def test_enqueue_refuses_an_unknown_type(cli: Cli, redis: Redis, schema: Schema) -> None:
    typo, unknown = run_all(cli, ("tasks", "enqueue", "demo:helo"), ("tasks", "enqueue", "x:y", "--payload", "{}"))
    failed(typo, 2, "no loaded plugin registers task type 'demo:helo'", "did you mean 'demo:hello'?", "--force")
    failed(unknown, 2, "Registered: demo:hello", "--force")
    assert "did you mean" not in unknown.stderr
    assert not await redis.exists(schema.queue("default").pending)


async def test_failed_is_archived(cli: Cli, gold: None) -> None:
    queue = next(q for q in golden()["keys"]["asynq:queues"]["items"] if golden_ids(q, "archived"))
    failed_tasks, archived_tasks, help_text = run_all(
        cli,
        ("tasks", "ls", queue, "failed", "--json"),
        ("tasks", "ls", queue, "archived", "--json"),
        ("tasks", "ls", "--help"),
    )
    assert as_json(failed_tasks) == as_json(archived_tasks)
    assert {t["id"] for t in as_json(failed_tasks)["tasks"]} == set(golden_ids(queue, "archived"))
    assert "archived (or failed, as the dashboard says)" in " ".join(ok(help_text).split())
    refused = cli("tasks", "archive-all", queue, "failed")  # archiving archived tasks makes no sense
    failed(refused, 2, "'failed' is not one of")


async def test_show_without_a_queue(cli: Cli, gold: None, redis: Redis, schema: Schema) -> None:
    broker = RedisBroker(redis, schema, SystemClock(), wakeup=False)
    for queue in ("twin-a", "twin-b"):
        msg = new_message(type="t", payload=b"", id="twin", queue=queue, retry=1, timeout=60, deadline=0)
        await broker.enqueue(queue, "twin", encode_message(msg))
    found, missing, ambiguous, chosen = run_all(
        cli,
        ("tasks", "show", "golden-options", "--json"),
        ("tasks", "show", "nope"),
        ("tasks", "show", "twin"),
        ("tasks", "show", "twin-b", "twin", "--json"),
    )
    assert (as_json(found)["queue"], as_json(found)["type"]) == ("critical", "report:generate")
    failed(missing, 1, "no queue has a task 'nope'")
    failed(ambiguous, 2, "queues 'twin-a', 'twin-b' each have a task 'twin'", "framework tasks show twin-a twin")
    assert as_json(chosen)["queue"] == "twin-b"


async def test_task_actions_without_a_queue(cli: Cli, gold: None, redis: Redis, schema: Schema) -> None:
    """retry, archive and delete find the task's queue as show does, and refuse alike."""
    broker = RedisBroker(redis, schema, SystemClock(), wakeup=False)
    for queue in ("twin-a", "twin-b"):
        msg = new_message(type="t", payload=b"", id="twin", queue=queue, retry=1, timeout=60, deadline=0)
        await broker.enqueue(queue, "twin", encode_message(msg))
    retried, archived, deleted, *refusals = run_all(
        cli,
        ("tasks", "retry", "golden-retry"),
        ("tasks", "archive", "golden-plain", "--json"),
        ("tasks", "delete", "golden-unique"),
        *[("tasks", command, "nope") for command in ("retry", "archive", "delete")],
        *[("tasks", command, "twin") for command in ("retry", "archive", "delete")],
    )
    assert ok(retried).strip() == "task golden-retry of queue 't_retry' is pending now"
    assert await redis.lrange(schema.queue("t_retry").pending, 0, -1) == [b"golden-retry"]
    assert as_json(archived) == {"queue": "default", "id": "golden-plain", "action": "archive", "ok": True}
    assert await redis.zscore(schema.queue("default").archived, "golden-plain") is not None
    assert ok(deleted).strip() == "task golden-unique of queue 'default' is deleted"
    assert not await redis.exists(schema.queue("default").task("golden-unique"))
    for refused in refusals[:3]:
        failed(refused, 1, "no queue has a task 'nope'")
    for command, refused in zip(("retry", "archive", "delete"), refusals[3:], strict=True):
        failed(
            refused, 2, "queues 'twin-a', 'twin-b' each have a task 'twin'", f"framework tasks {command} twin-a twin"
        )
    for queue in ("twin-a", "twin-b"):  # an ambiguous id touches no queue
        assert await redis.lrange(schema.queue(queue).pending, 0, -1) == [b"twin"]
    assert "twin-b" in ok(cli("tasks", "delete", "twin-b", "twin"))
    assert as_json(cli("tasks", "archive", "twin", "--json"))["queue"] == "twin-a"  # no longer ambiguous


_HELP_OF_EVERY_COMMAND = """
import contextlib, io, json, sys
import click
from framework.cli import cli, main

def help_of(argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main([*argv, "--help"])
    return out.getvalue()

helps = {"": help_of([])}  # main() adds the plugins' commands, through their entry points

def walk(group, path, ctx):
    for name in group.list_commands(ctx):
        helps[" ".join([*path, name])] = help_of([*path, name])
        command = group.get_command(ctx, name)
        if isinstance(command, click.Group):
            walk(command, [*path, name], ctx)

with click.Context(cli) as ctx:
    walk(cli, [], ctx)
sys.stdout.write(json.dumps(helps))
"""
"""Prints {command path: its --help} for every command of the ``framework`` command line, as --help lists them."""


def test_every_command_has_help_with_an_example(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEWORK_") and k != "REDIS_URL"}
    env.update(COLUMNS="200", NO_COLOR="1")  # every installed plugin loads: its commands are walked too
    done = subprocess.run(
        [sys.executable, "-c", _HELP_OF_EVERY_COMMAND],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    helps: dict[str, str] = json.loads(done.stdout)
    builtin = {"run", "web", "worker", "scheduler", "new", "generate task", "generate plugin", "tasks show", "cron ls"}
    assert builtin | {"cleanup run", "cleanup ls"} <= set(helps), sorted(helps)  # cleanup: an entry-point plugin
    assert not {"jobs", "generate job"} & set(helps)  # the old names work but are not listed
    for path, text in helps.items():
        assert "Examples:\n    framework " in text, f"`framework {path} --help` shows no example"
        assert "framework jobs" not in text and "generate job" not in text, path
    group = " ".join(helps["tasks"].split())
    for name in ("ls", "run-all", "archive-all", "delete-all", "delete-queue", "show", "enqueue", "servers"):
        assert name in group.split("Commands:")[0], name  # the summary names the real commands
    assert "failed" in group


async def test_the_old_group_name_runs_the_same_commands(cli: Cli, gold: None) -> None:
    """``framework jobs``, the group's name before it was ``tasks``, still works for existing scripts."""
    old, new, alias_help = run_all(cli, ("jobs", "stats", "--json"), ("tasks", "stats", "--json"), ("jobs", "--help"))
    counts = ("queue", "pending", "scheduled", "retry", "archived", "completed")  # not the latency: it moves
    assert [[q[c] for c in counts] for q in as_json(old)] == [[q[c] for c in counts] for q in as_json(new)]
    assert "Inspect and steer the task queues." in ok(alias_help)
    assert "task golden-retry of queue 't_retry' is pending now" in ok(cli("jobs", "retry", "golden-retry"))


async def test_delete_queue(cli: Cli, redis: Redis, schema: Schema) -> None:
    msg = new_message(type="t", payload=b"", id="t1", queue="doomed", retry=1, timeout=60, deadline=0)
    broker = RedisBroker(redis, schema, SystemClock(), wakeup=False)
    await broker.enqueue("doomed", "t1", encode_message(msg))
    failed(cli("tasks", "delete-queue", "doomed"), 1, "has tasks")
    assert as_json(cli("tasks", "delete-queue", "doomed", "--force", "--yes", "--json")) == {
        "queue": "doomed",
        "deleted": True,
        "tasks": 1,
    }
    assert not await redis.sismember(schema.all_queues, "doomed")


async def test_show_prints_the_progress_a_task_reported(cli: Cli, gold: None, redis: Redis, schema: Schema) -> None:
    broker = RedisBroker(redis, schema, SystemClock(), wakeup=False)
    fields = {"fraction": "0.4", "message": "resizing", "updated_at": "4102444800.0", "attempt": 2, "ended": 0}
    await broker.write_progress("critical", "golden-options", fields, b"{}", 60)
    shown, details, plain = run_all(
        cli,
        ("tasks", "show", "critical", "golden-options"),
        ("tasks", "show", "golden-options", "--json"),
        ("tasks", "show", "default", "golden-plain", "--json"),
    )
    assert "40% resizing (attempt 2, 2100-01-01 00:00:00 UTC)" in ok(shown)
    progress = as_json(details)["progress"]
    assert [progress[k] for k in ("fraction", "message", "attempt", "ended")] == [0.4, "resizing", 2, False]
    assert progress["updated_at"] == "2100-01-01T00:00:00Z"
    assert as_json(details)["type"] == "report:generate"
    assert as_json(plain)["progress"] is None


class _Job(msgspec.Struct, frozen=True):
    n: int = 0


async def test_limits_and_the_stats_limits_table(cli: Cli, start: Any, client: Client) -> None:
    assert "no limits" in ok(await asyncio.to_thread(cli, "tasks", "limits"))
    gate = asyncio.Event()

    async def gated(ctx: Any, p: _Job) -> None:
        await gate.wait()

    task = TaskDef("cli:one", _Job, gated, limit=Limit(concurrency=1, name="one"))
    await start(task)
    for n in range(3):
        await client.enqueue(task, _Job(n))
    inspector = Inspector(client.redis, client.schema)

    async def held() -> bool:
        [info] = await inspector.limits()
        return (info.in_use, info.waiting) == (1, 2)

    await wait_until(held)
    data, shown, stats, stats_json = await asyncio.to_thread(
        run_all,
        cli,
        ("tasks", "limits", "--json"),
        ("tasks", "limits"),
        ("tasks", "stats", "--no-memory"),
        ("tasks", "stats", "--json"),
    )
    [one] = as_json(data)
    assert {k: one[k] for k in ("name", "concurrency", "in_use", "waiting", "started", "parked")} == {
        "name": "one",
        "concurrency": 1,
        "in_use": 1,
        "waiting": 2,
        "started": 1,
        "parked": 2,
    }
    for table in (ok(shown), ok(stats)):
        row = next(line for line in table.splitlines() if "│ one" in line)
        assert [c.strip() for c in row.split("│")[1:9]] == ["one", "-", "1", "1/1", "2", "1", "0", "2"]
    assert "Queues" in ok(stats)
    assert isinstance(as_json(stats_json), list)  # the queues alone, as before
    gate.set()


class _Customer(msgspec.Struct, frozen=True):
    customer: str = ""


async def test_a_keyed_limits_row_counts_its_keys_in_words_that_agree(cli: Cli, start: Any, client: Client) -> None:
    """One key in use read "(1 keys)"."""
    gate = asyncio.Event()

    async def gated(ctx: Any, p: _Customer) -> None:
        await gate.wait()

    task = TaskDef("cli:keyed", _Customer, gated, limit=Limit(concurrency=1, key=lambda p: p.customer, name="cust"))
    await start(task)
    inspector = Inspector(client.redis, client.schema)

    async def keys_in_use(n: int) -> bool:
        [info] = await inspector.limits()
        return info.keys == n

    try:
        await client.enqueue(task, _Customer("acme"))
        await wait_until(lambda: keys_in_use(1))
        assert "cust (1 key)" in ok(await asyncio.to_thread(cli, "tasks", "limits"))
        await client.enqueue(task, _Customer("globex"))
        await wait_until(lambda: keys_in_use(2))
        assert "cust (2 keys)" in ok(await asyncio.to_thread(cli, "tasks", "limits"))
    finally:
        gate.set()
