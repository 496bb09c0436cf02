"""drain() with workflow steps: each step's outcome is reported as a plain task's is, against a real Valkey."""

from __future__ import annotations

from typing import TYPE_CHECKING

from framework.testing import Outcome, drain
from framework.worker.worker import Worker
from framework.workflow import chain, group
from tests.framework.workflow_tasks import ADD, FAIL, SUM, Many, Num

if TYPE_CHECKING:
    from framework.client.client import Client
    from framework.settings import Settings


async def test_every_step_of_a_chain_is_reported_succeeded(settings: Settings, client: Client) -> None:
    info = await client.start_workflow(chain(ADD.step(Num(n=1)), *[ADD.step(Num(), input="prev") for _ in range(3)]))

    result = await drain(Worker(settings.replace(queues={"default": 1}), tasks=[ADD]))

    assert await client.wait_workflow(info, timeout=1) == 5
    assert result.processed == 4
    assert [(r.type, r.outcome) for r in result.runs] == [(ADD.type, Outcome.DONE)] * 4
    assert sorted(result.succeeded) == sorted(task_id for _, task_id in info.steps.values())


async def test_a_step_kept_for_its_retention_is_reported_completed(settings: Settings, client: Client) -> None:
    info = await client.start_workflow(chain(ADD.step(Num(n=1), retention=60), ADD.step(Num(), input="prev")))

    result = await drain(Worker(settings.replace(queues={"default": 1}), tasks=[ADD]))

    assert [r.outcome for r in result.runs] == [Outcome.COMPLETED, Outcome.DONE]
    assert result.succeeded == [info.steps[name][1] for name in info.steps]


async def test_a_failed_step_is_reported_archived_with_its_error(settings: Settings, client: Client) -> None:
    info = await client.start_workflow(chain(group(ADD.step(Num(n=1)), FAIL.step(Num(n=7))), SUM.step(Many())))

    result = await drain(Worker(settings.replace(queues={"default": 1}), tasks=[ADD, FAIL, SUM]))

    failed = info.steps[FAIL.type][1]
    assert result.succeeded == [info.steps[ADD.type][1]]
    assert result.archived == [failed]
    assert result.last(failed).error == "SkipRetry: step 7 gave up"
    assert result.last(failed).type == FAIL.type
