"""Task middleware: wrappers around every handler call, in one documented order.

``Middleware = Callable[[Run], Run]`` where ``Run = async (ctx, payload) -> None``. The chain is built
once per worker:

1. built-in structured logging (outermost): logs ``task_finished``/``task_failed`` with task_id, type,
   queue, attempt, duration_ms, outcome and error;
2. plugin middleware, in plugin load order (built-ins, then third-party), each plugin's list in order;
3. app middleware passed to the worker;
4. the handler (innermost).

The per-minute processed/failed counters are written by the state-transition scripts themselves, so
they count every outcome exactly once, whatever middleware does.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from framework.context import TaskContext

__all__ = ("Middleware", "Run", "build_chain", "logging_middleware")

Run: TypeAlias = Callable[["TaskContext", Any], Awaitable[None]]
Middleware: TypeAlias = Callable[[Run], Run]


def logging_middleware(run: Run) -> Run:
    """Log each task's outcome and duration (debug on success, warning on failure)."""

    async def logged(ctx: TaskContext, payload: Any) -> None:
        start = time.perf_counter()
        try:
            await run(ctx, payload)
        except BaseException as exc:
            ctx.logger.warning(
                "task_failed",
                attempt=ctx.attempt,
                duration_ms=round((time.perf_counter() - start) * 1000, 3),
                outcome="failed",
                error=f"{type(exc).__name__}: {exc}",
            )
            raise
        ctx.logger.debug(
            "task_finished",
            attempt=ctx.attempt,
            duration_ms=round((time.perf_counter() - start) * 1000, 3),
            outcome="succeeded",
        )

    return logged


def build_chain(handler: Run, middleware: Sequence[Middleware]) -> Run:
    """Wrap ``handler`` so that ``middleware[0]`` is outermost."""
    run = handler
    for mw in reversed(middleware):
        run = mw(run)
    return run
