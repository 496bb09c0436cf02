"""The ``cleanup:run`` task: run one sweeper.

The five parts: the type string :data:`CLEANUP_RUN`, the payload :class:`CleanupRun`, the enqueue
helper :func:`run_cleanup`, the handler :func:`handle_cleanup_run` and the task definition
:data:`cleanup_task`. The plugin's cron entries enqueue it once per sweeper on the ``low`` queue.

Outcomes: an unknown or disabled sweeper archives the task at once (:class:`~framework.errors.SkipRetry`);
a sweeper that raises fails the task with :class:`~framework_cleanup.sweepers.SweepFailed`, so it is
retried once (sweeps are idempotent) and then archived. Either way the report is logged and kept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Unpack

import msgspec

from framework import TaskDef
from framework.errors import SkipRetry
from framework_cleanup.config import load_config
from framework_cleanup.registry import sweepers_for
from framework_cleanup.sweepers import SweepFailed, run_sweeper

if TYPE_CHECKING:
    from framework import Client, EnqueueOptions, TaskContext, TaskInfo

__all__ = ("CLEANUP_RUN", "CleanupRun", "cleanup_task", "handle_cleanup_run", "run_cleanup")

CLEANUP_RUN = "cleanup:run"
"""The task type string."""


class CleanupRun(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Payload of ``cleanup:run``: JSON ``{"sweeper": "tokens"}``. Set by the cron entries or the caller.

    Attributes:
        sweeper: the name of the sweeper to run.
        dry_run: only report what would be removed.
    """

    sweeper: str
    dry_run: bool = False


async def handle_cleanup_run(ctx: TaskContext, payload: CleanupRun) -> None:
    """Run the named sweeper and keep its report.

    Raises:
        SkipRetry: no enabled sweeper has that name.
        SweepFailed: the sweeper raised; the message names it and the error.
    """
    services = ctx.services
    sweepers = sweepers_for(services)
    sweeper = sweepers.get(payload.sweeper)
    if sweeper is None:
        known = ", ".join(sorted(sweepers)) or "none"
        raise SkipRetry(f"unknown or disabled sweeper {payload.sweeper!r} (enabled: {known})")
    claim_ttl = load_config(services.settings).claim_seconds
    report = await run_sweeper(services, sweeper, dry_run=payload.dry_run, claim_ttl=claim_ttl, logger=ctx.logger)
    if report.failed:
        raise SweepFailed(f"sweeper {sweeper.name!r} failed: {report.errors[0]}")


cleanup_task: TaskDef[CleanupRun] = TaskDef(
    type=CLEANUP_RUN,
    payload=CleanupRun,
    handler=handle_cleanup_run,
    queue="low",
    max_retry=1,
    timeout=1800.0,
    description="Run one cleanup sweeper (expired tokens, stale uploads, old outbox files, ...)",
)
"""The ``cleanup:run`` task definition: queue ``low``, 1 retry, 30 minutes."""


async def run_cleanup(
    client: Client, sweeper: str, *, dry_run: bool = False, **options: Unpack[EnqueueOptions]
) -> TaskInfo:
    """Enqueue ``cleanup:run`` for ``sweeper``.

    Args:
        client: the enqueue client.
        sweeper: the sweeper's name.
        dry_run: only report what would be removed.
        **options: enqueue options (``queue``, ``process_in``, ...).
    """
    return await cleanup_task.enqueue(client, CleanupRun(sweeper=sweeper, dry_run=dry_run), **options)
