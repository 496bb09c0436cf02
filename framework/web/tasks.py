"""Routes that run a task for a request: wait for its result, or stream its progress to the browser.

Two patterns, one helper each:

* :func:`enqueue_and_wait`: enqueue, wait up to a timeout, answer ``200`` with the result, or ``202 Accepted``
  with the task's id and a status URL when the timeout passes first. :func:`task_status` serves that URL.
* :func:`progress_events`: a route enqueues and answers at once with the task's id; the browser then opens
  an ``EventSource`` on a route returning :func:`progress_events`, which streams the task's progress reports
  (``ctx.progress``) as server-sent events and ends with the outcome.

Every answer is a JSON object naming the task (``id``, ``queue``) and its ``state``:

============  ==========================================================================================
status        when, and the body
============  ==========================================================================================
200           completed: ``result`` (what the handler returned, JSON)
202           not finished yet: the current ``state`` and ``status_url`` (also the ``Location`` header)
404           no such task (only :func:`task_status`: unknown, or finished without a retention)
409           cancelled (``Client.cancel``): state ``cancelled``
500           failed (archived: out of retries, or a permanent failure): state ``failed``, ``retried``
============  ==========================================================================================

A failure's ``error`` is the task's stored error text only with ``expose_errors=True`` (it may name internals);
otherwise it says ``"the task failed"``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Unpack
from urllib.parse import quote

import msgspec
from litestar import Response
from litestar.response import ServerSentEvent, ServerSentEventMessage

from framework.client.client import Client, TaskInfo
from framework.client.prepared import new_task_id
from framework.errors import TaskCancelled, TaskFailed, TaskNotFound, WaitTimeout
from framework.inspector import Inspector
from framework.inspector.progress import FINAL_STATES
from framework.task import TaskDef

if TYPE_CHECKING:
    from framework.inspector.progress import TaskProgress
    from framework.task import EnqueueOptions

__all__ = ("enqueue_and_wait", "progress_events", "task_status")

FAILED_STATUS = 500
"""The status of an answer about a task that failed (archived)."""
CANCELLED_STATUS = 409
"""The status of an answer about a task that was cancelled."""
_DRAIN = 0.5
"""Seconds the event stream waits, once the outcome is known, for the last progress reports still in flight."""
_STREAMS: set[asyncio.Task[None]] = set()
"""The producers of open event streams (kept referenced until they end)."""


async def enqueue_and_wait(
    client: Client,
    task: TaskDef[Any] | str,
    payload: Any = None,
    *,
    wait_timeout: float,
    status_url: str | None = None,
    expose_errors: bool = False,
    **options: Unpack[EnqueueOptions],
) -> Response[Any]:
    """Enqueue a task and answer with its result, or with ``202 Accepted`` if it takes longer than ``wait_timeout``.

    The task is listened for before it is enqueued (``Client.apply``), so a quick one is never missed. On
    timeout the task goes on running; the answer carries its id and ``status_url`` for the caller to come back.
    The statuses are in the module's docstring.

    Args:
        client: the app's client (the ``client`` dependency).
        task: the task's definition, or a registered type string.
        payload: its payload.
        wait_timeout: seconds to wait for the outcome before answering ``202`` (``timeout`` is the handler's,
            as for ``Client.enqueue``).
        status_url: where the caller follows a task still running: a template with ``{id}`` and ``{queue}``,
            such as ``"/reports/{id}"`` (a route answering with :func:`task_status`); None: no URL.
        expose_errors: put a failed task's error text in the answer.
        **options: enqueue options (``queue``, ``retention``, ...; see ``Client.enqueue``).

    Example:
        >>> @post("/reports")
        ... async def make_report(data: ReportForm, client: Client) -> Response[Any]:
        ...     return await enqueue_and_wait(client, report_task, data, wait_timeout=5, status_url="/reports/{id}")
    """
    task_id = options.get("task_id") or new_task_id()
    options["task_id"] = task_id
    queue = client.queue_of(task, options.get("queue"))
    try:
        result = await client.apply(task, payload, wait_timeout=wait_timeout, **options)
    except WaitTimeout:
        return await _pending(client, task_id, queue, status_url)
    except TaskFailed as exc:
        return _failure(exc, expose_errors)
    return Response({"id": task_id, "queue": queue, "state": "completed", "result": result}, status_code=200)


async def task_status(
    client: Client,
    task_id: str,
    *,
    queue: str = "default",
    taskdef: TaskDef[Any] | None = None,
    wait: float = 0.0,
    status_url: str | None = None,
    expose_errors: bool = False,
) -> Response[Any]:
    """Answer with a task's outcome, as :func:`enqueue_and_wait` does: the route behind its ``status_url``.

    Args:
        client: the app's client.
        task_id: the task's id.
        queue: its queue.
        taskdef: its definition, to decode the result (default: the client's registry, by the task's type).
        wait: seconds to wait for the outcome before answering ``202`` (long polling; 0 answers at once).
        status_url: the template of this route's URL, for the ``202`` answer (see :func:`enqueue_and_wait`).
        expose_errors: put a failed task's error text in the answer.
    """
    try:
        try:
            result = await client.wait(task_id, queue=queue, timeout=max(wait, 0.0), taskdef=taskdef)
        except WaitTimeout:
            pending = await _pending(client, task_id, queue, status_url)
            if pending.content["state"] not in FINAL_STATES:
                return pending
            result = await client.wait(task_id, queue=queue, timeout=0.0, taskdef=taskdef)  # it just finished
    except TaskNotFound:
        return Response({"id": task_id, "queue": queue, "state": "not_found"}, status_code=404)
    except TaskFailed as exc:
        return _failure(exc, expose_errors)
    return Response({"id": task_id, "queue": queue, "state": "completed", "result": result}, status_code=200)


def progress_events(
    client: Client,
    task: TaskInfo | str,
    *,
    queue: str = "default",
    taskdef: TaskDef[Any] | None = None,
    inspector: Inspector | None = None,
    timeout: float | None = 600.0,
    ping: float = 15.0,
    expose_errors: bool = False,
) -> ServerSentEvent:
    """Stream a task's progress as server-sent events, ending with its outcome.

    Events (each ``data`` is JSON):

    * ``progress``: ``fraction`` (0 to 1), ``percent``, ``message``, ``attempt``; the stored report first,
      then each new one (``Inspector.watch_progress``).
    * ``result``: the task completed; the body :func:`task_status` answers with (``state``, ``result``).
    * ``failure``: it did not: ``state`` is ``failed``, ``cancelled``, ``not_found``, ``timeout`` (no outcome
      within ``timeout``; the task is unaffected) or ``unknown`` (Redis could not be read), with an ``error``
      text. (Not named ``error``: an ``EventSource`` fires ``error`` itself when the connection drops.)

    The stream ends after ``result`` or ``failure``: the page should then close its ``EventSource`` (a browser
    reconnects to a stream that ends). A comment is sent every ``ping`` seconds without an event, so proxies
    keep the connection open. When the browser goes away, the subscriptions are released at once; the task
    itself goes on. Give the task a retention: one without is gone once it finished, and a stream opened
    after that answers ``not_found``.

    Args:
        client: the app's client.
        task: the :class:`TaskInfo` an enqueue returned, or a task id.
        queue: the task's queue, for a task id.
        taskdef: its definition, to decode the result (default: the client's registry, by the task's type).
        inspector: the inspector reading the progress (the ``inspector`` dependency; default: a new one).
        timeout: seconds to follow the task at most (None: no limit).
        ping: seconds between keep-alive comments.
        expose_errors: put a failed task's error text in the ``failure`` event.
    """
    task_id, queue = (task.id, task.queue) if isinstance(task, TaskInfo) else (task, queue)
    reads = inspector or Inspector(client.redis, client.schema)
    follow = _Follow(client, reads, task, task_id, queue, taskdef, timeout, expose_errors)
    return ServerSentEvent(_events(follow, ping))


class _Follow:
    """What one event stream follows, and how it ends."""

    def __init__(
        self,
        client: Client,
        inspector: Inspector,
        task: TaskInfo | str,
        task_id: str,
        queue: str,
        taskdef: TaskDef[Any] | None,
        timeout: float | None,
        expose_errors: bool,
    ) -> None:
        self.client = client
        self.inspector = inspector
        self.task = task
        self.task_id = task_id
        self.queue = queue
        self.taskdef = taskdef
        self.timeout = timeout
        self.expose_errors = expose_errors

    async def produce(self, emit: Callable[[ServerSentEventMessage | None], None]) -> None:
        """Emit the progress reports, then the outcome, then None (the end), whatever happens."""
        waiter = asyncio.ensure_future(
            self.client.wait(self.task, queue=self.queue, timeout=self.timeout, taskdef=self.taskdef)
        )
        watcher = asyncio.ensure_future(self._progress(emit))
        try:
            final = await self._outcome(waiter)
            with contextlib.suppress(TimeoutError):  # the last reports may still be on their way
                await asyncio.wait_for(asyncio.shield(watcher), _DRAIN)
            emit(final)
        finally:
            for part in (waiter, watcher):
                part.cancel()
            for part in (waiter, watcher):
                with contextlib.suppress(BaseException):
                    await part
            emit(None)

    async def _progress(self, emit: Callable[[ServerSentEventMessage | None], None]) -> None:
        with contextlib.suppress(Exception):  # progress is best effort; the outcome still comes
            async for report in self.inspector.watch_progress(self.queue, self.task_id):
                emit(_message("progress", _progress_body(report)))

    async def _outcome(self, waiter: asyncio.Future[Any]) -> ServerSentEventMessage:
        ids = {"id": self.task_id, "queue": self.queue}
        try:
            result = await waiter
        except TaskFailed as exc:
            return _message("failure", _failure_body(exc, self.expose_errors)[1])
        except WaitTimeout:
            return _message("failure", {**ids, "state": "timeout", "error": "no outcome within the time allowed"})
        except TaskNotFound:
            return _message("failure", {**ids, "state": "not_found", "error": "no such task"})
        except Exception:  # noqa: BLE001 - the stream must end with an outcome (Redis gone, ...)
            return _message("failure", {**ids, "state": "unknown", "error": "the task's outcome could not be read"})
        return _message("result", {**ids, "state": "completed", "result": result})


async def _events(follow: _Follow, ping: float) -> AsyncIterator[ServerSentEventMessage]:
    """The stream's messages; the work runs in a task of its own, cancelled when the browser goes away.

    Litestar cancels the stream when the client disconnects (an anyio cancel scope, which cancels every
    later ``await`` too); the producer runs outside it, so its clean-up (unsubscribing) runs in full.
    """
    messages: asyncio.Queue[ServerSentEventMessage | None] = asyncio.Queue()
    producer = asyncio.ensure_future(follow.produce(messages.put_nowait))
    _STREAMS.add(producer)
    producer.add_done_callback(_STREAMS.discard)
    try:
        while True:
            try:
                message = await asyncio.wait_for(messages.get(), ping)
            except TimeoutError:
                yield ServerSentEventMessage(data=None, comment="ping")
                continue
            if message is None:
                return
            yield message
    finally:
        producer.cancel()


def _message(event: str, body: dict[str, Any]) -> ServerSentEventMessage:
    return ServerSentEventMessage(event=event, data=msgspec.json.encode(body).decode())


def _progress_body(report: TaskProgress) -> dict[str, Any]:
    return {
        "fraction": report.fraction,
        "percent": report.percent,
        "message": report.message,
        "attempt": report.attempt,
    }


def _failure_body(exc: TaskFailed, expose_errors: bool) -> tuple[int, dict[str, Any]]:
    """The status and body for a task that failed or was cancelled."""
    body: dict[str, Any] = {"id": exc.task_id, "queue": exc.queue}
    if isinstance(exc, TaskCancelled):
        return CANCELLED_STATUS, {**body, "state": "cancelled", "error": "the task was cancelled"}
    error = exc.error if expose_errors and exc.error else "the task failed"
    return FAILED_STATUS, {**body, "state": "failed", "error": error, "retried": exc.retried}


def _text(value: bytes | str | None) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else (value or "")


def _failure(exc: TaskFailed, expose_errors: bool) -> Response[Any]:
    status, body = _failure_body(exc, expose_errors)
    return Response(body, status_code=status)


async def _pending(client: Client, task_id: str, queue: str, status_url: str | None) -> Response[Any]:
    """``202 Accepted``: the task's current state and where to follow it."""
    state = await client.redis.hget(client.schema.queue(queue).task(task_id), "state")
    body: dict[str, Any] = {"id": task_id, "queue": queue, "state": _text(state) or "pending"}
    headers: dict[str, str] = {}
    if status_url is not None:
        # any string is a task id (an app's idempotency key: "order/42", "50% off"): escaped as one path segment
        url = status_url.format(id=quote(task_id, safe=""), queue=quote(queue, safe=""))
        body["status_url"] = headers["Location"] = url
    return Response(body, status_code=202, headers=headers)
