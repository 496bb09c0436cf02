"""Many queues served by many mostly idle worker processes, on one Redis: what it costs Redis.

    python bench/many_queues.py [--redis-url URL] [--phases idle,wake,fair,startup] [--out many.json]
                                [--queues 3,100,1000] [--workers 1,5,10] [--window 5]

Every worker is a ``framework worker`` process of its own (``bench.many_queues_app``, default settings),
serving ``--queues`` queues ``q0000``, ``q0001``, ... of weight 1 (``FRAMEWORK_QUEUES``). Phases:

* idle: for each number of queues, 1 then 5 then 10 (``--workers``) idle workers; after they settle, Redis's
  own counters over ``--window`` seconds -> commands/s (``INFO commandstats``, Lua-internal calls included)
  and Redis CPU (``INFO cpu``, user + sys, in CPU seconds per second), in total and per worker, with the
  commands that make them up. ``--extra 500x20`` adds such points (queues x workers);
* wake: ``--wake-workers`` idle workers on ``--wake-queues`` queues, under ``redis-cli monitor``; one task
  enqueued to one queue, then ``--burst`` tasks at once (one per queue) -> commands in the second after
  the enqueue minus a second's share of the idle five seconds before it, and the dequeues (``dequeue.lua``
  calls) it caused; the recoverer and janitor pass hourly there, so that their sweeps (a command per queue
  every 5 and 8 s) do not blur the difference;
* fair: ``--fair-queues`` queues, ``--fair-per-queue`` tasks in each, drained by ``--fair-workers`` workers
  -> whether every queue made progress, when each queue's first task started (share of the drain), and
  then, with the workers idle, the enqueue-to-start latency of tasks enqueued one at a time, 20 ms apart,
  each to a queue that was idle;
* startup: one worker on ``--startup-queues`` queues -> seconds from spawn to its first heartbeat, and to
  running a task waiting in the last queue; then a few tasks held running in one queue, the heartbeat's
  commands per beat (``INFO commandstats`` over whole beats).

Without ``--redis-url`` a server is started on a free loopback port, as :mod:`bench.harness` does. The
figures are of one machine at one moment: compare runs made side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
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

from bench.harness import Server  # noqa: E402
from bench.many_queues_app import STARTS_KEY, Stamp, stamp  # noqa: E402
from framework.client.client import Client, TaskCall  # noqa: E402
from framework.protocol.keys import Schema  # noqa: E402
from framework.protocol.scripts import SCRIPTS  # noqa: E402
from framework.transport.connection import open_redis  # noqa: E402

_BASELINE = 5.0
"""Seconds of idle traffic the wake phase's per-second baseline is taken over (the recoverer passes every 5 s)."""
OWN = {"info", "config|resetstat", "flushall", "get", "llen|bench", "lrange", "zcard", "zrange|bench"}
SCHEMA = Schema()


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--redis-url", default="")
    ap.add_argument("--phases", default="idle,wake,fair,startup")
    ap.add_argument("--queues", default="3,100,1000", help="numbers of queues for the idle phase")
    ap.add_argument("--workers", default="1,5,10", help="numbers of idle workers for the idle phase")
    ap.add_argument("--extra", default="", help="more idle points, as QUEUESxWORKERS[,...] (e.g. 500x20)")
    ap.add_argument("--window", type=float, default=5.0, help="seconds each idle point is measured over")
    ap.add_argument("--settle", type=float, default=3.0, help="seconds idle workers get after start before a window")
    ap.add_argument("--wake-queues", type=int, default=100)
    ap.add_argument("--wake-workers", type=int, default=10)
    ap.add_argument("--burst", type=int, default=100)
    ap.add_argument("--fair-queues", type=int, default=500)
    ap.add_argument("--fair-per-queue", type=int, default=10)
    ap.add_argument("--fair-workers", type=int, default=2)
    ap.add_argument("--latency-tasks", type=int, default=100)
    ap.add_argument("--startup-queues", type=int, default=1000)
    ap.add_argument("--out", default="")
    return ap.parse_args()


def queue_names(n: int) -> list[str]:
    return [f"q{i:04d}" for i in range(n)]


