"""Retry policy: how long to wait, and whether a failure is retried, archived or dropped. Pure.

Policies are ``(retried, error) -> seconds`` (:data:`~framework.task.RetryDelay`). The worker chooses
one per failure in this order: a :class:`~framework.errors.RetryAfter` raised by the handler, the
``retry_delay_for`` plugin hook, the task type's ``retry_delay``, then the worker's ``retry_delay``
(default :func:`default_retry_delay`; pass :func:`asynq_retry_delay` to match Go workers).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from framework.errors import RetryAfter, RevokeTask, SkipRetry

__all__ = (
    "Archive",
    "Drop",
    "Retry",
    "asynq_retry_delay",
    "decide",
    "default_retry_delay",
    "exponential_backoff",
)


def default_retry_delay(retried: int, error: BaseException | None = None, rng: random.Random | None = None) -> float:
    """Exponential backoff with jitter: 10 s, 20 s, 40 s, ... capped at 1 hour, each scaled by 0.5-1.5.

    Args:
        retried: retries so far (0 before the first retry).
        error: the failure (unused by this policy).
        rng: the random source (injected for tests).
    """
    base = min(3600.0, 10.0 * (2.0 ** min(retried, 20)))
    return base * (0.5 + (rng or random).random())


def exponential_backoff(
    base: float = 10.0, cap: float = 3600.0, jitter: float = 0.5, rng: random.Random | None = None
) -> Callable[[int, BaseException], float]:
    """Build an exponential policy: ``min(cap, base * 2**retried)``, scaled by ``1 ± jitter`` at random.

    Args:
        base: seconds before the first retry.
        cap: the longest delay.
        jitter: relative jitter (0 = none, 0.5 = from 0.5x to 1.5x).
        rng: the random source (injected for tests).
    """
    source = rng or random

    def delay(retried: int, error: BaseException) -> float:
        value = min(cap, base * (2.0 ** min(retried, 62)))
        return value * (1.0 - jitter + 2.0 * jitter * source.random())

    return delay


def asynq_retry_delay(retried: int, error: BaseException | None = None, rng: random.Random | None = None) -> float:
    """Go asynq's default: ``n**4 + 15 + rand(0..29) * (n + 1)`` seconds, n = retries so far."""
    return float(retried**4 + 15 + (rng or random).randint(0, 29) * (retried + 1))


@dataclass(frozen=True, slots=True)
class Retry:
    """Retry after ``delay`` seconds; ``failure`` says whether it counts (stats, retried+1)."""

    delay: float
    failure: bool = True


@dataclass(frozen=True, slots=True)
class Archive:
    """Archive the task (permanent failure or retries exhausted)."""


@dataclass(frozen=True, slots=True)
class Drop:
    """Finish the task without retrying or archiving it (``RevokeTask``; written as done, as asynq does)."""


def decide(retried: int, max_retry: int, error: BaseException, delay: float) -> Retry | Archive | Drop:
    """Choose the outcome of a failed run.

    Args:
        retried: retries so far.
        max_retry: retries allowed.
        error: what the handler raised.
        delay: the policy's delay for a retry (a ``RetryAfter`` error's own delay wins).
    """
    if isinstance(error, RevokeTask):
        return Drop()
    if isinstance(error, SkipRetry) or retried >= max_retry:
        return Archive()
    if isinstance(error, RetryAfter):
        return Retry(error.delay)
    return Retry(delay)
