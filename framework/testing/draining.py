"""Run a worker until its queues are empty and see what happened to each task (burst mode, for tests).

:func:`drain` starts a :class:`~framework.worker.worker.Worker`, lets it run until nothing it could run is
left (no pending task in its queues, no scheduled or retry task due within a second, nothing in its hands),
or until it has run ``max_tasks`` tasks, then stops it and returns a :class:`DrainResult`: every
outcome the worker wrote, in order, as :class:`TaskRun` records. Tasks scheduled, or waiting to be retried,
later than that stay where they are; give the worker a ``retry_delay`` of 0 to see retries run in the same
drain.

The outcomes are read from the worker's own broker calls (its broker is wrapped, see
:class:`~framework.testing.proxy.BrokerProxy`), so they are exactly what was written to Redis. A workflow
step's outcome counts as a plain task's: a step that succeeded is done (or completed), one that failed for good
archived.

A drain that runs out of time raises :class:`DrainTimeout` naming the tasks still running (type, id, queue,
for how long) and those that failed and are due to run again (with their last error); the handlers still
running are then cancelled at once and their tasks put back, not waited for through the worker's
``shutdown_timeout``.

Example::

    async def test_a_bad_address_is_archived(client, settings):
        good = await client.enqueue(send_email, SendEmail(to="ada@example.com"))
        bad = await client.enqueue(send_email, SendEmail(to="not an address"))
        result = await drain(Worker(settings, tasks=[send_email]), timeout=5)
        assert result.succeeded == [good.id]
        assert result.archived == [bad.id]
        assert "not an address" in result.last(bad.id).error
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import inspect
from typing import TYPE_CHECKING, Any

from framework.broker.transitions import Taken
from framework.protocol.message import decode_message
from framework.testing.proxy import BrokerProxy, innermost

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from framework.broker.broker import RedisBroker
    from framework.worker.processor import Processor
    from framework.worker.worker import Worker

__all__ = ("DrainResult", "DrainTimeout", "Outcome", "TaskRun", "drain")

_POLL = 0.02
_TIMED_OUT_GRACE = 0.1
"""Seconds the handlers still running when a drain times out get to finish before they are cancelled."""


class Outcome(enum.StrEnum):
    """What the worker wrote for one run of a task."""

    DONE = "done"
    """Succeeded (or was revoked with :class:`~framework.errors.RevokeTask`) and was deleted."""
    COMPLETED = "completed"
    """Succeeded and is kept for its retention."""
    RETRIED = "retried"
    """Failed; in the retry set until its retry delay has passed."""
    ARCHIVED = "archived"
    """Failed for good (retries exhausted, :class:`~framework.errors.SkipRetry`, a payload that does not decode)."""
    DEFERRED = "deferred"
    """Not run: no handler here for its type, or its previous run still runs; back in the retry set, no retry spent."""
    REQUEUED = "requeued"
    """Not finished when the worker stopped: back at the head of its queue, no retry spent."""


_PROCESSED = frozenset({Outcome.DONE, Outcome.COMPLETED, Outcome.RETRIED, Outcome.ARCHIVED})


@dataclasses.dataclass(frozen=True, slots=True)
class TaskRun:
    """One outcome the worker wrote.

    Attributes:
        id: the task id.
        queue: its queue.
        type: its task type ("" if its message could not be read).
        outcome: what was written.
        error: the error it failed with ("" unless retried, archived or deferred).
        retried: its retries, this one included.
    """

    id: str
    queue: str
    type: str
    outcome: Outcome
    error: str = ""
    retried: int = 0


@dataclasses.dataclass
class DrainResult:
    """What a :func:`drain` saw, in the order the worker wrote it.

    Attributes:
        runs: every outcome written, one per run (a task retried twice and then done has three).
    """

    runs: list[TaskRun] = dataclasses.field(default_factory=list)

    def of(self, *outcomes: Outcome | str) -> list[TaskRun]:
        """The runs with one of ``outcomes``, in order."""
        wanted = {Outcome(o) for o in outcomes}
        return [r for r in self.runs if r.outcome in wanted]

    def last(self, task_id: str) -> TaskRun:
        """The last run of task ``task_id``.

        Raises:
            KeyError: the task was not run.
        """
        for run in reversed(self.runs):
            if run.id == task_id:
                return run
        raise KeyError(f"task {task_id!r} was not run; runs: {[r.id for r in self.runs]}")

    @property
    def processed(self) -> int:
        """Runs that ended done, completed, retried or archived."""
        return sum(1 for r in self.runs if r.outcome in _PROCESSED)

    @property
    def succeeded(self) -> list[str]:
        """Ids of the runs done or completed, in order."""
        return [r.id for r in self.of(Outcome.DONE, Outcome.COMPLETED)]

    @property
    def failed(self) -> list[str]:
        """Ids of the runs retried or archived, in order."""
        return [r.id for r in self.of(Outcome.RETRIED, Outcome.ARCHIVED)]

    @property
    def retried(self) -> list[str]:
        """Ids of the runs retried, in order."""
        return [r.id for r in self.of(Outcome.RETRIED)]

    @property
    def archived(self) -> list[str]:
        """Ids of the runs archived, in order."""
        return [r.id for r in self.of(Outcome.ARCHIVED)]


class DrainTimeout(TimeoutError):
    """The worker did not drain its queues in time.

    Attributes:
        result: what it did meanwhile.
    """

    def __init__(self, message: str, result: DrainResult) -> None:
        super().__init__(message)
        self.result = result


_WRITTEN: dict[str, Outcome] = {
    "step_done": Outcome.DONE,
    "step_revoked": Outcome.DONE,
    "mark_complete": Outcome.COMPLETED,
    "step_complete": Outcome.COMPLETED,
    "archive": Outcome.ARCHIVED,
    "step_archive": Outcome.ARCHIVED,
    "requeue": Outcome.REQUEUED,
}
"""The outcome each broker call that writes one task's outcome writes (a workflow step's as a plain task's);
``retry`` writes a retry, or a deferral when ``failure`` is false."""


@dataclasses.dataclass
class _Log:
    """What the recording brokers of one drain share."""

    result: DrainResult = dataclasses.field(default_factory=DrainResult)
    taken: dict[tuple[str, str], tuple[str, int]] = dataclasses.field(default_factory=dict)
    """(type, retries) of each task taken, by (queue, id)."""
    dequeuing: int = 0
    budget: int | None = None
    """Tasks the worker may still take (None: no limit)."""
    real: RedisBroker | None = None

    def record(self, name: str, args: dict[str, Any], answer: Any) -> None:
        queue = args["queue"]
        if name == "done":
            for (task_id, *_), n in zip(args["tasks"], answer, strict=True):
                if n:
                    self._add(queue, task_id, Outcome.DONE, None)
            return
        if name == "defer":  # the due time: deferred; 0: no longer active; -1: waited too long, archived next
            if int(answer) > 0:
                self._add(queue, args["task_id"], Outcome.DEFERRED, args["data"])
            return
        if int(answer) == 0:  # the task was no longer active: nothing written
            return
        outcome = _WRITTEN.get(name) or (Outcome.RETRIED if args.get("failure") else Outcome.DEFERRED)
        self._add(queue, args["task_id"], outcome, args.get("data"))

    def _add(self, queue: str, task_id: str, outcome: Outcome, data: bytes | None) -> None:
        (kind, retried), error = self.taken.get((queue, task_id), ("", 0)), ""
        if data is not None:
            with contextlib.suppress(ValueError):
                msg = decode_message(data)
                kind, retried = msg.type, msg.retried
                error = msg.error_msg if outcome is not Outcome.COMPLETED else ""
        self.result.runs.append(TaskRun(task_id, queue, kind, outcome, error, retried))


_RECORDED = frozenset({"done", "retry", "defer", *_WRITTEN})


class _Recorder(BrokerProxy):
    """Records the outcomes written through it and the tasks it dequeues; keeps the takes within the budget."""

    def __init__(self, inner: RedisBroker, log: _Log) -> None:
        super().__init__(inner)
        self.log = log

    async def intercept(
        self, name: str, call: Callable[..., Awaitable[Any]], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Pass the call on; note what it did."""
        if name == "dequeue":
            return await self._dequeue(call, inspect.signature(call).bind(*args, **kwargs))
        answer = await call(*args, **kwargs)
        if name in _RECORDED:
            bound = inspect.signature(call).bind(*args, **kwargs)
            bound.apply_defaults()
            self.log.record(name, bound.arguments, answer)
        return answer

    async def _dequeue(self, call: Callable[..., Awaitable[Any]], bound: inspect.BoundArguments) -> Any:
        log = self.log
        if log.budget is not None:
            if log.budget <= 0:
                return Taken()
            bound.arguments["count"] = min(bound.arguments["count"], log.budget)
        log.dequeuing += 1
        try:
            taken = await call(*bound.args, **bound.kwargs)
        finally:
            log.dequeuing -= 1  # the processor holds what was taken before anything else runs
        if log.budget is not None:
            log.budget -= len(taken)
        for task_id, data in taken:
            with contextlib.suppress(ValueError):
                msg = decode_message(data)
                log.taken[(bound.arguments["queue"], task_id)] = (msg.type, msg.retried)
        return taken


