"""What task limits cost, and how exactly a rate holds across processes.

    python bench/limits.py [--redis-url URL] [--reps 3] [--n 10000] [--seconds 30] [--out limits.json]

Phases per repetition, each from an empty Redis (FLUSHALL), with the task types of
:mod:`bench.limits_app` served by ``framework worker`` processes (default settings, queue ``default``):

* free: N unlimited no-op tasks enqueued, then ONE worker process started -> the unlimited type's rate
  (from its first to its last completion) and Redis commands per task (``INFO commandstats``, Lua-internal
  calls included, the handler's own ``INCR`` and the harness's polling left out);
* rated: N tasks of a type limited to 1,000/s alone -> the same (a task put off costs its own commands);
* mix-rate / mix-cap: N unlimited and N limited tasks interleaved 50/50 in the one queue, the limited type
  at 1,000/s or 5 at once -> the unlimited type's rate, as a ratio of its rate alone;
* accuracy: THREE worker processes (``--processes 3``) on a limit of 50/s (set through
  ``[limits.bench-rated]``), enough tasks for a minute -> tasks started in the first ``--seconds`` seconds
  after the first start (target: 50/s x 30 s = 1,500 +/- 3 %).

Without ``--redis-url`` a server is started on a free loopback port, as :mod:`bench.harness` does.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis as redis_sync

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import Bench, median_of, open_server  # noqa: E402
from bench.limits_app import CAPPED, CAPPED_KEY, FREE, FREE_KEY, RATED, RATED_KEY, STARTS_KEY, Job  # noqa: E402
from framework.client.client import Client, TaskCall  # noqa: E402
from framework.settings import Settings  # noqa: E402
from framework.transport.connection import open_redis  # noqa: E402

OWN = {"info", "config|resetstat", "flushall", "get", "llen", "lindex"}


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--redis-url", default="")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--n", type=int, default=10000, help="tasks of each type in the throughput phases")
    ap.add_argument("--seconds", type=float, default=30.0, help="the accuracy phase's window")
    ap.add_argument("--rate", type=float, default=50.0, help="the accuracy phase's limit, per second")
    ap.add_argument("--phases", default="free,rated,mix-rate,mix-cap,accuracy")
    ap.add_argument("--out", default="")
    return ap.parse_args()


class LimitsBench:
    def __init__(self, url: str) -> None:
        self.url = url
        self.ctl = redis_sync.Redis.from_url(url)
        self.settings = Settings(redis_url=url, log_level="warning")

    def start(self, log: Path, processes: int = 1, limits: dict[str, Any] | None = None) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env.update(
            {
                "PYTHONPATH": str(ROOT),
                "REDIS_URL": self.url,
                "FRAMEWORK_APP": "bench.limits_app",
                "FRAMEWORK_LOAD_PLUGINS": "",
                "FRAMEWORK_LOG_LEVEL": "warning",
                "FRAMEWORK_QUEUES": "default=1",
                "FRAMEWORK_LIMITS": json.dumps(limits or {}),
            }
        )
        cmd = [sys.executable, "-m", "framework", "worker", "--processes", str(processes)]
        with log.open("w") as f:
            return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)

    def cmdstats(self) -> dict[str, int]:
        return {k.replace("cmdstat_", ""): v["calls"] for k, v in self.ctl.info("commandstats").items()}

    async def enqueue(self, calls: list[TaskCall[Any]]) -> None:
        client = Client(open_redis(self.url), settings=self.settings)
        try:
            for i in range(0, len(calls), 1000):
                await client.enqueue_many(calls[i : i + 1000])
        finally:
            await client.close()

    def count(self, key: str) -> int:
        return int(self.ctl.get(key) or 0)

    def throughput(
        self, log_dir: Path, name: str, calls: list[TaskCall[Any]], watch: str, target: int
    ) -> dict[str, Any]:
        """Enqueue ``calls``, start one worker, time ``watch`` from its first to its ``target``-th count."""
        self.ctl.flushall()
        asyncio.run(self.enqueue(calls))
        self.ctl.config_resetstat()
        worker = self.start(log_dir / f"{name}.log")
        first = last = 0.0
        deadline = time.perf_counter() + 300
        try:
            while time.perf_counter() < deadline:
                done = self.count(watch)
                now = time.perf_counter()
                if done and not first:
                    first, first_count = now, done
                if done >= target:
                    last = now
                    break
                time.sleep(0.002)
            while sum(self.count(k) for k in (FREE_KEY, RATED_KEY, CAPPED_KEY)) < len(calls):
                if time.perf_counter() > deadline:
                    break
                time.sleep(0.05)
            stats = self.cmdstats()
        finally:
            Bench.stop_worker(worker)
        commands = {k: v for k, v in stats.items() if k not in OWN}
        commands["incrby"] = commands.get("incrby", 0) - len(calls)  # the handlers' own INCR (sent as INCRBY)
        total = sum(v for v in commands.values() if v > 0)
        return {
            "rate": (target - first_count) / (last - first) if last > first else 0.0,
            "cmds_per_task": total / len(calls),
            "commands": {k: v for k, v in commands.items() if v > 0},
        }

    def accuracy(self, log_dir: Path, rate: float, seconds: float) -> dict[str, Any]:
        self.ctl.flushall()
        n = int(rate * (seconds + 30))
        asyncio.run(self.enqueue([TaskCall(RATED, Job(stamp=True)) for _ in range(n)]))
        worker = self.start(log_dir / "accuracy.log", processes=3, limits={"bench-rated": {"rate": f"{rate:g}/s"}})
        try:
            while not self.ctl.llen(STARTS_KEY):
                time.sleep(0.01)
            first = float(self.ctl.lindex(STARTS_KEY, 0) or 0)
            while time.time() < first + seconds + 1:
                time.sleep(0.1)
            starts = sorted(float(t) for t in self.ctl.lrange(STARTS_KEY, 0, -1))
        finally:
            Bench.stop_worker(worker)
        first = starts[0]
        started = sum(1 for t in starts if t < first + seconds)
        window = [t for t in starts if t < first + seconds]
        gaps = [b - a for a, b in itertools.pairwise(window)]
        busiest = max(sum(1 for u in window[i:] if u < t + 1.0) for i, t in enumerate(window))
        tenths = [
            sum(1 for u in window if t <= u < t + 0.1) for t in (first + k / 10 for k in range(int(seconds * 10)))
        ]
        return {
            "started": started,
            "expected": rate * seconds,
            "error_pct": 100.0 * (started - rate * seconds) / (rate * seconds),
            "gap_p50_ms": 1000 * statistics.median(gaps),
            "gap_min_ms": 1000 * min(gaps),
            "gap_max_ms": 1000 * max(gaps),
            "busiest_1s": busiest,
            "max_per_100ms": max(tenths),
        }


def run(args: argparse.Namespace, bench: LimitsBench, log_dir: Path) -> dict[str, Any]:
    n, phases, out = args.n, set(args.phases.split(",")), {}
    free = [TaskCall(FREE, Job()) for _ in range(n)]
    if "free" in phases:
        out["free"] = bench.throughput(log_dir, "free", free, FREE_KEY, n)
    if "rated" in phases:
        out["rated"] = bench.throughput(log_dir, "rated", [TaskCall(RATED, Job()) for _ in range(n)], RATED_KEY, n)
    for phase, task in (("mix-rate", RATED), ("mix-cap", CAPPED)):
        if phase in phases:
            mixed = [c for pair in zip(free, (TaskCall(task, Job()) for _ in range(n)), strict=True) for c in pair]
            out[phase] = bench.throughput(log_dir, phase, mixed, FREE_KEY, n)
    if "accuracy" in phases:
        out["accuracy"] = bench.accuracy(log_dir, args.rate, args.seconds)
    return out


def flat(result: dict[str, Any]) -> dict[str, Any]:
    return {f"{phase}.{k}": v for phase, values in result.items() for k, v in values.items() if not isinstance(v, dict)}


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        server, url = open_server(args, work)
        try:
            bench = LimitsBench(url)
            runs = []
            for rep in range(args.reps):
                result = run(args, bench, work)
                runs.append(flat(result))
                print(f"rep {rep + 1}: {json.dumps(runs[-1])}", flush=True)
                if rep == 0:
                    detail = {
                        p: v.get("commands") for p, v in result.items() if isinstance(v, dict) and "commands" in v
                    }
                    print(f"commands by name (rep 1, whole phase): {json.dumps(detail)}", flush=True)
        finally:
            if server is not None:
                server.stop()
    med = median_of(runs)
    free_rate = med.get("free.rate") or 0.0
    print(f"\nmedians of {args.reps} runs, N={args.n} tasks per type")
    print("| measurement | value |\n|---|---:|")
    for key in ("free.rate", "rated.rate", "mix-rate.rate", "mix-cap.rate"):
        if key in med:
            ratio = f" ({med[key] / free_rate:.2f}x alone)" if free_rate and key.startswith("mix") else ""
            print(f"| {key} tasks/s | {med[key]:,.0f}{ratio} |")
    for key in ("free.cmds_per_task", "rated.cmds_per_task", "mix-rate.cmds_per_task", "mix-cap.cmds_per_task"):
        if key in med:
            print(f"| {key} | {med[key]:.2f} |")
    accuracy = ("started", "error_pct", "gap_p50_ms", "gap_min_ms", "gap_max_ms", "busiest_1s", "max_per_100ms")
    for key in (f"accuracy.{k}" for k in accuracy):
        if key in med:
            print(f"| {key} | {med[key]:,.2f} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"runs": runs, "median": med}, indent=2))


if __name__ == "__main__":
    main()
