"""The framework's exception hierarchy.

Every error the framework raises derives from :class:`FrameworkError`. Two exceptions are control
flow for handlers: :class:`SkipRetry` archives the task at once and :class:`RevokeTask` drops it.
"""

from __future__ import annotations

from typing import Any

__all__ = (
    "BatchInterrupted",
    "ConfigError",
    "DuplicateTask",
    "EnqueueFailed",
    "FrameworkError",
    "InvalidOption",
    "InvalidWorkflow",
    "PayloadTooLarge",
    "PayloadTypeError",
    "PluginError",
    "QueueNotFound",
    "RedisUnavailable",
    "ResultTooLarge",
    "ResultTypeError",
    "RetryAfter",
    "RevokeTask",
    "SkipRetry",
    "TaskAggregated",
    "TaskCancelled",
    "TaskDeleted",
    "TaskFailed",
    "TaskIdConflict",
    "TaskNotFound",
    "TaskUnconfirmed",
    "UnknownTaskType",
    "WaitTimeout",
    "WorkflowFailed",
    "WorkflowNotFound",
)


class FrameworkError(Exception):
    """Root of every error raised by the framework."""


class ConfigError(FrameworkError):
    """A setting has a value that is not allowed. The message names the setting, value and what is allowed."""


class PluginError(FrameworkError):
    """A plugin failed to load or contributed something invalid."""


class InvalidOption(FrameworkError, ValueError):
    """An enqueue option is invalid (negative delay, deadline in the past, empty queue name, ...)."""


class PayloadTypeError(FrameworkError, TypeError):
    """A payload does not match the payload type of its task definition."""


class PayloadTooLarge(FrameworkError, ValueError):
    """A payload is larger than the ``max_payload_size`` setting allows; nothing was stored.

    The message names the task type, the payload's size and the limit.
    """


class DuplicateTask(FrameworkError):
    """A unique task with the same type and payload is already queued (its lock is held)."""


class TaskIdConflict(FrameworkError):
    """A task with the same id already exists in the queue."""


class TaskNotFound(FrameworkError, LookupError):
    """No task with that id exists in that queue."""


class QueueNotFound(FrameworkError, LookupError):
    """No queue with that name exists (it is not in the ``<ns>:queues`` set)."""


class UnknownTaskType(FrameworkError, LookupError):
    """No handler is registered for a task type."""


class RedisUnavailable(FrameworkError, ConnectionError):
    """Redis could not be reached. The message names the URL without its password."""


class EnqueueFailed(FrameworkError):
    """Redis answered a task's enqueue with an error (a key of the wrong type, a protocol error...): not stored.

    The message names the task id and Redis's error.
    """


class TaskUnconfirmed(RedisUnavailable):
    """The link to Redis dropped before a task's enqueue was answered: it may or may not be stored.

    In :attr:`BatchInterrupted.results`, in the place of each such task.

    Attributes:
        info: what the task was sent as (its id, queue...), or None when it was never sent (not stored).
            Sending it again with ``task_id=info.id`` is safe: if the first one was stored, the second is
            refused with :class:`TaskIdConflict` while the first is still held.
    """

    def __init__(self, message: str, info: Any = None) -> None:
        super().__init__(message)
        self.info = info


class BatchInterrupted(RedisUnavailable):
    """``enqueue_many`` lost its link to Redis part-way: some tasks are stored, some are not, some are unknown.

    Attributes:
        results: one entry per task, in call order, as ``enqueue_many`` returns them: the :class:`TaskInfo` of a
            stored task, the task's own error (:class:`DuplicateTask`, :class:`TaskIdConflict`,
            :class:`EnqueueFailed`), or :class:`TaskUnconfirmed` for a task whose outcome is unknown.
    """

    def __init__(self, message: str, results: list[Any]) -> None:
        super().__init__(message)
        self.results = results

    @property
    def unconfirmed(self) -> list[TaskUnconfirmed]:
        """The entries of :attr:`results` whose outcome is unknown, in call order."""
        return [r for r in self.results if isinstance(r, TaskUnconfirmed)]


class SkipRetry(FrameworkError):
    """Raised by a handler for a permanent failure: the task is archived at once, without retries."""


class RevokeTask(FrameworkError):
    """Raised by a handler to drop the task: it is neither retried nor archived."""


class RetryAfter(FrameworkError):
    """Raised by a handler to retry the task after ``delay`` seconds (for example a provider's Retry-After).

    Args:
        delay: seconds to wait before the next attempt: a negative or NaN one is 0, and the worker waits at
            most a year (an infinite delay too), so the task always gets a retry time.
        message: the error text recorded on the task.
    """

    def __init__(self, delay: float, message: str = "") -> None:
        super().__init__(message or f"retry after {delay:g}s")
        self.delay = max(0.0, float(delay))


class ResultTooLarge(FrameworkError, ValueError):
    """A task's result is larger than the ``max_result_size`` setting allows; nothing was stored.

    Raised by ``ctx.write_result``; a handler that returns such a value has its task archived with it. The
    message names the task type, the result's size and the limit.
    """


class ResultTypeError(FrameworkError, TypeError):
    """A handler returned a value that does not fit its task's result type; the task fails, nothing is stored.

    The message names the task type, the expected type and the type returned.
    """


