"""``framework tasks ls|show|retry|archive|delete|cancel``: commands on tasks.

``show``, ``retry``, ``archive`` and ``delete`` take ``[QUEUE] TASK_ID``: without QUEUE, the queue that has
the task is found (:func:`_find_task`).
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING

import click
import msgspec

from framework.cli import CliContext, examples, pass_cli
from framework.cli.tasks._common import (
    StateChoice,
    emit_json,
    json_option,
    payload_text,
    print_table,
    run_inspector,
    run_redis,
    table,
    tasks,
    when_text,
)
from framework.protocol.message import TaskState

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from redis.asyncio import Redis

    from framework.inspector import Inspector, TaskDetails, TaskProgress

__all__ = ("archive", "cancel", "delete", "ls", "retry", "show")


def _info(t: TaskDetails) -> str:
    if t.decode_error:
        return f"undecodable message: {t.decode_error}"
    if t.state in (TaskState.SCHEDULED, TaskState.RETRY):
        return f"next {when_text(t.next_process_at)}" + (f"; {t.error}" if t.error else "")
    if t.state is TaskState.AGGREGATING:
        return f"group {t.group}"
    return t.error


@tasks.command(
    "ls",
    epilog=examples(
        "framework tasks ls default pending",
        "framework tasks ls default failed --size 50",
        "framework tasks ls default aggregating --group daily --json",
    ),
)
@click.argument("queue")
@click.argument("state", type=StateChoice(s.value for s in TaskState), metavar="STATE")
@click.option("--page", type=click.IntRange(min=1), default=1, show_default=True, help="Page number, from 1.")
@click.option("--size", type=click.IntRange(1, 1000), default=20, show_default=True, help="Tasks per page.")
@click.option("--group", default=None, help="For aggregating tasks: only this group.")
@json_option
@pass_cli
def ls(ctx: CliContext, queue: str, state: str, page: int, size: int, group: str | None, as_json: bool) -> None:
    """List the tasks of QUEUE in STATE, next to be processed first, one page at a time.

    STATE is pending, active, scheduled, retry, archived (or failed, as the dashboard says), completed
    or aggregating.
    """
    result = run_inspector(ctx, lambda ins: ins.list_tasks(queue, state, page=page, size=size, group=group))
    if as_json:
        emit_json(result)
        return
    tbl = table(f"{state} tasks of queue {queue!r}", "id", "type", "payload", "retried", "info")
    for t in result.tasks:
        tbl.add_row(t.id, t.type or "?", payload_text(t.payload), f"{t.retried}/{t.max_retry}", _info(t))
    pages = max(1, math.ceil(result.total / size))
    tbl.caption = f"page {page} of {pages}, {result.total} task(s)"
    print_table(tbl)


def _rows(t: TaskDetails) -> list[tuple[str, str]]:
    if t.decode_error:  # the message's own fields are unknown: show what the task record holds
        return [
            ("id", t.id),
            ("queue", t.queue),
            ("state", t.state.value),
            ("decode error", t.decode_error),
            ("next process at", when_text(t.next_process_at)),
            ("result", payload_text(t.result, None) if t.result is not None else "-"),
            ("group", t.group or "-"),
            ("unique key", t.unique_key or "-"),
        ]
    if t.payload_is_json:
        payload = json.dumps(t.payload_json, indent=2, ensure_ascii=False)
    else:
        payload = payload_text(t.payload, None) or "-"
    return [
        ("id", t.id),
        ("queue", t.queue),
        ("type", t.type),
        ("state", t.state.value),
        ("payload", payload),
        ("headers", ", ".join(f"{k}={v}" for k, v in sorted(t.headers.items())) or "-"),
        ("retried", f"{t.retried} of {t.max_retry}"),
        ("last error", t.error or "-"),
        ("last failed at", when_text(t.last_failed_at)),
        ("next process at", when_text(t.next_process_at)),
        ("timeout", f"{t.timeout}s" if t.timeout else "-"),
        ("deadline", when_text(t.deadline)),
        ("retention", f"{t.retention}s" if t.retention else "-"),
        ("completed at", when_text(t.completed_at)),
        ("result", payload_text(t.result, None) if t.result is not None else "-"),
        ("group", t.group or "-"),
        ("unique key", t.unique_key or "-"),
    ]


def _task_argument(fn: Callable[..., None]) -> Callable[..., None]:
    """The ``[QUEUE] TASK_ID`` arguments, passed as ``queue_or_id`` and ``task_id`` (see :func:`_queue_and_id`)."""
    fn = click.argument("task_id", required=False, metavar="")(fn)
    return click.argument("queue_or_id", metavar="[QUEUE] TASK_ID")(fn)


def _queue_and_id(queue_or_id: str, task_id: str | None) -> tuple[str | None, str]:
    """(QUEUE or None when not given, TASK_ID) of the ``[QUEUE] TASK_ID`` arguments."""
    return (None, queue_or_id) if task_id is None else (queue_or_id, task_id)


async def _find_task(ins: Inspector, task_id: str) -> TaskDetails:
    """The task ``task_id`` of whichever queue has it; refused when none (exit 1) or several (exit 2) do.

    The refusal names the running command: ``framework tasks <command> QUEUE TASK_ID`` is what to type.
    """
    from framework.errors import TaskNotFound  # noqa: PLC0415

    found = []
    for queue in await ins.queues():
        try:
            found.append(await ins.get_task(queue, task_id))
        except TaskNotFound:
            continue
    if not found:
        raise TaskNotFound(f"no queue has a task {task_id!r}")
    if len(found) > 1:
        queues = ", ".join(repr(t.queue) for t in found)
        command = click.get_current_context().info_name  # show, retry, archive or delete
        raise click.UsageError(
            f"queues {queues} each have a task {task_id!r}: name the queue, "
            f"e.g. `framework tasks {command} {found[0].queue} {task_id}`"
        )
    return found[0]


@tasks.command(
    epilog=examples(
        "framework tasks show 9b2c6d1e-5f0a-4c3b-8e7d-2a1f0b9c8d7e   # searches every queue",
        "framework tasks show default 9b2c6d1e-5f0a-4c3b-8e7d-2a1f0b9c8d7e --json",
    )
)
@_task_argument
@json_option
@pass_cli
def show(ctx: CliContext, queue_or_id: str, task_id: str | None, as_json: bool) -> None:
    """Show one task in full.

    Without QUEUE, every queue is searched for TASK_ID; when several queues have a task with that id,
    name the queue.
    """
    queue, tid = _queue_and_id(queue_or_id, task_id)

    async def read(ins: Inspector) -> tuple[TaskDetails, TaskProgress | None]:
        t = await (_find_task(ins, tid) if queue is None else ins.get_task(queue, tid))
        return t, await ins.progress(t.queue, t.id)

    t, progress = run_inspector(ctx, read)
    if as_json:
        emit_json({**msgspec.to_builtins(t), "progress": progress})
        return
    tbl = table(f"task {t.id}", "field", "value")
    for name, value in _rows(t):
        tbl.add_row(name, value)
        if name == "state":
            tbl.add_row("progress", _progress_text(progress))
    print_table(tbl)


def _progress_text(p: TaskProgress | None) -> str:
    """``40% resizing (attempt 1, 2026-01-01 12:00:00 UTC)``; ``-`` when the task reported no progress."""
    if p is None:
        return "-"
    message = f" {p.message}" if p.message else ""
    ended = ", ended" if p.ended else ""
    return f"{p.percent}%{message} (attempt {p.attempt}{ended}, {when_text(p.updated_at)})"


def _single(ctx: CliContext, queue_or_id: str, tid: str | None, as_json: bool, action: str, done: str) -> None:
    """Run ``action`` on one task; without QUEUE, on the task of whichever queue has it (:func:`_find_task`)."""
    given, task_id = _queue_and_id(queue_or_id, tid)
    calls: dict[str, Callable[[Inspector, str], Awaitable[None]]] = {
        "run": lambda ins, queue: ins.run_task(queue, task_id),
        "archive": lambda ins, queue: ins.archive_task(queue, task_id),
        "delete": lambda ins, queue: ins.delete_task(queue, task_id),
    }

    async def go(ins: Inspector) -> str:
        queue = given if given is not None else (await _find_task(ins, task_id)).queue
        await calls[action](ins, queue)
        return queue

    queue = run_inspector(ctx, go)
    if as_json:
        emit_json({"queue": queue, "id": task_id, "action": action, "ok": True})
    else:
        click.echo(f"task {task_id} of queue {queue!r} {done}")


@tasks.command(
    epilog=examples(
        "framework tasks retry 9b2c6d1e-5f0a-4c3b-8e7d-2a1f0b9c8d7e   # finds the queue",
        "framework tasks retry default 9b2c6d1e-5f0a-4c3b-8e7d-2a1f0b9c8d7e --json",
    )
)
@_task_argument
@json_option
@pass_cli
def retry(ctx: CliContext, queue_or_id: str, task_id: str | None, as_json: bool) -> None:
    """Run a scheduled, retry, archived (failed), completed or aggregating task now (make it pending).

    Without QUEUE, the queue that has TASK_ID is found; when several do, name the queue.
    """
    _single(ctx, queue_or_id, task_id, as_json, "run", "is pending now")


@tasks.command(
    epilog=examples(
        "framework tasks archive 9b2c6d1e-5f0a-4c3b-8e7d-2a1f0b9c8d7e   # finds the queue",
        "framework tasks archive default 9b2c6d1e-5f0a-4c3b-8e7d-2a1f0b9c8d7e --json",
    )
)
@_task_argument
@json_option
@pass_cli
def archive(ctx: CliContext, queue_or_id: str, task_id: str | None, as_json: bool) -> None:
    """Archive a task that is not active: it stays visible but will not run.

    Without QUEUE, the queue that has TASK_ID is found; when several do, name the queue.
    """
    _single(ctx, queue_or_id, task_id, as_json, "archive", "is archived")


@tasks.command(
    epilog=examples(
        "framework tasks delete 9b2c6d1e-5f0a-4c3b-8e7d-2a1f0b9c8d7e   # finds the queue",
        "framework tasks delete default 9b2c6d1e-5f0a-4c3b-8e7d-2a1f0b9c8d7e --json",
    )
)
@_task_argument
@json_option
@pass_cli
def delete(ctx: CliContext, queue_or_id: str, task_id: str | None, as_json: bool) -> None:
    """Delete a task that is not active (its uniqueness lock is released).

    Without QUEUE, the queue that has TASK_ID is found; when several do, name the queue.
    """
    _single(ctx, queue_or_id, task_id, as_json, "delete", "is deleted")


@tasks.command(epilog=examples("framework tasks cancel 9b2c6d1e-5f0a-4c3b-8e7d-2a1f0b9c8d7e"))
@click.argument("task_id")
@json_option
@pass_cli
def cancel(ctx: CliContext, task_id: str, as_json: bool) -> None:
    """Ask the workers to cancel the active task TASK_ID."""
    from framework.protocol.keys import Schema  # noqa: PLC0415

    async def go(redis: Redis) -> int:
        from framework.inspector import Inspector  # noqa: PLC0415

        return await Inspector(redis, Schema(ctx.settings.namespace)).cancel(task_id)

    receivers = run_redis(ctx, go)
    if as_json:
        emit_json({"id": task_id, "receivers": receivers})
    elif receivers:
        click.echo(f"cancel request for task {task_id} sent to {receivers} worker process(es)")
    else:
        click.echo(f"cancel request for task {task_id} sent, but no worker is listening")
