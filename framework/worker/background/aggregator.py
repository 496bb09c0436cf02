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
  it is enqueued to the group's queue with the set id as its task id (options may change both);
* the staged tasks and the set are then deleted. If the worker dies first, or ``aggregate`` raises, the
  recoverer puts the set back into its group after the deadline and it is aggregated again
  (at-least-once). An ``aggregate`` still running near the deadline has its result dropped
  (``group_aggregation_late``): the tasks are aggregated again from their group, not twice.

Go's asynq has one aggregate function per server; here each group or task type has its own, and Go
services that enqueue grouped tasks are served alike (the keys are asynq's).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import msgspec
from redis.exceptions import RedisError

from framework.errors import PayloadTypeError, PluginError, TaskIdConflict
from framework.plugins.calls import contributions_by_plugin
from framework.plugins.events import await_me_maybe
from framework.protocol.message import decode_message

if TYPE_CHECKING:
    import pluggy
    import structlog

    from framework.broker.broker import Broker
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
    """

    aggregate: AggregateFn
    group: str | None = None
    task_type: str | None = None
    grace_period: float = 60.0
    max_delay: float = 0.0
    max_size: int = 0

    def __post_init__(self) -> None:
        if (self.group is None) == (self.task_type is None):
            raise ValueError("an Aggregator needs exactly one of group= or task_type=")
        if self.grace_period < 0 or self.max_delay < 0 or self.max_size < 0:
            raise ValueError("grace_period, max_delay and max_size must not be negative")
        if not callable(self.aggregate):
            raise TypeError("Aggregator.aggregate must be callable")


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
"""Seconds before a staged set's deadline after which its aggregated task is no longer enqueued here: the
recoverer may reclaim the set from then on (clocks of different hosts included)."""


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

    async def _aggregator_for(self, queue: str, group: str) -> Aggregator | None:
        agg = self.by_group.get(group)
        if agg is not None or not self.by_type:
            return agg
        task_type = self._types.get((queue, group))
        if task_type is None:
            data = await self.broker.first_in_group(queue, group)
            if data is None:
                return None
            try:
                task_type = decode_message(data).type
            except ValueError as exc:  # its first task is not a TaskMessage: only a group aggregator can tell
                self.log.warning("group_message_invalid", queue=queue, group=group, error=str(exc))
                return None
            if len(self._types) > 10_000:
                self._types.clear()
            self._types[(queue, group)] = task_type
        return self.by_type.get(task_type)

    async def check_once(self) -> int:
        """Check every group of every queue once; returns how many aggregated tasks were enqueued."""
        made = 0
        for queue in self.queues:
            for group in await self.broker.groups(queue):
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
        members, _deadline = await self.broker.read_aggregation_set(queue, set_key)
        if not members:
            await self.broker.delete_aggregation_set(queue, set_key)
            return 0
        try:
            tasks = self._decodable(queue, group, members)
            task, payload, options = _normalize(await await_me_maybe(agg.aggregate(group, tasks)))
            if not await self._still_ours(queue, group, set_key, len(members)):
                return 0
            options = {"queue": queue, "task_id": set_id, **options}
            try:
                info = await self.client.enqueue(task, payload, **options)
                task_id = info.id
            except TaskIdConflict:
                task_id = str(options["task_id"])  # enqueued by an earlier attempt
        except (RedisError, OSError):
            raise
        except Exception as exc:  # noqa: BLE001 - user code; logged, and the set is reclaimed and retried later
            self.log.error(
                "group_aggregation_failed",
                queue=queue,
                group=group,
                tasks=len(members),
                error=f"{type(exc).__name__}: {exc}",
                note="retried when the set is reclaimed (2 min)",
            )
            return 0
        await self.broker.delete_aggregation_set(queue, set_key)
        self.log.info("group_aggregated", queue=queue, group=group, tasks=len(members), task_id=task_id)
        return 1

    async def _still_ours(self, queue: str, group: str, set_key: str, size: int) -> bool:
        """Whether the staged set may still be aggregated here: not reclaimed, nor about to be.

        ``aggregate`` is user code and may take long (or this worker may have been paused): once the set's
        deadline has passed, a recoverer puts its tasks back into the group, where they are aggregated again
        into another set with another id; enqueuing this one too would aggregate them twice.
        """
        deadline = await self.broker.aggregation_set_deadline(queue, set_key)
        if deadline is not None and self.client.clock.now() < deadline - DEADLINE_MARGIN:
            return True
        self.log.warning(
            "group_aggregation_late",
            queue=queue,
            group=group,
            tasks=size,
            note="the set's deadline passed while it was aggregated: its tasks go back to the group",
        )
        return False

    async def run_once(self) -> None:
        """Check every group once (:meth:`check_once`)."""
        await self.check_once()
