"""Task definitions: :class:`TaskDef` binds a stable type string, a payload type, a handler and defaults.

A payload is a frozen, kw-only ``msgspec.Struct`` that travels as JSON, so Go services can produce and
read it. ``bytes`` is accepted as a payload type for opaque payloads (binary data shared with Go).

:class:`EnqueueOptions` names the options an enqueue may give (:class:`CronOptions` those of a cron entry),
so a type checker rejects a misspelt one; :mod:`framework.client.options` checks and merges them.
"""

from __future__ import annotations

import builtins
import inspect
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeAlias, TypedDict, TypeVar, Unpack

import msgspec

from framework.errors import PayloadTypeError, ResultTypeError
from framework.limits import Limit

if TYPE_CHECKING:
    from framework.client.client import Client, TaskInfo
    from framework.client.sync import SyncClient
    from framework.context import TaskContext

__all__ = (
    "CronEntry",
    "CronOptions",
    "EnqueueOptions",
    "Handler",
    "Middleware",
    "OnFailure",
    "PayloadDecodeError",
    "RetryDelay",
    "Run",
    "Step",
    "StepOptions",
    "TaskDef",
)

P = TypeVar("P")

Handler: TypeAlias = Callable[["TaskContext", P], Any]
"""A handler: ``async def h(ctx, payload)`` (runs on the loop) or a plain function (runs in a thread).

It returns None, or the task's result: a value of the task's ``result`` type (see :class:`TaskDef`).
"""

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


class StepOptions(CronOptions, total=False):
    """The options of one workflow step (``taskdef.step(payload, **options)``).

    Those of :class:`CronOptions`, a ``deadline`` and ``unique`` (see :class:`EnqueueOptions`). A step's task
    id is its workflow's, and it runs when its dependencies are done, so ``task_id``, ``process_at``,
    ``process_in`` and ``group`` are not options.
    """

    deadline: datetime | float | None
    unique: float | timedelta | None


OnFailure: TypeAlias = Literal["fail", "continue"]
"""What a step archived after its retries does to its workflow: ``fail`` it (its dependants do not run), or
``continue``: hand the failure on (its dependants run, getting ``None`` for its result)."""


