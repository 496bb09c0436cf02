"""Sweepers and the engine that runs them.

A :class:`Sweeper` is a name, a schedule, a grace period and ``async def sweep(ctx) -> SweepResult``.
:func:`run_sweeper` gives it a :class:`SweepContext` (services, dry run, now, cutoff), turns whatever
happens (including an exception, or a cancellation halfway) into a :class:`SweepReport`, logs it and keeps
it in the Redis hash :func:`~framework_cleanup.keys.results_key` for the dashboard (:func:`last_results`).

Safety rules every sweep follows (the built-ins do; see :mod:`framework_cleanup.builtin`):

- nothing modified after ``ctx.cutoff`` (now minus the grace period) is touched;
- ``ctx.dry_run`` lists what would go and removes nothing;
- a run cut off halfway can simply run again, and two runs at once remove and count each item once:
  removal is idempotent, and :meth:`SweepContext.remove_object` claims an object in Redis for the
  moment it takes to delete it.

:class:`SweepContext` and :class:`SweepResult` live in :mod:`framework_cleanup.context` and are
re-exported here, so a sweeper's author imports everything from this module.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

import msgspec

from framework import FrameworkError
from framework.logging import get_logger
from framework_cleanup.context import MAX_ERRORS, SAMPLE_SIZE, SweepContext, SweepResult
from framework_cleanup.keys import results_key

if TYPE_CHECKING:
    from collections.abc import Iterable

    import structlog
    from redis.asyncio import Redis

    from framework import Schema, Services

__all__ = (
    "MAX_ERRORS",
    "SAMPLE_SIZE",
    "SweepContext",
    "SweepFailed",
    "SweepFn",
    "SweepReport",
    "SweepResult",
    "Sweeper",
    "last_results",
    "run_sweeper",
    "run_sweepers",
)

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class SweepFailed(FrameworkError):
    """A sweeper raised; the ``cleanup:run`` task fails with this so it is retried once."""


SweepFn: TypeAlias = Callable[[SweepContext], Awaitable[SweepResult]]
"""A sweep: ``async def sweep(ctx: SweepContext) -> SweepResult``."""


@dataclass(frozen=True, slots=True)
class Sweeper:
    """A named, scheduled function that removes expired things. Declared by plugins and apps.

    Attributes:
        name: stable name (``tokens``); 1-64 of ``a-z 0-9 _ -``. Its cron entry is ``<name>:cleanup``.
        schedule: five-field cron spec, macro (``@hourly``) or ``@every <duration>``.
        sweep: ``async def sweep(ctx: SweepContext) -> SweepResult``.
        grace: seconds; nothing younger is touched (``ctx.cutoff = ctx.now - grace``).
        description: one line for ``framework cleanup ls``.
        source: the plugin that contributed it; set by the framework.
    """

    name: str
    schedule: str
    sweep: SweepFn
    grace: float = 0.0
    description: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(f"invalid sweeper name {self.name!r}: use 1-64 of a-z, 0-9, '_' and '-'")
        if not self.grace >= 0:
            raise ValueError(f"sweeper {self.name!r}: grace={self.grace!r} is invalid: it must be >= 0 seconds")


class SweepReport(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of one run of one sweeper, as logged and kept for the dashboard. Set by the engine.

    Attributes:
        sweeper: the sweeper's name.
        time: Unix time the run started.
        duration: seconds it took.
        dry_run: whether it only listed what it would remove.
        removed: items removed (or that would be).
        bytes: bytes freed (or that would be).
        items: a sample of the removed items' keys.
        errors: problems, per item; when ``failed``, the first one is the exception the sweep raised.
        failed: the sweep raised; what it removed before that is still counted.
    """

    sweeper: str
    time: float
    duration: float = 0.0
    dry_run: bool = False
    removed: int = 0
    bytes: int = 0
    items: list[str] = msgspec.field(default_factory=list)
    errors: list[str] = msgspec.field(default_factory=list)
    failed: bool = False


_encode = msgspec.json.Encoder().encode
_decode_report = msgspec.json.Decoder(SweepReport).decode


