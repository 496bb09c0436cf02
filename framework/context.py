"""What a handler knows about the task it runs: :class:`TaskContext`, and a typed per-plugin stash."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from framework.services import Stash

if TYPE_CHECKING:
    import structlog

    from framework.services import Services

__all__ = ("PROGRESS_MESSAGE_MAX", "ProgressSink", "TaskContext", "check_progress", "lazy_logger")

T = TypeVar("T")

PROGRESS_MESSAGE_MAX = 200
"""Characters of a progress message that are kept; a longer one is cut to this length."""

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "warn": 30, "error": 40, "exception": 40, "critical": 50}
_LEVELS.update({f"a{name}": level for name, level in list(_LEVELS.items())})


class _LazyLogger:
    """A structlog logger that binds the task's fields on first use: most tasks never log a line.

    A level method that the logger filters out is handed over from the unbound logger (a no-op), so
    checking ``debug`` costs no binding either.
    """

    __slots__ = ("_base", "_bound", "_fields")

    def __init__(self, base: Any, fields: dict[str, Any]) -> None:
        self._base = base
        self._fields = fields
        self._bound: Any = None

    def _logger(self) -> Any:
        bound = self._bound
        if bound is None:
            bound = self._bound = self._base.bind(**self._fields)
        return bound

    def __getattr__(self, name: str) -> Any:
        level = _LEVELS.get(name)
        if level is not None and self._bound is None:
            enabled = getattr(self._base, "is_enabled_for", None)
            if enabled is not None and not enabled(level):
                return getattr(self._base, name)
        return getattr(self._logger(), name)

    def __repr__(self) -> str:
        return repr(self._logger())


def lazy_logger(base: structlog.typing.FilteringBoundLogger, **fields: Any) -> structlog.typing.FilteringBoundLogger:
    """``base.bind(**fields)``, done only when the logger is first used (see :class:`TaskContext`)."""
    return cast("structlog.typing.FilteringBoundLogger", _LazyLogger(base, fields))


class ProgressSink(Protocol):
    """Where a running task's progress reports go (the worker's rate-limited writer); set by the framework."""

    def report(self, fraction: float, message: str) -> Awaitable[None] | None:
        """Take a checked report on the event loop's thread; returns the write to await, when one starts now."""

    def report_threadsafe(self, fraction: float, message: str) -> None:
        """Take a checked report from any thread (a sync handler's); never blocks."""


def check_progress(fraction: float, message: str) -> tuple[float, str]:
    """Check a progress report: ``fraction`` a finite number in 0..1, ``message`` a string (cut to 200 chars).

    Returns:
        The fraction as a float and the message, cut to :data:`PROGRESS_MESSAGE_MAX` characters.

    Raises:
        TypeError: ``fraction`` is not a number (``bool`` is refused too) or ``message`` is not a string.
        ValueError: ``fraction`` is NaN or outside 0..1.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, int | float):
        raise TypeError(f"progress fraction must be a number from 0 to 1, not {type(fraction).__name__}")
    try:
        value = float(fraction)
    except OverflowError:  # an int too large for a float is outside 0..1 too
        value = math.inf
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"progress fraction must be from 0 to 1 (0.4 is 40 %), got {fraction!r}")
    if not isinstance(message, str):
        raise TypeError(f"progress message must be a string, not {type(message).__name__}")
    return value, message[:PROGRESS_MESSAGE_MAX]


@dataclass(slots=True)
class TaskContext:
    """The running task, as seen by its handler and the middleware.

    Set by the framework; handlers read it.

    Attributes:
        id: the task id.
        type: the task type string.
        queue: the queue the task came from.
        retried: how many times it was retried before this attempt.
        max_retry: how many retries it may have.
        deadline: Unix time by which the handler must finish (min of timeout and deadline).
        headers: the task's headers.
        logger: a structlog logger bound to task_id, type, queue and attempt.
        services: the process's shared services (settings, client, storage, plugin singletons).
        stash: typed per-plugin values set by middleware (see :class:`~framework.services.StashKey`).
    """

    id: str
    type: str
    queue: str
    retried: int
    max_retry: int
    deadline: float
    headers: Mapping[str, str]
    logger: structlog.typing.FilteringBoundLogger
    services: Services
    _write_result: Callable[[bytes], Awaitable[None]] | None = None
    _progress: ProgressSink | None = None
    _new_progress: Callable[[], ProgressSink] | None = None
    stash: Stash = field(default_factory=Stash)

    @property
    def attempt(self) -> int:
        """1 for the first run, 2 for the first retry, and so on."""
        return self.retried + 1

    async def write_result(self, data: bytes) -> None:
        """Store ``data`` as the task's result (kept when the task has a retention).

        A value the handler returns replaces them (when it returns one).

        Args:
            data: raw bytes; the inspector shows them decoded as JSON when they are JSON.

        Raises:
            TypeError: ``data`` is not bytes (``bytearray`` and ``memoryview`` are taken too).
            ResultTooLarge: ``data`` is larger than the ``max_result_size`` setting allows; nothing is stored.
        """
        if self._write_result is None:
            raise RuntimeError("this task context has no result writer")
        await self._write_result(data)

    async def progress(self, fraction: float, message: str = "") -> None:
        """Report how far the task has got: ``await ctx.progress(0.4, "resizing")``.

        The report is stored beside the task (``Inspector.progress``, the dashboard's task and servers pages,
        ``framework tasks show``) and announced to subscribers (``Inspector.watch_progress``). Writes are
        rate-limited to one per 0.2 s per task, so calling this in a tight loop is cheap: a report that comes
        too soon is held and written when the interval is up, replaced by any later one. ``1.0`` is written
        at once (the first of a run of them), and the last report is always written when the handler ends.
        Redis errors are logged, never raised: progress is best effort. When the task ends, the record is kept
        for a minute, then expires.

        A sync handler (a plain function, run in a thread) calls :meth:`report_progress` instead.

        Args:
            fraction: how much is done, from 0 to 1.
            message: what the task is doing now; cut to 200 characters.

        Raises:
            TypeError: ``fraction`` is not a number or ``message`` is not a string.
            ValueError: ``fraction`` is NaN or outside 0..1.
            RuntimeError: the context has no progress writer (built outside a worker).
        """
        value, text = check_progress(fraction, message)
        write = self._progress_sink().report(value, text)
        if write is not None:
            await write

    def report_progress(self, fraction: float, message: str = "") -> None:
        """:meth:`progress` for a sync handler: callable from its thread (or the loop's), never blocks.

        Args:
            fraction: how much is done, from 0 to 1.
            message: what the task is doing now; cut to 200 characters.

        Raises:
            TypeError: ``fraction`` is not a number or ``message`` is not a string.
            ValueError: ``fraction`` is NaN or outside 0..1.
            RuntimeError: the context has no progress writer (built outside a worker).
        """
        value, text = check_progress(fraction, message)
        self._progress_sink().report_threadsafe(value, text)

    def _progress_sink(self) -> ProgressSink:
        if self._progress is None:
            # made on the first report, so a task that reports nothing costs nothing (the worker runs the
            # handler's reports from one thread at a time: the loop's, or its sync handler's)
            if self._new_progress is None:
                raise RuntimeError("this task context has no progress writer")
            self._progress = self._new_progress()
        return self._progress
