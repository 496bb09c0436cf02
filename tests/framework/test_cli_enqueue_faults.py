"""``framework tasks enqueue`` answers bad or extreme input with one error line, nothing stored, no traceback."""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING

import pytest

from tests.fixtures.cli import Cli

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from framework.protocol.keys import Schema


def _clean_failure(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode != 0, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert "rror:" in result.stderr, result.stderr


@pytest.mark.parametrize("when", [("--in", "1e12"), ("--at", "1e15")], ids=["in", "at"])
async def test_enqueue_after_the_year_9999_is_refused_and_nothing_is_stored(
    cli: Cli, redis: Redis, schema: Schema, when: tuple[str, str]
) -> None:
    result = cli("tasks", "enqueue", "demo:hello", "--task-id", "far", *when)
    _clean_failure(result)
    assert "9999" in result.stderr
    assert not await redis.exists(schema.queue("default").task("far"))


@pytest.mark.parametrize(
    "options",
    [("--unique", "4e18"), ("--in", "1e17", "--unique", "1h")],
    ids=["huge-unique", "far-in-and-unique"],
)
def test_enqueue_with_a_lock_held_past_the_year_9999_is_a_clean_error(cli: Cli, options: tuple[str, ...]) -> None:
    """Redis refuses such an expiry: the option is refused before anything is sent."""
    result = cli("tasks", "enqueue", "demo:hello", *options)
    _clean_failure(result)
    assert "9999" in result.stderr


def test_enqueue_deeply_nested_json_payload_is_a_clean_error(cli: Cli) -> None:
    result = cli("tasks", "enqueue", "demo:hello", "--payload", "[" * 3000 + "]" * 3000)
    _clean_failure(result)
    assert result.returncode == 2, result.stderr
