"""What a handler knows about the task it runs: :class:`TaskContext`, and a typed per-plugin stash."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

from framework.services import Stash

if TYPE_CHECKING:
    import structlog

    from framework.services import Services

__all__ = ("TaskContext", "lazy_logger")

T = TypeVar("T")

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
    stash: Stash = field(default_factory=Stash)

    @property
    def attempt(self) -> int:
        """1 for the first run, 2 for the first retry, and so on."""
        return self.retried + 1

    async def write_result(self, data: bytes) -> None:
        """Store ``data`` as the task's result (kept when the task has a retention).

        Args:
            data: raw bytes; the inspector shows them decoded as JSON when they are JSON.
        """
        if self._write_result is None:
            raise RuntimeError("this task context has no result writer")
        await self._write_result(data)