@dataclass(frozen=True, slots=True, eq=False)
class Step(Generic[P]):
    """One task of a workflow: a task type, its payload and options; built by :meth:`TaskDef.step`.

    Attributes:
        task: the task type.
        payload: its payload.
        name: its name in the workflow (default: the task type, numbered when it repeats).
        input: the payload field that receives the result of the step it follows (a list of results when it
            follows a group or several steps); checked against their result types when the workflow is built.
        on_failure: overrides the workflow's failure policy for this step (None: the workflow's).
        options: its :class:`StepOptions`.
    """

    task: TaskDef[P]
    payload: P
    name: str | None = None
    input: str | None = None
    on_failure: OnFailure | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


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
        result: the type of the value the handler returns (a ``msgspec.Struct``, or any type msgspec encodes:
            ``int``, ``list[str]``, ``dict[str, float]``, ...). The value is stored as JSON in the task's
            ``result`` field (asynq's, so Go services read it) when the task succeeds, and ``Client.wait``
            decodes it into this type. A value that does not fit fails the task with
            :class:`~framework.errors.ResultTypeError`. None (the default): a returned value that is not None
            is stored as JSON when it can be encoded (otherwise it is dropped, with a warning), and waiters
            get it decoded as plain JSON.
        limit: a :class:`~framework.limits.Limit` (or several) on this task type's tasks, shared by every worker:
            a rate, a most-at-once count, optionally per key of the payload. A task that may not start yet
            waits (scheduled, no retry spent) while the worker takes other work; see :mod:`framework.limits`.
        limits: ``limit`` as a tuple (derived).
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
    result: Any = None
    limit: Limit | Sequence[Limit] | None = None
    limits: tuple[Limit, ...] = field(init=False, repr=False)
    _decoder: msgspec.json.Decoder[Any] | None = field(init=False, repr=False)
    _result_decoder: msgspec.json.Decoder[Any] | None = field(init=False, repr=False)
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
        result_decoder = None
        if self.result is not None:
            try:
                result_decoder = msgspec.json.Decoder(self.result)
            except TypeError as exc:
                raise TypeError(f"task {self.type!r}: result type {self.result!r} is not one msgspec encodes") from exc
        object.__setattr__(self, "_result_decoder", result_decoder)
        limits = () if self.limit is None else (self.limit,) if isinstance(self.limit, Limit) else tuple(self.limit)
        if not all(isinstance(limit, Limit) for limit in limits):
            raise TypeError(f"task {self.type!r}: limit= takes a framework.limits.Limit or a sequence of them")
        object.__setattr__(self, "limits", limits)

    def encode(self, payload: P) -> bytes:
        """Encode a payload to the bytes stored in the task message.

        The bytes are checked against the payload type as a worker decodes them, so a payload no worker could
        decode (a field holding a value of another type, a NaN float, which JSON carries as ``null``) is
        refused here, before anything is stored, rather than archived by the worker.

        Raises:
            PayloadTypeError: ``payload`` is not an instance of this task's payload type, a field holds a value
                JSON cannot carry (the message names the field), or the encoded payload does not decode into
                the payload type (the message names the field's path).
        """
        if type(payload) is not self.payload and not isinstance(payload, self.payload):
            raise PayloadTypeError(
                f"task {self.type!r} takes a {self.payload.__name__} payload, got {type(payload).__name__}"
            )
        if self._decoder is None:
            return bytes(payload)  # type: ignore[call-overload,no-any-return]
        try:
            data = _encoder.encode(payload)
        except Exception as exc:  # TypeError, UnicodeEncodeError (a lone surrogate), RecursionError (a cycle)
            raise PayloadTypeError(
                f"the payload of task {self.type!r} cannot be encoded as JSON{_bad_field(payload)}: {exc}"
            ) from exc
        try:
            self._decoder.decode(data)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise PayloadTypeError(
                f"the payload of task {self.type!r} would not decode into {self.payload.__name__} in a worker "
                f"(a NaN or infinite float is sent as null): {exc}"
            ) from exc
        return data

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

    def encode_result(self, value: Any) -> bytes:
        """Encode a handler's return value to the JSON stored in the task's ``result`` field.

        Raises:
            ResultTypeError: the task has a result type and ``value`` does not fit it, or ``value`` is not
                JSON-encodable; the message names the expected and actual type.
        """
        expected = self.result
        if isinstance(expected, type) and issubclass(expected, msgspec.Struct) and not isinstance(value, expected):
            raise ResultTypeError(f"task {self.type!r} must return {expected.__name__}, got {type(value).__name__}")
        # Any is a class on 3.11+, but not one isinstance() takes
        of_type = expected is not Any and isinstance(expected, type) and isinstance(value, expected)
        try:
            data = _encoder.encode(value)
            if (
                self._result_decoder is not None
                and expected is not Any
                and (not of_type or b"null" in data)  # NaN and infinity are sent as null, which may not decode
            ):
                self._result_decoder.decode(data)  # a value of another type fails here
        except Exception as exc:  # any failure to encode (a cycle is a RecursionError) is the result's
            wanted = _type_name(expected) if expected is not None else "a JSON-encodable value"
            hint = " (a NaN or infinite float is sent as null)" if of_type else ""
            raise ResultTypeError(
                f"task {self.type!r} must return {wanted}, got {type(value).__name__}{hint}: {exc}"
            ) from exc
        return data

    def decode_result(self, data: bytes) -> Any:
        """Decode a stored result: into the result type when the task has one, else as plain JSON.

        Raises:
            ResultTypeError: the bytes are not valid for the result type (or not JSON).
        """
        try:
            if self._result_decoder is not None:
                return self._result_decoder.decode(data)
            return msgspec.json.decode(data)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            wanted = _type_name(self.result) if self.result is not None else "JSON"
            raise ResultTypeError(f"the result of task {self.type!r} does not decode into {wanted}: {exc}") from exc

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

    def step(
        self,
        payload: P,
        *,
        name: str | None = None,
        input: str | None = None,  # noqa: A002 - the word users read in the docs
        on_failure: OnFailure | None = None,
        **options: Unpack[StepOptions],
    ) -> Step[P]:
        """A workflow step running this task with ``payload``; see :class:`Step` and :mod:`framework.workflow`."""
        self.encode(payload)  # a payload of the wrong type is refused here, not when the workflow starts
        return Step(self, payload, name, input, on_failure, dict(options))

    def enqueue_sync(self, client: SyncClient, payload: P, **options: Unpack[EnqueueOptions]) -> TaskInfo:
        """Enqueue from code without an event loop; see :class:`framework.client.sync.SyncClient`."""
        return client.enqueue(self, payload, **options)


def _bad_field(payload: Any) -> str:
    """`` (field 'name')`` for the first field of a Struct payload that JSON cannot carry; empty when none is found."""
    for name in getattr(payload, "__struct_fields__", ()):
        try:
            _encoder.encode(getattr(payload, name))
        except Exception:  # noqa: BLE001 - any failure names the field; the caller raises the error itself
            return f" (field {name!r})"
    return ""


def _type_name(tp: Any) -> str:
    """``SomeStruct`` for a class, the written form (``list[int]``) for other types."""
    return tp.__name__ if isinstance(tp, type) else repr(tp)


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
