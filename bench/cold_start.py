"""Cold start: from ``framework worker`` spawned to its first task started, and what a short run loses to it.

    python bench/cold_start.py [--runs 7] [--n 20000] [--ratio-runs 3] [--before DIR] [--plugins] [--json]

Figures, each the median of ``--runs`` fresh processes (after one warm-up of each, so ``.pyc`` files
exist, as they do in an installed framework):

* ``import framework``: ``python -c "import framework"``, wall time of the process;
* ``framework --help``: ``python -m framework --help``, wall time of the process, in a user's environment
  (no ``FRAMEWORK_*`` variable: every installed plugin loads, as help lists their commands); and with no
  plugin (``FRAMEWORK_LOAD_PLUGINS=""``), the framework's own share;
* ``worker: first task``: one task is queued, then ``framework worker`` is spawned (``time.time()`` just
  before ``Popen``); the task's handler (:mod:`bench.cold_app`) records ``time.time()`` when it starts.
  The figure is the difference: interpreter start, imports, settings, plugins, the Redis connection, the
  first dequeue. The worker serves the default queue with plugins off (``FRAMEWORK_LOAD_PLUGINS=""``),
  as :mod:`bench.harness` runs it; ``--plugins`` adds a row with every installed plugin loaded;
* ``framework tasks stats`` and ``framework tasks ls default pending``: the same, with 1,000 tasks pending in
  the default queue (the commands that read the queues: their Redis work is a millisecond or two, the rest is
  start-up);
* ``libraries alone``: ``python -c`` importing only the third-party modules a worker cannot start without
  (click, asyncio, structlog without rich, msgspec, pluggy, uvloop, hiredis, redis-py, the protobuf
  message classes), with the cyclic collector off as a worker starts: the floor under ``worker: first
  task`` that no change to the framework's own code moves;
* each start-up figure also as CPU time (user + system) of the process, to tell its own work from waiting;
* ``wall / steady``: N no-op tasks queued, ONE worker process spawned, timed until all ran: the wall rate
  (N over spawn-to-done) against the steady rate (from the first finished task seen, as
  :mod:`bench.harness` computes it). 1.0 would mean start-up costs nothing.

``--before DIR`` names a folder holding another ``framework`` package (a copy of the tree before a change,
such as a ``git worktree``): every figure is then also taken with it, interleaved run by run with the current
tree, so both see the same machine load. The built-in plugins' packages under ``DIR/plugins/*/`` are taken
from it too (their installed distributions' entry points name modules, which the folder provides first).
Each process runs in a scratch folder (no ``framework.toml`` is read) against a private
``redis-server`` (else the embedded Valkey) on a free loopback port.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis as redis_sync

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cold_app import DONE_KEY, FIRST_KEY, Nothing, cold  # noqa: E402
from bench.harness import Bench, Server  # noqa: E402
from framework.client.client import Client, TaskCall  # noqa: E402
from framework.settings import Settings  # noqa: E402
from framework.transport.connection import open_redis  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
LIBRARIES = (
    "import gc, sys; gc.disable(); sys.modules['rich'] = None; "  # as framework.cli and framework.logging do
    "import click, asyncio, structlog, msgspec, pluggy, uvloop, hiredis, redis.asyncio; "
    "import framework.protocol.proto.asynq_pb2"
)
"""The third-party imports a worker needs before its first task: its start-up floor."""
QUEUED = 1000
"""Tasks pending in the default queue while ``tasks stats`` and ``tasks ls`` run."""
LS = ("tasks", "ls", "default", "pending")
TARGETS = {"framework --help": 0.100, "worker: first task": 0.150, "wall / steady": 0.9}
"""Each figure's goal: seconds to stay under, or the ratio to stay above."""


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=7, help="fresh processes per start-up figure (default 7)")
    ap.add_argument("--n", type=int, default=20000, help="tasks of the wall/steady run (default 20000)")
    ap.add_argument("--ratio-runs", type=int, default=3, help="wall/steady runs (default 3; 0 skips them)")
    ap.add_argument("--before", type=Path, default=None, help="folder holding the framework package to compare")
    ap.add_argument("--plugins", action="store_true", help="also time the first task with the plugins loaded")
    ap.add_argument("--json", action="store_true", help="print JSON")
    return ap.parse_args()


class Tree:
    """One ``framework`` package to measure: its label and the ``PYTHONPATH`` that selects it."""

    def __init__(self, label: str, path: str) -> None:
        self.label = label
        self.path = path