async def drain(
    worker: Worker, *, max_tasks: int | None = None, timeout: float = 10.0, due_within: float = 1.0
) -> DrainResult:
    """Start ``worker``, run it until its queues are drained (or it ran ``max_tasks`` tasks), stop it.

    Args:
        worker: a worker that has not been started (a worker runs once: build one per drain).
        max_tasks: let the worker take at most this many tasks (each retry counts again), and stop once it has
            finished them.
        timeout: seconds to wait for the queues to drain.
        due_within: scheduled and retry tasks due within this many seconds are waited for. Due times are whole
            seconds, so a retry without delay is due up to a second after its failure.

    Returns:
        Every outcome the worker wrote, in order.

    Raises:
        ValueError: the worker was started already.
        DrainTimeout: the queues were not drained in time; its message names the tasks still running and those
            failing again and again, and its ``result`` says what was done.
        RuntimeError: the worker stopped on its own (a component crashed; its log says why).
    """
    if worker.processor is not None:
        raise ValueError("drain starts the worker itself: pass a Worker that has not been started")
    log = _Log(budget=max_tasks)
    outer = worker.wrap_broker

    def wrap(broker: RedisBroker) -> RedisBroker:
        if log.real is None:
            log.real = innermost(broker)
        return _Recorder(outer(broker) if outer is not None else broker, log)

    worker.wrap_broker = wrap
    await worker.start()
    stopped = asyncio.ensure_future(worker.wait())
    try:
        await _until_drained(worker, log, timeout, due_within, stopped)
    except DrainTimeout:
        if not stopped.done():
            await _stop_at_once(worker)
        raise
    finally:
        if not stopped.done():
            await worker.stop()
        await stopped
    return log.result


