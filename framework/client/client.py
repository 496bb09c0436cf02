"""The enqueue client: builds task messages from task definitions and options, and stores them.

:class:`Client` is async. Beside it: its values (:mod:`framework.client.values`: :class:`TaskCall`,
:class:`TaskInfo`), the bulk path of :meth:`Client.enqueue_many` (:mod:`framework.client.bulk`), and
:class:`~framework.client.sync.SyncClient` for code without an event loop.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, Unpack

import msgspec
from redis.exceptions import ConnectionError, ResponseError, TimeoutError  # noqa: A004

from framework.broker.broker import RedisBroker
from framework.client import workflows
from framework.client.bulk import BulkEnqueue
from framework.client.options import ResolvedOptions, refusal, resolve_options
from framework.client.prepared import PREPARED_CACHE, UNPREPARED, PlainEnqueue, eligible, new_task_id, new_task_ids
from framework.client.values import Job, TaskCall, TaskInfo
from framework.client.waiting import Outcome, Waiters
from framework.client.workflows import WorkflowInfo
from framework.clock import Clock, SystemClock
from framework.errors import (
    BatchInterrupted,
    DuplicateTask,
    EnqueueFailed,
    FrameworkError,
    InvalidOption,
    PayloadTooLarge,
    PayloadTypeError,
    RedisUnavailable,
    TaskAggregated,
    TaskCancelled,
    TaskDeleted,
    TaskFailed,
    TaskIdConflict,
    TaskNotFound,
    TaskUnconfirmed,
    WaitTimeout,
)
from framework.protocol.keys import Schema
from framework.protocol.message import TaskState, decode_message, encode_message, new_message
from framework.settings import MAX_PAYLOAD_SIZE
from framework.task import EnqueueOptions, TaskDef
from framework.transport.connection import describe_redis, open_redis, redact_url
from framework.transport.lean.errors import REDIRECTIONS, ReplyError

if TYPE_CHECKING:
    from collections.abc import Callable

    from redis.asyncio import Redis

    from framework.registry import Registry
    from framework.settings import Settings
    from framework.transport.lean.blocking import BlockingConnection
    from framework.workflow import Workflow

__all__ = ("Client", "Job", "TaskCall", "TaskInfo")


_json = msgspec.json.Encoder()


class _Built(NamedTuple):
    """One task's message as :meth:`Client._message` builds it."""

    opts: ResolvedOptions
    task_type: str
    task_id: str
    payload: bytes
    message: bytes
    unique_key: str
    unique_ttl: int
    now: float


