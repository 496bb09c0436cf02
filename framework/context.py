"""What a handler knows about the task it runs: :class:`TaskContext`, and a typed per-plugin stash."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

if TYPE_CHECKING:
    import structlog

    from framework.services import Services

__all__ = ("StashKey", "TaskContext")

T = TypeVar("T")


class StashKey(Generic[T]):
    """A typed key into :attr:`TaskContext.stash`, so plugins share values without name clashes.

    Args:
        name: a readable name, used only in ``repr``.
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"StashKey({self.name!r})"


class _Stash:
    """A dict keyed by :class:`StashKey` whose values keep their type."""

    __slots__ = ("_data",)

    def __init__(self) -> None:
        self._data: dict[StashKey[Any], Any] = {}

    def __getitem__(self, key: StashKey[T]) -> T:
        return cast("T", self._data[key])

    def __setitem__(self, key: StashKey[T], value: T) -> None:
        self._data[key] = value

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def get(self, key: StashKey[T], default: T | None = None) -> T | None:
        """Return the value under ``key`` or ``default``."""
        return cast("T | None", self._data.get(key, default))


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
        stash: typed per-plugin values set by middleware (see :class:`StashKey`).
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
    stash: _Stash = field(default_factory=_Stash)

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