class Fleet:
    """Worker processes on one server, each a ``framework worker`` of its own."""

    def __init__(self, url: str, folder: Path) -> None:
        self.url = url
        self.folder = folder
        self.procs: list[subprocess.Popen[bytes]] = []
        self.ctl = redis_sync.Redis.from_url(url)

    def spawn(self, queues: list[str], n: int, **env_extra: str) -> float:
        """Start ``n`` more workers on ``queues``; returns when all are beating (seconds it took)."""
        env = dict(os.environ)
        env.update(
            {
                "PYTHONPATH": str(ROOT),
                "FRAMEWORK_REDIS_URL": self.url,
                "FRAMEWORK_APP": "bench.many_queues_app",
                "FRAMEWORK_LOAD_PLUGINS": "",
                "FRAMEWORK_LOG_LEVEL": "warning",
                "FRAMEWORK_QUEUES": ",".join(f"{q}=1" for q in queues),
                **env_extra,
            }
        )
        began = time.monotonic()
        want = len(self.procs) + n
        for _ in range(n):
            log = (self.folder / f"worker-{len(self.procs)}.log").open("w")
            cmd = [sys.executable, "-m", "framework", "worker", "--processes", "1"]
            self.procs.append(
                subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            )
            log.close()
        while self.ctl.zcard(SCHEMA.alive) < want:
            if time.monotonic() - began > 120:
                raise RuntimeError("workers did not start; see the logs in " + str(self.folder))
            time.sleep(0.05)
        return time.monotonic() - began

    def stop(self) -> None:
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self.procs.clear()
        self.ctl.flushall()


def counters(ctl: redis_sync.Redis) -> tuple[dict[str, int], float]:
    stats = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in ctl.info("commandstats").items()}
    cpu = ctl.info("cpu")
    return stats, float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def idle_point(ctl: redis_sync.Redis, window: float) -> dict[str, Any]:
    ctl.config_resetstat()
    _, cpu0 = counters(ctl)
    began = time.monotonic()
    time.sleep(window)
    stats, cpu1 = counters(ctl)
    took = time.monotonic() - began
    calls = {k: v for k, v in stats.items() if k not in OWN}
    return {
        "commands_per_s": round(sum(calls.values()) / took, 1),
        "redis_cpu": round((cpu1 - cpu0) / took, 4),
        "by_command_per_s": {k: round(v / took, 1) for k, v in sorted(calls.items(), key=lambda kv: -kv[1])},
    }


def phase_idle(args: argparse.Namespace, url: str, folder: Path) -> list[dict[str, Any]]:
    points = [(int(q), [int(w) for w in args.workers.split(",")]) for q in args.queues.split(",")]
    for extra in filter(None, args.extra.split(",")):
        q, w = extra.split("x")
        points.append((int(q), [int(w)]))
    out = []
    for nq, counts in points:
        fleet = Fleet(url, folder)
        try:
            for w in counts:
                fleet.spawn(queue_names(nq), w - len(fleet.procs))
                time.sleep(args.settle)  # past the start-up passes
                point = idle_point(fleet.ctl, args.window)
                point.update(queues=nq, workers=w)
                point["commands_per_s_per_worker"] = round(point["commands_per_s"] / w, 1)
                point["redis_cpu_per_worker"] = round(point["redis_cpu"] / w, 4)
                top = dict(list(point["by_command_per_s"].items())[:6])
                print(
                    f"idle {nq:5d} queues x {w:2d} workers: {point['commands_per_s']:9.1f} cmd/s "
                    f"({point['commands_per_s_per_worker']:.1f}/worker), redis cpu {point['redis_cpu']:.3f} "
                    f"({point['redis_cpu_per_worker']:.4f}/worker)  {top}",
                    flush=True,
                )
                out.append(point)
        finally:
            fleet.stop()
    return out


