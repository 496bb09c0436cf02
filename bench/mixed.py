"""Mixed workload: priorities, retries, delays and larger payloads, with every task accounted for.

    python bench/mixed.py [--redis-url URL] [--reps 3] [--n 20000] [--processes 1] [--out results.json]

Per repetition, from an empty Redis: N tasks are enqueued (``enqueue_many``, 500 per call) into three
weighted queues (critical=6, default=3, low=1; 20/50/30 % of the tasks); 10 % fail their first attempt
and are retried after 1 s; 10 % are delayed by 0.5-3 s (``process_in``); payloads are 100 B (70 %),
2 KB (25 %) or 32 KB (5 %). Then ONE ``framework worker`` process (default settings, the three queues)
runs until every task succeeded. Reported:

* enqueue rate, wall and steady processing rate (tasks/s, retries not counted twice), Redis memory per
  task while queued;
* **lost** (a task that never ran to success) and **duplicated** (attempts beyond the one planned, or
  two for a failing task): both must be 0;
* priorities: each queue's share of the first 20 % of starts of tasks that were ready at once;
* delays: how late a delayed task started after its due time (p50/p99/max ms; asynq stores due times
  in whole seconds and we round them up, so a task is never early and up to 1 s late by design; it then
  waits behind what is pending in its queue), and how many started early (must be 0);
* what Redis holds afterwards in each queue's lists and sets (all empty when nothing is lost or stuck).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import Bench, median_of, open_server  # noqa: E402
from bench.mixed_app import LATE, OK, ORDER, RUNS, Mixed, mixed  # noqa: E402
from framework.client.client import TaskCall  # noqa: E402

QUEUES = {"critical": 6, "default": 3, "low": 1}
SHARES = {"critical": 0.2, "default": 0.5, "low": 0.3}


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--redis-url", default="")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--concurrency", type=int, default=0, help="worker concurrency (0 = the default setting)")
    ap.add_argument("--processes", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--fail", type=float, default=0.1, help="share of tasks whose first attempt fails")
    ap.add_argument("--delayed", type=float, default=0.1, help="share of tasks delayed by 0.5-3 s")
    ap.add_argument("--sizes", default="100:0.7,2000:0.25,32000:0.05", help="payload SIZE:SHARE list")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    args.queues = ",".join(f"{q}={w}" for q, w in QUEUES.items())
    return args


def plan(args: argparse.Namespace) -> list[dict[str, Any]]:
    """What each task is: its queue, whether it fails once, its delay and payload size."""
    rng = random.Random(args.seed)
    names, shares = list(SHARES), list(SHARES.values())
    pairs = [item.split(":") for item in args.sizes.split(",")]
    sizes, weights = [int(s) for s, _ in pairs], [float(w) for _, w in pairs]
    return [
        {
            "queue": rng.choices(names, shares)[0],
            "fail": rng.random() < args.fail,
            "delay": rng.uniform(0.5, 3.0) if rng.random() < args.delayed else 0.0,
            "size": rng.choices(sizes, weights)[0],
        }
        for _ in range(args.n)
    ]


async def enqueue(bench: Bench, tasks: list[dict[str, Any]]) -> dict[str, Any]:
    client = await bench._client()
    used_before = int(bench.ctl.info("memory")["used_memory"])
    t = time.perf_counter()
    try:
        for start in range(0, len(tasks), 500):
            calls = []
            now = time.time()
            for i, task in enumerate(tasks[start : start + 500], start):
                options: dict[str, Any] = {"queue": task["queue"]}
                if task["delay"]:
                    options["process_in"] = task["delay"]
                due = now + task["delay"] if task["delay"] else 0.0
                calls.append(TaskCall(mixed, Mixed(i=i, fail=task["fail"], due=due, blob="x" * task["size"]), options))
            await client.enqueue_many(calls)
    finally:
        await client.close()
    dt = time.perf_counter() - t
    used_after = int(bench.ctl.info("memory")["used_memory"])
    return {"enqueue_rate": len(tasks) / dt, "redis_bytes_per_task": (used_after - used_before) / len(tasks)}


def process(bench: Bench, work: Path, rep: int, n: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    worker = bench.start_worker(work / f"mixed-{rep}.log")
    first: float | None = None
    try:
        while True:
            done = int(bench.ctl.get(OK) or 0)
            now = time.perf_counter()
            if done and first is None:
                first = now
            if done >= n or now - t0 > 300:
                break
            time.sleep(0.005)
        t_end = time.perf_counter()
        time.sleep(0.3)  # a duplicate run would show up here
    finally:
        bench.stop_worker(worker)
    wall = t_end - t0
    return {
        "succeeded": done,
        "process_rate_wall": done / wall,
        "process_rate_steady": done / (t_end - first) if first and t_end > first else 0.0,
        "wall_s": wall,
    }


def check(bench: Bench, tasks: list[dict[str, Any]]) -> dict[str, Any]:
    runs = {int(k): int(v) for k, v in bench.ctl.hgetall(RUNS).items()}
    lost = sum(1 for i in range(len(tasks)) if i not in runs)
    duplicated = sum(max(0, runs.get(i, 0) - (2 if t["fail"] else 1)) for i, t in enumerate(tasks))
    late = sorted(float(x) for x in bench.ctl.lrange(LATE, 0, -1))
    order = [q.decode() for q in bench.ctl.lrange(ORDER, 0, -1)]
    ready = sum(1 for t in tasks if not t["delay"])
    head = order[: max(1, ready // 5)]
    left = {}
    for q in QUEUES:
        for kind in ("pending", "active", "scheduled", "retry", "archived", "lease"):
            key = f"asynq:{{{q}}}:{kind}"
            size = bench.ctl.llen(key) if kind in ("pending", "active") else bench.ctl.zcard(key)
            if size:
                left[f"{q}:{kind}"] = size

    def pct(p: float) -> float:
        return late[min(len(late) - 1, int(len(late) * p))] if late else 0.0

    return {
        "lost": lost,
        "duplicated": duplicated,
        "attempts": sum(runs.values()),
        "first_20pct_share": {q: round(head.count(q) / len(head), 3) for q in QUEUES},
        "delay_late_p50_ms": pct(0.5),
        "delay_late_p99_ms": pct(0.99),
        "delay_late_max_ms": late[-1] if late else 0.0,
        "delay_early": sum(1 for x in late if x < 0),
        "left_in_redis": left,
    }


def main() -> None:
    args = parse_args()
    work = Path(tempfile.mkdtemp(prefix="framework-mixed-"))
    server, url = open_server(args, work)
    bench = Bench(args, url)
    bench.app = "bench.mixed_app"
    tasks = plan(args)
    runs = []
    try:
        for rep in range(args.reps):
            bench.ctl.flushall()
            result = asyncio.run(enqueue(bench, tasks))
            result.update(process(bench, work, rep, args.n))
            result.update(check(bench, tasks))
            print(json.dumps({"rep": rep, **result}), file=sys.stderr)
            runs.append(result)
    finally:
        bench.ctl.close()
        if server is not None:
            server.stop()
    summary = {
        "library": "framework",
        "workload": "mixed",
        "server": server.kind if server else url,
        "processes": args.processes,
        "n": args.n,
        "median": median_of(runs),
        "lost_total": sum(r["lost"] for r in runs),
        "duplicated_total": sum(r["duplicated"] for r in runs),
        "runs": runs,
    }
    text = json.dumps(summary, indent=2)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    if summary["lost_total"] or summary["duplicated_total"] or any(r["delay_early"] for r in runs):
        sys.exit(1)


if __name__ == "__main__":
    main()