class TaskFailed(FrameworkError):
    """The task a caller waited for ended without success: archived, or cancelled.

    Raised by ``Client.wait`` and ``Client.apply``. A retry is not an outcome: a waiter sees the task's final one.

    Args:
        message: what happened, for people.
        task_id: the task's id.
        queue: its queue.
        error: the error text stored on the task (``"<ExceptionType>: <message>"``, "" when none).
        retried: how many times it was retried before this outcome.
        archived: whether it is in the archive (it can be run again from there).

    Attributes:
        task_id, queue, error, retried, archived: as given.
    """

    def __init__(
        self,
        message: str = "",
        *,
        task_id: str = "",
        queue: str = "",
        error: str = "",
        retried: int = 0,
        archived: bool = False,
    ) -> None:
        super().__init__(message or error or "task failed")
        self.task_id = task_id
        self.queue = queue
        self.error = error
        self.retried = retried
        self.archived = archived


class TaskCancelled(TaskFailed):
    """The task was cancelled.

    In a worker, the error a handler stopped through the ``asynq:cancel`` channel ends with (a failure: it is
    retried, unless the caller's ``Client.cancel`` asked, then it is archived). To a waiter, the outcome of a
    task cancelled by ``Client.cancel`` (``archived`` tells whether it was running, hence archived, or deleted).
    """


class TaskDeleted(TaskCancelled):
    """The task a caller waited for was deleted before it ran: it will not run.

    Raised by ``Client.wait`` and ``Client.apply`` when the inspector deletes the task (``delete_task``,
    ``delete_all``: the dashboard or the CLI), or deletes it with its queue (``delete_queue(force=True)``). A
    :class:`TaskCancelled`, not archived. A deletion by Go's tools announces nothing: it cannot be told from a Go
    worker's success (see ``Client.wait``).

    Attributes:
        queue_removed: it was deleted because its queue was removed.
    """

    def __init__(self, message: str = "", *, task_id: str = "", queue: str = "", queue_removed: bool = False) -> None:
        super().__init__(message or "task deleted", task_id=task_id, queue=queue)
        self.queue_removed = queue_removed


class TaskAggregated(TaskNotFound):
    """The grouped task a caller waited for was merged into an aggregate task: it will not run by itself.

    Raised by ``Client.wait`` and ``Client.apply``. Its outcome is the aggregate task's, which can be waited
    for by :attr:`aggregate_id` (while it is kept: give the aggregate a retention). A :class:`TaskNotFound`:
    the task no longer exists as one of its own.

    Attributes:
        task_id: the grouped task's id.
        queue: its queue.
        aggregate_id: the aggregate task's id (the aggregation set's id unless the ``aggregate`` function chose
            another); when that function sent it to another queue, :attr:`queue` is still the grouped task's.
    """

    def __init__(self, message: str, *, task_id: str = "", queue: str = "", aggregate_id: str = "") -> None:
        super().__init__(message)
        self.task_id = task_id
        self.queue = queue
        self.aggregate_id = aggregate_id


class WaitTimeout(FrameworkError, TimeoutError):
    """``Client.wait`` (or ``apply``) gave up: the task had no final outcome within the timeout.

    The task itself is unaffected: it may still run and finish. ``task_id`` and ``queue`` name it.
    """

    def __init__(self, message: str, *, task_id: str = "", queue: str = "") -> None:
        super().__init__(message)
        self.task_id = task_id
        self.queue = queue


class InvalidWorkflow(FrameworkError, ValueError):
    """A workflow cannot be built as given; the message names the step and what is wrong.

    A step's input does not take its dependencies' result types, two steps share a name, an option a step
    cannot have, ... Raised when the workflow is built or started, before anything is stored.
    """


class WorkflowNotFound(FrameworkError, LookupError):
    """No workflow with that id exists under that home queue (never started, or expired after its retention)."""


class WorkflowFailed(FrameworkError):
    """The workflow a caller waited for failed (a step was archived, or lost) or was cancelled.

    Attributes:
        workflow_id: its id.
        status: ``failed`` or ``cancelled``.
        error: the failing step and its error (``"step resize: ValueError: ..."``), when it failed.
    """

    def __init__(self, message: str, *, workflow_id: str = "", status: str = "", error: str = "") -> None:
        super().__init__(message)
        self.workflow_id = workflow_id
        self.status = status
        self.error = error


# Not in __all__ (the exceptions, which the ``framework`` facade exports): the worker's and plugins' formatting of
# an error as stored on a failed task.

ERROR_TEXT_MAX = 8192
"""Characters of an error's text that are kept (stored on the task, logged); a longer one is cut, saying so."""


def error_text(error: BaseException) -> str:
    """The error stored on a failed task: ``"<ExceptionType>: <message>"`` (just the type without a message).

    A message longer than :data:`ERROR_TEXT_MAX` characters is cut (a handler's error could be larger than Redis
    stores: the failure could then never be written), and one whose ``str()`` raises is replaced by a note.
    """
    try:
        text = str(error)
    except Exception as exc:  # noqa: BLE001 - the failure is written all the same, with what can be said
        try:
            reason = f"{type(exc).__name__}: {exc}"
        except Exception:  # noqa: BLE001
            reason = type(exc).__name__
        text = f"<the error's text could not be read: {reason}>"
    full = f"{type(error).__name__}: {text}" if text else type(error).__name__
    if len(full) > ERROR_TEXT_MAX:
        return f"{full[:ERROR_TEXT_MAX]}... (cut: {len(full):,} characters)"
    return full
