"""What task limits cost, and how exactly a rate holds across processes.

    python bench/limits.py [--redis-url URL] [--reps 3] [--n 10000] [--backlog 20000] [--seconds 30]
                           [--out limits.json]

Phases per repetition, each from an empty Redis (FLUSHALL), with the task types of
:mod:`bench.limits_app` served by ``framework worker`` processes (default settings, queue ``default``):

* free: N unlimited no-op tasks enqueued, then ONE worker process started -> the unlimited type's rate
  (from its first to its last completion) and Redis commands per task (``INFO commandstats``, Lua-internal
  calls included, the handler's own ``INCR`` and the harness's polling left out);
* rated: N tasks of a type limited to 1,000/s alone -> the same (a task put off costs its own commands);
* mix-rate / mix-cap: N unlimited and N limited tasks interleaved 50/50 in the one queue, the limited type
  at 1,000/s or 5 at once -> the unlimited type's rate, as a ratio of its rate alone;
* steady-*: ONE worker process serving queues ``default`` and ``limited`` (weights 1 and 1) drains a backlog of
  ``--backlog`` unlimited no-op tasks in ``default`` (enqueued while the queue is paused, then unpaused) ->
  the unlimited type's rate, alone (steady-alone) and while limited tasks ARRIVE in ``limited`` at a steady
  rate from a separate enqueuer process that started 2 s before the unpause: 50/s on a 50/s limit
  (steady-50of50), 500/s on 1,000/s (steady-500of1000), 100/s on 50/s (steady-100of50, twice the limit,
  which keeps it saturated), and 500/s of an unlimited type (steady-500free: what the arrivals cost without
  a limit); with what each limited task cost;
* accuracy: THREE worker processes (``--processes 3``) on a limit of 50/s (set through
  ``[limits.bench-rated]``), enough tasks for a minute -> tasks started in the first ``--seconds`` seconds
  after the first start (target: 50/s x 30 s = 1,500 +/- 3 %).

What a limited task costs is counted from ``INFO commandstats`` markers that only the scripts concerned call
in these phases: takes (``limit_take.lua`` calls: its ``LPOS``), put-offs to the scheduled set that came back
(``forward.lua``: its ``HEXISTS``, one per task forwarded) plus tasks parked for a slot (the limit's ``parked``
counter), and holds (takes that answered "wait here until your moment": takes - starts - put-offs). Every
put-off costs one more dequeue.

Without ``--redis-url`` a server is started on a free loopback port, as :mod:`bench.harness` does.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import multiprocessing
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
from bench.limits_app import (  # noqa: E402
    CAPPED,
    CAPPED_KEY,
    FREE,
    FREE_KEY,
    OTHER,
    OTHER_KEY,
    RATED,
    RATED_KEY,
    STARTS_KEY,
    Job,
)
from framework.client.client import Client, TaskCall  # noqa: E402
from framework.protocol.keys import Schema  # noqa: E402
from framework.settings import Settings  # noqa: E402
from framework.transport.connection import open_redis  # noqa: E402

OWN = {"info", "config|resetstat", "flushall", "get", "llen", "lindex"}
SCHEMA = Schema()
QUEUES = {"default": 1}
BOTH = {"default": 1, "limited": 1}
STEADY = {  # phase -> (arrivals per second, the limit per second; 0 = the arrivals are of an unlimited type)
    "steady-alone": (0.0, 0.0),
    "steady-50of50": (50.0, 50.0),
    "steady-500of1000": (500.0, 1000.0),
    "steady-100of50": (100.0, 50.0),
    "steady-500free": (500.0, 0.0),
}
WARMUP = 2.0


async def _arrive(url: str, rate: float, limited: bool, stop: Any) -> None:
    """Enqueue tasks in queue ``limited`` at ``rate`` a second, evenly spaced, until ``stop`` is set."""
    task = RATED if limited else OTHER
    client = Client(open_redis(url), settings=Settings(redis_url=url, log_level="warning"))
    sent, t0 = 0, time.perf_counter()
    try:
        while not stop.is_set():
            due = int((time.perf_counter() - t0) * rate) + 1
            if due - sent == 1:
                await client.enqueue(task, Job(), queue="limited")
            elif due > sent:
                await client.enqueue_many([TaskCall(task, Job(), {"queue": "limited"}) for _ in range(due - sent)])
            sent = max(sent, due)
            await asyncio.sleep(max(0.0, t0 + sent / rate - time.perf_counter()))
    finally:
        await client.close()


def arrive(url: str, rate: float, limited: bool, stop: Any) -> None:
    """The enqueuer process of the steady phases."""
    asyncio.run(_arrive(url, rate, limited, stop))


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--redis-url", default="")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--n", type=int, default=10000, help="tasks of each type in the throughput phases")
    ap.add_argument("--backlog", type=int, default=20000, help="unlimited tasks drained in the steady phases")
    ap.add_argument("--seconds", type=float, default=30.0, help="the accuracy phase's window")
    ap.add_argument("--rate", type=float, default=50.0, help="the accuracy phase's limit, per second")
    ap.add_argument("--phases", default="free,rated,mix-rate,mix-cap," + ",".join(STEADY) + ",accuracy")
    ap.add_argument("--out", default="")
    return ap.parse_args()


class LimitsBench:
    def __init__(self, url: str) -> None:
        self.url = url
        self.ctl = redis_sync.Redis.from_url(url)
        self.settings = Settings(redis_url=url, log_level="warning")

    def start(
        self,
        log: Path,
        processes: int = 1,
        limits: dict[str, Any] | None = None,
        queues: dict[str, int] | None = None,
    ) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env.update(
            {
                "PYTHONPATH": str(ROOT),
                "REDIS_URL": self.url,
                "FRAMEWORK_APP": "bench.limits_app",
                "FRAMEWORK_LOAD_PLUGINS": "",
                "FRAMEWORK_LOG_LEVEL": "warning",
                "FRAMEWORK_QUEUES": ",".join(f"{q}={w}" for q, w in (queues or QUEUES).items()),
                "FRAMEWORK_LIMITS": json.dumps(limits or {}),
            }
        )
        cmd = [sys.executable, "-m", "framework", "worker", "--processes", str(processes)]
        with log.open("w") as f:
            return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)

    def cmdstats(self) -> dict[str, int]:
        return {k.replace("cmdstat_", ""): v["calls"] for k, v in self.ctl.info("commandstats").items()}

    async def enqueue(self, calls: list[TaskCall]) -> None:
        client = Client(open_redis(self.url), settings=self.settings)
        try:
            for i in range(0, len(calls), 1000):
                await client.enqueue_many(calls[i : i + 1000])
        finally:
            await client.close()

    def count(self, key: str) -> int:
        return int(self.ctl.get(key) or 0)

    def limit_stats(self, name: str) -> dict[str, int]:
        raw = self.ctl.hgetall(SCHEMA.limit(name).stats)
        return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}

    @staticmethod
    def cost(stats: dict[str, int], limit: dict[str, int], rated: bool) -> dict[str, int]:
        """Takes, put-offs and holds of the limited tasks, from the markers (see the module's docstring)."""
        takes = stats.get("lpos", 0)
        put_offs = limit.get("parked", 0) + (stats.get("hexists", 0) if rated else 0)
        started = limit.get("started", 0)
        return {"started": started, "takes": takes, "put_offs": put_offs, "holds": takes - started - put_offs}

    def throughput(
        self, log_dir: Path, name: str, calls: list[TaskCall], watch: str, target: int, limit: str = ""
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
            limited = self.limit_stats(limit) if limit else {}
        finally:
            Bench.stop_worker(worker)
        commands = {k: v for k, v in stats.items() if k not in OWN}
        commands["incrby"] = commands.get("incrby", 0) - len(calls)  # the handlers' own INCR (sent as INCRBY)
        total = sum(v for v in commands.values() if v > 0)
        out: dict[str, Any] = {
            "rate": (target - first_count) / (last - first) if last > first else 0.0,
            "cmds_per_task": total / len(calls),
            "commands": {k: v for k, v in commands.items() if v > 0},
        }
        if limit:
            cost = self.cost(stats, limited, rated=limit == "bench-rated")
            n = cost["started"] or 1
            out |= {f"{k}_per_limited": v / n for k, v in cost.items() if k != "started"}
            out["dequeues_per_limited"] = 1 + cost["put_offs"] / n
        return out

    def steady(self, log_dir: Path, name: str, backlog: int, arrivals: float, limit: float) -> dict[str, Any]:
        """One worker drains ``backlog`` unlimited tasks while limited ones arrive at ``arrivals`` a second."""
        self.ctl.flushall()
        default = SCHEMA.queue("default")
        self.ctl.set(default.paused, "1")
        asyncio.run(self.enqueue([TaskCall(FREE, Job()) for _ in range(backlog)]))
        limits = {"bench-rated": {"rate": f"{limit:g}/s"}} if limit else {}
        worker = self.start(log_dir / f"{name}.log", limits=limits, queues=BOTH)
        spawn = multiprocessing.get_context("spawn")
        stop = spawn.Event()
        feeder: multiprocessing.process.BaseProcess | None = None
        deadline = time.perf_counter() + 300
        try:
            while not self.ctl.zcard(SCHEMA.servers) and time.perf_counter() < deadline:
                time.sleep(0.02)
            self.ctl.config_resetstat()
            if arrivals:
                feeder = multiprocessing.get_context("spawn").Process(
                    target=arrive, args=(self.url, arrivals, bool(limit), stop)
                )
                feeder.start()
            time.sleep(WARMUP)
            arrived = RATED_KEY if limit else OTHER_KEY
            before = self.count(arrived)
            self.ctl.delete(default.paused)
            first = last = 0.0
            first_count = limited_first = 0
            while time.perf_counter() < deadline:
                done = self.count(FREE_KEY)
                now = time.perf_counter()
                if done and not first:
                    first, first_count, limited_first = now, done, self.count(arrived)
                if done >= backlog:
                    last = now
                    break
                time.sleep(0.002)
            limited_last = self.count(arrived)
            stats = self.cmdstats()
            limited = self.limit_stats("bench-rated")
        finally:
            stop.set()
            if feeder is not None:
                feeder.join(10)
            Bench.stop_worker(worker)
        span = last - first
        out: dict[str, Any] = {
            "rate": (backlog - first_count) / span if span > 0 else 0.0,
            "window_s": span,
            "limited_before_window": before,
            "limited_rate_in_window": (limited_last - limited_first) / span if span > 0 else 0.0,
        }
        if arrivals and limit:
            cost = self.cost(stats, limited, rated=True)
            n = cost["started"] or 1
            out |= cost
            out |= {f"{k}_per_limited": v / n for k, v in cost.items() if k != "started"}
            out["delayed"] = limited.get("delayed", 0)
        return out

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
        rated = [TaskCall(RATED, Job()) for _ in range(n)]
        out["rated"] = bench.throughput(log_dir, "rated", rated, RATED_KEY, n, limit="bench-rated")
    for phase, task, limit in (("mix-rate", RATED, "bench-rated"), ("mix-cap", CAPPED, "bench-capped")):
        if phase in phases:
            mixed = [c for pair in zip(free, (TaskCall(task, Job()) for _ in range(n)), strict=True) for c in pair]
            out[phase] = bench.throughput(log_dir, phase, mixed, FREE_KEY, n, limit=limit)
    for phase, (arrivals, limit_rate) in STEADY.items():
        if phase in phases:
            out[phase] = bench.steady(log_dir, phase, args.backlog, arrivals, limit_rate)
    if "accuracy" in phases:
        out["accuracy"] = bench.accuracy(log_dir, args.rate, args.seconds)
    return out


def flat(result: dict[str, Any]) -> dict[str, Any]:
    return {f"{phase}.{k}": v for phase, values in result.items() for k, v in values.items() if not isinstance(v, dict)}


def report(args: argparse.Namespace, med: dict[str, Any]) -> None:
    """Print the medians as a table."""
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
    per = ("takes_per_limited", "put_offs_per_limited", "holds_per_limited", "dequeues_per_limited")
    for phase in ("rated", "mix-rate", "mix-cap"):
        if f"{phase}.takes_per_limited" in med:
            print(f"| {phase} per limited task: " + " / ".join(k.split("_per")[0] for k in per), end=" | ")
            print(" / ".join(f"{med[f'{phase}.{k}']:.2f}" for k in per) + " |")
    alone = med.get("steady-alone.rate") or 0.0
    for phase in STEADY:
        if f"{phase}.rate" in med:
            ratio = f" ({med[f'{phase}.rate'] / alone:.3f}x alone)" if alone and phase != "steady-alone" else ""
            print(f"| {phase}.rate tasks/s | {med[f'{phase}.rate']:,.0f}{ratio} |")
            print(f"| {phase} window s / limited starts per s in it | ", end="")
            print(f"{med[f'{phase}.window_s']:.2f} / {med[f'{phase}.limited_rate_in_window']:.0f} |")
            if f"{phase}.takes_per_limited" in med:
                print(f"| {phase} per limited task: takes / put-offs / holds | ", end="")
                print(" / ".join(f"{med[f'{phase}.{k}']:.2f}" for k in per[:3]) + " |")
    accuracy = ("started", "error_pct", "gap_p50_ms", "gap_min_ms", "gap_max_ms", "busiest_1s", "max_per_100ms")
    for key in (f"accuracy.{k}" for k in accuracy):
        if key in med:
            print(f"| {key} | {med[key]:,.2f} |")


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
    report(args, med)
    if args.out:
        Path(args.out).write_text(json.dumps({"runs": runs, "median": med}, indent=2))


if __name__ == "__main__":
    main()
