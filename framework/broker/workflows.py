"""Workflows in Redis: start, finish steps (advancing the workflow), read inputs, cancel, retry, find lost steps.

Finishing a step advances its workflow in the step's own transition; a lost step is one a worker that knows
no workflows ran.

Every change is one Lua script (``wf_*.lua``; keys and states in ``_workflow.lua``). A step's success or
failure runs the very transition any task's does (``done``, ``mark_complete``, ``archive``), composed with the
workflow's advance in one script (:data:`framework.protocol.scripts._COMPOSED`), so a worker dying at any
point either leaves the step active (recovered, run again) or finds the workflow advanced exactly once.

Workflows need one Redis server (or Sentinel): a step's release writes keys of other queues than the home
queue's, which a Redis Cluster refuses across slots.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from framework.broker.base import INFLIGHT_TTL, LEASE_SECONDS
from framework.errors import WorkflowNotFound
from framework.protocol.scripts import SCRIPTS

if TYPE_CHECKING:
    from collections.abc import Sequence

    from framework.broker.transitions import WorkerTransitions
    from framework.clock import Clock
    from framework.protocol.keys import Schema, WorkflowKeys
    from framework.protocol.workflow import StepRef
    from framework.transport.commands import Commands

__all__ = (
    "CANCEL_KEEP",
    "CHECK_BATCH",
    "PRUNE_BATCH",
    "CheckPass",
    "LostStep",
    "StepSpec",
    "StepTransitions",
    "WorkflowOps",
    "check_running",
    "claim_check",
    "prune_index",
)

CANCEL_KEEP = 3600
"""Seconds a cancel request for a running step is kept (its worker archives it rather than retry)."""


class StepSpec:
    """One step as :meth:`WorkflowOps.start` stores it.

    Args:
        name: the step's name (unique in its workflow, no newline).
        queue: the queue its task goes to.
        task_id: its task id.
        message: its encoded TaskMessage (with the workflow header).
        deps: the names of the steps it depends on, in the order its input lists their results.
        handed_on: its failure is handed on to its dependants instead of failing the workflow.
        unique: (lock key, TTL s) for a unique step, or None.
    """

    __slots__ = ("deps", "handed_on", "message", "name", "queue", "task_id", "unique")

    def __init__(
        self,
        name: str,
        queue: str,
        task_id: str,
        message: bytes,
        deps: Sequence[str],
        *,
        handed_on: bool = False,
        unique: tuple[str, int] | None = None,
    ) -> None:
        self.name = name
        self.queue = queue
        self.task_id = task_id
        self.message = message
        self.deps = list(deps)
        self.handed_on = handed_on
        self.unique = unique

    def args(self) -> list[Any]:
        """Its seven arguments of ``wf_start.lua``."""
        unique = f"{self.unique[0]}\n{self.unique[1]}" if self.unique else ""
        deps = "\n".join(self.deps)
        return [self.name, self.queue, self.task_id, self.message, deps, "1" if self.handed_on else "", unique]


class WorkflowOps:
    """The workflow scripts, run on ``commands``.

    Args:
        commands: what the scripts run on (the broker's redis-py pool, or an inspector's).
        schema: the key schema.
        clock: where time comes from.
        handoff: released steps may be handed straight to an idle worker (the lean connection's path).
        wakeup: the wake-up channel published when a queue gets work ("" = none).
    """

    def __init__(self, commands: Commands, schema: Schema, clock: Clock, *, handoff: bool, wakeup: str) -> None:
        self.commands = commands
        self.schema = schema
        self.clock = clock
        self.handoff = handoff
        self.wakeup = wakeup

    def keys(self, home: str, workflow_id: str) -> WorkflowKeys:
        """The keys of workflow ``workflow_id`` of home queue ``home``."""
        return self.schema.queue(home).workflow(workflow_id)

    def env(self, workflow_id: str) -> list[Any]:
        """The nine environment arguments every ``wf_*`` script takes (see ``wf_env`` in ``_workflow.lua``)."""
        now = self.clock.now()
        return [
            self.schema.ns,
            self.schema.ext,
            repr(now),
            int(now * 1e9),
            int(now) + LEASE_SECONDS,
            INFLIGHT_TTL,
            self.schema.handoff_prefix if self.handoff else "",
            self.wakeup,
            workflow_id,
        ]

    async def start(
        self,
        home: str,
        workflow_id: str,
        *,
        name: str,
        steps: Sequence[StepSpec],
        outputs: Sequence[str],
        grouped: bool,
        retention: int,
        kept: int,
    ) -> Any:
        """Store a new workflow and release its first steps (``wf_start.lua``); returns the script's reply."""
        wk = self.keys(home, workflow_id)
        args: list[Any] = self.env(workflow_id)
        args += [name, repr(self.clock.now()), retention, kept, "\n".join(outputs), "1" if grouped else "", home]
        args.append(len(steps))
        for step in steps:
            args += step.args()
        keys = [*wk.script_keys(), wk.home.workflows()]
        return await self.commands.evalsha(SCRIPTS["wf_start"], keys, args)

    async def finish(
        self, script: str, step: StepRef, call: tuple[list[str], list[Any]], outcome: str, value: bytes | str
    ) -> Any:
        """Run a step's transition composed with the workflow's advance (``wf_done``, ``wf_complete``, ``wf_archive``).

        Args:
            script: the composed script's name.
            step: the step.
            call: the transition's keys and arguments (as the broker builds them for the task alone).
            outcome: ``"ok"`` or ``"failed"``.
            value: the result (JSON bytes, ``b""`` = none) for ``"ok"``; the error text for ``"failed"``.

        Returns:
            What the transition returns.
        """
        keys, args = call
        wk = self.keys(step.home, step.workflow)
        full: list[Any] = [len(keys), len(args), *args, *self.env(step.workflow), step.step, outcome, value]
        return await self.commands.evalsha(SCRIPTS[script], [*keys, *wk.script_keys()], full)

    async def inputs(self, step: StepRef) -> list[bytes | None]:
        """The results of ``step``'s dependencies, in order (None: a dependency without one).

        Raises:
            WorkflowNotFound: the workflow is gone (its records expired or were deleted) or has no such step.
        """
        wk = self.keys(step.home, step.workflow)
        reply = await self.commands.evalsha(SCRIPTS["wf_inputs"], [wk.meta, wk.graph, wk.results], [step.step])
        if not isinstance(reply, list):
            raise WorkflowNotFound(
                f"workflow {step.workflow!r} in queue {step.home!r} has no step {step.step!r} "
                "(its records expired or were deleted)"
            )
        return reply

    async def cancel(self, home: str, workflow_id: str) -> tuple[str, int, int]:
        """Cancel a workflow (``wf_cancel.lua``): (status before, steps deleted, running steps asked to stop)."""
        wk = self.keys(home, workflow_id)
        args = [*self.env(workflow_id), self.schema.cancel_channel, CANCEL_KEEP]
        status, deleted, stopping = await self.commands.evalsha(SCRIPTS["wf_cancel"], wk.script_keys(), args)
        return _text(status), int(deleted), int(stopping)

    async def retry(self, home: str, workflow_id: str) -> tuple[str, int]:
        """Run a failed or cancelled workflow again (``wf_retry.lua``): (status before, steps run again)."""
        wk = self.keys(home, workflow_id)
        status, again = await self.commands.evalsha(SCRIPTS["wf_retry"], wk.script_keys(), self.env(workflow_id))
        return _text(status), int(again)

    async def check(self, home: str, workflow_id: str) -> list[str]:
        """Fail the released steps whose task vanished without our outcome (``wf_check.lua``); their names."""
        wk = self.keys(home, workflow_id)
        lost = await self.commands.evalsha(SCRIPTS["wf_check"], wk.script_keys(), self.env(workflow_id))
        return [_text(name) for name in lost]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class StepTransitions:
    """The transitions of an active workflow step, each composed with its workflow's advance.

    Args:
        transitions: the broker's worker transitions (they build each transition's keys and arguments).
        ops: the workflow scripts.
    """

    def __init__(self, transitions: WorkerTransitions, ops: WorkflowOps) -> None:
        self.transitions = transitions
        self.ops = ops

    async def step_done(
        self, step: StepRef, queue: str, task_id: str, unique_key: str, result: bytes, inflight: str = ""
    ) -> int:
        """A step without retention succeeded: ``done``, its result stored, its ready dependants released."""
        call = self.transitions.done_call(queue, [(task_id, unique_key, result)], inflight)
        reply = await self.ops.finish("wf_done", step, call, "ok", result)
        return int(reply[0])

    async def step_revoked(
        self, step: StepRef, queue: str, task_id: str, unique_key: str, error: str, inflight: str = ""
    ) -> int:
        """A step's handler raised ``RevokeTask``: its task is done (as asynq does), the step failed."""
        call = self.transitions.done_call(queue, [(task_id, unique_key, b"")], inflight)
        reply = await self.ops.finish("wf_done", step, call, "failed", error)
        return int(reply[0])

    async def step_complete(
        self, step: StepRef, queue: str, task_id: str, data: bytes, expires_at: int, unique_key: str, result: bytes
    ) -> int:
        """A step with a retention succeeded: ``mark_complete``, then as :meth:`step_done`."""
        call = self.transitions.complete_call(queue, task_id, data, expires_at, unique_key, result)
        return int(await self.ops.finish("wf_complete", step, call, "ok", result))

    async def step_archive(self, step: StepRef, queue: str, task_id: str, data: bytes, error: str) -> int:
        """A step failed for good: ``archive``, then its workflow's failure policy."""
        call = self.transitions.archive_call(queue, task_id, data)
        return int(await self.ops.finish("wf_archive", step, call, "failed", error))

    async def step_inputs(self, step: StepRef) -> list[bytes | None]:
        """The results of the step's dependencies, in order."""
        return await self.ops.inputs(step)


# -- the checker's pass over a home queue's running workflows (see framework.worker.background.workflows) ----

CHECK_BATCH = 100
"""Running workflows one check looks at per home queue; the cursor takes the next ones on the next check."""
CURSOR_TTL = 24 * 3600
"""Seconds the check cursor of a home queue outlives the last check (then the next check starts at the top)."""
PRUNE_BATCH = 1000
"""Entries of a home queue's index of workflows one check looks at for workflows whose records are gone."""


@dataclass(frozen=True, slots=True)
class LostStep:
    """A step :func:`check_running` failed as lost.

    Attributes:
        workflow: the workflow id.
        step: the step's name.
        queue: its task's queue.
        task_id: its task id.
    """

    workflow: str
    step: str
    queue: str
    task_id: str


@dataclass(slots=True)
class CheckPass:
    """What one :func:`check_running` did for one home queue.

    Attributes:
        checked: workflows whose steps were checked.
        dropped: ids dropped from the indexes because the workflow's records are gone.
        lost: the steps failed as lost.
    """

    checked: int = 0
    dropped: list[str] = field(default_factory=list)
    lost: list[LostStep] = field(default_factory=list)


async def _commands(ops: WorkflowOps, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    """Run plain commands in one round trip; the first error reply is raised."""
    replies = await ops.commands.execute_many(commands)
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


async def claim_check(ops: WorkflowOps, home: str, seconds: float) -> bool:
    """Claim the check of ``home``'s running workflows for ``seconds``; False when another worker holds it.

    ``SET <ext>:{home}:workflows:checked 1 NX PX``: the first worker of an interval wins, the others skip it.
    """
    key = ops.schema.queue(home).workflows_checked()
    (reply,) = await _commands(ops, [("SET", key, "1", "NX", "PX", max(1, int(seconds * 1000)))])
    return reply is not None


async def check_running(ops: WorkflowOps, home: str, *, limit: int = CHECK_BATCH) -> CheckPass:
    """Check one page of ``home``'s running index for lost steps (``wf_check.lua`` per workflow).

    The page starts at the stored cursor (a rank) and holds at most ``limit`` workflows; the cursor then
    moves past it, back to the top after the last page. Entries whose workflow records are gone (deleted by
    hand) leave both of the home queue's indexes. A workflow that ends while the pages are walked shifts the
    ranks after it, so a few workflows may wait for the next round; none is missed for good.

    Args:
        ops: the workflow scripts.
        home: the home queue.
        limit: workflows per page.
    """
    qk = ops.schema.queue(home)
    running, cursor_key = qk.workflows_running(), qk.workflows_cursor()
    (raw,) = await _commands(ops, [("GET", cursor_key)])
    start = int(raw or 0)
    (page,) = await _commands(ops, [("ZRANGE", running, start, start + limit - 1)])
    if not page and start > 0:
        start = 0
        (page,) = await _commands(ops, [("ZRANGE", running, 0, limit - 1)])
    ids = [_text(member) for member in page]
    result = CheckPass()
    if ids:
        exists = await _commands(ops, [("EXISTS", qk.workflow(wid).meta) for wid in ids])
        result.dropped = [wid for wid, found in zip(ids, exists, strict=True) if not int(found)]
        if result.dropped:
            await _commands(ops, [("ZREM", running, *result.dropped), ("ZREM", qk.workflows(), *result.dropped)])
        gone = set(result.dropped)
        for wid in ids:
            if wid in gone:
                continue
            result.checked += 1
            lost = await ops.check(home, wid)
            if lost:
                graph = qk.workflow(wid).graph
                where = await _commands(ops, [("HGET", graph, f"t:{step}") for step in lost])
                for step, spec in zip(lost, where, strict=True):
                    queue, _, task_id = _text(spec or b"").partition("\n")
                    result.lost.append(LostStep(wid, step, queue, task_id))
    following = 0 if len(ids) < limit else start + len(ids) - len(result.dropped)
    await _commands(ops, [("SET", cursor_key, following, "EX", CURSOR_TTL)])
    return result


async def prune_index(ops: WorkflowOps, home: str, *, limit: int = PRUNE_BATCH) -> list[str]:
    """Drop from ``home``'s index of workflows a page of entries whose workflow records are gone; returns their ids.

    A workflow's records expire once it ended (after its ``retention`` or ``keep_failed``), but its entry in
    ``<ext>:{home}:workflows`` would stay for ever: the index would grow with every workflow ever started. The
    page starts at the stored cursor (a rank, :meth:`~framework.protocol.keys.QueueKeys.workflows_pruned`) and
    holds at most ``limit`` entries, oldest first; the cursor then moves past it, back to the top after the
    last page. The entries dropped leave the running index too, as in :func:`check_running`.
    """
    qk = ops.schema.queue(home)
    index, cursor_key = qk.workflows(), qk.workflows_pruned()
    (raw,) = await _commands(ops, [("GET", cursor_key)])
    start = int(raw or 0)
    (page,) = await _commands(ops, [("ZRANGE", index, start, start + limit - 1)])
    if not page and start > 0:
        start = 0
        (page,) = await _commands(ops, [("ZRANGE", index, 0, limit - 1)])
    ids = [_text(member) for member in page]
    dropped: list[str] = []
    if ids:
        exists = await _commands(ops, [("EXISTS", qk.workflow(wid).meta) for wid in ids])
        dropped = [wid for wid, found in zip(ids, exists, strict=True) if not int(found)]
        if dropped:
            await _commands(ops, [("ZREM", index, *dropped), ("ZREM", qk.workflows_running(), *dropped)])
    following = 0 if len(ids) < limit else start + len(ids) - len(dropped)
    await _commands(ops, [("SET", cursor_key, following, "EX", CURSOR_TTL)])
    return dropped
