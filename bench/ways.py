"""What the connection benchmarks share: the same three phases through several ways of reaching one server.

Used by ``bench/tls.py`` and ``bench/sentinel.py``. Each way is a URL; a way whose name ends in
``-redispy`` runs with the lean path turned off (redis-py's pool serves every command). Phases, in one
process and one event loop (an in-process worker, concurrency 100), from an empty database each time:

* bulk: N no-op tasks with ``Client.enqueue_many``, 1,000 per call -> tasks/s;
* seq: S tasks enqueued one at a time, each awaited -> tasks/s;
* process: a worker started on the N pending tasks, timed until all ran -> tasks/s.

Rounds alternate the order of the ways; the report gives the medians per way and their ratios to ``plain``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec
import redis as redis_sync

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from framework.broker import base  # noqa: E402
from framework.client.client import Client, TaskCall  # noqa: E402
from framework.protocol.keys import Schema  # noqa: E402
from framework.settings import Settings  # noqa: E402
from framework.task import TaskDef  # noqa: E402
from framework.transport.connection import open_redis  # noqa: E402
from framework.worker.worker import Worker  # noqa: E402

PHASES = ("bulk", "seq", "process")
Rounds = list[dict[str, dict[str, float]]]


class Noop(msgspec.Struct, frozen=True):
    """The benchmark's payload (empty)."""


class Counter:
    """Counts the tasks run, and wakes the waiter when ``target`` ran."""

    def __init__(self) -> None:
        self.n = 0
        self.target = 0
        self.done = asyncio.Event()

    async def run(self, ctx: Any, payload: Noop) -> None:
        self.n += 1
        if self.n >= self.target:
            self.done.set()


def parse_args(doc: str) -> argparse.Namespace:
    """The options every connection benchmark takes."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n", maxsplit=1)[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--seq", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default="")
    return ap.parse_args()


async def one_way(
    way: str, url: str, args: argparse.Namespace, folder: Path, flush: Callable[[], Any]
) -> dict[str, float]:
    """The three phases through one way of reaching the server."""
    flush()
    original = base.fast_path_for  # type: ignore[attr-defined]
    redispy = way.endswith("-redispy")
    if redispy:
        base.fast_path_for = lambda redis: None  # type: ignore[attr-defined]
    counter = Counter()
    task = TaskDef("bench:noop", Noop, counter.run)
    settings = Settings(
        redis_url=url, namespace="bench", data_dir=str(folder / "data"), queues={"default": 1}, load_plugins=[]
    )
    client = Client(open_redis(url), schema=Schema("bench"), settings=settings, url=url)
    out: dict[str, float] = {}
    try:
        assert (client.broker.lean is None) == redispy, way
        await client.enqueue(task, Noop())  # registers the queue, loads the script: not timed
        t0 = time.perf_counter()
        for i in range(0, args.n, 1000):
            await client.enqueue_many([TaskCall(task, Noop()) for _ in range(min(1000, args.n - i))])
        out["bulk"] = args.n / (time.perf_counter() - t0)
        counter.target = args.n + 1
        worker = Worker(settings, tasks=[task])
        t0 = time.perf_counter()
        async with worker:
            await asyncio.wait_for(counter.done.wait(), 300)
            out["process"] = args.n / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for _ in range(args.seq):
            await client.enqueue(task, Noop())
        out["seq"] = args.seq / (time.perf_counter() - t0)
    finally:
        base.fast_path_for = original  # type: ignore[attr-defined]
        await client.close()
    return out


async def run_rounds(
    args: argparse.Namespace, folder: Path, urls: Mapping[str, str], flush_ports: Sequence[int]
) -> Rounds:
    """Every way, round after round, the order alternating; every server in ``flush_ports`` flushed before each."""
    ways = list(urls)
    width = max(len(w) for w in ways) + 1
    direct = [redis_sync.Redis(port=port) for port in flush_ports]

    def flush() -> None:
        for server in direct:
            server.flushall()

    rounds: Rounds = []
    for r in range(args.rounds):
        order = ways if r % 2 == 0 else ways[::-1]
        figures: dict[str, dict[str, float]] = {}
        for way in order:
            figures[way] = await one_way(way, urls[way], args, folder, flush)
            print(
                f"round {r + 1} {way:{width}}", "  ".join(f"{p} {figures[way][p]:9,.0f}/s" for p in PHASES), flush=True
            )
        rounds.append(figures)
    for server in direct:
        server.close()
    return rounds


def stop(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    """Stop the servers a benchmark started: SIGTERM to all, then wait for each (5 s at most)."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)


def report(rounds: Rounds, ways: Sequence[str], out: str) -> None:
    """Print the medians per way and their ratios to ``plain``; write every round to ``out`` (JSON) if given."""
    width = max(len(w) for w in ways) + 1
    medians = {w: {p: statistics.median(r[w][p] for r in rounds) for p in PHASES} for w in ways}
    print("\nmedians (tasks/s) and ratio plain / way (1.0 = as fast as plain TCP):")
    for way in ways:
        cells = "  ".join(f"{p} {medians[way][p]:9,.0f} ({medians['plain'][p] / medians[way][p]:.2f}x)" for p in PHASES)
        print(f"{way:{width}} {cells}")
    if out:
        Path(out).write_text(json.dumps({"rounds": rounds, "medians": medians}, indent=2))