class ColdStart:
    def __init__(self, url: str, scratch: Path) -> None:
        self.url = url
        self.scratch = scratch
        self.ctl = redis_sync.Redis.from_url(url)
        self.settings = Settings(redis_url=url, log_level="warning")
        self.filled = False
        """Whether the default queue holds the tasks the ``tasks`` commands read (a worker run flushes it)."""

    def env(self, tree: Tree, *, worker: bool = False, plugins: bool = True) -> dict[str, str]:
        """A user's environment (no ``FRAMEWORK_*``), plus the worker's app, queue and plugins when ``worker``."""
        skip = {"REDIS_URL", "PYTHONDONTWRITEBYTECODE", "PYTHONPATH"}
        env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEWORK_") and k not in skip}
        env.update(
            PYTHONPATH=tree.path,
            COLUMNS="120",
            NO_COLOR="1",
            REDIS_URL=self.url,
            FRAMEWORK_DATA_DIR=str(self.scratch / "data"),
        )
        if worker:
            env.update(FRAMEWORK_APP="bench.cold_app", FRAMEWORK_LOG_LEVEL="warning", FRAMEWORK_QUEUES="default=1")
        if not plugins:
            env["FRAMEWORK_LOAD_PLUGINS"] = ""
        return env

    def command(self, tree: Tree, args: list[str], *, plugins: bool = True) -> tuple[float, float]:
        """Wall and CPU (user + system) seconds of ``python args`` run to completion."""
        cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, *args],
            cwd=self.scratch,
            env=self.env(tree, plugins=plugins),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
        elapsed = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
        return elapsed, after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime

    def queue_command(self, tree: Tree, args: list[str]) -> tuple[float, float]:
        """:meth:`command` with ``QUEUED`` tasks pending in the default queue (queued again after a worker run)."""
        if not self.filled:
            self.ctl.flushall()
            asyncio.run(self.enqueue(QUEUED))
            self.filled = True
        return self.command(tree, args)

    def spawn(self, tree: Tree, log: Path, *, plugins: bool = False) -> subprocess.Popen[bytes]:
        """``framework worker``, one process, on the default queue: plugins off unless ``plugins``."""
        cmd = [sys.executable, "-m", "framework", "worker", "--processes", "1"]
        with log.open("w") as out:
            return subprocess.Popen(
                cmd,
                cwd=self.scratch,
                env=self.env(tree, worker=True, plugins=plugins),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    async def enqueue(self, n: int) -> None:
        client = Client(open_redis(self.url), settings=self.settings)
        try:
            for i in range(0, n, 1000):
                await client.enqueue_many([TaskCall(cold, Nothing()) for _ in range(min(1000, n - i))])
        finally:
            await client.close()

    def first_task(self, tree: Tree, *, plugins: bool = False) -> tuple[float, float]:
        """Seconds from spawning a worker to its handler starting the one queued task, and the worker's CPU
        seconds by then (``/proc``, in clock ticks: 10 ms steps)."""
        self.ctl.flushall()
        self.filled = False
        asyncio.run(self.enqueue(1))
        log = self.scratch / f"first-{tree.label}.log"
        spawned = time.time()
        worker = self.spawn(tree, log, plugins=plugins)
        try:
            deadline = time.perf_counter() + 60.0
            while (first := self.ctl.get(FIRST_KEY)) is None:
                if time.perf_counter() > deadline or worker.poll() is not None:
                    raise SystemExit(f"no task started ({tree.label}): {log.read_text()[-2000:]}")
                time.sleep(0.002)
            fields = Path(f"/proc/{worker.pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu = (int(fields[11]) + int(fields[12])) / TICKS
        finally:
            Bench.stop_worker(worker)
        return float(first) - spawned, cpu

    def ratio(self, tree: Tree, n: int) -> dict[str, float]:
        """Wall and steady rate of one worker process on ``n`` queued tasks, as :mod:`bench.harness` times them."""
        self.ctl.flushall()
        self.filled = False
        asyncio.run(self.enqueue(n))
        log = self.scratch / f"ratio-{tree.label}.log"
        t0 = time.perf_counter()
        worker = self.spawn(tree, log)
        try:
            first: tuple[float, int] | None = None
            deadline = t0 + 300.0
            while True:
                count = int(self.ctl.get(DONE_KEY) or 0)
                now = time.perf_counter()
                if count and first is None:
                    first = (now, count)
                if count >= n:
                    break
                if now > deadline or worker.poll() is not None:
                    raise SystemExit(f"{count}/{n} tasks ran ({tree.label}): {log.read_text()[-2000:]}")
                time.sleep(0.005)
        finally:
            Bench.stop_worker(worker)
        assert first is not None
        wall = n / (now - t0)
        steady = (n - first[1]) / (now - first[0])
        return {"wall_rate": wall, "steady_rate": steady, "ratio": wall / steady}


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def measure(args: argparse.Namespace, bench: ColdStart, trees: list[Tree]) -> dict[str, dict[str, Any]]:
    """``{tree: {figure: {median, min, max}}}``.

    Each round takes every figure once with every tree, the trees' order alternating from round to round, so
    the figures and the trees are compared under the same load.
    """
    figures: dict[str, Callable[[Tree], tuple[float, float]]] = {
        "import framework": lambda t: bench.command(t, ["-c", "import framework"]),
        "framework --help": lambda t: bench.command(t, ["-m", "framework", "--help"]),
        "framework --help, no plugins": lambda t: bench.command(t, ["-m", "framework", "--help"], plugins=False),
        "framework tasks stats": lambda t: bench.queue_command(t, ["-m", "framework", "tasks", "stats"]),
        "framework tasks ls": lambda t: bench.queue_command(t, ["-m", "framework", *LS]),
        "libraries alone": lambda t: bench.command(t, ["-c", LIBRARIES]),
        "worker: first task": bench.first_task,
    }
    if args.plugins:
        figures["worker: first task, plugins"] = lambda t: bench.first_task(t, plugins=True)
    names = [n for name in figures for n in (name, f"{name}, CPU")]
    raw: dict[str, dict[str, list[float]]] = {t.label: {name: [] for name in names} for t in trees}
    for run in figures.values():
        for tree in trees:  # warm-up: .pyc files, the page cache
            run(tree)
    for i in range(args.runs):
        for name, run in figures.items():
            for tree in trees if i % 2 == 0 else trees[::-1]:
                wall, cpu = run(tree)
                raw[tree.label][name].append(wall)
                raw[tree.label][f"{name}, CPU"].append(cpu)
    out: dict[str, dict[str, Any]] = {t.label: {k: summary(v) for k, v in raw[t.label].items()} for t in trees}
    if args.ratio_runs > 0:
        rates: dict[str, list[dict[str, float]]] = {t.label: [] for t in trees}
        for i in range(args.ratio_runs):
            for tree in trees if i % 2 == 0 else trees[::-1]:
                rates[tree.label].append(bench.ratio(tree, args.n))
        for tree in trees:
            runs = rates[tree.label]
            out[tree.label]["wall / steady"] = summary([r["ratio"] for r in runs])
            out[tree.label]["wall rate (tasks/s)"] = summary([r["wall_rate"] for r in runs])
            out[tree.label]["steady rate (tasks/s)"] = summary([r["steady_rate"] for r in runs])
    return out


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="cold-start-") as folder:
        scratch = Path(folder)
        trees = [Tree("now", str(ROOT))]
        if args.before is not None:
            shadow = scratch / "before"
            shadow.mkdir()
            (shadow / "framework").symlink_to((args.before / "framework").resolve())
            for package in sorted(args.before.glob("plugins/*/framework_*/__init__.py")):
                (shadow / package.parent.name).symlink_to(package.parent.resolve())
            trees.insert(0, Tree("before", os.pathsep.join((str(shadow), str(ROOT)))))
        server = Server(scratch)
        bench = ColdStart(server.url, scratch)
        try:
            results = measure(args, bench, trees)
        finally:
            bench.ctl.close()
            server.stop()
    if args.json:
        print(json.dumps(results, indent=2))
        return
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{args.runs} runs per start-up figure, {args.ratio_runs} of {args.n:,} tasks; ", end="")
    print(f"{os.cpu_count()} CPUs, load {load}; {server.kind}")
    print(f"{'figure':<30} {'tree':<7} {'median':>10} {'min':>10} {'max':>10} {'target':>8}")
    for name in results[trees[0].label]:
        for tree in trees:
            r = results[tree.label][name]
            seconds = "rate" not in name and "/" not in name
            cells = " ".join(_cell(r[k], seconds=seconds) for k in ("median", "min", "max"))
            target = TARGETS.get(name)
            goal = "-" if target is None else f"{target * 1000:.0f}ms" if seconds else f">={target}"
            print(f"{name:<30} {tree.label:<7} {cells} {goal:>8}")


def _cell(value: float, *, seconds: bool) -> str:
    return f"{value * 1000:8.1f}ms" if seconds else f"{value:10.2f}"


if __name__ == "__main__":
    main()