async def _stop_at_once(worker: Worker) -> None:
    """Stop ``worker`` giving its running handlers :data:`_TIMED_OUT_GRACE` seconds, not ``shutdown_timeout``.

    The drain has failed already: waiting out the worker's shutdown timeout (8 s by default) for handlers
    that did not finish in the drain's own time would only delay the report. They are cancelled and their
    tasks put back, as at any shutdown.
    """
    patient = worker.settings
    worker.settings = patient.replace(shutdown_timeout=min(patient.shutdown_timeout, _TIMED_OUT_GRACE))
    try:
        await worker.stop()
    finally:
        worker.settings = patient


async def _until_drained(
    worker: Worker, log: _Log, timeout: float, due_within: float, stopped: asyncio.Future[None]
) -> None:
    processor = worker.processor
    assert processor is not None and log.real is not None
    real, queues = log.real, list(worker.settings.queues)
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if log.budget == 0 and not any(_busy(processor, log)[:3]):
            return
        if stopped.done():
            raise RuntimeError(f"the worker stopped while draining; so far: {log.result.runs}")
        before = _busy(processor, log)
        # the sets first: a task forwarded between the two looks is then seen in one of them, never in neither
        due = await real.next_due(queues)
        pending = await real.pending_counts(queues)
        horizon = worker.clock.now() + due_within
        runnable = sum(pending) + sum(1 for d in due if d is not None and d <= horizon)
        if runnable == 0 and before == _busy(processor, log) and not any(before[:3]):
            return
        if asyncio.get_running_loop().time() >= deadline:
            counts = ", ".join(f"{q}: {n} pending" for q, n in zip(queues, pending, strict=True))
            message = (
                f"the worker did not drain its queues in {timeout} s ({counts}; {runnable} runnable in all, "
                f"{before[0]} in its hands); {log.result.processed} processed{_unfinished(worker, processor, log)}"
            )
            raise DrainTimeout(message, log.result)
        await asyncio.sleep(_POLL)


def _unfinished(worker: Worker, processor: Processor, log: _Log) -> str:
    """What a timed-out drain left: the tasks still running, and those that failed and wait to run again."""
    now = worker.clock.now()
    running = [
        f"{inf.msg.type} {inf.id!r} in {inf.queue!r} for {max(0.0, now - inf.started):.1f} s"
        for inf in processor.inflight.values()
    ]
    last: dict[tuple[str, str], TaskRun] = {(r.queue, r.id): r for r in log.result.runs}
    failing = [
        f"{r.type} {r.id!r} in {r.queue!r} (retried {r.retried}; {r.error})"
        for r in last.values()
        if r.outcome is Outcome.RETRIED
    ]
    return "".join(
        f"; {label}: {_listed(items)}"
        for label, items in (("still running", running), ("failed, to run again", failing))
        if items
    )


def _listed(items: list[str], most: int = 5) -> str:
    """The first ``most`` of ``items``, and how many more there are."""
    shown = ", ".join(items[:most])
    return shown if len(items) <= most else f"{shown} and {len(items) - most} more"


def _busy(processor: Processor, log: _Log) -> tuple[int, int, int, int]:
    """Tasks in hand, background writes, dequeues under way and outcomes so far.

    The same before and after a look at Redis, with the first three 0: nothing moved meanwhile.
    """
    return len(processor.inflight), len(processor.outcomes.background), log.dequeuing, len(log.result.runs)
