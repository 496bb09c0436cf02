"""Task definitions: :class:`TaskDef` binds a stable type string, a payload type, a handler and defaults.

A payload is a frozen, kw-only ``msgspec.Struct`` that travels as JSON, so Go services can produce and
read it. ``bytes`` is accepted as a payload type for opaque payloads (binary data shared with Go).

:class:`EnqueueOptions` names the options an enqueue may give (:class:`CronOptions` those of a cron entry),
so a type checker rejects a misspelt one; :mod:`framework.client.options` checks and merges them.
"""

from __future__ import annotations

import builtins
import inspect
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeAlias, TypedDict, TypeVar, Unpack

import msgspec

from framework.errors import PayloadTypeError

if TYPE_CHECKING:
    from framework.client.client import Client, SyncClient, TaskInfo
    from framework.context import TaskContext

__all__ = (
    "CronEntry",
    "CronOptions",
    "EnqueueOptions",
    "Handler",
    "Middleware",
    "PayloadDecodeError",
    "RetryDelay",
    "Run",
    "TaskDef",
)

P = TypeVar("P")

Handler: TypeAlias = Callable[["TaskContext", P], "Awaitable[None] | None"]
"""A handler: ``async def h(ctx, payload) -> None`` (runs on the loop) or a plain function (runs in a thread)."""

RetryDelay: TypeAlias = Callable[[int, BaseException], float]
"""A retry policy: (retries so far, the error) -> seconds to wait."""

Run: TypeAlias = Callable[["TaskContext", Any], Awaitable[None]]
"""One run of a task as middleware sees it: ``async (ctx, payload) -> None``."""

Middleware: TypeAlias = Callable[[Run], Run]
"""Wraps a run in another (see :mod:`framework.worker.middleware` for the order the chain is built in)."""

_encoder = msgspec.json.Encoder()


class PayloadDecodeError(PayloadTypeError):
    """A payload's bytes do not decode into the task's payload type. The message names the field."""


class CronOptions(TypedDict, total=False):
    """The enqueue options of a cron entry: how each of its tasks runs. Every key is optional.

    ``None`` means "not given": the task type's default applies, then the queue's (settings), then asynq's.

    Attributes:
        queue: the queue.
        max_retry: retries before the task is archived (asynq: 25).
        timeout: seconds (or a timedelta) the handler may run (asynq: 1800).
        retention: seconds (or a timedelta) a completed task is kept (0 = deleted on success).
        headers: string headers carried with the task.
    """

    queue: str | None
    max_retry: int | None
    timeout: float | timedelta | None
    retention: float | timedelta | None
    headers: Mapping[str, str] | None


class EnqueueOptions(CronOptions, total=False):
    """The options of one enqueue (``client.enqueue(task, payload, **options)``). Every key is optional.

    Those of :class:`CronOptions`, and those that only make sense for a single task. A type checker rejects
    a name not listed here; at run time an unknown name raises :class:`~framework.errors.InvalidOption`.
    ``None`` means "not given", as for :class:`CronOptions`.

    Attributes:
        deadline: when the task must have finished: a timezone-aware datetime or Unix seconds. With a
            deadline, ``timeout=0`` means only the deadline applies.
        process_at: when the task becomes ready: a timezone-aware datetime or Unix seconds (default: now).
        process_in: seconds (or a timedelta) from now until the task becomes ready; not with ``process_at``.
        unique: seconds (or a timedelta) a lock on the task's type and payload holds, refusing a duplicate
            (0 or False = not unique, even when the task type's default is).
        task_id: the task's id, unique in its queue (default: a new UUID4).
        group: the aggregation group (empty = none).
    """

    deadline: datetime | float | None
    process_at: datetime | float | None
    process_in: float | timedelta | None
    unique: float | timedelta | None
    task_id: str | None
    group: str | None


