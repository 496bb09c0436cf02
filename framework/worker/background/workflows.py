"""The workflow checker: fails the workflow steps whose task vanished or finished without the framework's outcome.

A step is an ordinary asynq task once it is released, so anything may take it: ``asynq task delete``, the
dashboard, or a Go asynq worker, which runs it and acknowledges it like any task but cannot advance its
workflow. Nothing would then ever finish the step, and the workflow would wait for ever. Every
``workflow_check_interval`` seconds, for each queue this worker serves, the checker claims the queue's check
(one worker per queue per interval wins), reads a page of the workflows whose home queue it is and runs
``wf_check.lua`` on each: a step whose task is gone, or completed, is failed as lost with an error saying
why, and its workflow fails (or hands the failure on, under ``on_failure="continue"``). Each lost step is
logged as ``workflow_step_lost``.

The same check walks a page of the queue's index of every workflow (``<ext>:{home}:workflows``) and drops the
entries whose records have expired (:func:`~framework.broker.workflows.prune_index`): without it the index
would keep an entry for every workflow ever started.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from framework.broker.workflows import CHECK_BATCH, check_running, claim_check, prune_index

if TYPE_CHECKING:
    from collections.abc import Iterable

    import structlog

    from framework.broker.workflows import WorkflowOps

__all__ = ("WorkflowChecker",)

_CLAIM_SHARE = 0.9
"""The claim lasts this share of the interval, so it has expired when the winner's next check comes round."""


class WorkflowChecker:
    """Checks the running workflows of ``queues`` (a job for :class:`~framework.worker.background.periodic.Periodic`).

    Run it every ``workflow_check_interval`` seconds.

    Args:
        ops: the broker's workflow scripts.
        queues: the queues whose running workflows it checks (as home queue).
        logger: the worker's logger.
        interval: the check interval (s): how long a claim on a queue's check lasts, near enough.
        limit: workflows per queue per check.
    """

    component = "workflow_checker"

    def __init__(
        self,
        ops: WorkflowOps,
        queues: Iterable[str],
        logger: structlog.typing.FilteringBoundLogger,
        interval: float,
        *,
        limit: int = CHECK_BATCH,
    ) -> None:
        self.ops = ops
        self.queues = list(queues)
        self.log = logger
        self.claim = interval * _CLAIM_SHARE
        self.limit = limit

    async def check(self) -> int:
        """Check every queue whose check this worker wins; returns how many steps were found lost."""
        lost = 0
        for queue in self.queues:
            if not await claim_check(self.ops, queue, self.claim):
                continue
            result = await check_running(self.ops, queue, limit=self.limit)
            for step in result.lost:
                self.log.warning(
                    "workflow_step_lost",
                    workflow=step.workflow,
                    home=queue,
                    step=step.step,
                    queue=step.queue,
                    task_id=step.task_id,
                )
            if result.dropped:
                self.log.info("workflow_index_pruned", home=queue, workflows=result.dropped)
            pruned = await prune_index(self.ops, queue)
            if pruned:
                self.log.info("workflow_index_pruned", home=queue, workflows=pruned)
            lost += len(result.lost)
        return lost

    async def run_once(self) -> None:
        """One check."""
        await self.check()
