"""``framework workflows`` as a user runs it: subprocesses against the test Valkey, workflows run by a real worker."""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pytest

from framework.client.client import Client
from framework.errors import WorkflowFailed
from framework.workflow import chain, chord
from tests.fixtures.cli import Cli
from tests.framework.workflow_tasks import ADD, FAIL, SUM, Many, Num

if TYPE_CHECKING:
    pass


@pytest.fixture
async def client(client: Client) -> AsyncIterator[Client]:
    yield client
    await client.waiters.close()


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


async def test_ls_show_retry_and_cancel(cli: Cli, start: Any, client: Client) -> None:
    await start(ADD, SUM, FAIL)
    good = await client.start_workflow(
        chord([ADD.step(Num(n=i)) for i in range(3)], SUM.step(Many(), input="values")), workflow_id="good"
    )
    assert await client.wait_workflow(good, timeout=15) == 6
    bad = await client.start_workflow(chain(FAIL.step(Num(n=7)), ADD.step(Num(), input="prev")), workflow_id="bad")
    with pytest.raises(WorkflowFailed):
        await client.wait_workflow(bad, timeout=15)
    # a workflow whose step goes to a queue no worker serves stays running
    parked = await client.start_workflow(chain(ADD.step(Num(), queue="parked"), ADD.step(Num(), input="prev")))

    listed = json.loads(ok(cli("workflows", "ls", "--json")))
    assert [w["id"] for w in listed] == [parked.id, "bad", "good"]
    assert [w["status"] for w in listed] == ["running", "failed", "succeeded"]
    failed = json.loads(ok(cli("workflows", "ls", "--status", "failed", "--json")))
    assert [(w["id"], w["done"], w["failed"], w["total"]) for w in failed] == [("bad", 0, 1, 2)]
    table = ok(cli("workflows", "ls"))
    for needle in ("Workflows", "bad", "good", "4/4", "failed", "SkipRetry: step 7 gave up"):
        assert needle in table, needle

    shown = json.loads(ok(cli("workflows", "show", "good", "--json")))
    assert shown["summary"]["status"] == "succeeded"
    assert [s["state"] for s in shown["steps"]] == ["succeeded"] * 4
    assert shown["steps"][3]["result"] == 6
    assert len(shown["edges"]) == 3
    text = ok(cli("workflows", "show", "bad"))
    assert "workflow bad" in text and ": failed, 0/2 steps done" in text
    assert "wf:fail [failed]" in text
    assert "wf:add [cancelled]" in text  # waiting, but it will not start unless retried
    assert "SkipRetry: step 7 gave up" in text
    graph = ok(cli("workflows", "show", "good", "-q", "default"))
    assert "3 steps" not in graph  # small layers are drawn step by step
    assert "-> wf:sum [succeeded]" in graph

    retried = json.loads(ok(cli("workflows", "retry", "bad", "--json")))
    assert (retried["status"], retried["again"]) == ("failed", 1)
    assert "nothing to retry" in ok(cli("workflows", "retry", "good"))

    assert "1 running step(s)" not in ok(cli("workflows", "cancel", parked.id))
    assert json.loads(ok(cli("workflows", "show", parked.id, "--json")))["summary"]["status"] == "cancelled"
    assert "was already cancelled" in ok(cli("workflows", "cancel", parked.id))

    missing = cli("workflows", "show", "nope")
    assert missing.returncode == 1
    assert "no workflow 'nope'" in missing.stderr
    assert cli("workflows", "ls", "--status", "done").returncode == 2