class Monitor:
    """``redis-cli monitor`` into a file; :meth:`lines` parses it as (time, source, command, first argument)."""

    def __init__(self, url: str, path: Path) -> None:
        host, port = url.removeprefix("redis://").split("/")[0].split(":")
        self.path = path
        self._out = path.open("w")
        self.proc = subprocess.Popen(
            ["redis-cli", "-h", host, "-p", port, "monitor"], stdout=self._out, start_new_session=True
        )
        time.sleep(0.3)

    def stop(self) -> list[tuple[float, bool, str, str]]:
        time.sleep(0.2)
        self.proc.terminate()
        self.proc.wait()
        self._out.close()
        rows = []
        for line in self.path.read_text(errors="replace").splitlines():
            parts = line.split(" ", 3)
            if len(parts) < 4 or not parts[0][0].isdigit():
                continue
            words = parts[3].split('"')
            cmd = words[1].upper() if len(words) > 1 else ""
            first = words[3] if len(words) > 3 else ""
            rows.append((float(parts[0]), parts[2].startswith("lua"), cmd, first))
        return rows


def window_counts(rows: list[tuple[float, bool, str, str]], t0: float, t1: float) -> dict[str, int]:
    dequeue_sha = SCRIPTS["dequeue"].sha
    sent = [r for r in rows if t0 <= r[0] < t1 and r[2] not in {"MONITOR", "INFO", "LLEN|BENCH"}]
    return {
        "commands": len(sent),
        "sent": sum(not r[1] for r in sent),
        "dequeues": sum(r[2] == "EVALSHA" and r[3] == dequeue_sha for r in sent),
    }


async def enqueue_spread(url: str, queues: list[str]) -> float:
    redis = open_redis(url)
    client = Client(redis)
    try:
        t0 = time.time()
        if len(queues) == 1:
            await client.enqueue(stamp, Stamp(t0=t0), queue=queues[0])
        else:
            await asyncio.gather(*(client.enqueue(stamp, Stamp(t0=t0), queue=q) for q in queues))
        return t0
    finally:
        await client.close()
        await redis.aclose()


