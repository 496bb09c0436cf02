"""The hot-path Redis adapter: the only code that changes task state, one method per Lua script.

Every transition is atomic in Redis; nothing here uses WATCH/MULTI. Methods take the encoded
``TaskMessage`` bytes where a script stores a message, so callers encode once.

:class:`RedisBroker` holds three parts on their shared state (:class:`~framework.broker.base.BrokerState`) and
answers for them: the enqueue part (:mod:`framework.broker.enqueue`), the worker's transitions
(:mod:`framework.broker.transitions`) and maintenance (:mod:`framework.broker.maintenance`). The worker's heartbeat
writes through a fourth, blocking part of its own (:mod:`framework.broker.liveness`).

:class:`Broker` is the seam the worker's parts (processor, outcomes, forwarder, recoverer, janitor, aggregator)
are typed against: anything with these methods can stand in for :class:`RedisBroker`, a fault-injecting
wrapper in tests for one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar, overload

from framework.broker.base import BrokerState
from framework.broker.enqueue import EnqueueSide
from framework.broker.limits import LimitOps
from framework.broker.maintenance import Maintenance
from framework.broker.transitions import WorkerTransitions
from framework.broker.workflows import StepTransitions, WorkflowOps

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from redis.asyncio import Redis

    from framework.broker.limits import Taken as LimitTaken
    from framework.broker.maintenance import FailedAggregation
    from framework.broker.transitions import Taken
    from framework.clock import Clock
    from framework.limits import Applied
    from framework.protocol.keys import Schema
    from framework.protocol.workflow import StepRef

__all__ = ("Broker", "RedisBroker")

P = ParamSpec("P")
R = TypeVar("R")


class Broker(Protocol):
    """The operations a worker's parts call; :class:`RedisBroker` is the implementation.

    Each method is documented in the part of :class:`RedisBroker` that owns it:
    :class:`~framework.broker.transitions.WorkerTransitions` (what the processor and its outcomes call) and
    :class:`~framework.broker.maintenance.Maintenance` (the forwarder, recoverer, janitor and aggregator).
    """

    @property
    def schema(self) -> Schema:
        """The key schema."""

    @property
    def clock(self) -> Clock:
        """Where time comes from."""

    def close(self) -> None:
        """Close the hot-path connection, if it is the broker's own."""

    # -- the processor and its outcomes
    async def dequeue(  # noqa: D102
        self, queue: str, count: int, inflight_key: str = ..., waiter: str = ..., *, alone: bool = ...
    ) -> Taken: ...
    async def pending_counts(self, queues: Sequence[str]) -> list[int]: ...  # noqa: D102
    def pending_check_key(self, queues: Iterable[str]) -> str: ...  # noqa: D102
    async def check_pending(  # noqa: D102
        self, queues: Sequence[str], claim: str, ttl: float, holder: str
    ) -> list[int] | None: ...
    async def withdraw(self, queues: Sequence[str], waiter: str) -> None: ...  # noqa: D102
    async def clear_suspect(self, queue: str, task_id: str) -> None: ...  # noqa: D102
    async def done(  # noqa: D102
        self, queue: str, tasks: Sequence[tuple[str, str] | tuple[str, str, bytes]], inflight: str = ...
    ) -> list[int]: ...
    async def mark_complete(  # noqa: D102
        self, queue: str, task_id: str, data: bytes, expires_at: int, unique_key: str, result: bytes = ...
    ) -> int: ...
    async def cancel_requested(self, queue: str, task_id: str) -> bool: ...  # noqa: D102
    async def step_done(  # noqa: D102
        self, step: StepRef, queue: str, task_id: str, unique_key: str, result: bytes, inflight: str = ...
    ) -> int: ...
    async def step_revoked(  # noqa: D102
        self, step: StepRef, queue: str, task_id: str, unique_key: str, error: str, inflight: str = ...
    ) -> int: ...
    async def step_complete(  # noqa: D102
        self, step: StepRef, queue: str, task_id: str, data: bytes, expires_at: int, unique_key: str, result: bytes
    ) -> int: ...
    async def step_archive(self, step: StepRef, queue: str, task_id: str, data: bytes, error: str) -> int: ...  # noqa: D102
    async def step_inputs(self, step: StepRef) -> list[bytes | None]: ...  # noqa: D102
    async def limit_take(  # noqa: D102
        self, queue: str, task_id: str, limits: Sequence[Applied], inflight_key: str = ...
    ) -> LimitTaken: ...
    async def limit_release(  # noqa: D102
        self, queue: str, task_id: str, limits: Sequence[Applied], *, holder: str = ..., keep_until: float = ...
    ) -> int: ...
    async def prune_limit_keys(self, name: str, cursor: str = "0", count: int = 500) -> tuple[str, int]: ...  # noqa: D102
    async def requeue(self, queue: str, task_id: str, *, wake: bool = ...) -> int: ...  # noqa: D102
    async def retry(self, queue: str, task_id: str, data: bytes, retry_at: int, *, failure: bool) -> int: ...  # noqa: D102
    async def archive(self, queue: str, task_id: str, data: bytes) -> int: ...  # noqa: D102
    async def defer(  # noqa: D102
        self, queue: str, task_id: str, data: bytes, *, now: int, wait: float, delays: tuple[int, int]
    ) -> int: ...
    async def write_result(self, queue: str, task_id: str, data: bytes) -> None: ...  # noqa: D102
    async def write_progress(  # noqa: D102
        self, queue: str, task_id: str, fields: Mapping[str, str | int | float], event: bytes, ttl: int
    ) -> None: ...

    # -- the forwarder, the janitor
    async def next_due(self, queues: Sequence[str]) -> list[float | None]: ...  # noqa: D102
    def forward_claim_key(self, queues: Iterable[str]) -> str: ...  # noqa: D102
    async def claim(self, key: str, ttl: float, holder: str = ...) -> bool: ...  # noqa: D102
    async def forward(self, queue: str) -> tuple[int, float | None]: ...  # noqa: D102
    async def delete_expired_completed(self, queue: str, batch: int = ...) -> int: ...  # noqa: D102

    # -- the recoverer
    async def dead_workers(self, silent_since: float) -> list[tuple[str, float]]: ...  # noqa: D102
    async def inflight_of(  # noqa: D102
        self, server_ids: Sequence[str], queues: Sequence[str]
    ) -> list[dict[str, list[str]]]: ...
    async def leased(self, tasks: Sequence[tuple[str, str]]) -> list[bool]: ...  # noqa: D102
    async def tasks_at_death(self, server_id: str) -> int | None: ...  # noqa: D102
    async def record_tasks_at_death(self, server_id: str, count: int, ttl: int) -> int: ...  # noqa: D102
    async def recover(  # noqa: D102
        self,
        queue: str,
        task_id: str,
        newest_dead_lease: float,
        max_recoveries: int,
        *,
        count: bool = ...,
        alone: bool = ...,
        server_id: str | None = ...,
    ) -> Any: ...
    async def drop_inflight(self, queue: str, server_id: str) -> None: ...  # noqa: D102
    async def forget_worker(self, server_id: str) -> None: ...  # noqa: D102
    async def list_lease_expired(self, queue: str, cutoff: float, limit: int = ...) -> list[bytes]: ...  # noqa: D102
    async def repair_orphans(self, queue: str) -> int: ...  # noqa: D102
    async def reclaim_stale_aggregation_sets(self, queue: str) -> int: ...  # noqa: D102

    # -- the aggregator
    async def groups(self, queue: str) -> list[str]: ...  # noqa: D102
    async def oldest_in_group(self, queue: str, group: str, count: int) -> list[bytes]: ...  # noqa: D102
    async def aggregation_check(  # noqa: D102
        self, queue: str, group: str, set_id: str, *, max_size: int, max_delay: float, grace_period: float
    ) -> str | None: ...
    async def read_aggregation_set(  # noqa: D102
        self, queue: str, set_key: str
    ) -> tuple[list[tuple[str, bytes]], float | None]: ...
    async def aggregation_set_deadline(self, queue: str, set_key: str) -> float | None: ...  # noqa: D102
    async def delete_aggregation_set(self, queue: str, set_key: str, aggregate_id: str = ...) -> int: ...  # noqa: D102
    async def aggregation_failed(  # noqa: D102
        self, queue: str, set_key: str, max_attempts: int, messages: Sequence[tuple[bytes, bytes]] = ...
    ) -> FailedAggregation: ...