async def run_sweeper(
    services: Services,
    sweeper: Sweeper,
    *,
    dry_run: bool = False,
    now: float | None = None,
    claim_ttl: float = 60.0,
    logger: structlog.typing.FilteringBoundLogger | None = None,
) -> SweepReport:
    """Run one sweeper, never raising what it raises: the report says ``failed`` and names it.

    A run cancelled halfway (shutdown, the task's timeout) is reported as ``failed`` with what it removed
    so far, then the cancellation goes on.

    Args:
        services: the process's services.
        sweeper: the sweeper to run.
        dry_run: list what would be removed, remove nothing.
        now: the time the sweep sees (default: the wall clock).
        claim_ttl: seconds an object claim lasts if this run dies holding it.
        logger: where to log (default: the plugin's logger).

    Returns:
        The report, also logged (``cleanup_swept`` or ``cleanup_sweeper_failed``) and stored in
        :func:`~framework_cleanup.keys.results_key` under the sweeper's name.

    Raises:
        asyncio.CancelledError: the run was cancelled; its report was stored first.
    """
    log = (logger or get_logger("framework_cleanup")).bind(sweeper=sweeper.name, dry_run=dry_run)
    started = time.time() if now is None else now
    clock = time.monotonic()
    ctx = SweepContext(
        services, sweeper.name, dry_run=dry_run, now=started, grace=sweeper.grace, logger=log, claim_ttl=claim_ttl
    )
    result, failure = ctx.result, None
    cut_short: asyncio.CancelledError | None = None
    try:
        returned = await sweeper.sweep(ctx)
        result = returned if isinstance(returned, SweepResult) else ctx.result
    except asyncio.CancelledError as exc:  # shutdown or the task's timeout: report what was done, then stop
        cut_short = exc
        failure = "CancelledError: the run was cut short (shutdown or timeout) before it finished"
        log.warning("cleanup_sweeper_cut_short", removed=ctx.result.removed)
    except Exception as exc:  # one sweeper must not stop the others; logged and reported below
        failure = f"{type(exc).__name__}: {exc}"
        log.exception("cleanup_sweeper_failed", error=failure)
    report = SweepReport(
        sweeper=sweeper.name,
        time=started,
        duration=round(time.monotonic() - clock, 6),
        dry_run=dry_run,
        removed=result.removed,
        bytes=result.bytes,
        items=result.items[:SAMPLE_SIZE],
        errors=([failure] if failure else []) + result.errors[:MAX_ERRORS],
        failed=failure is not None,
    )
    log.info("cleanup_swept", removed=report.removed, bytes=report.bytes, errors=len(report.errors))
    await services.redis.hset(results_key(services.schema), sweeper.name, _encode(report))
    if cut_short is not None:
        raise cut_short
    return report


async def run_sweepers(
    services: Services,
    sweepers: Iterable[Sweeper],
    *,
    dry_run: bool = False,
    now: float | None = None,
    claim_ttl: float = 60.0,
) -> list[SweepReport]:
    """Run sweepers one after another; one that raises is reported and the others still run.

    Args:
        services: the process's services.
        sweepers: the sweepers to run.
        dry_run: list what would be removed, remove nothing.
        now: the time every sweep sees (default: the wall clock when each starts).
        claim_ttl: seconds an object claim lasts if a run dies holding it.
    """
    return [await run_sweeper(services, s, dry_run=dry_run, now=now, claim_ttl=claim_ttl) for s in sweepers]


async def last_results(redis: Redis, schema: Schema) -> dict[str, SweepReport]:
    """The last report of every sweeper that has run (dry runs included, flagged), by sweeper name.

    Args:
        redis: the Redis client.
        schema: the key schema.
    """
    raw = await redis.hgetall(results_key(schema))
    out: dict[str, SweepReport] = {}
    for field, value in raw.items():
        name = field.decode() if isinstance(field, bytes) else str(field)
        try:
            out[name] = _decode_report(value)
        except msgspec.DecodeError:
            get_logger("framework_cleanup").warning("cleanup_result_unreadable", sweeper=name)
    return dict(sorted(out.items()))
