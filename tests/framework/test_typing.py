"""The public API as a type checker sees it: the facade, enqueue options, and the task definition.

Small programs written against the facade are checked with mypy under the project's configuration, in
one run for all of them. A line marked ``# E: <code>`` must get exactly that error; every other line
must get none. A few runtime checks keep the facade's two halves (the names type checkers import, the
names ``__getattr__`` loads) the same list.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

import framework
from framework import errors
from framework.task import TaskDef

if TYPE_CHECKING:
    from framework.context import TaskContext

ROOT = Path(__file__).resolve().parents[2]
FACADE = ROOT / "framework" / "__init__.py"
PUBLIC = list(framework.__all__)

SNIPPETS = {
    "uses_the_facade": f"""
from datetime import UTC, datetime, timedelta

import msgspec

import framework
from framework import {", ".join(PUBLIC)}


class Greet(msgspec.Struct, frozen=True):
    name: str


async def greet(ctx: TaskContext, payload: Greet) -> None:
    return None


GREET = TaskDef("example:greet", Greet, greet, queue="low")
NIGHTLY = CronEntry("nightly", "@daily", GREET, Greet(name="n"), options={{"queue": "low", "max_retry": 1}})
VERSION: str = framework.__version__


async def use(client: Client, sync: SyncClient, later: datetime) -> list[TaskInfo | FrameworkError]:
    await client.enqueue(GREET, Greet(name="a"), queue="low", max_retry=3, timeout=timedelta(seconds=5))
    await client.enqueue(GREET, Greet(name="b"), deadline=later, process_in=1.5, unique=60, retention=3600)
    await client.enqueue("raw:type", b"", process_at=later.timestamp(), task_id="t1", group="g", headers={{"k": "v"}})
    await GREET.enqueue(client, Greet(name="c"), process_at=datetime.now(UTC), queue=None)
    GREET.enqueue_sync(sync, Greet(name="d"), unique=False)
    sync.enqueue(GREET, Greet(name="e"), process_in=timedelta(minutes=1))
    options: EnqueueOptions = {{"queue": "low"}}
    await client.enqueue(GREET, Greet(name="f"), **options)
    calls = [TaskCall(GREET, Greet(name="g"), {{"process_in": 5}}), Job("raw:type", b""), TaskCall("raw:type")]
    return await client.enqueue_many(calls)
""",
    "misspells_a_name": """
import framework
from framework import Clent  # E: attr-defined

framework.LeaseExpired  # E: attr-defined
""",
    "misspells_an_option": """
from framework import Client, CronEntry, SyncClient, TaskCall, TaskContext, TaskDef


async def blob(ctx: TaskContext, payload: bytes) -> None:
    return None


BLOB = TaskDef("blob", bytes, blob)


async def use(client: Client, sync: SyncClient) -> None:
    await client.enqueue(BLOB, b"", queu="low")  # E: call-arg
    await BLOB.enqueue(client, b"", max_retries=3)  # E: call-arg
    BLOB.enqueue_sync(sync, b"", proces_in=5)  # E: call-arg
    sync.enqueue(BLOB, b"", taskid="x")  # E: call-arg
    await client.enqueue(BLOB, b"", timeout="30s")  # E: arg-type
    await client.enqueue_many([TaskCall(BLOB, b"", {"queu": "low"})])  # E: typeddict-unknown-key
    CronEntry("hourly", "@hourly", BLOB, options={"process_in": 5})  # E: typeddict-unknown-key
""",
    "sets_a_derived_field": """
from framework import TaskContext, TaskDef


async def blob(ctx: TaskContext, payload: bytes) -> None:
    return None


