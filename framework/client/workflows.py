"""Starting, waiting for, cancelling and retrying workflows from a client.

:func:`start` checks the workflow (:meth:`~framework.workflow.Workflow.plan`), builds every step's message
exactly as an enqueue of that task would (options, uniqueness, the workflow header) and stores the whole
workflow in one script, which releases the first steps as asynq tasks. Nothing is stored when a check fails.

:func:`wait` listens on the workflow's channel and reads its status (again at most every few seconds, so a
missed message costs a delay, never a hang); it returns the final result: the one output step's result, or
the list of the outputs' results for a workflow that ends in a group (decoded into their result types when
the task types are known here).
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from framework.broker.workflows import StepSpec
from framework.client.prepared import new_task_id
from framework.errors import (
    DuplicateTask,
    FrameworkError,
    InvalidWorkflow,
    TaskIdConflict,
    WaitTimeout,
    WorkflowFailed,
    WorkflowNotFound,
)
from framework.protocol.message import decode_message
from framework.protocol.workflow import STEP_HEADER, StepRef
from framework.transport.cluster import is_cluster

if TYPE_CHECKING:
    from framework.client.client import Client
    from framework.task import TaskDef
    from framework.workflow import Plan, Workflow

__all__ = ("KEEP_FAILED", "RETENTION", "WorkflowInfo", "cancel", "result_of", "retry", "start", "wait")

RETENTION = 24 * 3600
"""Default seconds a succeeded workflow (its steps' states and results) is kept."""
KEEP_FAILED = 7 * 24 * 3600
"""Default seconds a failed or cancelled workflow is kept once none of its steps runs (retry resumes it)."""
_RECHECK = 5.0
"""Seconds between a waiter's status reads while no message comes (a missed message costs this, not a hang)."""
_ID = re.compile(r"[^\s{}]+")
_LONGEST_KEEP = 100 * 365 * 24 * 3600
"""The longest a workflow may be kept, in seconds (far longer ones Redis refuses to expire after)."""


@dataclass(frozen=True, slots=True)
class WorkflowInfo:
    """A started workflow.

    Attributes:
        id: its id.
        queue: its home queue (its records live under it; name it to wait, cancel or inspect by id).
        name: its name.
        steps: step name -> (queue, task id) of its task.
        plan: the checked plan it was started from (its steps' task types decode the final result).
    """

    id: str
    queue: str
    name: str
    steps: dict[str, tuple[str, str]]
    plan: Plan | None = field(default=None, repr=False, compare=False)


async def start(
    client: Client,
    workflow: Workflow,
    *,
    workflow_id: str | None = None,
    queue: str | None = None,
    retention: float = RETENTION,
    keep_failed: float = KEEP_FAILED,
) -> WorkflowInfo:
    """Store ``workflow`` and release its first steps; see :meth:`framework.client.client.Client.start_workflow`."""
    if is_cluster(client.redis):
        raise FrameworkError(
            "workflows need one Redis server or Sentinel: a step's release writes other queues' keys, which a "
            "Redis Cluster refuses across slots"
        )
    for name, value in (("retention", retention), ("keep_failed", keep_failed)):
        _check_keep(name, value)
    plan = workflow.plan()
    wid = workflow_id or new_task_id()
    if not _ID.fullmatch(wid):
        raise InvalidWorkflow(f"workflow id {wid!r}: use an id without spaces or braces")
    first = plan.steps[0].step
    home = queue or client.queue_of(first.task, first.options.get("queue"))
    specs = []
    steps = {}
    for planned in plan.steps:
        step = planned.step
        ref = StepRef(home, wid, planned.name, step.input or "", planned.fan_in)
        built = client._message(
            step.task, step.payload, step.options, f"{wid}-{planned.index}", {STEP_HEADER: ref.header()}
        )
        unique = (built.unique_key, built.unique_ttl) if built.unique_key else None
        specs.append(
            StepSpec(
                planned.name,
                built.opts.queue,
                built.task_id,
                built.message,
                planned.deps,
                handed_on=planned.handed_on,
                unique=unique,
            )
        )
        steps[planned.name] = (built.opts.queue, built.task_id)
    with client._redis_faults():
        await client.broker.register_queues(sorted({q for q, _ in steps.values()} | {home}))
        reply = await client.broker.workflows.start(
            home,
            wid,
            name=plan.name,
            steps=specs,
            outputs=plan.outputs,
            grouped=plan.grouped,
            retention=max(1, int(retention)),
            kept=max(1, int(keep_failed)),
        )
    if reply == 0:
        raise InvalidWorkflow(f"a workflow with id {wid!r} exists already in queue {home!r}")
    if isinstance(reply, list):
        code, name = int(reply[0]), _text(reply[1])
        q, task_id = steps[name]
        if code == -1:
            raise DuplicateTask(f"step {name!r}: a task with the same type and payload holds the unique lock in {q!r}")
        raise TaskIdConflict(f"step {name!r}: a task with id {task_id!r} already exists in queue {q!r}")
    return WorkflowInfo(wid, home, plan.name, steps, plan)


def _check_keep(name: str, value: Any) -> None:
    """Refuse a keeping time that is not a number of seconds Redis can expire a key after."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= _LONGEST_KEEP:
        raise InvalidWorkflow(f"{name}={value!r} is invalid: expected seconds from 0 to {_LONGEST_KEEP}")


def _where(workflow: WorkflowInfo | str, queue: str) -> tuple[str, str, Plan | None]:
    if isinstance(workflow, WorkflowInfo):
        return workflow.queue, workflow.id, workflow.plan
    return queue, workflow, None


async def wait(
    client: Client, workflow: WorkflowInfo | str, *, queue: str = "default", timeout: float | None = None
) -> Any:
    """Wait for the workflow to end; see :meth:`framework.client.client.Client.wait_workflow`."""
    home, wid, plan = _where(workflow, queue)
    wk = client.schema.queue(home).workflow(wid)
    deadline = None if timeout is None else time.monotonic() + timeout
    pubsub = client.redis.pubsub()
    try:
        with client._redis_faults():  # WaitTimeout and the like pass: they are the wait's own outcomes
            await pubsub.subscribe(wk.channel)
            while True:
                status, error = await client.redis.hmget(wk.meta, "status", "error")
                status = _text(status) if status is not None else None
                if status is None:
                    raise WorkflowNotFound(f"no workflow {wid!r} in queue {home!r} (never started, or expired)")
                if status == "succeeded":
                    return await result_of(client, home, wid, plan)
                if status in ("failed", "cancelled"):
                    text = _text(error) if error else ""
                    detail = f": {text}" if status == "failed" and text else ""
                    message = f"workflow {wid!r} {status}{detail}"
                    raise WorkflowFailed(message, workflow_id=wid, status=status, error=text)
                wait_for = _RECHECK
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise WaitTimeout(f"workflow {wid!r} did not end within {timeout:g} s", task_id=wid, queue=home)
                    wait_for = min(wait_for, left)
                await pubsub.get_message(ignore_subscribe_messages=True, timeout=wait_for)
    finally:
        await asyncio.shield(pubsub.aclose())


async def result_of(client: Client, home: str, wid: str, plan: Plan | None = None) -> Any:
    """A succeeded workflow's result: its one output's result, or the list of its outputs' results."""
    wk = client.schema.queue(home).workflow(wid)
    outputs_raw, grouped = await client.redis.hmget(wk.meta, "outputs", "grouped")
    outputs = _text(outputs_raw or b"").split("\n")
    values = await client.redis.hmget(wk.results, outputs)
    types = await _output_tasks(client, plan, wk.graph, outputs)
    decoded: list[Any] = []
    for name, value in zip(outputs, values, strict=True):
        taskdef = types.get(name)
        if value is None:
            decoded.append(None)
        elif taskdef is not None:
            decoded.append(taskdef.decode_result(_bytes(value)))
        else:
            decoded.append(msgspec.json.decode(value))
    return decoded if grouped else decoded[0]


async def _output_tasks(client: Client, plan: Plan | None, graph: str, outputs: list[str]) -> dict[str, TaskDef[Any]]:
    """The task types of the outputs: from the plan when the caller started it, else the client's registry."""
    if plan is not None:
        by_name = {s.name: s.step.task for s in plan.steps}
        return {name: by_name[name] for name in outputs if name in by_name}
    found: dict[str, TaskDef[Any]] = {}
    if client.registry is None:
        return found
    messages = await client.redis.hmget(graph, [f"m:{name}" for name in outputs])
    for name, data in zip(outputs, messages, strict=True):
        taskdef = client.registry.get(decode_message(_bytes(data)).type) if data else None
        if taskdef is not None:
            found[name] = taskdef
    return found


async def cancel(client: Client, workflow: WorkflowInfo | str, *, queue: str = "default") -> tuple[str, int, int]:
    """Cancel a workflow; see :meth:`framework.client.client.Client.cancel_workflow`."""
    home, wid, _ = _where(workflow, queue)
    with client._redis_faults():
        status, deleted, stopping = await client.broker.workflows.cancel(home, wid)
    if not status:
        raise WorkflowNotFound(f"no workflow {wid!r} in queue {home!r} (never started, or expired)")
    return status, deleted, stopping


async def retry(client: Client, workflow: WorkflowInfo | str, *, queue: str = "default") -> int:
    """Run a failed or cancelled workflow's failed steps again; returns how many run again."""
    home, wid, _ = _where(workflow, queue)
    with client._redis_faults():
        status, again = await client.broker.workflows.retry(home, wid)
    if not status:
        raise WorkflowNotFound(f"no workflow {wid!r} in queue {home!r} (never started, or expired)")
    return again


def _bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
