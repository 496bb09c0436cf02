"""drain() that runs out of time: it says which tasks held it up, and why, and does not keep the test waiting."""

from __future__ import annotations

import asyncio
import re
import time
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from framework.inspector import TaskState
from framework.task import TaskDef
from framework.testing import DrainTimeout, Outcome, drain
from framework.worker.worker import Worker

if TYPE_CHECKING:
    from framework.client.client import Client
    from framework.settings import Settings
    from framework.testing import Seeder


class Job(msgspec.Struct, frozen=True, kw_only=True):
    n: int


async def _hang(ctx: Any, payload: Job) -> None:
    await asyncio.sleep(60)


async def _fail(ctx: Any, payload: Job) -> None:
    raise ValueError(f"payment gateway refused job {payload.n}")


HANG = TaskDef("test:hang", Job, _hang, queue="default")
FAIL = TaskDef("test:always-fails", Job, _fail, queue="default", max_retry=1000)


@pytest.fixture
def one_queue(settings: Settings) -> Settings:
    """The default queue only; the default shutdown timeout (8 s) is kept."""
    return settings.replace(queues={"default": 1})


async def test_a_hanging_handler_is_named_and_the_drain_ends_at_its_timeout(
    one_queue: Settings, client: Client, seeder: Seeder
) -> None:
    stuck = await client.enqueue(HANG, Job(n=1))
    assert one_queue.shutdown_timeout == 8.0

    start = time.monotonic()
    with pytest.raises(DrainTimeout) as caught:
        await drain(Worker(one_queue, tasks=[HANG]), timeout=1)
    took = time.monotonic() - start

    message = str(caught.value)
    assert re.search(rf"still running: test:hang '{stuck.id}' in 'default' for 1\.\d s", message), message
    assert took < 8, f"the drain took {took:.1f} s after a 1 s timeout"  # not on for the 8 s shutdown timeout
    assert [(r.id, r.outcome) for r in caught.value.result.runs] == [(stuck.id, Outcome.REQUEUED)]
    assert (await seeder.get("default", stuck.id)).state is TaskState.PENDING  # given back, as at any shutdown


async def test_a_task_failing_again_and_again_is_named_with_its_error(one_queue: Settings, client: Client) -> None:
    failing = await client.enqueue(FAIL, Job(n=7))
    worker = Worker(one_queue, tasks=[FAIL], retry_delay=lambda retried, error: 0.0)

    with pytest.raises(DrainTimeout) as caught:
        await drain(worker, timeout=2.5)

    message = str(caught.value)
    assert f"failed, to run again: test:always-fails '{failing.id}' in 'default'" in message, message
    assert "ValueError: payment gateway refused job 7" in message
    assert caught.value.result.retried[0] == failing.id
