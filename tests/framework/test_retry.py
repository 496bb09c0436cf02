"""Retry policy (pure): the decision table and the backoff schedules."""

from __future__ import annotations

import random

import pytest

from framework.errors import RetryAfter, RevokeTask, SkipRetry
from framework.retry import Archive, Drop, Retry, asynq_retry_delay, decide, default_retry_delay, exponential_backoff


@pytest.mark.parametrize(
    ("retried", "max_retry", "error", "expected"),
    [
        (0, 25, ValueError("x"), Retry(7.0)),
        (24, 25, ValueError("x"), Retry(7.0)),
        (25, 25, ValueError("x"), Archive()),
        (0, 0, ValueError("x"), Archive()),
        (0, 25, SkipRetry("bad"), Archive()),
        (0, 25, RevokeTask("drop"), Drop()),
        (25, 25, RevokeTask("drop"), Drop()),
        (3, 25, RetryAfter(120), Retry(120.0)),
        (25, 25, RetryAfter(120), Archive()),
    ],
)
def test_decide(retried: int, max_retry: int, error: BaseException, expected: object) -> None:
    assert decide(retried, max_retry, error, 7.0) == expected


def test_retry_after_never_negative() -> None:
    assert RetryAfter(-5).delay == 0.0


@pytest.mark.parametrize("retried", range(26))
def test_default_delay_is_exponential_with_jitter_and_capped(retried: int) -> None:
    base = min(3600.0, 10.0 * 2**retried)
    rng = random.Random(retried)
    delays = [default_retry_delay(retried, None, rng) for _ in range(200)]
    assert all(0.5 * base <= d <= 1.5 * base for d in delays)
    assert max(delays) - min(delays) > 0.5 * base  # jitter spreads retries of a burst of failures


def test_default_schedule_grows() -> None:
    rng = random.Random(1)
    means = [sum(default_retry_delay(n, None, rng) for _ in range(400)) / 400 for n in range(6)]
    assert means == sorted(means)
    assert 8 < means[0] < 12
    assert 280 < means[5] < 360


@pytest.mark.parametrize("retried", [0, 1, 2, 5, 10])
def test_asynq_formula(retried: int) -> None:
    rng = random.Random(retried)
    expected_rng = random.Random(retried)
    for _ in range(50):
        delay = asynq_retry_delay(retried, None, rng)
        assert delay == retried**4 + 15 + expected_rng.randint(0, 29) * (retried + 1)
        assert retried**4 + 15 <= delay <= retried**4 + 15 + 29 * (retried + 1)


def test_exponential_backoff_builder() -> None:
    fixed = exponential_backoff(base=2.0, cap=30.0, jitter=0.0)
    assert [fixed(n, ValueError()) for n in range(6)] == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    jittered = exponential_backoff(base=10.0, jitter=0.2, rng=random.Random(3))
    assert all(8.0 <= jittered(0, ValueError()) <= 12.0 for _ in range(100))
    assert fixed(10_000, ValueError()) == 30.0