TaskDef("blob", bytes, blob, is_async=True)  # E: call-arg
TaskDef("blob", bytes, blob, _decoder=None)  # E: call-arg
""",
}

_ERROR = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): error: .*\[(?P<code>[a-z-]+)\]$")
_MARK = re.compile(r"# E: (?P<code>[a-z-]+)$")


@pytest.fixture(scope="module")
def mypy_errors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[tuple[int, str], str]]:
    """Each snippet's errors, (line, code) -> mypy's line, from one mypy run over all of them."""
    where = tmp_path_factory.mktemp("typing")
    for name, text in SNIPPETS.items():
        (where / f"{name}.py").write_text(text.lstrip("\n"), encoding="utf-8")
    # run from the temporary folder: the framework is found as an installed package, as a user's project finds it
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            os.devnull,
            "--no-error-summary",
            "--no-pretty",
            *sorted(f"{name}.py" for name in SNIPPETS),
        ],
        cwd=where,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode in (0, 1), result.stdout + result.stderr  # 2 = mypy itself failed
    found: dict[str, dict[tuple[int, str], str]] = {name: {} for name in SNIPPETS}
    for line in result.stdout.splitlines():
        match = _ERROR.match(line)
        if match is not None:
            found[Path(match["file"]).stem][int(match["line"]), match["code"]] = line
        elif ": error:" in line:
            raise AssertionError(f"an error without a code: {line}")
    return found


def _expected(name: str) -> set[tuple[int, str]]:
    lines = SNIPPETS[name].lstrip("\n").splitlines()
    return {(number, match["code"]) for number, line in enumerate(lines, 1) if (match := _MARK.search(line))}


@pytest.mark.parametrize("name", sorted(SNIPPETS))
def test_mypy_reports_exactly_the_marked_lines(mypy_errors: dict[str, dict[tuple[int, str], str]], name: str) -> None:
    found = mypy_errors[name]
    assert set(found) == _expected(name), "\n".join(found.values())


def _type_checking_names() -> set[str]:
    """The names the facade imports or declares under ``if TYPE_CHECKING:`` (what type checkers see)."""
    tree = ast.parse(FACADE.read_text(encoding="utf-8"))
    block = next(
        node
        for node in tree.body
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
    )
    names = {
        alias.asname or alias.name for node in block.body if isinstance(node, ast.ImportFrom) for alias in node.names
    }
    return names | {node.target.id for node in block.body if isinstance(node, ast.AnnAssign)}  # type: ignore[union-attr]


def test_the_facade_lists_each_name_once_sorted_and_the_same_for_type_checkers_and_at_run_time() -> None:
    assert list(framework.__all__) == sorted(set(framework.__all__))
    assert _type_checking_names() == set(PUBLIC)
    lazy: dict[str, str] = vars(framework)["_LAZY"]
    errors_exported = {name for name in PUBLIC if name in errors.__all__}
    assert set(lazy) | errors_exported | {"__version__"} == set(PUBLIC)
    assert set(errors.__all__) <= set(PUBLIC)  # every error a caller may catch is public
    for name in PUBLIC:
        assert getattr(framework, name) is not None


def test_unknown_names_fail_at_run_time_too() -> None:
    with pytest.raises(AttributeError, match="'Clent'"):
        framework.Clent  # noqa: B018


class Payload(msgspec.Struct, frozen=True):
    n: int = 0


async def _async_handler(ctx: TaskContext, payload: Payload) -> None:
    return None


def _sync_handler(ctx: TaskContext, payload: Payload) -> None:
    return None


def test_derived_taskdef_fields_are_not_constructor_arguments() -> None:
    args: Any = {"is_async": False}
    with pytest.raises(TypeError, match="is_async"):
        TaskDef("typing:t", Payload, _async_handler, **args)
    task = TaskDef("typing:t", Payload, _async_handler)
    assert task.is_async
    assert task.decode(b'{"n": 2}') == Payload(n=2)
    plain = dataclasses.replace(task, handler=_sync_handler)  # derived again from the new handler
    assert not plain.is_async
    assert "is_async" not in repr(task)
    assert TaskDef("typing:raw", bytes, _sync_handler).decode(b"\x00") == b"\x00"
