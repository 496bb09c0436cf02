"""Group aggregation, as asynq does it: tasks enqueued with a ``group`` wait, then become one task.

Enqueue with ``client.enqueue(task, payload, group="user:42")``: the task is stored as *aggregating* in
the group's zset (``<ns>:{q}:g:<group>``) instead of pending. An :class:`Aggregator` registered for that
group name (or for the task type of the group's tasks) decides when and how the group becomes one task:

* a group is *ready* when it holds ``max_size`` tasks or more, when its oldest task has waited
  ``max_delay`` seconds, or when no task joined it for ``grace_period`` seconds (``aggregation_check.lua``,
  atomic, so any number of workers may check the same group). Join times are whole seconds, as asynq
  stores them, so the grace period is waited at least and at most one second more, and ``max_delay``
  may end up to a second early;
* the ready tasks (at most ``max_size``) are staged in an aggregation set with a 2-minute deadline;
* ``aggregate(group, tasks)`` returns the aggregated task as ``(task, payload)`` or
  ``(task, payload, options)``, where ``task`` is a :class:`~framework.task.TaskDef` or a type string;
  it is enqueued to the group's queue with the set id as its task id (options may change both). An
  ``async def`` aggregate runs on the event loop; a plain function runs in a thread (as a plain-function
  handler does), so it may block. It is not called when no staged task decodes;
* the staged tasks and the set are then deleted, and the waiters of those tasks are told the aggregate
  task's id. If the worker dies first, or ``aggregate`` fails (it raises, returns something else, or
  its aggregate task cannot be enqueued, an id it chose being taken included), the recoverer puts the set
  back into its group after the deadline and it is aggregated again (at-least-once). A worker that died
  after enqueuing the aggregate task under the set id leaves a set the recoverer deletes instead (its
  tasks were merged); a delete that failed on a Redis fault is tried again on the next pass.
* ``aggregate`` is given until shortly before the set's deadline (:data:`DEADLINE_MARGIN`): one that has
  not returned by then is abandoned (``group_aggregation_timeout``; a plain function's thread runs on
  until it returns, its result unused), and one that returns later than that has its result dropped
  (``group_aggregation_late``): either way the tasks are aggregated again from their group, not twice,
  and other groups are not held up for longer than that.
* a failed attempt (``group_aggregation_failed`` or ``group_aggregation_timeout``) is counted on each task
  staged in the set (``fw_agg_attempts`` in its record, ours; asynq ignores it), and the count stays with
  the task when its set goes back into the group. One that brings tasks to the aggregator's
  ``max_attempts`` (default 5) archives them at once, in the script that counts it
  (``aggregation_failed.lua``): state archived, in the queue's archive, their ``error_msg`` naming the
  group, the attempts and the last error, their waiters told they were archived, and the set deleted once
  none of its tasks is left (``group_aggregation_gave_up``). Without that, a batch ``aggregate`` always
  fails on came back every 2 minutes, with the group's newest tasks, for good. Tasks of the set with fewer
  attempts (they joined the group later) stay staged and go back into the group at the deadline, as after
  any failed attempt; so does the whole set below ``max_attempts``, and a passing failure costs no task.
  An archived task's count is cleared (its ``error_msg`` names it), and so is that of a task a retry brings
  back into its group: run again from the archive, a task has its full ``max_attempts`` when it is grouped
  again.
  Not counted: a result dropped for being late (``aggregate`` returned in time, the deadline came near
  before it was enqueued); Redis faults of the aggregator's own calls (reading the set, enqueuing the
  aggregate task, counting), and Redis refusing the aggregate task; an attempt whose set was reclaimed
  meanwhile (its tasks are aggregated again from their group).

Go's asynq has one aggregate function per server; here each group or task type has its own, and Go
services that enqueue grouped tasks are served alike (the keys are asynq's).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import math
import operator
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import msgspec
from redis.exceptions import RedisError

from framework.errors import EnqueueFailed, PayloadTypeError, PluginError, TaskIdConflict, error_text
from framework.plugins.calls import contributions_by_plugin
from framework.plugins.events import await_me_maybe
from framework.protocol.message import decode_message, encode_message
from framework.worker.threads import HandlerThreads

if TYPE_CHECKING:
    import pluggy
    import structlog

    from framework.broker.broker import Broker
    from framework.broker.maintenance import FailedAggregation
    from framework.client.client import Client
    from framework.registry import Registry
    from framework.settings import Settings
    from framework.task import TaskDef

__all__ = ("AggregateFn", "Aggregator", "GroupAggregator", "GroupedTask", "collect_aggregators")


class GroupedTask(msgspec.Struct, frozen=True, kw_only=True):
    """One task of a group, as ``aggregate`` sees it. Set by the framework.

    Attributes:
        id: the task id.
        type: the task type.
        payload: the payload decoded by the task type's :class:`~framework.task.TaskDef` when this worker
            has it (and it decodes), else the raw bytes.
        data: the raw payload bytes.
        headers: the task's headers.
        queue: the queue.
        group: the group.
    """

    id: str
    type: str
    payload: Any
    data: bytes
    headers: dict[str, str]
    queue: str
    group: str


AggregateFn: TypeAlias = Callable[[str, list[GroupedTask]], Any]
"""``(group, tasks) -> (task, payload)`` or ``(task, payload, options)``; may be ``async``."""


@dataclass(frozen=True, slots=True)
class Aggregator:
    """How one group (or the groups of one task type) turns into one task. Set by the user or a plugin.

    Attributes:
        aggregate: ``(group, tasks) -> (task, payload[, options])``; ``task`` is a TaskDef or type string.
        group: the group name this aggregator serves (give this or ``task_type``).
        task_type: serve every group whose tasks have this type (a group name match wins over it).
        grace_period: seconds without a new task after which a group is aggregated (asynq's default 60 s).
        max_delay: seconds after which a group is aggregated however busy it is (0 = no limit).
        max_size: tasks at which a group is aggregated at once; also the most tasks per aggregation
            (0 = no limit).
        max_attempts: failed attempts to aggregate a task after which it is archived (at least 1; default 5).
            An attempt fails when ``aggregate`` raises, returns what is not ``(task, payload[, options])`` or
            cannot be enqueued, or does not return before its set's deadline; it is counted on every task
            staged in the set. One that brings tasks to ``max_attempts`` archives them at once, with an error
            naming the group, the attempts and the last error, so a batch ``aggregate`` always fails on does
            not come back for good; below it, the set goes back into its group after its 2-minute deadline
            and is aggregated again, so that a passing failure (a service down for a while) costs no task.
            Redis failing the aggregator (unreachable, or refusing the aggregate task) is not the batch's
            failure and is not counted.
    """

    aggregate: AggregateFn
    group: str | None = None
    task_type: str | None = None
    grace_period: float = 60.0
    max_delay: float = 0.0
    max_size: int = 0
    max_attempts: int = 5

    def __post_init__(self) -> None:
        if (self.group is None) == (self.task_type is None):
            raise ValueError("an Aggregator needs exactly one of group= or task_type=")
        for name in ("grace_period", "max_delay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
                raise ValueError(f"{name} must be a number of seconds, not {value!r}")
        self._whole("max_size", "tasks")
        if self.grace_period < 0 or self.max_delay < 0 or self.max_size < 0:
            raise ValueError("grace_period, max_delay and max_size must not be negative")
        self._whole("max_attempts", "attempts")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {self.max_attempts}")
        if not callable(self.aggregate):
            raise TypeError("Aggregator.aggregate must be callable")

    def _whole(self, name: str, unit: str) -> None:
        """Store the field ``name`` as an ``int``: what ``operator.index`` takes; a bool or a float is refused."""
        value = getattr(self, name)
        try:
            if isinstance(value, bool | float):
                raise TypeError
            object.__setattr__(self, name, operator.index(value))
        except TypeError:
            raise ValueError(f"{name} must be a whole number of {unit}, not {value!r}") from None


def collect_aggregators(pm: pluggy.PluginManager, settings: Settings) -> list[Aggregator]:
    """Every plugin's aggregators (``register_aggregators``), in plugin load order.

    Raises:
        PluginError: a plugin contributed something that is not an :class:`Aggregator`, naming it.
    """
    out: list[Aggregator] = []
    for plugin, contributed in contributions_by_plugin(pm, "register_aggregators", settings=settings):
        for item in contributed:
            if not isinstance(item, Aggregator):
                raise PluginError(f"plugin {plugin!r} contributed {item!r} to register_aggregators, not an Aggregator")
            out.append(item)
    return out


DEADLINE_MARGIN = 10.0
"""Seconds before a staged set's deadline after which its aggregated task is no longer enqueued here, and by
which ``aggregate`` must have returned: the recoverer may reclaim the set from then on (clocks of different
hosts included)."""


_TYPE_SCAN = 20
"""How many of a group's oldest tasks are read to find its task type (for aggregators by task type)."""


class _AttemptFailed(Exception):
    """An attempt to aggregate a staged set failed: logged, and counted toward ``max_attempts`` when ``counts``.

    Args:
        event: the event it is logged as.
        error: the error, ``"<ExceptionType>: <message>"``.
        counts: whether it counts toward ``max_attempts`` (not when Redis refused the aggregate task).
        fields: more fields of the event.
    """

    def __init__(self, event: str, error: str, *, counts: bool = True, **fields: Any) -> None:
        super().__init__(error)
        self.event = event
        self.error = error
        self.counts = counts
        self.fields = fields


def _normalize(result: Any) -> tuple[TaskDef[Any] | str, Any, dict[str, Any]]:
    if not isinstance(result, tuple) or len(result) not in (2, 3):
        raise TypeError(f"aggregate must return (task, payload) or (task, payload, options), got {result!r}")
    options = dict(result[2]) if len(result) == 3 else {}
    return result[0], result[1], options


class GroupAggregator:
    """The worker's job that checks groups and enqueues aggregated tasks.

    A job for :class:`~framework.worker.background.periodic.Periodic`, run every :attr:`interval` seconds.

    Args:
        broker: the broker.
        client: enqueues the aggregated tasks.
        registry: decodes group members' payloads.
        aggregators: the aggregators (duplicates of a group or task type are refused).
        queues: the queues this worker serves.
        logger: the worker's logger.
        interval: seconds between checks (default: half the shortest grace period, between 0.1 and 1 s).

    Attributes:
        interval: seconds between checks.
    """

    component = "aggregator"

    def __init__(
        self,
        broker: Broker,
        client: Client,
        registry: Registry,
        aggregators: Iterable[Aggregator],
        queues: Sequence[str],
        logger: structlog.typing.FilteringBoundLogger,
        interval: float | None = None,
    ) -> None:
        self.broker = broker
        self.client = client
        self.registry = registry
        self.queues = list(queues)
        self.log = logger
        self.by_group: dict[str, Aggregator] = {}
        self.by_type: dict[str, Aggregator] = {}
        for agg in aggregators:
            table, name = (self.by_group, agg.group) if agg.group is not None else (self.by_type, agg.task_type or "")
            if name in table:
                raise PluginError(
                    f"two aggregators are registered for {'group' if agg.group else 'task type'} {name!r}"
                )
            table[name] = agg
        graces = [a.grace_period for a in (*self.by_group.values(), *self.by_type.values())]
        self.interval = interval if interval is not None else max(0.1, min([1.0, *(g / 2 for g in graces)]))
        self._types: dict[tuple[str, str], str] = {}
        self._threads = HandlerThreads("framework-aggregate", idle_timeout=10.0)
        # sets whose aggregate task was enqueued but whose delete failed: (queue, set key) -> (group, size, id)
        self._undeleted: dict[tuple[str, str], tuple[str, int, str]] = {}
        self._warned: set[tuple[str, str, str]] = set()

    async def _aggregator_for(self, queue: str, group: str) -> Aggregator | None:
        agg = self.by_group.get(group)
        if agg is not None or not self.by_type:
            return agg
        task_type = self._types.get((queue, group))
        if task_type is None:
            # the type of the oldest task whose message decodes: one that does not is left out when the group
            # is aggregated (and deleted with its set), so it must not keep the group from being aggregated
            messages = await self.broker.oldest_in_group(queue, group, _TYPE_SCAN)
            for data in messages:
                with contextlib.suppress(ValueError):
                    task_type = decode_message(data).type
                    break
            if task_type is None:
                if not messages:  # emptied meanwhile (aggregated elsewhere), or only ids without a record
                    return None
                self._warn_once(
                    "group_message_invalid",
                    queue,
                    group,
                    note=f"none of its {_TYPE_SCAN} oldest tasks has a message that decodes: only a group "
                    "aggregator can serve it",
                )
                return None
            if len(self._types) > 10_000:
                self._types.clear()
            self._types[(queue, group)] = task_type
        return self.by_type.get(task_type)

    async def check_once(self) -> int:
        """Check every group of every queue once; returns how many aggregated tasks were enqueued.

        Sets whose delete failed after their aggregate task was enqueued are deleted first.
        """
        await self._delete_undeleted()
        made = 0
        for queue in self.queues:
            for group in await self.broker.groups(queue):
                if not self._valid_name(queue, group):
                    continue
                agg = await self._aggregator_for(queue, group)
                if agg is None:
                    continue
                while True:
                    set_id = str(uuid.uuid4())
                    set_key = await self.broker.aggregation_check(
                        queue,
                        group,
                        set_id,
                        max_size=agg.max_size,
                        max_delay=agg.max_delay,
                        grace_period=agg.grace_period,
                    )
                    if set_key is None:
                        break
                    made += await self._aggregate(queue, group, set_id, set_key, agg)
        return made

    def _valid_name(self, queue: str, group: str) -> bool:
        """Whether a group's name is UTF-8 (Go may write any bytes); one that is not is logged once, and skipped."""
        try:
            group.encode()
        except UnicodeEncodeError:
            self._warn_once(
                "group_name_invalid",
                queue,
                group.encode("utf-8", "backslashreplace").decode(),
                note="not UTF-8: its tasks are left in their group, for an aggregator that can name it",
            )
            return False
        return True

    def _warn_once(self, event: str, queue: str, group: str, note: str) -> None:
        """Log a warning about a group that is skipped, once per worker (not on every pass)."""
        if (event, queue, group) in self._warned:
            return
        if len(self._warned) > 10_000:
            self._warned.clear()
        self._warned.add((event, queue, group))
        self.log.warning(event, queue=queue, group=group, note=note)

    async def _delete_undeleted(self) -> None:
        """Delete the sets whose aggregate task was enqueued but whose delete failed (a Redis fault raises)."""
        for (queue, set_key), (group, size, aggregate_id) in list(self._undeleted.items()):
            await self.broker.delete_aggregation_set(queue, set_key, aggregate_id)
            del self._undeleted[(queue, set_key)]
            self.log.info("group_aggregated", queue=queue, group=group, tasks=size, task_id=aggregate_id)

    def _grouped(self, queue: str, group: str, task_id: str, data: bytes) -> GroupedTask:
        msg = decode_message(data)
        payload: Any = msg.payload
        taskdef = self.registry.get(msg.type)
        if taskdef is not None:
            with contextlib.suppress(PayloadTypeError):
                payload = taskdef.decode(msg.payload)
        return GroupedTask(
            id=msg.id or task_id,
            type=msg.type,
            payload=payload,
            data=msg.payload,
            headers=dict(msg.headers),
            queue=queue,
            group=group,
        )

    def _decodable(self, queue: str, group: str, members: list[tuple[str, bytes]]) -> list[GroupedTask]:
        """The set's tasks; a member whose message does not decode is left out (and goes with the set), logged."""
        tasks = []
        for task_id, data in members:
            try:
                tasks.append(self._grouped(queue, group, task_id, data))
            except ValueError as exc:
                self.log.error(
                    "task_message_invalid",
                    task_id=task_id,
                    queue=queue,
                    group=group,
                    error=str(exc),
                    outcome="left out of its aggregation (deleted with the set)",
                )
        return tasks

    async def _aggregate(self, queue: str, group: str, set_id: str, set_key: str, agg: Aggregator) -> int:
        members, deadline = await self.broker.read_aggregation_set(queue, set_key)
        tasks = self._decodable(queue, group, members)
        if not tasks:  # none left, or none decodes: nothing to aggregate (undecodable ones go with the set)
            await self.broker.delete_aggregation_set(queue, set_key)
            return 0
        try:
            result = await self._aggregated(queue, group, len(members), deadline, agg, tasks)
            if result is None or not await self._still_ours(queue, group, set_key, len(members)):
                return 0
            aggregate_id = await self._enqueue(queue, group, set_id, result)
        except _AttemptFailed as failure:
            await self._attempt_failed(queue, group, set_key, len(members), agg, failure)
            return 0
        try:
            await self.broker.delete_aggregation_set(queue, set_key, aggregate_id)
        except (RedisError, OSError):
            self._undeleted[(queue, set_key)] = (group, len(members), aggregate_id)  # deleted on the next pass
            raise
        self.log.info("group_aggregated", queue=queue, group=group, tasks=len(members), task_id=aggregate_id)
        return 1

    async def _aggregated(
        self, queue: str, group: str, size: int, deadline: float | None, agg: Aggregator, tasks: list[GroupedTask]
    ) -> tuple[TaskDef[Any] | str, Any, dict[str, Any]] | None:
        """What ``aggregate`` returned, normalized; None (logged) when the set's deadline is too near to call it.

        Raises:
            _AttemptFailed: ``aggregate`` raised, returned something else, or did not return in time.
        """
        budget = -1.0 if deadline is None else deadline - DEADLINE_MARGIN - self.client.clock.now()
        if budget <= 0:
            self._late(queue, group, size)
            return None
        timer = asyncio.timeout(budget)
        try:
            async with timer:
                result = await self._call(agg, group, tasks)
            return _normalize(result)
        except Exception as exc:  # user code (OSError and RedisError included): counted, retried
            if not timer.expired():
                raise _AttemptFailed("group_aggregation_failed", error_text(exc)) from exc
        raise _AttemptFailed(
            "group_aggregation_timeout",
            f"TimeoutError: aggregate did not return within {budget:.1f} s, before its set's deadline",
            timeout=round(budget, 3),
        )

    async def _enqueue(
        self, queue: str, group: str, set_id: str, result: tuple[TaskDef[Any] | str, Any, dict[str, Any]]
    ) -> str:
        """Enqueue the aggregate task; its id.

        Raises:
            _AttemptFailed: what ``aggregate`` returned cannot be enqueued (an id it chose being taken included),
                or Redis refused it (not counted).
            RedisError, OSError: Redis could not be reached (not the batch's failure: not counted).
        """
        task, payload, options = result
        options = {"queue": queue, "task_id": set_id, **options}
        try:
            info = await self.client.enqueue(task, payload, **options)
        except TaskIdConflict as exc:
            if options["task_id"] == set_id:
                return set_id  # enqueued by an earlier attempt
            # an id aggregate chose is taken: not by this set's aggregate
            raise _AttemptFailed("group_aggregation_failed", error_text(exc)) from exc
        except (RedisError, OSError):
            raise
        except EnqueueFailed as exc:  # Redis answered with an error (out of memory, a read-only replica...)
            raise _AttemptFailed("group_aggregation_failed", error_text(exc), counts=False) from exc
        except Exception as exc:  # what aggregate returned cannot be enqueued: counted, retried
            raise _AttemptFailed("group_aggregation_failed", error_text(exc)) from exc
        return info.id

    async def _attempt_failed(
        self, queue: str, group: str, set_key: str, size: int, agg: Aggregator, failure: _AttemptFailed
    ) -> None:
        """Count a failed attempt on the set's tasks (archiving those at ``max_attempts``), and log it.

        Raises:
            RedisError, OSError: Redis could not be reached (the failure is logged first; the set is reclaimed
                after its deadline and the attempt is not counted).
        """
        fields: dict[str, Any] = {"queue": queue, "group": group, "tasks": size, **failure.fields}
        fields["error"] = failure.error
        fields["max_attempts"] = agg.max_attempts
        if not failure.counts:
            self.log.error(
                failure.event, **fields, note="retried when the set is reclaimed (2 min); Redis refused it: not counted"
            )
            return
        try:
            counted = await self._count_failure(queue, group, set_key, agg.max_attempts, failure.error)
        except (RedisError, OSError):
            self.log.error(
                failure.event, **fields, note="retried when the set is reclaimed (2 min); Redis failed: not counted"
            )
            raise
        if not counted.counted:
            self.log.error(
                failure.event,
                **fields,
                note="the set was reclaimed meanwhile: its tasks are aggregated again from their group; not counted",
            )
            return
        given_up = counted.archived + counted.deleted
        retried = "retried when the set is reclaimed (2 min)"
        note = f"{retried}; its tasks are archived at {agg.max_attempts} failed attempts"
        if given_up:
            rest = f"; its other tasks are {retried}" if counted.left else ""
            note = f"gave up: see group_aggregation_gave_up{rest}"
        self.log.error(failure.event, **fields, attempt=counted.attempts, note=note)
        if given_up:
            self.log.error(
                "group_aggregation_gave_up",
                queue=queue,
                group=group,
                tasks=given_up,
                attempts=counted.attempts,
                error=failure.error,
                staged=counted.left,
                note="its tasks are archived (any whose message does not decode deleted); the group's other tasks "
                "are aggregated without them",
            )

    async def _count_failure(
        self, queue: str, group: str, set_key: str, max_attempts: int, error: str
    ) -> FailedAggregation:
        """``aggregation_failed.lua``, given the archive message of each task it archives.

        The script names the tasks that reach ``max_attempts`` (and writes nothing) when their messages were not
        given; they are built from the messages it returns, and the script called again. The set is this
        worker's alone until it is reclaimed (then the script does nothing), so a second call normally counts.
        """
        messages: dict[bytes, bytes] = {}
        outcome = await self.broker.aggregation_failed(queue, set_key, max_attempts)
        for _ in range(2):
            if outcome.counted or not outcome.due:
                break
            for task_id, attempts, data in outcome.due:
                messages[task_id] = self._archive_message(group, attempts, error, data)
            outcome = await self.broker.aggregation_failed(queue, set_key, max_attempts, list(messages.items()))
        return outcome

    def _archive_message(self, group: str, attempts: int, error: str, data: bytes) -> bytes:
        """A task's message as archived when its group's aggregation gave up; ``b""`` when it does not decode."""
        try:
            msg = decode_message(data)
        except ValueError:
            return b""
        msg.error_msg = f"aggregation of group {group!r} gave up after {attempts} failed attempts; the last: {error}"
        msg.last_failed_at = int(self.broker.clock.now())
        return encode_message(msg)

    async def _call(self, agg: Aggregator, group: str, tasks: list[GroupedTask]) -> Any:
        """``agg.aggregate(group, tasks)``: an ``async def`` on the loop, a plain function in a thread."""
        fn = agg.aggregate
        if inspect.iscoroutinefunction(fn):
            return await fn(group, tasks)
        result = await asyncio.wrap_future(self._threads.submit(fn, group, tasks))
        return await await_me_maybe(result)

    def _late(self, queue: str, group: str, size: int) -> None:
        self.log.warning(
            "group_aggregation_late",
            queue=queue,
            group=group,
            tasks=size,
            note="the set's deadline passed while it was aggregated: its tasks go back to the group",
        )

    async def _still_ours(self, queue: str, group: str, set_key: str, size: int) -> bool:
        """Whether the staged set may still be aggregated here: not reclaimed, nor about to be.

        ``aggregate`` is user code and may take long (or this worker may have been paused): once the set's
        deadline has passed, a recoverer puts its tasks back into the group, where they are aggregated again
        into another set with another id; enqueuing this one too would aggregate them twice.
        """
        deadline = await self.broker.aggregation_set_deadline(queue, set_key)
        if deadline is not None and self.client.clock.now() < deadline - DEADLINE_MARGIN:
            return True
        self._late(queue, group, size)
        return False

    async def run_once(self) -> None:
        """Check every group once (:meth:`check_once`)."""
        await self.check_once()
