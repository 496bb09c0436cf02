"""Estimate the memory a queue uses, as asynq's inspector does: sample, do not scan.

The collection keys themselves are measured with ``MEMORY USAGE`` (which samples big collections on
its own); of the group zsets, up to :data:`MAX_GROUPS_SAMPLED` are and their average stands for all.
Task records are not all measured: up to :data:`MEMORY_SAMPLE` records per state (and per sampled
group) are, and their average size is multiplied by the number of tasks in that state. The cost is a
fixed few dozen commands in two round trips, whatever the size of the queue.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from framework.inspector.namespace import text

if TYPE_CHECKING:
    from collections.abc import Mapping

    from redis.asyncio import Redis

    from framework.protocol.keys import QueueKeys

__all__ = ("MAX_GROUPS_SAMPLED", "MEMORY_SAMPLE", "estimate_memory")

MEMORY_SAMPLE = 20
"""Task records sampled per state (and per sampled group)."""
MAX_GROUPS_SAMPLED = 10
"""Groups whose task records are sampled; their average stands for every group's tasks."""

_LISTS = ("pending", "active")


def _int(value: Any) -> int:
    return int(value) if value else 0


async def estimate_memory(redis: Redis, qk: QueueKeys, counts: Mapping[str, int], groups: Mapping[str, int]) -> int:
    """Estimated bytes used by a queue's keys and task records.

    Args:
        redis: the client.
        qk: the queue's keys.
        counts: tasks per state (``pending``, ``active``, ``scheduled``, ``retry``, ``archived``,
            ``completed``).
        groups: tasks per aggregation group.
    """
    states = {state: getattr(qk, state) for state in counts}
    sampled_groups = sorted(groups)[:MAX_GROUPS_SAMPLED]
    fixed = [*states.values(), qk.lease, qk.groups, qk.paused, qk.processed, qk.failed, qk.aggregation_sets]
    samples = {**states, **{f"g:{g}": qk.group(g) for g in sampled_groups}}
    async with redis.pipeline(transaction=False) as pipe:
        for key in fixed:
            pipe.memory_usage(key)
        for group in sampled_groups:
            pipe.memory_usage(qk.group(group))
        for name, key in samples.items():
            if name in _LISTS:
                pipe.lrange(key, 0, MEMORY_SAMPLE - 1)
            else:
                pipe.zrange(key, 0, MEMORY_SAMPLE - 1)
        replies = await pipe.execute()
    total = sum(_int(r) for r in replies[: len(fixed)])
    group_keys = [_int(r) for r in replies[len(fixed) : len(fixed) + len(sampled_groups)]]
    if group_keys:  # the group zsets themselves, extrapolated from the sampled ones
        total += int(_average(group_keys) * len(groups))
    ids = dict(zip(samples, replies[len(fixed) + len(sampled_groups) :], strict=True))
    async with redis.pipeline(transaction=False) as pipe:
        for members in ids.values():
            for member in members:
                pipe.memory_usage(qk.task(text(member)))
        sizes = iter([_int(r) for r in await pipe.execute()])
    averages = {name: _average([next(sizes) for _ in members]) for name, members in ids.items()}
    total += sum(int(averages[state] * n) for state, n in counts.items())
    group_sizes = [averages[f"g:{g}"] for g in sampled_groups if ids[f"g:{g}"]]
    if group_sizes:
        total += int(sum(group_sizes) / len(group_sizes) * sum(groups.values()))
    return total


def _average(values: list[int]) -> float:
    return sum(values) / len(values) if values else 0.0