class Client:
    """Enqueues tasks.

    Every enqueue refuses a payload larger than ``settings.max_payload_size`` bytes (4 MiB without
    settings; 0 = no limit) with :class:`~framework.errors.PayloadTooLarge`, before anything is sent.

    Args:
        redis: an asyncio Redis client.
        schema: the key schema (default: asynq's).
        settings: settings for queue defaults and the payload limit (optional).
        registry: known task types, used when a type is given as a string (optional).
        clock: where time comes from.
        url: the Redis URL, only used to name the server in errors.
        wrap_broker: called with the broker the client builds, returns the one to use instead; tests wrap it
            to inject faults (:class:`framework.testing.FaultyBroker`).
        poll_interval: seconds between the slow polls that see tasks finished by workers that announce
            nothing (Go's), while someone waits (see :meth:`wait`); None: no poll, our workers' announcements only.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        schema: Schema | None = None,
        settings: Settings | None = None,
        registry: Registry | None = None,
        clock: Clock | None = None,
        url: str = "",
        wrap_broker: Callable[[RedisBroker], RedisBroker] | None = None,
        poll_interval: float | None = 1.0,
    ) -> None:
        self.redis = redis
        self.schema = schema or Schema()
        self.settings = settings
        self.registry = registry
        self.clock = clock or SystemClock()
        self.broker = RedisBroker(redis, self.schema, self.clock)
        if wrap_broker is not None:
            self.broker = wrap_broker(self.broker)
        self.max_payload_size = settings.max_payload_size if settings is not None else MAX_PAYLOAD_SIZE
        """Largest payload in bytes an enqueue accepts (0 = no limit)."""
        self._defaults: dict[TaskDef[Any], ResolvedOptions] = {}
        self._plain: dict[Any, PlainEnqueue | None] = {}
        """Prepared plain enqueues by task type, or by task type and call-site options (None: not plain)."""
        self._bulk = BulkEnqueue(self)
        self._result_types: dict[str, TaskDef[Any]] = {}
        """Task types this client enqueued through a definition with a result type: how :meth:`wait` decodes
        their results when no ``taskdef`` is given and the registry does not know the type."""
        self._url = redact_url(url) if url else _describe_connection(redis)
        self.waiters = Waiters(redis, self.schema, poll_interval)
        """The outcome channels this client listens to while someone waits (:mod:`framework.client.waiting`)."""
        self.closed = False
        """:meth:`close` was called: every later call raises (a closed client would quietly open connections)."""

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> Client:
        """Create a client with its own connection pool to ``url``."""
        return cls(open_redis(url), url=url, **kwargs)

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> Client:
        """Create a client for the app's Redis: ``settings.redis_url``, or the embedded Valkey.

        The embedded server is started (or found running) in the data directory when no URL is set,
        so scripts share the queues of ``framework run`` in the same directory.
        """
        from framework.logging import configure_default_logging  # noqa: PLC0415
        from framework.transport.connection import resolve_redis_url  # noqa: PLC0415

        configure_default_logging(settings.log_level, settings.log_format)  # a plain script's client
        url = resolve_redis_url(settings)
        return cls(open_redis(url), url=url, schema=Schema(settings.namespace), settings=settings, **kwargs)

    async def close(self) -> None:
        """Close the connection pool (and the hot-path connection); waiters still waiting get an error.

        Closing twice does nothing more. Any later call raises :class:`~framework.errors.FrameworkError`.
        """
        self.closed = True
        await self.waiters.close()
        self.broker.close()
        await self.redis.aclose()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _check_open(self) -> None:
        """Raise when the client was closed (before anything is built or sent)."""
        if self.closed:
            raise FrameworkError(f"this client of {self._url} was closed: make a new one")

    # -- building -----------------------------------------------------------------------------

    def _resolve(self, task: TaskDef[Any] | str, payload: Any) -> tuple[str, TaskDef[Any] | None, bytes]:
        if isinstance(task, TaskDef):
            if task.result is not None:
                self._remember(task)
            return task.type, task, task.encode(payload)
        if not isinstance(task, str) or not task.strip():
            raise PayloadTypeError(f"a task must be a TaskDef or a non-blank type string, got {task!r}")
        taskdef = self._taskdef_of(task)
        if taskdef is not None:
            if not isinstance(payload, taskdef.payload):
                payload = taskdef.convert(payload)
            return task, taskdef, taskdef.encode(payload)
        if payload is None:
            return task, None, b""
        if isinstance(payload, bytes | bytearray | memoryview):
            return task, None, bytes(payload)
        try:
            return task, None, _json.encode(payload)
        except (TypeError, ValueError, RecursionError, msgspec.EncodeError) as exc:  # ValueError: a lone surrogate
            raise PayloadTypeError(f"the payload of a {task!r} task cannot be encoded as JSON: {exc}") from exc

    def _remember(self, taskdef: TaskDef[Any]) -> None:
        """Keep ``taskdef`` as the definition of its type's results (at most ``PREPARED_CACHE`` types)."""
        known = self._result_types
        if known.get(taskdef.type) is not taskdef:
            if len(known) >= PREPARED_CACHE:
                known.clear()
            known[taskdef.type] = taskdef

    def _result_taskdef(self, task_type: str) -> TaskDef[Any] | None:
        """The definition that decodes results of ``task_type``: the registry's, else one this client enqueued."""
        taskdef = self.registry.get(task_type) if self.registry is not None else None
        return taskdef if taskdef is not None else self._result_types.get(task_type)

    def _check_size(self, task_type: str, data: bytes) -> None:
        """Refuse a payload over the limit (:class:`~framework.errors.PayloadTooLarge`)."""
        limit = self.max_payload_size
        if limit and len(data) > limit:
            raise PayloadTooLarge(
                f"the payload of a {task_type!r} task is {len(data):,} bytes, over the limit of {limit:,} bytes "
                "(setting max_payload_size; 0 = no limit)"
            )

    def _taskdef_of(self, task: TaskDef[Any] | str) -> TaskDef[Any] | None:
        """``task`` itself, or the registered definition of a type string (None when the client knows none)."""
        if isinstance(task, TaskDef):
            return task
        return self.registry.get(task) if self.registry is not None else None

    def queue_of(self, task: TaskDef[Any] | str, queue: str | None = None) -> str:
        """The queue an enqueue of ``task`` goes to: ``queue`` when given, else the task type's default."""
        return queue or self._options(self._taskdef_of(task), {}, self.clock.now()).queue

    def _options(self, taskdef: TaskDef[Any] | None, options: Mapping[str, Any], now: float) -> ResolvedOptions:
        """Resolved options; a registered task type's defaults (no call-site options) are resolved once."""
        if options or taskdef is None:
            return resolve_options(taskdef, options, self.settings, now)
        opts = self._defaults.get(taskdef)
        if opts is None:
            if len(self._defaults) >= PREPARED_CACHE:
                self._defaults.clear()
            # without call-site options nothing depends on ``now`` (no deadline, no process_at)
            opts = self._defaults[taskdef] = resolve_options(taskdef, options, self.settings, now)
        return opts

    def _message(
        self,
        task: TaskDef[Any] | str,
        payload: Any,
        options: Mapping[str, Any],
        task_id: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> _Built:
        """The message of one task, its resolved options and uniqueness lock (nothing is sent)."""
        task_type, taskdef, data = self._resolve(task, payload)
        self._check_size(task_type, data)
        now = self.clock.now()
        opts = self._options(taskdef, options, now)
        task_id = opts.task_id or task_id or new_task_id()
        qk = self.schema.queue(opts.queue)
        # Go's nil payload (no payload at all) locks ``...:unique:<type>:``; an empty one locks md5("")
        no_payload = taskdef is None and payload is None
        unique_key = qk.unique(task_type, None if no_payload else data) if opts.unique_ttl else ""
        msg = new_message(
            type=task_type,
            payload=data,
            id=task_id,
            queue=opts.queue,
            retry=opts.max_retry,
            timeout=opts.timeout,
            deadline=opts.deadline,
            unique_key=unique_key,
            retention=opts.retention,
            group_key=opts.group,
            headers={**opts.headers, **headers} if headers else opts.headers,
        )
        unique_ttl = opts.unique_ttl
        if unique_ttl and opts.process_at is not None:
            # asynq holds the lock until the task could have run and then for the TTL (rounded up: not less)
            unique_ttl = math.ceil(opts.process_at - now) + unique_ttl
        return _Built(opts, task_type, task_id, data, encode_message(msg), unique_key, unique_ttl, now)

    def _build(
        self, task: TaskDef[Any] | str, payload: Any, options: Mapping[str, Any], task_id: str = ""
    ) -> tuple[ResolvedOptions, Any, TaskInfo]:
        built = self._message(task, payload, options, task_id)
        opts, task_type, task_id, data, now = built.opts, built.task_type, built.task_id, built.payload, built.now
        call = self.broker.prepare_enqueue(
            opts.queue,
            task_id,
            built.message,
            process_at=opts.process_at,
            unique_key=built.unique_key,
            unique_ttl=built.unique_ttl,
            group=opts.group,
        )
        if opts.process_at is not None:
            state = TaskState.SCHEDULED
        elif opts.group:
            state = TaskState.AGGREGATING
        else:
            state = TaskState.PENDING
        info = TaskInfo(
            id=task_id,
            queue=opts.queue,
            type=task_type,
            state=state,
            next_process_at=float(opts.process_at) if opts.process_at is not None else now,
            max_retry=opts.max_retry,
            timeout=opts.timeout,
            deadline=opts.deadline,
            retention=opts.retention,
            group=opts.group,
            headers=dict(opts.headers),
            payload=data,
        )
        return opts, call, info

    def _unreachable(self, exc: BaseException) -> RedisUnavailable:
        """The error for a lost link to Redis; a Cluster's slot map is forgotten (the node may be gone for good)."""
        lean = self.broker.lean
        if lean is not None:
            lean.forget()
        return RedisUnavailable(f"cannot reach Redis at {self._url}: {exc}")

    @contextlib.contextmanager
    def _redis_faults(self) -> Iterator[None]:
        """Report a Redis or socket fault in the block as the enqueue does (:class:`RedisUnavailable`).

        Used by waits and by the workflow calls (:mod:`framework.client.workflows`). A waiter's commands go through
        redis-py, whose timeout (5 s) ends a command Redis holds longer (a
        ``CLIENT PAUSE``, a slow command) with redis-py's own ``TimeoutError``, which callers would take for
        neither a lost link nor a :class:`WaitTimeout`. The framework's own errors pass unchanged (``WaitTimeout``
        and ``RedisUnavailable`` are ``OSError`` subclasses).
        """
        try:
            yield
        except FrameworkError:
            raise
        except (ConnectionError, TimeoutError, OSError) as exc:
            raise self._unreachable(exc) from exc

    def _check(self, code: Any, info: TaskInfo) -> TaskInfo:
        if isinstance(code, ConnectionError | TimeoutError | OSError):
            raise self._unreachable(code) from code
        if isinstance(code, BaseException):
            raise EnqueueFailed(f"enqueue of task {info.id!r} failed: {refusal(code, info.queue)}") from code
        if code == 1:
            return info
        if code == 0:
            raise TaskIdConflict(f"a task with id {info.id!r} already exists in queue {info.queue!r}")
        raise DuplicateTask(
            f"a {info.type!r} task with the same payload is already queued in {info.queue!r} (unique lock held)"
        )

    # -- enqueueing ------------------------------------------------------------------------------

    async def enqueue(
        self, task: TaskDef[Any] | str, payload: Any = None, **options: Unpack[EnqueueOptions]
    ) -> TaskInfo:
        """Enqueue one task.

        Args:
            task: a :class:`TaskDef` (typed payload) or a type string (registered, or raw bytes/JSON).
            payload: the payload; for a TaskDef, an instance of its payload type.
            **options: :class:`~framework.task.EnqueueOptions`: ``queue``, ``max_retry``, ``timeout`` (s),
                ``deadline`` (datetime or Unix s), ``process_at`` (datetime or Unix s), ``process_in`` (s or
                timedelta), ``unique`` (TTL), ``retention`` (s), ``task_id``, ``group``, ``headers`` (dict).

        Raises:
            PayloadTypeError: the payload does not fit the task's payload type (nothing is sent).
            PayloadTooLarge: the encoded payload is over ``max_payload_size`` (nothing is sent).
            InvalidOption: an option is invalid, or unknown (its name is in the message).
            DuplicateTask: ``unique`` and the same task is already queued.
            TaskIdConflict: ``task_id`` is already used in the queue.
            EnqueueFailed: Redis answered with an error (out of memory, a key of the wrong type...).
            RedisUnavailable: Redis cannot be reached.
            FrameworkError: the client was closed.
        """
        if self.closed:
            self._check_open()
        if not options and isinstance(task, TaskDef):
            plain = self._plain_for(task)
            if plain is not None:
                return await self._enqueue_plain(plain, payload)
        opts, (script, keys, args), info = self._build(task, payload, options)
        try:
            if opts.queue not in self.broker._known_queues:
                await self.broker.register_queues([opts.queue])
            code = await self.broker.hot.evalsha(script, keys, args)
        except (ConnectionError, TimeoutError, OSError) as exc:
            raise self._unreachable(exc) from exc
        except ResponseError as exc:  # Redis refused the call (out of memory...): EnqueueFailed
            code = exc
        return self._check(code, info)

    def _plain_for(self, taskdef: TaskDef[Any]) -> PlainEnqueue | None:
        """The fast path for ``taskdef`` without call-site options (prepared once), or None when it has none."""
        plain = self._plain.get(taskdef, UNPREPARED)
        return self._prepare_plain(taskdef) if plain is UNPREPARED else plain

    def _prepare_plain(self, taskdef: TaskDef[Any]) -> PlainEnqueue | None:
        """The fast path for ``taskdef`` without call-site options, or None when its defaults need the general one."""
        plain = None
        if taskdef.result is not None:
            self._remember(taskdef)
        if self.broker.lean is not None:
            opts = self._options(taskdef, {}, self.clock.now())
            if eligible(opts):
                plain = PlainEnqueue(self.broker, taskdef, opts)
        return self._keep_plain(taskdef, plain)

    def _keep_plain(self, key: Any, plain: PlainEnqueue | None) -> PlainEnqueue | None:
        """Cache ``plain`` under ``key`` (a task type, or a task type and call-site options); returns it."""
        if len(self._plain) >= PREPARED_CACHE:
            self._plain.clear()
        self._plain[key] = plain
        return plain

    async def _enqueue_plain(self, plain: PlainEnqueue, payload: Any) -> TaskInfo:
        """Enqueue by the prepared fast path: the command is written first, the result built while it travels."""
        data = plain.taskdef.encode(payload)
        if self.max_payload_size and len(data) > self.max_payload_size:  # inline: no call for a payload in bounds
            self._check_size(plain.taskdef.type, data)
        now = self.clock.now()
        task_id = new_task_id()
        command = plain.command(task_id, data, now)
        try:
            conn = plain.connection() or await plain.open()
            fut, idle = conn.send_raw(command)
            info = self._plain_info(plain, task_id, data, now)
            if idle and conn.spin:  # conn.reply(fut, idle), one coroutine fewer
                await conn._poll_if_quiet(fut)
            code = await fut
            if type(code) is ReplyError:
                code = await plain.after_error(conn, code, command)
        except (ConnectionError, TimeoutError, OSError) as exc:
            raise self._unreachable(exc) from exc
        except ResponseError as exc:  # Redis refused the call (out of memory...), or registering the queue
            return self._check(exc, self._plain_info(plain, task_id, data, now))
        return self._check(code, info)

    def _enqueue_blocking(self, plain: PlainEnqueue, payload: Any, conn: BlockingConnection) -> TaskInfo:
        """:meth:`_enqueue_plain` from synchronous code: the same command over the calling thread's blocking socket."""
        data = plain.taskdef.encode(payload)
        if self.max_payload_size and len(data) > self.max_payload_size:
            self._check_size(plain.taskdef.type, data)
        now = self.clock.now()
        task_id = new_task_id()
        command = plain.command(task_id, data, now)
        try:
            code = plain.execute_blocking(conn, command)
        except (ConnectionError, TimeoutError, OSError) as exc:
            raise self._unreachable(exc) from exc
        except REDIRECTIONS:
            raise  # a Cluster's refusal: the caller sends it through the loop
        except ResponseError as exc:  # Redis refused the call (out of memory...): EnqueueFailed
            code = exc
        return self._check(code, self._plain_info(plain, task_id, data, now))

    @staticmethod
    def _plain_info(plain: PlainEnqueue, task_id: str, data: bytes, now: float) -> TaskInfo:
        opts = plain.opts
        return TaskInfo(
            id=task_id,
            queue=opts.queue,
            type=plain.taskdef.type,
            state=TaskState.PENDING,
            next_process_at=now,
            max_retry=opts.max_retry,
            timeout=opts.timeout,
            deadline=0,
            retention=opts.retention,
            group="",
            headers={},
            payload=data,
        )

    async def enqueue_many(self, tasks: Iterable[TaskCall]) -> list[TaskInfo | FrameworkError]:
        """Enqueue many tasks in one round trip.

        Every task is validated before anything is sent; a bad payload or option raises at once and
        stores nothing. Each stored task is atomic on its own; the result lists, in call order, a
        :class:`TaskInfo` per stored task, or that task's own error: :class:`DuplicateTask`,
        :class:`TaskIdConflict`, or :class:`EnqueueFailed` when Redis answered its call with an error (a
        queue key of the wrong type...; the tasks of other calls are stored all the same), or refused to
        register the batch's queues (out of memory: then every task, none stored).

        Args:
            tasks: the tasks, one :class:`TaskCall` each.

        Raises:
            PayloadTypeError, PayloadTooLarge, InvalidOption: a task is invalid (nothing was sent).
            RedisUnavailable: Redis cannot be reached (nothing was sent).
            BatchInterrupted: the link dropped part-way (a :class:`RedisUnavailable`). Its ``results`` are
                what this method would have returned, with a :class:`TaskUnconfirmed` in the place of each
                task whose answer never came: stored whole or not at all, nobody knows which. Send those again
                with ``task_id=unconfirmed.info.id`` (a stored one comes back as :class:`TaskIdConflict`), or
                as they were when ``info`` is None (they were never sent).
        """
        self._check_open()
        calls = list(tasks)
        plains = self._bulk.plan(calls)
        if plains is not None:
            return await self._bulk.run(calls, plains)
        ids = new_task_ids(len(calls))
        built = [
            self._build(call.task, call.payload, call.options, task_id)
            for call, task_id in zip(calls, ids, strict=True)
        ]
        if not built:
            return []
        infos = [info for _, _, info in built]
        try:
            codes = await self.broker.enqueue_many([b[1] for b in built], {b[0].queue for b in built})
        except (ConnectionError, TimeoutError, OSError) as exc:  # which calls ran is not known: none answered
            codes = [exc] * len(built)
        except ResponseError as exc:  # registering the queues was refused (out of memory...): nothing was sent
            codes = [exc] * len(built)
        return self._checked_many(codes, infos, len(infos))

    def _checked_many(self, codes: list[Any], infos: list[TaskInfo], total: int) -> list[TaskInfo | FrameworkError]:
        """Each task's :class:`TaskInfo` or its own error, for ``total`` tasks of which ``infos`` were sent.

        A code that is a connection error (no answer came) makes that task a :class:`TaskUnconfirmed`, a task
        past ``infos`` (never sent) one without ``info``, and then :class:`BatchInterrupted` is raised with them
        all, unless nothing was sent at all (plain :class:`RedisUnavailable`).
        """
        out: list[TaskInfo | FrameworkError] = []
        if len(codes) == total and codes.count(1) == total:  # every task stored (the usual case)
            out += infos
            return out
        lost: BaseException | None = None
        for code, info in zip(codes, infos, strict=True):
            if isinstance(code, ConnectionError | TimeoutError | OSError):
                lost = lost or code
                out.append(TaskUnconfirmed(f"no answer for task {info.id!r}: it may or may not be stored", info))
                continue
            try:
                out.append(self._check(code, info))
            except (DuplicateTask, TaskIdConflict, EnqueueFailed) as exc:
                out.append(exc)
        if len(out) < total:
            lost = lost or ConnectionError("the link dropped before the rest were sent")
            out += [TaskUnconfirmed("not sent: it is not stored") for _ in range(total - len(out))]
        if lost is not None:
            error = self._unreachable(lost)
            if not infos:
                raise error from lost
            unknown = sum(1 for r in out if isinstance(r, TaskUnconfirmed))
            raise BatchInterrupted(f"{error}; {unknown} of {total} tasks unconfirmed", out) from lost
        return out

    # -- results ---------------------------------------------------------------------------------------

    async def wait(
        self,
        task: TaskInfo | str,
        *,
        queue: str = "default",
        timeout: float | None = None,
        taskdef: TaskDef[Any] | None = None,
    ) -> Any:
        """Wait for a task's final outcome and return its result.

        The result is what the handler returned (stored as JSON in the task's ``result`` field), decoded
        into the task's result type when the task type is known here (``taskdef``, the client's registry by
        the task's type, or a definition with a result type this client enqueued the type with), else as plain
        JSON (bytes that are not JSON come back as they are); None when the task stored no result. A retry is
        not an outcome: the waiter sees the last attempt's.

        What holds:

        * A task our workers finish is announced by the script that writes its outcome: a waiter costs no
          command while it waits. One finished by a worker that announces nothing (Go's) is seen by the
          client's slow poll (``poll_interval`` after a waiter starts, 1 s by default, then backing off to 16
          times that; three commands a poll per queue, however many wait), including one that vanished
          unannounced, which returns None: that is what a Go worker's success without retention leaves, and
          what Go's tools leave when they delete a task or aggregate a group (they announce nothing, so the
          two cannot be told apart).
        * A task deleted before it ran by the inspector (the dashboard, the CLI: ``delete_task``, ``delete_all``,
          ``delete_queue(force=True)``) raises :class:`~framework.errors.TaskDeleted`; a grouped task merged
          into an aggregate task by our aggregator raises :class:`~framework.errors.TaskAggregated`, which
          names the aggregate (wait for that one for the outcome).
        * A task with a retention can be waited for after the fact, while it is kept (completed or
          archived). One without a retention can only be waited for by someone already waiting when it
          finished (its record and result are deleted then): afterwards there is no such task.

        Args:
            task: the :class:`TaskInfo` an enqueue returned, or a task id.
            queue: the task's queue, for a task id (a TaskInfo names its own).
            timeout: seconds to wait at most (None or infinity: no limit).
            taskdef: the task's definition, to decode its result (default: looked up in the registry, then among
                the definitions this client enqueued with).

        Raises:
            TaskFailed: the task was archived (retries exhausted, or a permanent failure); it carries the
                task's error text, its retries and ``archived=True``.
            TaskCancelled: the task was cancelled (:meth:`cancel`).
            TaskDeleted: the task was deleted before it ran (a :class:`TaskCancelled`); ``queue_removed`` when
                with its queue.
            TaskAggregated: the grouped task was merged into the aggregate task ``aggregate_id`` (a
                :class:`TaskNotFound`).
            WaitTimeout: no final outcome within ``timeout`` (the task is unaffected).
            TaskNotFound: there is no such task (or it finished without a retention, or was deleted, before the
                wait began).
            ResultTypeError: the stored result does not decode into the result type.
            InvalidOption: ``timeout`` is negative, NaN or not a number (nothing is sent).
            RedisUnavailable: Redis cannot be reached, or held the waiter's first commands (its subscription,
                marker and first read) for more than redis-py's 5 s timeout (a long ``CLIENT PAUSE`` or slow
                command); the task is unaffected.
        """
        self._check_open()
        limit = _wait_limit("timeout", timeout)
        task_id, queue = (task.id, task.queue) if isinstance(task, TaskInfo) else (task, queue)
        if taskdef is None and isinstance(task, TaskInfo):
            taskdef = self._result_taskdef(task.type)
        # the timeout counts from here: a Redis that holds the waiter's first commands (a CLIENT PAUSE, a slow
        # command) takes from it rather than adding to it, but a wait always gets its look at the task (up to
        # _FIRST_LOOK seconds: timeout=0 asks whether it has finished already)
        loop = asyncio.get_running_loop()
        until = None if limit is None else loop.time() + limit
        look_until = None if until is None else max(until, loop.time() + _FIRST_LOOK)
        try:
            async with asyncio.timeout_at(look_until):
                with self._redis_faults():
                    watch = await self.waiters.watch(queue, task_id, limit)
        except builtins.TimeoutError:
            raise _wait_timeout(task_id, queue, limit) from None
        try:
            try:
                async with asyncio.timeout_at(look_until):
                    with self._redis_faults():
                        found = await self.waiters.check(watch, missing_is_outcome=False)
            except builtins.TimeoutError:
                raise _wait_timeout(task_id, queue, limit) from None
            if not found and not watch.future.done():
                raise TaskNotFound(
                    f"no task {task_id!r} in queue {queue!r} (a task without retention is gone once it finished)"
                )
            watch.ready = True
            left = None if until is None else max(0.0, until - loop.time())
            outcome = await self._outcome(watch.future, task_id, queue, left, limit)
        finally:
            self.waiters.release(watch)
        return self._result(outcome, task_id, queue, taskdef)

    async def apply(
        self,
        task: TaskDef[Any] | str,
        payload: Any = None,
        *,
        wait_timeout: float | None = None,
        **options: Unpack[EnqueueOptions],
    ) -> Any:
        """Enqueue a task and wait for its result: :meth:`enqueue` then :meth:`wait`, without a race.

        The waiter listens before the task is stored, so even a task without retention that finishes at
        once is seen. Same arguments as :meth:`enqueue` (whose ``timeout`` is the handler's), results and
        errors as :meth:`wait`; ``wait_timeout`` is :meth:`wait`'s ``timeout``, counted from the enqueue.
        On timeout the task stays queued (cancel it with :meth:`cancel`). The options and ``wait_timeout`` are
        checked before anything is sent.
        """
        self._check_open()
        limit = _wait_limit("wait_timeout", wait_timeout)
        taskdef = self._taskdef_of(task)
        opts = self._options(taskdef, options, self.clock.now())
        task_id = opts.task_id or new_task_id()
        options["task_id"] = task_id
        with self._redis_faults():
            watch = await self.waiters.watch(opts.queue, task_id, limit)
        try:
            info = await self.enqueue(task, payload, **options)
            watch.ready = True
            outcome = await self._outcome(watch.future, task_id, info.queue, limit)
        finally:
            self.waiters.release(watch)
        return self._result(outcome, task_id, info.queue, taskdef)

    # -- workflows -------------------------------------------------------------------------------------

    async def start_workflow(
        self,
        workflow: Workflow,
        *,
        workflow_id: str | None = None,
        queue: str | None = None,
        retention: float = workflows.RETENTION,
        keep_failed: float = workflows.KEEP_FAILED,
    ) -> WorkflowInfo:
        """Start a workflow: checked, stored whole, its first steps released as tasks.

        The workflow is a :func:`~framework.workflow.chain`, ``group``, ``chord`` or a
        :class:`~framework.workflow.Workflow`.

        Args:
            workflow: the workflow.
            workflow_id: its id (default: a new UUID4); each step's task id is ``<id>-<n>``.
            queue: its home queue, where its records live (default: the first step's queue).
            retention: seconds a succeeded workflow is kept (its steps' states and results).
            keep_failed: seconds a failed or cancelled one is kept once none of its steps runs.

        Raises:
            InvalidWorkflow: the workflow does not check (see :meth:`~framework.workflow.Workflow.plan`),
                ``workflow_id`` is taken, or ``retention``/``keep_failed`` is not seconds from 0 to 100 years.
            DuplicateTask: a first step is unique and its lock is held.
            TaskIdConflict: a step's task id is taken.
            RedisUnavailable: Redis cannot be reached.
        """
        self._check_open()
        return await workflows.start(
            self, workflow, workflow_id=workflow_id, queue=queue, retention=retention, keep_failed=keep_failed
        )

    async def wait_workflow(
        self, workflow: WorkflowInfo | str, *, queue: str = "default", timeout: float | None = None
    ) -> Any:
        """Wait for a workflow to end and return its result.

        The result is its final step's result, or the list of the final steps' results when it ends in a
        group (decoded into their tasks' result types when known: the workflow was started here, or the
        task types are in this client's registry).

        Raises:
            WorkflowFailed: it failed (a step was archived or lost; ``.error`` names it) or was cancelled.
            WorkflowNotFound: no such workflow under ``queue`` (its home queue).
            WaitTimeout: it did not end within ``timeout`` seconds (it goes on).
            RedisUnavailable: Redis cannot be reached (only a Redis or socket fault; never the above).
        """
        self._check_open()
        return await workflows.wait(self, workflow, queue=queue, timeout=_wait_limit("timeout", timeout))

    async def run_workflow(self, workflow: Workflow, *, wait_timeout: float | None = None, **start: Any) -> Any:
        """Start ``workflow`` and wait for its result (see :meth:`start_workflow` and :meth:`wait_workflow`)."""
        info = await self.start_workflow(workflow, **start)
        return await self.wait_workflow(info, timeout=wait_timeout)

    async def cancel_workflow(self, workflow: WorkflowInfo | str, *, queue: str = "default") -> str:
        """Cancel a workflow: steps not yet running are deleted, running ones asked to stop, waiting ones dropped.

        Returns:
            Its status before (``running``, ``failed``; ``succeeded`` or ``cancelled``: nothing changed).

        Raises:
            WorkflowNotFound: no such workflow under ``queue``.
        """
        self._check_open()
        status, _, _ = await workflows.cancel(self, workflow, queue=queue)
        return status

    async def retry_workflow(self, workflow: WorkflowInfo | str, *, queue: str = "default") -> int:
        """Resume a failed or cancelled workflow: its failed, lost and cancelled steps run again.

        Returns:
            How many steps run again.
        """
        self._check_open()
        return await workflows.retry(self, workflow, queue=queue)

    async def cancel(self, task: TaskInfo | str, *, queue: str = "default") -> str:
        """Cancel a task for its caller.

        One that has not run yet (pending, scheduled, retry, aggregating) is deleted, and its waiters get
        :class:`~framework.errors.TaskCancelled`. A running one is asked to stop through asynq's cancel
        channel (as ``Inspector.cancel``); our worker then archives it with a ``TaskCancelled`` error instead
        of retrying it (a Go worker retries it, as asynq does), and its waiters get ``TaskCancelled``.

        Args:
            task: the :class:`TaskInfo` an enqueue returned, or a task id.
            queue: the task's queue, for a task id.

        Returns:
            ``"deleted"``, ``"cancelling"`` (it was running), or the state of a task that had already
            finished (``"completed"``, ``"archived"``: nothing was changed).

        Raises:
            TaskNotFound: there is no such task.
        """
        self._check_open()
        task_id, queue = (task.id, task.queue) if isinstance(task, TaskInfo) else (task, queue)
        try:
            answer = await self.broker.cancel(queue, task_id)
        except (ConnectionError, TimeoutError, OSError) as exc:
            raise self._unreachable(exc) from exc
        if not answer:
            raise TaskNotFound(f"no task {task_id!r} in queue {queue!r}")
        return answer

    @staticmethod
    async def _outcome(
        future: asyncio.Future[Outcome], task_id: str, queue: str, timeout: float | None, limit: float | None = None
    ) -> Outcome:
        """The outcome, within ``timeout`` seconds (what is left of the caller's ``limit``, which the error names)."""
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except builtins.TimeoutError:  # the module's TimeoutError is redis-py's
            raise _wait_timeout(task_id, queue, timeout if limit is None else limit) from None

    def _result(self, outcome: Outcome, task_id: str, queue: str, taskdef: TaskDef[Any] | None) -> Any:
        """The result an outcome carries, decoded; or the error it stands for."""
        if outcome.kind == "cancelled":
            raise TaskCancelled(f"task {task_id!r} was cancelled before it ran", task_id=task_id, queue=queue)
        if outcome.kind == "deleted":
            removed = outcome.detail == "queue"
            how = f"with its queue {queue!r} (a forced queue removal)" if removed else f"from queue {queue!r}"
            raise TaskDeleted(
                f"task {task_id!r} was deleted {how} before it ran: it will not run",
                task_id=task_id,
                queue=queue,
                queue_removed=removed,
            )
        if outcome.kind == "aggregated":
            raise TaskAggregated(
                f"task {task_id!r} in queue {queue!r} was merged into aggregate task {outcome.detail!r}: it will not"
                " run by itself; its outcome is the aggregate task's",
                task_id=task_id,
                queue=queue,
                aggregate_id=outcome.detail,
            )
        msg = decode_message(outcome.msg) if outcome.msg else None
        if taskdef is None and msg is not None:
            taskdef = self._result_taskdef(msg.type)
        if outcome.kind == "archived":
            error = msg.error_msg if msg is not None else ""
            kind = TaskCancelled if error.startswith(f"{TaskCancelled.__name__}:") else TaskFailed
            why = error if msg is not None else "its record was deleted before its error could be read"
            raise kind(
                f"task {task_id!r} in queue {queue!r} was archived: {why}",
                task_id=task_id,
                queue=queue,
                error=error,
                retried=msg.retried if msg is not None else 0,
                archived=True,
            )
        data = outcome.result
        if data is None:
            return None
        if taskdef is not None and taskdef.result is not None:
            return taskdef.decode_result(data)
        try:  # no result type: plain JSON, as when the task type is not known here
            return msgspec.json.decode(data)
        except msgspec.DecodeError:
            return data  # raw bytes a handler stored with ctx.write_result


_FIRST_LOOK = 1.0
"""Seconds a wait may spend on its first look at the task (subscribing, its marker, reading the record), however
short its timeout: ``timeout=0`` asks whether the task has finished already, which takes a round trip."""


def _wait_timeout(task_id: str, queue: str, limit: float | None) -> WaitTimeout:
    """The error of a wait that saw no final outcome within ``limit`` seconds."""
    return WaitTimeout(
        f"task {task_id!r} in queue {queue!r} had no final outcome within {limit:g} s", task_id=task_id, queue=queue
    )


def _wait_limit(name: str, value: float | None) -> float | None:
    """Seconds a wait may last, checked: None or infinity mean no limit.

    Raises:
        InvalidOption: ``value`` is not a number, is NaN or is negative.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value) or value < 0:
        raise InvalidOption(f"{name}={value!r} is invalid: expected seconds (a number from 0) or None for no limit")
    return None if math.isinf(value) else float(value)


def _describe_connection(redis: Redis) -> str:
    return describe_redis(redis)  # a single server, a Cluster (no connection_pool) or a Sentinel primary