@dataclass(frozen=True, slots=True, eq=False)
class TaskDef(Generic[P]):
    """A task type: its stable name, payload type, handler and default options.

    Attributes:
        type: the public, stable type string (``"email:send"``); Go services route by it.
        payload: the payload type, a ``msgspec.Struct`` subclass (or ``bytes`` for opaque payloads).
        handler: the function that runs the task.
        queue: default queue.
        max_retry: default retries before archiving (asynq: 25).
        timeout: default seconds the handler may run (asynq: 1800).
        retention: default seconds to keep a completed task (0 = delete at once).
        unique: default uniqueness TTL in seconds (0 = not unique).
        retry_delay: this task type's retry policy; default is the worker's.
        description: one line shown by ``framework plugins`` and the dashboard.
    """

    type: str
    payload: builtins.type[P]
    handler: Handler[P]
    queue: str = "default"
    max_retry: int | None = None
    timeout: float | None = None
    retention: float | None = None
    unique: float | None = None
    retry_delay: RetryDelay | None = None
    description: str = ""
    _decoder: msgspec.json.Decoder[Any] | None = field(init=False, repr=False)
    is_async: bool = field(init=False, repr=False)
    """Whether the handler is a coroutine function (it runs on the loop; a plain function runs in a thread)."""

    def __post_init__(self) -> None:
        if not self.type or not self.type.strip():
            raise ValueError("a task type must be a non-blank string")
        if self.payload is not bytes and not (
            isinstance(self.payload, type) and issubclass(self.payload, msgspec.Struct)
        ):
            raise TypeError(f"task {self.type!r}: payload type must be a msgspec.Struct subclass or bytes")
        # derived from the fields, not constructor arguments: set once here (the dataclass is frozen)
        object.__setattr__(self, "_decoder", None if self.payload is bytes else msgspec.json.Decoder(self.payload))
        object.__setattr__(self, "is_async", inspect.iscoroutinefunction(self.handler))

    def encode(self, payload: P) -> bytes:
        """Encode a payload to the bytes stored in the task message.

        Raises:
            PayloadTypeError: ``payload`` is not an instance of this task's payload type.
        """
        if type(payload) is not self.payload and not isinstance(payload, self.payload):
            raise PayloadTypeError(
                f"task {self.type!r} takes a {self.payload.__name__} payload, got {type(payload).__name__}"
            )
        if self.payload is bytes:
            return bytes(payload)  # type: ignore[call-overload,no-any-return]
        return _encoder.encode(payload)

    def decode(self, data: bytes) -> P:
        """Decode stored bytes into the payload type.

        Raises:
            PayloadDecodeError: the bytes are not valid for the payload type; the message names the field.
        """
        if self._decoder is None:
            return data  # type: ignore[return-value]
        try:
            return self._decoder.decode(data)  # type: ignore[no-any-return]
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise PayloadDecodeError(
                f"payload of task {self.type!r} does not decode into {self.payload.__name__}: {exc}"
            ) from exc

    def convert(self, data: Any) -> P:
        """Build a payload from JSON-compatible data (CLI, cron settings), checked against the type.

        Raises:
            PayloadDecodeError: ``data`` does not fit the payload type; the message names the field.
        """
        if self.payload is bytes:
            if isinstance(data, bytes):
                return data  # type: ignore[return-value]
            return _encoder.encode(data)  # type: ignore[return-value]
        try:
            return msgspec.convert(data, self.payload)
        except msgspec.ValidationError as exc:
            raise PayloadDecodeError(
                f"payload of task {self.type!r} does not fit {self.payload.__name__}: {exc}"
            ) from exc

    def enqueue(self, client: Client, payload: P, **options: Unpack[EnqueueOptions]) -> Coroutine[Any, Any, TaskInfo]:
        """Enqueue ``payload`` through ``client`` (await the result); see ``Client.enqueue``."""
        return client.enqueue(self, payload, **options)

    def enqueue_sync(self, client: SyncClient, payload: P, **options: Unpack[EnqueueOptions]) -> TaskInfo:
        """Enqueue from code without an event loop; see :class:`framework.client.client.SyncClient`."""
        return client.enqueue(self, payload, **options)


@dataclass(frozen=True, slots=True)
class CronEntry:
    """A periodic task. Declared by plugins (``register_cron_entries``) or in settings.

    Attributes:
        name: stable name; with the spec it identifies the entry across restarts and replicas.
        spec: five-field cron spec, ``@hourly``/``@daily``/``@weekly``/``@monthly`` or ``@every <duration>``.
        task: the task type to enqueue (a :class:`TaskDef` or its type string).
        payload: the payload (an instance of the task's payload type, or JSON-compatible data).
        tz: IANA time zone the spec is read in.
        options: enqueue options of every tick (:class:`CronOptions`: queue, max_retry, timeout, ...).
        run_missed: after downtime, run the most recent missed tick once (default: skip missed ticks).
        source: the plugin that declared it; set by the framework.
    """

    name: str
    spec: str
    task: TaskDef[Any] | str
    payload: Any = None
    tz: str = "UTC"
    options: CronOptions = field(default_factory=CronOptions)
    run_missed: bool = False
    source: str = ""

    @property
    def task_type(self) -> str:
        """The task type string."""
        return self.task if isinstance(self.task, str) else self.task.type
