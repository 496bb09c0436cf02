"""The CLI prints stored text as text: markup in a payload is not parsed, escape sequences never reach the terminal.

Payloads, errors and names come from whoever enqueued the task or wrote the settings. ``framework tasks``,
``workflows``, ``cron`` and ``plugins`` print them literally: rich markup (``[/x]``, ``[link=...]``) and emoji codes
are shown as typed, and control characters (ESC, carriage return, bidi overrides) as Python escapes.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
from click.testing import CliRunner

from framework.client.client import Client
from framework.errors import SkipRetry, WorkflowFailed
from framework.task import TaskDef
from framework.testing.seed import Seeder
from framework.workflow import chain
from tests.fixtures.cli import Cli
from tests.framework.workflow_tasks import Num

if TYPE_CHECKING:
    from pathlib import Path

HOSTILE = "[/x] clear\x1b[2J title\x1b]0;pwned\x07 [bold]B[/bold] :thumbs_up: back\r\x08 rtl\u202eevil"
"""Unbalanced markup, a screen clear, a window title, markup, an emoji code, CR/backspace and a bidi override."""
SHOWN = (
    "[/x] clear\\x1b[2J",
    "title\\x1b]0;pwned\\x07",
    "[bold]B[/bold]",
    ":thumbs_up:",
    "back\\r\\x08",
    "rtl\\u202eevil",
)
"""How the parts of ``HOSTILE`` must appear in the output, character for character."""
ERROR = "boom \x1b[31mRED\x1b[0m [/] [link=https://evil.example]click[/link]"


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def assert_inert(out: str) -> None:
    """Nothing in ``out`` that a terminal would act on, apart from newlines."""
    assert not [c for c in out if (c < " " and c != "\n") or "\x7f" <= c <= "\x9f" or c == "\u202e"], repr(out)


def unwrapped(out: str) -> str:
    """The text of a printed table with its borders and line breaks gone (cells wrap over lines)."""
    return "".join(c for line in out.splitlines() for c in line if c not in "│┃║┏┓┗┛┡┩└┘┌┐├┤━─╇╈╋┳┻┬┴┼ ")


async def test_tasks_ls_and_show_print_payloads_and_errors_literally(cli: Cli, seeder: Seeder) -> None:
    archived = await seeder.seed_archived("demo:hello", HOSTILE.encode(), error=ERROR, queue="odd")
    await seeder.seed_pending("demo:hello", b"\x00\xff\x1b[2J", queue="odd")  # not UTF-8: shown as hex

    listed = ok(cli("tasks", "ls", "odd", "failed"))
    assert_inert(listed)
    assert "[/x]" in listed and "\\x1b[2J" in listed
    shown = ok(cli("tasks", "show", "odd", archived.id))
    assert_inert(shown)
    flat = unwrapped(shown)
    for part in (*SHOWN, "boom\\x1b[31mRED\\x1b[0m[/][link=https://evil.example]click[/link]"):
        assert part.replace(" ", "") in flat, (part, shown)
    assert "0x00ff1b5b324a" in ok(cli("tasks", "ls", "odd", "pending"))

    as_json = json.loads(ok(cli("tasks", "show", "odd", archived.id, "--json")))  # JSON keeps the exact text
    assert msgspec.json.decode(json.dumps(as_json["payload"]).encode(), type=bytes) == HOSTILE.encode()
    assert as_json["error"] == ERROR


async def give_up_loudly(ctx: Any, payload: Num) -> None:
    raise SkipRetry(ERROR)


LOUD = TaskDef("wf:loud", Num, give_up_loudly, max_retry=0)


@pytest.fixture
async def client(client: Client) -> AsyncIterator[Client]:
    yield client
    await client.waiters.close()


async def test_workflows_show_and_ls_print_errors_literally(cli: Cli, start: Any, client: Client) -> None:
    await start(LOUD)
    run = await client.start_workflow(chain(LOUD.step(Num())), workflow_id="loud[/x]\x1b[2J")
    with pytest.raises(WorkflowFailed):
        await client.wait_workflow(run, timeout=15)

    shown = ok(cli("workflows", "show", run.id))
    assert_inert(shown)
    assert "workflow loud[/x]\\x1b[2J" in shown
    assert "error: " in shown and "boom \\x1b[31mRED\\x1b[0m [/] [link=https://evil.example]click[/link]" in shown
    listed = ok(cli("workflows", "ls"))
    assert_inert(listed)
    assert "[link=https://evil.example]" in unwrapped(listed)


def test_cron_ls_prints_entry_names_literally(tmp_path: Path, redis_url: str, namespace: str) -> None:
    import framework.cli.cron  # noqa: F401 - registers the command group
    from framework.cli import cli

    config = tmp_path / "framework.toml"
    config.write_text(
        f'redis_url = "{redis_url}"\nnamespace = "{namespace}"\nload_plugins = []\n'
        f'data_dir = "{tmp_path / "data"}"\n\n'
        '[[cron]]\nname = "backup [eu] :fire: [/]"\nspec = "30 2 * * *"\ntask = "demo:hello"\n'
    )
    result = CliRunner().invoke(cli, ["--config", str(config), "cron", "ls"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "backup [eu] :fire: [/]" in result.output