class _PartMethod(Generic[P, R]):
    """A method of one of the broker's parts, answered by the broker itself.

    Read on a broker, it is the part's bound method, stored on the broker at its first use so later reads
    are plain attribute reads: a call costs what a call on the part costs (no extra frame, no extra await).
    Read on the class, it is a function taking the broker first, so ``original = RedisBroker.enqueue`` and
    a class-level patch work as for any method (a patch made after a broker first used the method is not
    seen by that broker). A subclass overrides it with an ordinary method.
    """

    def __init__(self, part: str, func: Callable[Concatenate[Any, P], R]) -> None:
        self._part = part
        self._func = func
        self._name = func.__name__
        self.__doc__ = func.__doc__

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self._name = name

    @overload
    def __get__(self, obj: None, owner: type[Any] | None = None) -> Callable[Concatenate[Any, P], R]: ...
    @overload
    def __get__(self, obj: object, owner: type[Any] | None = None) -> Callable[P, R]: ...
    def __get__(self, obj: object | None, owner: type[Any] | None = None) -> Callable[..., R]:
        if obj is None:
            func, part = self._func, self._part

            def unbound(broker: Any, *args: P.args, **kwargs: P.kwargs) -> R:
                return func(getattr(broker, part), *args, **kwargs)

            unbound.__name__ = unbound.__qualname__ = self._name
            unbound.__doc__ = self.__doc__
            return unbound
        bound: Callable[P, R] = getattr(getattr(obj, self._part), self._func.__name__)
        obj.__dict__[self._name] = bound  # found before this (non-data) descriptor from now on
        return bound


