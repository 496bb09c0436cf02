"""Command tables fit the terminal: they wrap between words or drop columns, and never break a word."""

from __future__ import annotations

import io
import time
from typing import TYPE_CHECKING

import pytest
from rich.cells import cell_len
from rich.console import Console

from framework.cli._tables import fit_table
from framework.cli.tasks._common import table
from framework.protocol.keys import day_stamp
from tests.fixtures.cli import cli_env, run_framework
from tests.framework.golden import load_golden

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from redis.asyncio import Redis

STATS = (
    "queue",
    "pending",
    "active",
    "scheduled",
    "retry",
    "archived",
    "completed",
    "aggregating",
    "processed today",
    "failed today",
    "latency",
    "memory",
    "paused",
)
"""The columns of ``framework tasks stats``, in order."""


def _headers(out: str, width: int) -> tuple[list[str], str]:
    """(the column headers of the table printed in ``out``, rejoined over lines; the text after the table).

    Fails if a line is wider than ``width`` or a header line holds a piece of a word.
    """
    lines = out.splitlines()
    assert all(cell_len(line) <= width for line in lines), out
    top = next(i for i, line in enumerate(lines) if line.startswith("┏"))
    rule = next(i for i, line in enumerate(lines) if line.startswith("┡"))
    rows = [[cell.strip() for cell in line.split("┃")[1:-1]] for line in lines[top + 1 : rule]]
    headers = [" ".join(filter(None, parts)) for parts in zip(*rows, strict=True)]
    words = {word for header in STATS for word in header.split()}
    for row in rows:
        for cell in row:
            assert set(cell.split()) <= words, (cell, out)
    bottom = next(i for i, line in enumerate(lines) if line.startswith("└"))
    return headers, " ".join(" ".join(lines[bottom + 1 :]).split())


def _render(width: int, rows: Sequence[tuple[str, ...]]) -> str:
    tbl = table("Queues", *STATS)
    for row in rows:
        tbl.add_row(*row)
    fit_table(tbl, width)
    out = io.StringIO()
    Console(file=out, width=width, no_color=True).print(tbl)
    return out.getvalue()


def test_headers_are_never_broken_at_any_width() -> None:
    rows = [
        ("default", "2", "0", "1", "0", "0", "0", "1", "3", "0", "1.2s", "1.1 KB", "no"),
        ("weird:name {x}", "12", "0", "1", "0", "7", "0", "0", "1234567", "1", "-", "10.5 MB", "paused"),
    ]
    for width in range(40, 201, 3):
        headers, after = _headers(_render(width, rows), width)
        assert headers[0] == "queue"
        assert [h for h in STATS if h in headers] == headers, (width, headers)
        hidden = [h for h in STATS if h not in headers]
        if hidden:
            assert f"not shown, too narrow: {', '.join(hidden)}" in after, (width, after)
        else:
            assert "not shown" not in after


def test_long_tokens_fold_rather_than_vanish() -> None:
    tbl = table("Tasks", "id", "payload")
    payload = '{"url":"https://example.com/a/very/long/path/without/any/space/at/all"}'
    tbl.add_row("0f8fad5b-d9cb-469f-a165-70867728950e", payload)
    fit_table(tbl, 60)
    out = io.StringIO()
    Console(file=out, width=60, no_color=True).print(tbl)
    text = out.getvalue()
    assert all(cell_len(line) <= 60 for line in text.splitlines()), text
    assert "…" not in text
    folded = "".join(line.split("│")[2].strip() for line in text.splitlines() if line.startswith("│"))
    assert folded == payload


@pytest.mark.parametrize("width", [80, 200])
async def test_tasks_stats_fits_the_terminal(
    width: int, redis: Redis, redis_url: str, namespace: str, tmp_path: Path
) -> None:
    await load_golden(redis, namespace, day=day_stamp(int(time.time())))
    env = cli_env(redis_url, namespace, tmp_path / "data")
    env["COLUMNS"] = str(width)
    done = run_framework(env, tmp_path, "tasks", "stats")
    assert done.returncode == 0, done.stderr
    headers, after = _headers(done.stdout, width)
    assert headers[0] == "queue"
    assert [h for h in STATS if h in headers] == headers
    if width == 200:
        assert headers == list(STATS)
        assert "not shown" not in after
    else:
        assert "pending" in headers
        hidden = [h for h in STATS if h not in headers]
        assert f"not shown, too narrow: {', '.join(hidden)} (widen the terminal, or use --json)" in after
