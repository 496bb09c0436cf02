"""What the API and the dashboard do, on top of the inspector: one place for every action and its audit line.

Each action calls one inspector method, writes an ``admin_action`` log line (who, what, which queue,
task or state, outcome) and turns the inspector's errors into HTTP answers: an unknown queue or task
is 404, a task in the wrong state is 409, a bad argument is 400.

Task ids are unique per queue only. Without a queue, an action looks the id up in every queue and
refuses (409) when more than one queue has it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from litestar.exceptions import ClientException, NotFoundException

from framework.errors import QueueNotFound, TaskNotFound, WorkflowNotFound
from framework.inspector import InvalidTaskState, TaskState
from framework.logging import get_logger
from framework_admin.schemas import ActionResult

if TYPE_CHECKING:
    from framework.inspector import Inspector, TaskDetails
    from framework_admin.models import Actor

__all__ = (
    "BULK_ACTIONS",
    "QUEUE_ACTIONS",
    "TASK_ACTIONS",
    "WORKFLOW_ACTIONS",
    "BulkAction",
    "Conflict",
    "QueueAction",
    "TaskAction",
    "WorkflowAction",
    "bulk_action",
    "find_task",
    "queue_action",
    "task_action",
    "workflow_action",
)

TaskAction = Literal["run", "archive", "delete", "cancel"]
QueueAction = Literal["pause", "unpause"]
BulkAction = Literal["run-all", "archive-all", "delete-all"]
TASK_ACTIONS: tuple[TaskAction, ...] = ("run", "archive", "delete", "cancel")
QUEUE_ACTIONS: tuple[QueueAction, ...] = ("pause", "unpause")
BULK_ACTIONS: tuple[BulkAction, ...] = ("run-all", "archive-all", "delete-all")
WorkflowAction = Literal["cancel", "retry"]
WORKFLOW_ACTIONS: tuple[WorkflowAction, ...] = ("cancel", "retry")


class Conflict(ClientException):
    """409: the task or queue is not in a state the action applies to."""

    status_code = 409


def _http_error(exc: Exception) -> Exception:
    if isinstance(exc, (TaskNotFound, QueueNotFound, WorkflowNotFound)):
        return NotFoundException(str(exc))
    if isinstance(exc, InvalidTaskState):
        return Conflict(str(exc))
    return ClientException(str(exc))


def _audit(actor: Actor, action: str, outcome: str, **target: Any) -> None:
    get_logger("framework_admin").info(
        "admin_action", actor=actor.name, role=actor.role, via=actor.via, action=action, outcome=outcome, **target
    )


async def find_task(inspector: Inspector, task_id: str, queue: str | None = None) -> TaskDetails:
    """The task ``task_id`` of ``queue``, or of whichever queue has it.

    Raises:
        NotFoundException: no such queue or task.
        Conflict: no queue was given and several queues have a task with this id.
    """
    if queue:
        try:
            return await inspector.get_task(queue, task_id)
        except (TaskNotFound, QueueNotFound) as exc:
            raise NotFoundException(str(exc)) from exc
    found = []
    for name in await inspector.queues():
        try:
            found.append(await inspector.get_task(name, task_id))
        except (TaskNotFound, QueueNotFound):
            continue
    if not found:
        raise NotFoundException(f"no queue has a task {task_id!r}")
    if len(found) > 1:
        queues = ", ".join(t.queue for t in found)
        raise Conflict(f"task id {task_id!r} exists in several queues ({queues}); pass ?queue=")
    return found[0]


async def task_action(
    inspector: Inspector, actor: Actor, action: TaskAction, task_id: str, queue: str | None = None
) -> ActionResult:
    """Run now, archive, delete or cancel one task, and audit it.

    Raises:
        NotFoundException: no such queue or task.
        Conflict: the task's state does not allow the action (an active task cannot be deleted, ...).
    """
    task = await find_task(inspector, task_id, queue)
    target = {"queue": task.queue, "task_id": task.id, "task_type": task.type, "state": str(task.state)}
    count = 1
    try:
        if action == "run":
            await inspector.run_task(task.queue, task.id)
        elif action == "archive":
            await inspector.archive_task(task.queue, task.id)
        elif action == "delete":
            await inspector.delete_task(task.queue, task.id)
        else:
            if task.state is not TaskState.ACTIVE:
                raise InvalidTaskState(f"task {task.id!r} is {task.state.value}; only active tasks can be cancelled")
            count = await inspector.cancel(task.id)
    except (TaskNotFound, QueueNotFound, InvalidTaskState, ValueError) as exc:
        _audit(actor, action, "refused", error=str(exc), **target)
        raise _http_error(exc) from exc
    _audit(actor, action, "done", **target)
    verb = {"run": "will run now", "archive": "archived", "delete": "deleted", "cancel": "asked to stop"}[action]
    return ActionResult(
        action=action, queue=task.queue, task_id=task.id, count=count, message=f"Task {task.id} {verb}."
    )


async def bulk_action(inspector: Inspector, actor: Actor, action: BulkAction, queue: str, state: str) -> ActionResult:
    """Run, archive or delete every task of one state of a queue, and audit it.

    Raises:
        NotFoundException: no such queue.
        Conflict: the action does not apply to that state.
        ClientException: an unknown state.
    """
    target = {"queue": queue, "state": state}
    try:
        if action == "run-all":
            count = await inspector.run_all(queue, state)
        elif action == "archive-all":
            count = await inspector.archive_all(queue, state)
        else:
            count = await inspector.delete_all(queue, state)
    except (QueueNotFound, InvalidTaskState, ValueError) as exc:
        _audit(actor, action, "refused", error=str(exc), **target)
        raise _http_error(exc) from exc
    _audit(actor, action, "done", count=count, **target)
    verb = {"run-all": "will run now", "archive-all": "archived", "delete-all": "deleted"}[action]
    return ActionResult(
        action=action, queue=queue, state=state, count=count, message=f"{count} {state} task(s) of {queue} {verb}."
    )


async def queue_action(inspector: Inspector, actor: Actor, action: QueueAction, queue: str) -> ActionResult:
    """Pause or unpause a queue, and audit it.

    Raises:
        NotFoundException: no such queue.
    """
    try:
        changed = await (inspector.pause(queue) if action == "pause" else inspector.unpause(queue))
    except QueueNotFound as exc:
        _audit(actor, action, "refused", queue=queue, error=str(exc))
        raise _http_error(exc) from exc
    _audit(actor, action, "done" if changed else "unchanged", queue=queue)
    word = "paused" if action == "pause" else "resumed"
    message = f"Queue {queue} {word}." if changed else f"Queue {queue} was already {word}."
    return ActionResult(action=action, queue=queue, count=int(changed), message=message)


async def workflow_action(
    inspector: Inspector, actor: Actor, action: WorkflowAction, workflow_id: str, queue: str | None = None
) -> ActionResult:
    """Cancel or retry a workflow, and audit it.

    Cancelling a succeeded or cancelled workflow, or retrying one with nothing to retry, changes nothing and
    says so.

    Raises:
        NotFoundException: no such workflow (never started, or expired).
    """
    target = {"workflow_id": workflow_id, "queue": queue or ""}
    try:
        if action == "cancel":
            cancelled = await inspector.cancel_workflow(workflow_id, queue)
            home, before, count = cancelled.queue, cancelled.status, cancelled.deleted + cancelled.stopping
            changed = before not in ("succeeded", "cancelled")
            message = (
                f"Workflow {workflow_id} cancelled: {cancelled.deleted} step(s) dropped, "
                f"{cancelled.stopping} running step(s) asked to stop."
                if changed
                else f"Workflow {workflow_id} was already {before}."
            )
        else:
            retried = await inspector.retry_workflow(workflow_id, queue)
            home, before, count = retried.queue, retried.status, retried.again
            changed = before in ("failed", "cancelled")
            message = (
                f"Workflow {workflow_id} is running again: {count} step(s) run again."
                if changed
                else f"Workflow {workflow_id} is {before}: nothing to retry."
            )
    except WorkflowNotFound as exc:
        _audit(actor, f"workflow-{action}", "refused", error=str(exc), **target)
        raise _http_error(exc) from exc
    target["queue"] = home
    _audit(actor, f"workflow-{action}", "done" if changed else "unchanged", status=before, count=count, **target)
    return ActionResult(action=action, queue=home, workflow_id=workflow_id, state=before, count=count, message=message)
