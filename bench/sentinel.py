"""Enqueue and processing through a Sentinel URL against plain TCP to the same server.

    python bench/sentinel.py [--n 20000] [--seq 3000] [--rounds 3] [--out results.json]

One server and one sentinel watching it (quorum 1) are started on free loopback ports. Each round runs,
in turn, three ways of reaching that server, from an empty database each time:

* ``plain``: ``redis://`` to the server (the lean connection);
* ``sentinel``: ``redis+sentinel://`` to the sentinel (the lean connection that follows the primary);
* ``sentinel-redispy``: the same URL with the lean path turned off (redis-py's Sentinel pool serves every
  command), which is what a Sentinel URL used before the lean path took it.

Phases, in one process and one event loop (an in-process worker, concurrency 100):

* bulk: N no-op tasks with ``Client.enqueue_many``, 1,000 per call -> tasks/s;
* seq: S tasks enqueued one at a time, each awaited -> tasks/s;
* process: a worker started on the N pending tasks, timed until all ran -> tasks/s.

Prints each round's figures, then the medians per way and their ratios to ``plain``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import redis as redis_sync

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from framework.broker import base  # noqa: E402
from framework.client.client import Client, TaskCall  # noqa: E402
from framework.embedded.binary import find_server_binary  # noqa: E402
from framework.embedded.launch import free_port, spawn  # noqa: E402
from framework.protocol.keys import Schema  # noqa: E402
from framework.settings import Settings  # noqa: E402
from framework.task import TaskDef  # noqa: E402
from framework.transport.connection import open_redis  # noqa: E402
from framework.worker.worker import Worker  # noqa: E402

WAYS = ("plain", "sentinel", "sentinel-redispy")
PHASES = ("bulk", "seq", "process")


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


def _wait_up(port: int, what: str) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            with redis_sync.Redis(port=port, socket_timeout=1) as r:
                if r.ping():
                    return
        except redis_sync.ConnectionError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not come up") from None
        time.sleep(0.05)


def start(folder: Path) -> tuple[list[Any], int, int]:
    """Start a server and a sentinel watching it; returns (processes, server port, sentinel port)."""
    binary = str(find_server_binary())
    port, sport = free_port(), free_port()
    (folder / "server").mkdir()
    (folder / "sentinel").mkdir()
    server = spawn(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        folder / "server",
        folder / "server" / "log",
    )
    _wait_up(port, "the server")
    conf = folder / "sentinel" / "sentinel.conf"
    conf.write_text(f"port {sport}\nbind 127.0.0.1\ndir {folder / 'sentinel'}\nsentinel monitor m 127.0.0.1 {port} 1\n")
    sentinel = spawn([binary, str(conf), "--sentinel"], folder / "sentinel", folder / "sentinel" / "log")
    _wait_up(sport, "the sentinel")
    return [server, sentinel], port, sport


async def one_way(way: str, url: str, args: argparse.Namespace, folder: Path, flush: Any) -> dict[str, float]:
    """The three phases through one way of reaching the server."""
    flush()
    original = base.fast_path_for  # type: ignore[attr-defined]
    if way == "sentinel-redispy":
        base.fast_path_for = lambda redis: None  # type: ignore[attr-defined]
    counter = Counter()
    task = TaskDef("bench:noop", Noop, counter.run)
    settings = Settings(
        redis_url=url, namespace="bench", data_dir=str(folder / "data"), queues={"default": 1}, load_plugins=[]
    )
    client = Client(open_redis(url), schema=Schema("bench"), settings=settings, url=url)
    out: dict[str, float] = {}
    try:
        assert (client.broker.fast is None) == (way == "sentinel-redispy"), way
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


async def bench(args: argparse.Namespace, folder: Path, port: int, sport: int) -> list[dict[str, dict[str, float]]]:
    urls = {
        "plain": f"redis://127.0.0.1:{port}",
        "sentinel": f"redis+sentinel://127.0.0.1:{sport}/m",
        "sentinel-redispy": f"redis+sentinel://127.0.0.1:{sport}/m",
    }
    direct = redis_sync.Redis(port=port)
    rounds: list[dict[str, dict[str, float]]] = []
    for r in range(args.rounds):
        order = WAYS if r % 2 == 0 else WAYS[::-1]  # interleaved, the order alternating
        figures: dict[str, dict[str, float]] = {}
        for way in order:
            figures[way] = await one_way(way, urls[way], args, folder, direct.flushall)
            print(f"round {r + 1} {way:17}", "  ".join(f"{p} {figures[way][p]:9,.0f}/s" for p in PHASES), flush=True)
        rounds.append(figures)
    direct.close()
    return rounds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--seq", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        procs, port, sport = start(Path(tmp))
        try:
            rounds = asyncio.run(bench(args, Path(tmp), port, sport))
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                with contextlib.suppress(Exception):
                    proc.wait(5)
    medians = {w: {p: statistics.median(r[w][p] for r in rounds) for p in PHASES} for w in WAYS}
    print("\nmedians (tasks/s) and ratio plain / way (1.0 = as fast as plain TCP):")
    for way in WAYS:
        cells = "  ".join(f"{p} {medians[way][p]:9,.0f} ({medians['plain'][p] / medians[way][p]:.2f}x)" for p in PHASES)
        print(f"{way:17} {cells}")
    if args.out:
        Path(args.out).write_text(json.dumps({"rounds": rounds, "medians": medians}, indent=2))


if __name__ == "__main__":
    main()
