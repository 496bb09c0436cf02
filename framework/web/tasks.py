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
404           no such task (only :func:`task_status`: unknown, finished without a retention, or, with a
              ``taskdef``, a completed task of another type, whose result is not this route's to show)
409           cancelled (``Client.cancel``): state ``cancelled``
500           failed (archived: out of retries, or a permanent failure): state ``failed``, ``retried``
============  ==========================================================================================

A failure's ``error`` is the task's stored error text only with ``expose_errors=True`` (it may name internals);
otherwise it says ``"the task failed"``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, NamedTuple, Unpack
from urllib.parse import quote

import msgspec
from litestar import Response
from litestar.response import ServerSentEvent, ServerSentEventMessage

from framework.client.client import Client, TaskInfo
from framework.client.prepared import new_task_id
from framework.errors import InvalidOption, ResultTypeError, TaskCancelled, TaskFailed, TaskNotFound, WaitTimeout
from framework.inspector import Inspector
from framework.inspector.namespace import text
from framework.inspector.progress import FINAL_STATES, progress_finished, progress_from_event
from framework.protocol.message import decode_message
from framework.task import TaskDef

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.client import PubSub

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
_IDLE = 5.0
"""Seconds a stream waits without a progress report before it reads the stored one and the task's state again."""
_RECONNECT_FIRST = 0.1
"""Seconds the progress feed waits before its first try to connect again after its connection failed."""
_RECONNECT_MAX = 2.0
"""The longest pause between the progress feed's tries to connect again (it doubles from the first)."""


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
            such as ``"/reports/{id}"`` (a route answering with :func:`task_status`); None: no URL. Each is
            escaped as one path segment, but Litestar decodes ``%2F`` before it routes: a route for ids that
            may hold a ``/`` takes them as its last, ``path`` parameter (``"/reports/{task_id:path}"``, whose
            value starts with the ``/`` before the id).
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
        taskdef: its definition, to decode the result (default: the client's registry, by the task's type). A
            completed task of another type answers ``404``, as no such task.
        wait: seconds to wait for the outcome before answering ``202`` (long polling; 0, a negative number and
            NaN answer at once, so a route may pass a query parameter as it came).
        status_url: the template of this route's URL, for the ``202`` answer (see :func:`enqueue_and_wait`).
        expose_errors: put a failed task's error text in the answer.
    """
    limit = wait if wait > 0 else 0.0  # NaN too: it is not above 0
    try:
        try:
            result = await client.wait(task_id, queue=queue, timeout=limit, taskdef=taskdef)
        except WaitTimeout:
            pending = await _pending(client, task_id, queue, status_url)
            if pending.content["state"] not in FINAL_STATES:
                return pending
            result = await client.wait(task_id, queue=queue, timeout=0.0, taskdef=taskdef)  # it just finished
    except TaskNotFound:
        return Response({"id": task_id, "queue": queue, "state": "not_found"}, status_code=404)
    except TaskFailed as exc:
        return _failure(exc, expose_errors)
    except ResultTypeError:
        if not await _of_another_type(client, task_id, queue, taskdef):
            raise  # the task type's own result does not decode: a fault of the app
        return Response({"id": task_id, "queue": queue, "state": "not_found"}, status_code=404)
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
      then each new one (as ``Inspector.watch_progress`` follows them).
    * ``result``: the task completed; the body :func:`task_status` answers with (``state``, ``result``).
    * ``failure``: it did not: ``state`` is ``failed``, ``cancelled``, ``not_found``, ``timeout`` (no outcome
      within ``timeout``; the task is unaffected) or ``unknown`` (Redis could not be read), with an ``error``
      text. (Not named ``error``: an ``EventSource`` fires ``error`` itself when the connection drops.)

    The stream ends after ``result`` or ``failure``: the page should then close its ``EventSource`` (a browser
    reconnects to a stream that ends). A comment is sent every ``ping`` seconds without an event, so proxies
    keep the connection open. When the browser goes away, the subscriptions are released at once; the task
    itself goes on. Give the task a retention: one without is gone once it finished, and a stream opened
    after that answers ``not_found``.

    The progress reports of every stream of the process come over one Redis Pub/Sub connection, however many
    streams are open. When it fails (Redis restarted, a network fault) it is opened again, and each stream
    then reads the task's stored report, so it goes on from where the task got to. A browser that reads
    slower than the task reports gets the newest report, never a backlog of old ones.

    Args:
        client: the app's client.
        task: the :class:`TaskInfo` an enqueue returned, or a task id.
        queue: the task's queue, for a task id.
        taskdef: its definition, to decode the result (default: the client's registry, by the task's type).
        inspector: the inspector reading the progress (the ``inspector`` dependency; default: a new one).
        timeout: seconds to follow the task at most (None: no limit).
        ping: seconds between keep-alive comments.
        expose_errors: put a failed task's error text in the ``failure`` event.

    Raises:
        InvalidOption: ``timeout`` is negative, NaN or not a number, or ``ping`` is not a number of seconds
            above 0 (nothing is read).
    """
    if timeout is not None and not (_number(timeout) and timeout >= 0):
        raise InvalidOption(f"timeout={timeout!r} is invalid: expected seconds (a number from 0) or None for no limit")
    if not (_number(ping) and 0 < ping < math.inf):
        raise InvalidOption(f"ping={ping!r} is invalid: expected seconds (a number above 0)")
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
        """Emit the stored report, then each new one, until the task is finished.

        Progress is best effort, and a Redis fault does not end it: the stored report and the task's state are
        read again once the feed is back (or after :data:`_IDLE` seconds without a report). A report older
        than one already shown, or showing the same, is left out.
        """
        redis = self.inspector.redis
        if not hasattr(redis, "pubsub"):  # a Cluster client has no Pub/Sub: no progress, the outcome still comes
            return
        channel = self.inspector.schema.queue(self.queue).progress_channel(self.task_id)
        feed = _feed(redis)
        reports = await feed.listen(channel)
        shown: _Report | None = None
        try:
            look = True
            while True:
                if look:
                    look = False
                    with contextlib.suppress(Exception):  # read again after the next report, None or pause
                        stored = _stored_report(await self.inspector.progress(self.queue, self.task_id))
                        shown = _show(stored, shown, emit)
                        if (shown is None or shown.ended) and await self._finished():
                            return
                try:
                    data = await asyncio.wait_for(reports.get(), _IDLE)
                except TimeoutError:
                    look = True
                    continue
                report = None if data is None else _published_report(data)
                if report is not None:
                    shown = _show(report, shown, emit)
                look = report is None or report.ended
        finally:
            feed.leave(channel, reports)

    async def _finished(self) -> bool:
        return await progress_finished(self.inspector.redis, self.inspector.schema, self.queue, self.task_id)

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
        except Exception as exc:  # noqa: BLE001 - the stream must end with an outcome (Redis gone, ...)
            with contextlib.suppress(Exception):
                if isinstance(exc, ResultTypeError) and await _of_another_type(
                    self.client, self.task_id, self.queue, self.taskdef
                ):
                    return _message("failure", {**ids, "state": "not_found", "error": "no such task"})
            return _message("failure", {**ids, "state": "unknown", "error": "the task's outcome could not be read"})
        return _message("result", {**ids, "state": "completed", "result": result})


async def _events(follow: _Follow, ping: float) -> AsyncIterator[ServerSentEventMessage]:
    """The stream's messages; the work runs in a task of its own, cancelled when the browser goes away.

    Litestar cancels the stream when the client disconnects (an anyio cancel scope, which cancels every
    later ``await`` too); the producer runs outside it, so its clean-up (unsubscribing) runs in full.
    """
    outbox = _Outbox()
    producer = asyncio.ensure_future(follow.produce(outbox.put))
    _STREAMS.add(producer)
    producer.add_done_callback(_STREAMS.discard)
    try:
        while True:
            try:
                message = await asyncio.wait_for(outbox.get(), ping)
            except TimeoutError:
                yield ServerSentEventMessage(data=None, comment="ping")
                continue
            if message is None:
                return
            yield message
    finally:
        producer.cancel()


class _Outbox:
    """The messages one stream has yet to send, in order; a progress report replaces one not sent yet.

    So a browser that reads slower than its task reports (or not at all) costs the process no more than one
    report, the outcome and the end, and gets the newest report when it reads.
    """

    __slots__ = ("_messages", "_ready")

    def __init__(self) -> None:
        self._messages: collections.deque[ServerSentEventMessage | None] = collections.deque()
        self._ready = asyncio.Event()

    def put(self, message: ServerSentEventMessage | None) -> None:
        """Add ``message`` (None: the end)."""
        if _is_progress(message) and self._messages and _is_progress(self._messages[-1]):
            self._messages[-1] = message
        else:
            self._messages.append(message)
        self._ready.set()

    async def get(self) -> ServerSentEventMessage | None:
        """The next message, once there is one."""
        while not self._messages:
            self._ready.clear()
            await self._ready.wait()
        return self._messages.popleft()


def _is_progress(message: ServerSentEventMessage | None) -> bool:
    return message is not None and message.event == "progress"


class _ProgressFeed:
    """The progress channels of every open event stream on one Redis client, carried by one Pub/Sub connection.

    A stream calls :meth:`listen` for its task's channel and gets each report published there, in order, and
    :meth:`leave` when it ends. A connection per stream would take one of the client's pooled connections
    each (100 by default), so that a hundred streams left open would starve every other stream and every
    other use of the pool; here, however many are open, they cost one.

    When the connection fails (Redis restarted, a network fault), the feed opens a new one, pausing from
    :data:`_RECONNECT_FIRST` seconds, doubled after each failed try up to :data:`_RECONNECT_MAX`, and
    subscribes to every channel again. Once a channel is subscribed again, each of its listeners gets None:
    reports published meanwhile are lost, and the stream reads the stored one. The connection is closed
    when the last stream leaves.

    Args:
        redis: the client whose pool the connection comes from.
    """

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._listeners: dict[str, set[asyncio.Queue[bytes | None]]] = {}
        self._subscribed: dict[str, asyncio.Future[None]] = {}
        """Per channel: resolved once Redis confirmed the first subscription (reports are not missed after)."""
        self._unanswered: collections.Counter[str] = collections.Counter()
        """Per channel: ``SUBSCRIBE`` and ``UNSUBSCRIBE`` commands sent on the current connection, not yet answered."""
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._spawned: set[asyncio.Task[None]] = set()

    async def listen(self, channel: str) -> asyncio.Queue[bytes | None]:
        """Follow ``channel``: returns once Redis confirmed the subscription, with the queue its reports go to."""
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._listeners.setdefault(channel, set()).add(queue)
        subscribed = self._subscribed.get(channel)
        if subscribed is None:
            subscribed = self._subscribed[channel] = asyncio.get_running_loop().create_future()
            if self._reader is None or self._reader.done():
                self._reader = asyncio.ensure_future(self._run())  # connects, subscribing to every channel
            else:
                self._spawn(self._send("subscribe", channel))
        try:
            await asyncio.shield(subscribed)
        except BaseException:
            self.leave(channel, queue)
            raise
        return queue

    def leave(self, channel: str, queue: asyncio.Queue[bytes | None]) -> None:
        """Stop giving ``channel``'s reports to ``queue``; the last listener of a channel unsubscribes from it."""
        listeners = self._listeners.get(channel)
        if listeners is None:
            return
        listeners.discard(queue)
        if listeners:
            return
        del self._listeners[channel]
        del self._subscribed[channel]
        if self._listeners:
            self._spawn(self._send("unsubscribe", channel))
            return
        # the last stream left: close the connection now (a later stream gets a new feed)
        if _FEEDS.get(id(self.redis)) is self:
            del _FEEDS[id(self.redis)]
        if self._reader is not None:
            self._reader.cancel()
        self._spawn(self._close())

    async def _send(self, command: str, channel: str) -> None:
        """Subscribe to ``channel`` or unsubscribe from it, unless its listeners changed the need meanwhile.

        On no connection (the feed is connecting), nothing is sent: the connection subscribes to every channel
        listened to when it opens. A failed send is left to the reader, which sees the connection fail.
        """
        async with self._lock:
            pubsub = self._pubsub
            if pubsub is None or (channel in self._listeners) != (command == "subscribe"):
                return
            self._unanswered[channel] += 1
            with contextlib.suppress(Exception):
                await (pubsub.subscribe(channel) if command == "subscribe" else pubsub.unsubscribe(channel))

    async def _run(self) -> None:
        """Read the connection until the last stream leaves (which cancels this); open it, and again if it fails."""
        pause = _RECONNECT_FIRST
        while self._listeners:
            try:
                if self._pubsub is None:
                    await self._connect()
                pubsub = self._pubsub
                assert pubsub is not None
                message = await pubsub.get_message(timeout=1.0)
            except Exception:  # noqa: BLE001 - Redis gone, the connection cut: open another after a pause
                await self._close()
                await asyncio.sleep(pause)
                pause = min(pause * 2, _RECONNECT_MAX)
                continue
            pause = _RECONNECT_FIRST
            if message is not None:
                self._dispatch(message)

    async def _connect(self) -> None:
        """Open a connection subscribed to every channel listened to."""
        pubsub = self.redis.pubsub()
        async with self._lock:
            channels = list(self._listeners)
            try:
                await pubsub.subscribe(*channels)
            except BaseException:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                raise
            self._unanswered = collections.Counter(channels)
            self._pubsub = pubsub

    async def _close(self) -> None:
        async with self._lock:
            pubsub, self._pubsub = self._pubsub, None
            self._unanswered.clear()
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    def _dispatch(self, message: dict[str, Any]) -> None:
        """Hand a report to its channel's listeners, or count a subscription's answer."""
        kind, channel = message["type"], text(message.get("channel"))
        if kind == "message":
            for queue in self._listeners.get(channel, ()):
                queue.put_nowait(bytes(message["data"]) if isinstance(message["data"], bytes) else b"")
            return
        if kind not in ("subscribe", "unsubscribe"):
            return
        left = self._unanswered.pop(channel, 0) - 1
        if left > 0:
            self._unanswered[channel] = left
        if kind != "subscribe" or left > 0 or channel not in self._listeners:
            return  # an unsubscription, or a subscription an unanswered command may still undo
        subscribed = self._subscribed[channel]
        if not subscribed.done():
            subscribed.set_result(None)
        else:  # subscribed again on a new connection: reports published meanwhile are lost
            for queue in self._listeners[channel]:
                queue.put_nowait(None)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._spawned.add(task)
        task.add_done_callback(self._spawned.discard)


_FEEDS: dict[int, _ProgressFeed] = {}
"""The progress feed of each Redis client with open streams, by the client's id (a feed holds its client)."""


def _feed(redis: Redis) -> _ProgressFeed:
    feed = _FEEDS.get(id(redis))
    if feed is None:
        feed = _FEEDS[id(redis)] = _ProgressFeed(redis)
    return feed


class _Report(NamedTuple):
    """One progress report, as a stream shows it, with what orders it."""

    attempt: int
    updated: float
    fraction: float
    message: str
    ended: bool

    def body(self) -> dict[str, Any]:
        return {
            "fraction": self.fraction,
            "percent": math.floor(self.fraction * 100),
            "message": self.message,
            "attempt": self.attempt,
        }


def _checked(report: _Report) -> _Report | None:
    """``report``, or None when it is not one a worker writes (a fraction outside 0..1, a time that is no time)."""
    if not (0.0 <= report.fraction <= 1.0 and math.isfinite(report.updated)):
        return None
    return report


def _published_report(data: bytes) -> _Report | None:
    """The report in a published message; None for anything that is not one."""
    return _stored_report(progress_from_event(data))


def _stored_report(progress: TaskProgress | None) -> _Report | None:
    if progress is None:
        return None
    updated = progress.updated_at.timestamp() if progress.updated_at is not None else 0.0
    return _checked(_Report(progress.attempt, updated, progress.fraction, progress.message, progress.ended))


def _show(
    report: _Report | None, shown: _Report | None, emit: Callable[[ServerSentEventMessage | None], None]
) -> _Report | None:
    """Emit ``report`` unless it is older than ``shown`` or shows the same; returns the report shown last."""
    if report is None:
        return shown
    if shown is not None and (report.attempt, report.updated) < (shown.attempt, shown.updated):
        return shown
    if shown is None or report.body() != shown.body():
        emit(_message("progress", report.body()))
    return report


def _number(value: object) -> bool:
    """Whether ``value`` is a number of seconds that is not NaN (infinity is one)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)


def _message(event: str, body: dict[str, Any]) -> ServerSentEventMessage:
    return ServerSentEventMessage(event=event, data=msgspec.json.encode(body).decode())


def _failure_body(exc: TaskFailed, expose_errors: bool) -> tuple[int, dict[str, Any]]:
    """The status and body for a task that failed or was cancelled."""
    body: dict[str, Any] = {"id": exc.task_id, "queue": exc.queue}
    if isinstance(exc, TaskCancelled):
        return CANCELLED_STATUS, {**body, "state": "cancelled", "error": "the task was cancelled"}
    error = exc.error if expose_errors and exc.error else "the task failed"
    return FAILED_STATUS, {**body, "state": "failed", "error": error, "retried": exc.retried}


def _failure(exc: TaskFailed, expose_errors: bool) -> Response[Any]:
    status, body = _failure_body(exc, expose_errors)
    return Response(body, status_code=status)


async def _of_another_type(client: Client, task_id: str, queue: str, taskdef: TaskDef[Any] | None) -> bool:
    """Whether the task is not of ``taskdef``'s type (False without a ``taskdef``: any type is the route's)."""
    if taskdef is None:
        return False
    raw = await client.redis.hget(client.schema.queue(queue).task(task_id), "msg")
    try:
        return not isinstance(raw, bytes) or decode_message(raw).type != taskdef.type
    except ValueError:  # a record that is no task message is no task of this type either
        return True


async def _pending(client: Client, task_id: str, queue: str, status_url: str | None) -> Response[Any]:
    """``202 Accepted``: the task's current state and where to follow it."""
    state = await client.redis.hget(client.schema.queue(queue).task(task_id), "state")
    body: dict[str, Any] = {"id": task_id, "queue": queue, "state": text(state) or "pending"}
    headers: dict[str, str] = {}
    if status_url is not None:
        # any string is a task id (an app's idempotency key: "order/42", "50% off"): escaped as one path segment
        url = status_url.format(id=quote(task_id, safe=""), queue=quote(queue, safe=""))
        body["status_url"] = headers["Location"] = url
    return Response(body, status_code=202, headers=headers)
