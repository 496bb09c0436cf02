"""Task middleware: wrappers around every handler call, in one explicit, documented order.

``Middleware = Callable[[Run], Run]`` where ``Run = async (ctx, payload) -> None``. A middleware gets
the next ``Run`` and returns a new one; it may act before and after ``await run(ctx, payload)``, change
the payload, or raise (the task then fails as if the handler had raised). The chain is built once per
task type per worker, in this order (outermost first):

1. :func:`logging_middleware`, built in: binds ``task_id``, ``type``, ``queue`` and ``retried`` into
   structlog's context variables (so every log line of the handler carries them, whichever logger it
   uses) and logs ``task_finished`` (debug) or ``task_failed`` (warning) with ``duration_ms``;
2. plugin middleware from the ``register_middleware`` hook, in plugin load order (the framework's
   built-ins, then the built-in distributions, then third-party plugins), each plugin's list in order;
3. app middleware passed to ``Worker(middleware=[...])``, in order;
4. the handler (innermost), run on the event loop (``async def``) or in a thread (plain function).

The task's timeout covers the whole chain. Outcomes (done, retry, archive) are written after the chain
returns or raises, so middleware sees every failure, including timeouts and cancellation.

What a middleware does with the next run decides the outcome: returning without calling it ends the task
as done (the handler is skipped, as in Go's asynq); swallowing its exception ends it as done too; raising
fails it; calling it twice runs the handler twice (a middleware that retries in-process). Two mistakes are
refused, because they would end a task as done when its handler never ran:

* a middleware that does not give a run: not callable, failing when given the next run, or returning
  something that cannot be called (``None``, or the coroutine of an ``async def`` middleware). The chain
  is built when the worker starts, so the worker does not start; :class:`~framework.errors.PluginError`
  names the middleware;
* a run that calls the next one without awaiting it (``run(ctx, payload)`` without ``await``, or handed
  to a task that has not started when the chain returns): the task fails, naming the middleware that may
  have done it, and the handler's coroutine is closed, so it never runs after the outcome is written (see
  :class:`~framework.worker.execution.TaskExecution`). A run that is a plain function must return what
  the next run returns; one that returns something else fails the task, naming its middleware.

The per-minute processed/failed counters (``<ext>:{q}:processed:m:<minute>``) are written by the
state-transition scripts themselves, so they count every outcome exactly once, whatever middleware does.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from framework.errors import PluginError
from framework.task import Middleware, Run
from framework.thirdparty import structlog_context_vars
from framework.worker.outcomes import error_text

if TYPE_CHECKING:
    from framework.context import TaskContext

__all__ = ("build_chain", "logging_middleware", "middleware_name")


# structlog's own variables, set directly: four ``set`` calls cost a third of ``bind_contextvars`` and
# ``reset_contextvars``, and this runs for every task
_TASK_ID, _TYPE, _QUEUE, _RETRIED = structlog_context_vars("task_id", "type", "queue", "retried")


def logging_middleware(run: Run) -> Run:
    """Bind the task's identity into structlog's context and log each run's outcome and duration."""

    async def logged(ctx: TaskContext, payload: Any) -> None:
        start = time.perf_counter()
        tokens = (_TASK_ID.set(ctx.id), _TYPE.set(ctx.type), _QUEUE.set(ctx.queue), _RETRIED.set(ctx.retried))
        try:
            await run(ctx, payload)
        except asyncio.CancelledError:
            ctx.logger.info("task_interrupted", attempt=ctx.attempt, duration_ms=_ms(start))
            raise
        except BaseException as exc:
            ctx.logger.warning(
                "task_failed",
                attempt=ctx.attempt,
                duration_ms=_ms(start),
                outcome="failed",
                error=error_text(exc),
            )
            raise
        else:
            ctx.logger.debug("task_finished", attempt=ctx.attempt, duration_ms=_ms(start), outcome="succeeded")
        finally:
            _TASK_ID.reset(tokens[0])
            _TYPE.reset(tokens[1])
            _QUEUE.reset(tokens[2])
            _RETRIED.reset(tokens[3])

    return logged


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


def middleware_name(mw: object) -> str:
    """``module.qualname`` of a middleware (its ``repr`` when it has neither), for error messages."""
    qualname = getattr(mw, "__qualname__", None)
    if qualname is None:
        return repr(mw)
    module = getattr(mw, "__module__", None)
    return f"{module}.{qualname}" if module else qualname


def build_chain(handler: Run, middleware: Sequence[Middleware]) -> Run:
    """Wrap ``handler`` so that ``middleware[0]`` is outermost and the handler innermost.

    Raises:
        PluginError: a middleware is not callable, raised when given the next run, or returned something
            that cannot be called; the message names it.
    """
    run = handler
    for mw in reversed(middleware):
        name = middleware_name(mw)
        if not callable(mw):
            raise PluginError(f"middleware {name} is not callable: a middleware takes the next run and returns a run")
        try:
            made: Any = mw(run)
        except Exception as exc:
            raise PluginError(
                f"middleware {name} failed when given the next run: {type(exc).__name__}: {exc} "
                "(a middleware is called with the next run alone, and returns a run)"
            ) from exc
        if inspect.iscoroutine(made):
            made.close()  # never awaited: an ``async def`` middleware
            raise PluginError(
                f"middleware {name} is an async function: a middleware is a plain function that takes the next "
                "run and returns an ``async def`` run"
            )
        if not callable(made):
            raise PluginError(f"middleware {name} returned {made!r} when given the next run, not a run")
        run = made if inspect.iscoroutinefunction(made) else _awaiting(made, name)
    return run


def _awaiting(run: Any, name: str) -> Run:
    """``run`` (a plain function) as an ``async`` run: what it returns is awaited, and must be awaitable."""

    async def awaited(ctx: TaskContext, payload: Any) -> None:
        result = run(ctx, payload)
        if not inspect.isawaitable(result):
            raise PluginError(
                f"the run of middleware {name} returned {result!r}, not an awaitable: a run is an ``async def`` "
                "function, or a plain one that returns what the next run returns"
            )
        await result

    return awaited