def phase_wake(args: argparse.Namespace, url: str, folder: Path) -> dict[str, Any]:
    names = queue_names(args.wake_queues)
    fleet = Fleet(url, folder)
    out: dict[str, Any] = {"queues": args.wake_queues, "workers": args.wake_workers}
    try:
        fleet.spawn(names, args.wake_workers, FRAMEWORK_RECOVERER_INTERVAL="3600", FRAMEWORK_JANITOR_INTERVAL="3600")
        time.sleep(args.settle)
        for label, targets in (("one", [names[len(names) // 2]]), ("burst", names[: args.burst])):
            fleet.ctl.delete(STARTS_KEY)
            mon = Monitor(url, folder / f"monitor-{label}.txt")
            time.sleep(_BASELINE)
            t0 = asyncio.run(enqueue_spread(url, targets))
            while fleet.ctl.llen(STARTS_KEY) < len(targets):
                time.sleep(0.01)
            time.sleep(1.0)
            rows = mon.stop()
            before = {k: v / _BASELINE for k, v in window_counts(rows, t0 - _BASELINE, t0).items()}
            after = window_counts(rows, t0, t0 + 1.0)
            caused = after["commands"] - before["commands"]
            res = {
                "tasks": len(targets),
                "commands_in_second_after": after["commands"],
                "commands_per_idle_second_before": round(before["commands"], 1),
                "commands_caused": round(caused),
                "commands_caused_per_task": round(caused / len(targets), 1),
                "dequeues": round(after["dequeues"] - before["dequeues"]),
                "dequeues_per_task": round((after["dequeues"] - before["dequeues"]) / len(targets), 1),
            }
            print(f"wake {label}: {args.wake_workers} idle workers, {args.wake_queues} queues: {res}", flush=True)
            out[label] = res
            time.sleep(1.0)
    finally:
        fleet.stop()
    return out


def starts(ctl: redis_sync.Redis) -> list[tuple[str, float, float]]:
    rows = []
    for raw in ctl.lrange(STARTS_KEY, 0, -1):
        q, t0, t1 = raw.decode().split()
        rows.append((q, float(t0), float(t1)))
    return rows


def phase_fair(args: argparse.Namespace, url: str, folder: Path) -> dict[str, Any]:
    names = queue_names(args.fair_queues)
    fleet = Fleet(url, folder)
    out: dict[str, Any] = {"queues": args.fair_queues, "per_queue": args.fair_per_queue, "workers": args.fair_workers}

    async def fill() -> None:
        redis = open_redis(url)
        client = Client(redis)
        calls = [TaskCall(stamp, Stamp(), {"queue": q}) for _ in range(args.fair_per_queue) for q in names]
        for i in range(0, len(calls), 5000):
            await client.enqueue_many(calls[i : i + 5000])
        await client.close()
        await redis.aclose()

    try:
        asyncio.run(fill())
        total = args.fair_queues * args.fair_per_queue
        fleet.spawn(names, args.fair_workers)
        while fleet.ctl.llen(STARTS_KEY) < total:
            time.sleep(0.05)
        rows = starts(fleet.ctl)
        began, ended = rows[0][2], rows[-1][2]
        first: dict[str, float] = {}
        for i, (q, _, _) in enumerate(rows):
            first.setdefault(q, i / len(rows))
        shares = sorted(first.values())
        out["drain"] = {
            "queues_with_progress": len(first),
            "tasks_per_s": round(total / max(ended - began, 1e-9), 1),
            "last_queue_first_start_at_share": round(shares[-1], 3),
            "queues_started_in_first_10pct": sum(s <= 0.1 for s in shares),
            "queues_started_in_first_25pct": sum(s <= 0.25 for s in shares),
        }
        print(f"fair drain: {out['drain']}", flush=True)
        time.sleep(3.0)
        fleet.ctl.delete(STARTS_KEY)

        async def one_at_a_time() -> None:
            redis = open_redis(url)
            client = Client(redis)
            for i in range(args.latency_tasks):
                await client.enqueue(stamp, Stamp(t0=time.time()), queue=names[(i * 7) % len(names)])
                await asyncio.sleep(0.02)
            await client.close()
            await redis.aclose()

        asyncio.run(one_at_a_time())
        while fleet.ctl.llen(STARTS_KEY) < args.latency_tasks:
            time.sleep(0.02)
        lat = sorted((t1 - t0) * 1000 for _, t0, t1 in starts(fleet.ctl))
        out["latency_ms"] = {
            "p50": round(statistics.median(lat), 2),
            "p90": round(lat[int(0.9 * len(lat))], 2),
            "p99": round(lat[min(len(lat) - 1, int(0.99 * len(lat)))], 2),
            "max": round(lat[-1], 2),
        }
        print(f"fair latency (idle queue, {args.fair_workers} idle workers): {out['latency_ms']}", flush=True)
    finally:
        fleet.stop()
    return out


def phase_startup(args: argparse.Namespace, url: str, folder: Path) -> dict[str, Any]:
    names = queue_names(args.startup_queues)
    fleet = Fleet(url, folder)
    out: dict[str, Any] = {"queues": args.startup_queues}
    try:
        t_enq = asyncio.run(enqueue_spread(url, [names[-1]]))
        began = time.time()
        out["spawn_to_first_beat_s"] = round(fleet.spawn(names, 1), 3)
        while fleet.ctl.llen(STARTS_KEY) < 1:
            time.sleep(0.01)
        out["spawn_to_task_in_last_queue_s"] = round(starts(fleet.ctl)[0][2] - max(began, t_enq), 3)
        time.sleep(3.0)
        # idle beats: commands of the heartbeat (ZADD alive, and every 5 s asynq's records) over 10 s
        fleet.ctl.config_resetstat()
        time.sleep(10.0)
        stats, _ = counters(fleet.ctl)
        out["idle_10s_commands"] = {k: v for k, v in stats.items() if k not in OWN}
        print(f"startup: {out}", flush=True)
    finally:
        fleet.stop()
    return out


def main() -> None:
    args = parse_args()
    phases = set(args.phases.split(","))
    with tempfile.TemporaryDirectory(prefix="many-queues-") as tmp:
        folder = Path(tmp)
        server = None
        url = args.redis_url
        if not url:
            server = Server(folder)
            url = server.url
            print(f"server: {server.kind} at {url}", flush=True)
        results: dict[str, Any] = {"machine_cpus": os.cpu_count()}
        try:
            redis_sync.Redis.from_url(url).flushall()
            if "idle" in phases:
                results["idle"] = phase_idle(args, url, folder)
            if "wake" in phases:
                results["wake"] = phase_wake(args, url, folder)
            if "fair" in phases:
                results["fair"] = phase_fair(args, url, folder)
            if "startup" in phases:
                results["startup"] = phase_startup(args, url, folder)
        finally:
            if server is not None:
                server.stop()
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