class RedisBroker:
    """The Redis implementation of :class:`Broker`, and the enqueue side clients and the scheduler call.

    Each method is the method of the part that owns it (:attr:`enqueuing`, :attr:`transitions` or
    :attr:`maintenance`), where it is documented; the broker answers for them, bound once, so a call costs
    what a call on the part costs. A test stands in for one by wrapping the broker (see :class:`Broker`),
    subclassing it, or patching the method on the class before the broker is first used.

    Args:
        redis: an asyncio Redis client (a pool).
        schema: the key schema.
        clock: where time comes from.
        wakeup: publish on the wake-up channel when a queue goes from empty to non-empty.
        fast: run the hot paths (enqueue, dequeue, done) on lean auto-pipelining connections
            (:mod:`framework.transport.lean.connection`) when ``redis`` qualifies
            (:func:`~framework.transport.lean.paths.fast_path_for`: a single server, a Sentinel-managed
            primary or a Cluster).

    Attributes:
        enqueuing: the enqueue part (:class:`~framework.broker.enqueue.EnqueueSide`).
        transitions: the worker's transitions (:class:`~framework.broker.transitions.WorkerTransitions`).
        maintenance: the maintenance part (:class:`~framework.broker.maintenance.Maintenance`).
        hot: what the hot paths run on (a :class:`~framework.transport.commands.Commands`: ``lean``, or
            redis-py's pool).
        lean: the lean connections' client, or None: what the prepared enqueue
            (:mod:`framework.client.prepared`) writes on (a key's connection: :meth:`connection_for`).
        fast: ``lean`` when it reaches one server (single or Sentinel-managed), else None: what the handoff
            subscriber and :class:`~framework.client.client.SyncClient`'s blocking connections use.
        handoff: whether plain enqueues offer their task to an idle worker (with the lean connection only).
    """

    def __init__(self, redis: Redis, schema: Schema, clock: Clock, *, wakeup: bool = True, fast: bool = True) -> None:
        state = self.state = BrokerState(redis, schema, clock, wakeup=wakeup, fast=fast)
        self.redis = redis
        self.schema = schema
        self.clock = clock
        self.hot = state.hot
        self.lean = state.lean
        self.fast = state.fast
        self.handoff = state.handoff
        self._known_queues = state.known_queues
        self.enqueuing = EnqueueSide(state)
        self.transitions = WorkerTransitions(state)
        self.maintenance = Maintenance(state)
        self.workflows = WorkflowOps(state.pool, schema, clock, handoff=state.handoff, wakeup=state.channel)
        self.steps = StepTransitions(self.transitions, self.workflows)
        self.limits = LimitOps(state)

    def close(self) -> None:
        """Close the hot-path connection, if it is the broker's own (the redis-py client is the caller's)."""
        self.state.close()

    # the enqueue part
    register_queues = _PartMethod("enqueuing", EnqueueSide.register_queues)
    prepare_enqueue = _PartMethod("enqueuing", EnqueueSide.prepare_enqueue)
    enqueue = _PartMethod("enqueuing", EnqueueSide.enqueue)
    enqueue_many = _PartMethod("enqueuing", EnqueueSide.enqueue_many)
    plain_batch = _PartMethod("enqueuing", EnqueueSide.plain_batch)
    cron_enqueue = _PartMethod("enqueuing", EnqueueSide.cron_enqueue)
    cancel = _PartMethod("enqueuing", EnqueueSide.cancel)

    # the worker's transitions
    dequeue = _PartMethod("transitions", WorkerTransitions.dequeue)
    pending_counts = _PartMethod("transitions", WorkerTransitions.pending_counts)
    pending_check_key = _PartMethod("transitions", WorkerTransitions.pending_check_key)
    check_pending = _PartMethod("transitions", WorkerTransitions.check_pending)
    withdraw = _PartMethod("transitions", WorkerTransitions.withdraw)
    clear_suspect = _PartMethod("transitions", WorkerTransitions.clear_suspect)
    done = _PartMethod("transitions", WorkerTransitions.done)
    mark_complete = _PartMethod("transitions", WorkerTransitions.mark_complete)
    requeue = _PartMethod("transitions", WorkerTransitions.requeue)
    retry = _PartMethod("transitions", WorkerTransitions.retry)
    archive = _PartMethod("transitions", WorkerTransitions.archive)
    cancel_requested = _PartMethod("transitions", WorkerTransitions.cancel_requested)
    defer = _PartMethod("transitions", WorkerTransitions.defer)
    write_result = _PartMethod("transitions", WorkerTransitions.write_result)
    write_progress = _PartMethod("transitions", WorkerTransitions.write_progress)

    # workflow steps
    step_done = _PartMethod("steps", StepTransitions.step_done)
    step_revoked = _PartMethod("steps", StepTransitions.step_revoked)
    step_complete = _PartMethod("steps", StepTransitions.step_complete)
    step_archive = _PartMethod("steps", StepTransitions.step_archive)
    step_inputs = _PartMethod("steps", StepTransitions.step_inputs)

    # limits
    limit_take = _PartMethod("limits", LimitOps.limit_take)
    limit_release = _PartMethod("limits", LimitOps.limit_release)
    prune_limit_keys = _PartMethod("limits", LimitOps.prune_limit_keys)

    # maintenance
    next_due = _PartMethod("maintenance", Maintenance.next_due)
    forward_claim_key = _PartMethod("maintenance", Maintenance.forward_claim_key)
    claim = _PartMethod("maintenance", Maintenance.claim)
    forward = _PartMethod("maintenance", Maintenance.forward)
    delete_expired_completed = _PartMethod("maintenance", Maintenance.delete_expired_completed)
    dead_workers = _PartMethod("maintenance", Maintenance.dead_workers)
    inflight_of = _PartMethod("maintenance", Maintenance.inflight_of)
    leased = _PartMethod("maintenance", Maintenance.leased)
    tasks_at_death = _PartMethod("maintenance", Maintenance.tasks_at_death)
    record_tasks_at_death = _PartMethod("maintenance", Maintenance.record_tasks_at_death)
    recover = _PartMethod("maintenance", Maintenance.recover)
    drop_inflight = _PartMethod("maintenance", Maintenance.drop_inflight)
    forget_worker = _PartMethod("maintenance", Maintenance.forget_worker)
    list_lease_expired = _PartMethod("maintenance", Maintenance.list_lease_expired)
    repair_orphans = _PartMethod("maintenance", Maintenance.repair_orphans)
    reclaim_stale_aggregation_sets = _PartMethod("maintenance", Maintenance.reclaim_stale_aggregation_sets)
    groups = _PartMethod("maintenance", Maintenance.groups)
    oldest_in_group = _PartMethod("maintenance", Maintenance.oldest_in_group)
    aggregation_check = _PartMethod("maintenance", Maintenance.aggregation_check)
    read_aggregation_set = _PartMethod("maintenance", Maintenance.read_aggregation_set)
    aggregation_set_deadline = _PartMethod("maintenance", Maintenance.aggregation_set_deadline)
    delete_aggregation_set = _PartMethod("maintenance", Maintenance.delete_aggregation_set)
    aggregation_failed = _PartMethod("maintenance", Maintenance.aggregation_failed)


def now_seconds() -> int:
    """Integer Unix seconds of the wall clock."""
    return int(time.time())
