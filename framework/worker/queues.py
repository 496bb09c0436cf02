"""Weighted queue selection, as asynq does it. Pure; no I/O."""

from __future__ import annotations

import random
from collections.abc import Mapping

__all__ = ("order_queues",)


def order_queues(weights: Mapping[str, int], strict: bool, rng: random.Random | None = None) -> list[str]:
    """Return the queues in the order to try them for the next dequeue.

    Weighted mode (asynq's): each queue appears ``weight`` times in a list that is shuffled, and the
    first appearance of each queue gives its place, so a queue of weight 6 comes first about six times
    as often as one of weight 1. Strict mode: always highest weight first (ties by name).

    Args:
        weights: queue name -> weight (>= 1).
        strict: strict priority instead of weighted random order.
        rng: the random source (injected for tests).
    """
    if strict or len(weights) <= 1:
        return sorted(weights, key=lambda q: (-weights[q], q))
    r = rng or random
    pool = [q for q, w in weights.items() for _ in range(w)]
    r.shuffle(pool)
    seen: dict[str, None] = {}
    for q in pool:
        if q not in seen:
            seen[q] = None
            if len(seen) == len(weights):
                break
    return list(seen)
