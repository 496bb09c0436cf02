"""Waiting for a task's result: round trips, a whole HTTP request, and what idle waiters cost Redis.

    python bench/wait.py [--redis-url URL] [--reps 3] [--n 2000] [--http 1000] [--waiters 1000]
                         [--idle-seconds 10] [--profile FILE] [--out wait.json]

Phases per repetition, each from an empty Redis (FLUSHALL):

* apply: ONE ``framework worker`` process (``FRAMEWORK_APP=bench.wait_app``, default settings) serves a
  no-op task returning a small typed result (``Pong``, which carries the time its handler started). The
  worker is a separate process, as in production: in-process, its loop and the caller's would share one
  thread and the figure would not be a real hand-off. After a warm-up, ``client.apply`` is called N times
  in a row -> p50/p99/mean ms, and each call is split by timestamps: listening (SUBSCRIBE confirmed and the
  waiting marker set), the enqueue's reply, the handler's start (worker clock, same machine), the
  announcement's arrival at the client's Pub/Sub reader, and ``apply`` returning. CPU per call of the
  caller, the worker and Redis (``/proc``, ``INFO cpu``) show whose work it is. For scale: the Redis round
  trip of a PING on the caller's connection, a bare ``enqueue`` without waiting, and the machine's
  one-way wake-up floor (:mod:`bench.wake_floor`).
* enqueue+wait: the same task type kept a minute (``retention=60``), ``enqueue`` then ``wait`` on a
  client already listening (its Pub/Sub connection open): a task that finished before the wait began is
  read from its record, one that did not is announced.
* http: uvicorn (uvloop, httptools) in its own process serves :data:`bench.wait_app.app`; one keep-alive
  connection sends M requests in a row to ``/apply`` (enqueue and wait inside the handler) and to
  ``/plain`` (same answer, no queue) -> p50/p99 ms of each.
* demo: the built-in demo app as ``framework web`` and ``framework worker`` run it; M requests in a row to
  ``POST /demo/greetings`` (:func:`framework.web.tasks.enqueue_and_wait`) with no pretend work: the
  ``demo:hello`` task still reports its progress five times and is kept an hour -> p50/p99 ms.
* idle: the worker stopped, W tasks pending in a queue nobody serves, W concurrent ``client.wait`` on
  them; ``INFO commandstats`` sampled over ``--idle-seconds`` while they wait -> commands per second, with
  the slow poll on (``poll_interval=1.0``, the default) and off (``Client(..., poll_interval=None)``), and
  Redis memory of the waiting markers (``used_memory`` before and after, which includes the channels'
  subscriptions, and ``MEMORY USAGE`` of one marker).

Without ``--redis-url`` a server is started on a free loopback port, as :mod:`bench.harness` does.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import http.client
import io
import itertools
import json
import os
import pstats
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

from bench import wake_floor  # noqa: E402
from bench.harness import Bench, median_of, open_server  # noqa: E402
from bench.wait_app import Ping, ping, ping_kept  # noqa: E402
from framework.client.client import Client, TaskCall  # noqa: E402
from framework.embedded.launch import free_port  # noqa: E402
from framework.transport.connection import open_redis  # noqa: E402

IDLE_QUEUE = "bench-idle"
WHO = ("client", "worker", "redis")
TICKS = os.sysconf("SC_CLK_TCK")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--redis-url", default="")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--n", type=int, default=2000, help="sequential apply calls (and enqueue+wait calls)")
    ap.add_argument("--warm", type=int, default=200)
    ap.add_argument("--http", type=int, default=1000, help="sequential requests to each route")
    ap.add_argument("--waiters", type=int, default=1000)
    ap.add_argument("--idle-seconds", type=float, default=10.0)
    ap.add_argument("--phases", default="apply,wait,http,demo,idle")
    ap.add_argument("--profile", default="", help="also run N applies under cProfile; write the stats here")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    # what bench.harness.Bench.start_worker reads
    args.queues, args.processes, args.concurrency = "default=1", 1, 0
    return args


def pct(values: list[float], p: float) -> float:
    return wake_floor.percentile(sorted(values), p)


def summary(prefix: str, values: list[float]) -> dict[str, float]:
    return {
        f"{prefix}_p50_ms": pct(values, 50),
        f"{prefix}_p99_ms": pct(values, 99),
        f"{prefix}_mean_ms": statistics.fmean(values),
    }


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (its own threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def worker_pid(leader: int) -> int:
    """The process that runs tasks: the worker itself, or its only child under a supervisor."""
    children = subprocess.run(["pgrep", "-P", str(leader)], capture_output=True, text=True, check=False).stdout.split()
    return int(children[0]) if children else leader


def redis_cpu_s(ctl: redis_sync.Redis) -> float:
    info = ctl.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


class Stamps:
    """Timestamps of a client's steps: the enqueue's call and reply, each announcement's arrival."""

    def __init__(self, client: Client) -> None:
        self.enqueue_call = self.enqueue_reply = 0.0
        self.received: dict[str, float] = {}
        waiters = client.waiters
        announced = waiters._announced
        enqueue = client.enqueue

        def on_announced(watch: Any, data: bytes) -> None:
            self.received[watch.task_id] = time.time()
            announced(watch, data)

        async def timed_enqueue(task: Any, payload: Any = None, **options: Any) -> Any:
            self.enqueue_call = time.time()
            info = await enqueue(task, payload, **options)
            self.enqueue_reply = time.time()
            return info

        waiters._announced = on_announced  # type: ignore[method-assign]
        client.enqueue = timed_enqueue  # type: ignore[method-assign]


async def rtt(client: Client, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await client.redis.ping()
        out.append((time.perf_counter() - t) * 1000)
    return out


async def apply_phase(bench: Bench, wpid: int, args: argparse.Namespace) -> dict[str, Any]:
    client = Client(open_redis(bench.url), settings=bench.settings)
    try:
        for i in range(args.warm):
            await client.apply(ping, Ping(n=i), wait_timeout=30)
        stamps = Stamps(client)
        rows: list[tuple[float, ...]] = []
        cpu0 = (time.process_time(), cpu_s(wpid), redis_cpu_s(bench.ctl))
        wall = time.perf_counter()
        for i in range(args.n):
            t0 = time.time()
            pong = await client.apply(ping, Ping(n=i), wait_timeout=10)
            t1 = time.time()
            rx = stamps.received.popitem()[1] if stamps.received else t1  # one announcement per call
            rows.append((t0, stamps.enqueue_call, stamps.enqueue_reply, pong.started, rx, t1))
        wall = time.perf_counter() - wall
        cpu1 = (time.process_time(), cpu_s(wpid), redis_cpu_s(bench.ctl))
        ms = [[(b - a) * 1000 for a, b in itertools.pairwise(r)] for r in rows]
        total = [(r[5] - r[0]) * 1000 for r in rows]
        out: dict[str, Any] = summary("apply", total)
        names = ("listen", "enqueue_reply", "reply_to_handler", "handler_to_announced", "announced_to_return")
        for k, name in enumerate(names):
            out[f"apply_{name}_p50_ms"] = statistics.median(row[k] for row in ms)
        out["apply_enqueue_to_handler_p50_ms"] = statistics.median((r[3] - r[1]) * 1000 for r in rows)
        out["apply_handler_before_reply_share"] = sum(r[3] < r[2] for r in rows) / len(rows)
        for k, who in enumerate(WHO):
            out[f"apply_cpu_{who}_ms"] = (cpu1[k] - cpu0[k]) * 1000 / args.n
        out["apply_wall_ms"] = wall * 1000 / args.n
        # for scale: a Redis round trip, and an enqueue nobody waits for
        out.update(summary("ping_rtt", await rtt(client, args.n)))
        enq = []
        for i in range(args.n):
            t = time.perf_counter()
            await client.enqueue(ping, Ping(n=i))
            enq.append((time.perf_counter() - t) * 1000)
        out.update(summary("enqueue_only", enq))
        if args.profile:
            await asyncio.sleep(0.2)
            profiler = cProfile.Profile()
            profiler.enable()
            for i in range(args.n):
                await client.apply(ping, Ping(n=i), wait_timeout=10)
            profiler.disable()
            profiler.dump_stats(args.profile)
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(15)
            print(text.getvalue(), file=sys.stderr)
        return out
    finally:
        await client.close()


async def wait_phase(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    client = Client(open_redis(bench.url), settings=bench.settings)
    try:
        for i in range(args.warm):  # also opens the Pub/Sub connection: the client is already listening
            info = await client.enqueue(ping_kept, Ping(n=i))
            await client.wait(info, timeout=30, taskdef=ping_kept)
        stamps = Stamps(client)
        enq, waited, total = [], [], []
        announced = 0
        for i in range(args.n):
            t0 = time.perf_counter()
            info = await client.enqueue(ping_kept, Ping(n=i))
            t1 = time.perf_counter()
            await client.wait(info, timeout=10, taskdef=ping_kept)
            t2 = time.perf_counter()
            announced += stamps.received.pop(info.id, None) is not None
            enq.append((t1 - t0) * 1000)
            waited.append((t2 - t1) * 1000)
            total.append((t2 - t0) * 1000)
        out = summary("enqwait", total)
        out["enqwait_enqueue_p50_ms"] = statistics.median(enq)
        out["enqwait_wait_p50_ms"] = statistics.median(waited)
        out["enqwait_announced_share"] = announced / args.n
        return out
    finally:
        await client.close()


def start_web(bench: Bench, work: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), REDIS_URL=bench.url)
    cmd = [sys.executable, "-m", "uvicorn", "bench.wait_app:app", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--loop", "uvloop", "--http", "httptools", "--log-level", "warning", "--no-access-log"]
    with (work / "web.log").open("w") as log:
        web = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    for _ in range(200):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/plain")
            conn.getresponse().read()
            conn.close()
            return web, port
        except OSError:
            time.sleep(0.05)
    Bench.stop_worker(web)
    raise RuntimeError(f"uvicorn did not start; see {work / 'web.log'}")


def http_phase(bench: Bench, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    web, port = start_web(bench, work)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

        def run(path: str, n: int) -> list[float]:
            out = []
            for _ in range(n):
                t = time.perf_counter()
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
                out.append((time.perf_counter() - t) * 1000)
                if response.status != 200:
                    raise RuntimeError(f"GET {path}: {response.status}")
            return out

        run("/plain", args.warm)
        run("/apply", args.warm)
        out = summary("http_plain", run("/plain", args.http))
        out.update(summary("http_apply", run("/apply", args.http)))
        conn.close()
        return out
    finally:
        Bench.stop_worker(web)


async def idle_once(bench: Bench, args: argparse.Namespace, poll: float | None) -> dict[str, Any]:
    bench.ctl.flushall()
    client = Client(open_redis(bench.url), settings=bench.settings, poll_interval=poll)
    waits: list[asyncio.Future[Any]] = []
    try:
        infos = await client.enqueue_many(
            [TaskCall(ping, Ping(n=i), {"queue": IDLE_QUEUE}) for i in range(args.waiters)]
        )
        await asyncio.sleep(0.2)
        used0 = int(bench.ctl.info("memory")["used_memory"])
        t = time.perf_counter()
        waits = [asyncio.ensure_future(client.wait(info, timeout=300, taskdef=ping)) for info in infos]
        watches = client.waiters._watches
        while len(watches) < args.waiters or not all(w.ready for w in watches.values()):
            await asyncio.sleep(0.001)
        started_ms = (time.perf_counter() - t) * 1000
        await asyncio.sleep(1.0)
        used1 = int(bench.ctl.info("memory")["used_memory"])
        marker = next(iter(watches.values()))
        marker_key = client.schema.queue(IDLE_QUEUE).waiting(marker.task_id)
        marker_bytes = int(bench.ctl.memory_usage(marker_key) or 0)
        stats0 = bench.cmdstats()
        await asyncio.sleep(args.idle_seconds)
        stats1 = bench.cmdstats()
        diff = {k: v - stats0.get(k, 0) for k, v in stats1.items() if k != "info" and v - stats0.get(k, 0) > 0}
        tag = "poll" if poll is not None else "nopoll"
        return {
            f"idle_{tag}_cmds_per_s": sum(diff.values()) / args.idle_seconds,
            f"idle_{tag}_cmds": diff,
            f"idle_{tag}_start_ms": started_ms,
            f"idle_{tag}_used_memory_per_waiter_bytes": (used1 - used0) / args.waiters,
            f"idle_{tag}_marker_bytes": marker_bytes,
            f"idle_{tag}_pending_after": int(bench.ctl.llen(client.schema.queue(IDLE_QUEUE).pending)),
        }
    finally:
        for w in waits:
            w.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
        await client.close()


def start_demo(bench: Bench, work: Path) -> tuple[list[subprocess.Popen[bytes]], int]:
    """The built-in demo app (no ``FRAMEWORK_APP``): ``framework worker`` and ``framework web``, run from ``work``."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), REDIS_URL=bench.url, FRAMEWORK_LOAD_PLUGINS="")
    env.update(FRAMEWORK_LOG_LEVEL="warning")
    env.pop("FRAMEWORK_APP", None)
    procs = []
    for name, extra in (("worker", []), ("web", ["--host", "127.0.0.1", "--port", str(port)])):
        with (work / f"demo-{name}.log").open("w") as log:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "framework", name, *extra],
                    cwd=work,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
    for _ in range(300):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/healthz")
            conn.getresponse().read()
            conn.close()
            return procs, port
        except OSError:
            time.sleep(0.05)
    for proc in procs:
        Bench.stop_worker(proc)
    raise RuntimeError(f"the demo app did not start; see {work}")


def demo_phase(bench: Bench, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """``POST /demo/greetings`` (``enqueue_and_wait``) with no pretend work: the demo's whole request."""
    bench.ctl.flushall()
    procs, port = start_demo(bench, work)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        body = json.dumps({"name": "bench", "work_seconds": 0, "wait_seconds": 5})
        headers = {"content-type": "application/json"}
        out = []
        for i in range(args.warm + args.http):
            t = time.perf_counter()
            conn.request("POST", "/demo/greetings", body, headers)
            response = conn.getresponse()
            response.read()
            if i >= args.warm:
                out.append((time.perf_counter() - t) * 1000)
            if response.status != 200:
                raise RuntimeError(f"POST /demo/greetings: {response.status}")
        conn.close()
        return summary("http_demo", out)
    finally:
        for proc in procs:
            Bench.stop_worker(proc)


def one_rep(bench: Bench, work: Path, rep: int, phases: set[str], args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {}
    if phases & {"apply", "wait", "http"}:
        bench.ctl.flushall()
        worker = bench.start_worker(work / f"worker-{rep}.log")
        try:
            wpid = worker_pid(worker.pid)
            if "apply" in phases:
                result.update(asyncio.run(apply_phase(bench, wpid, args)))
            if "wait" in phases:
                result.update(asyncio.run(wait_phase(bench, args)))
            if "http" in phases:
                result.update(http_phase(bench, work, args))
        finally:
            Bench.stop_worker(worker)
        if "apply" in phases:
            result.update(wake_floor.measure(bench.url, 500))
    if "demo" in phases:
        result.update(demo_phase(bench, work, args))
    if "idle" in phases:
        for poll in (1.0, None):
            result.update(asyncio.run(idle_once(bench, args, poll)))
    return result


def table(med: dict[str, Any]) -> str:
    def row(label: str, prefix: str) -> str:
        return (
            f"| {label} | {med.get(f'{prefix}_p50_ms', float('nan')):.3f} | "
            f"{med.get(f'{prefix}_p99_ms', float('nan')):.3f} | {med.get(f'{prefix}_mean_ms', float('nan')):.3f} |"
        )

    lines = [
        "| measurement | p50 ms | p99 ms | mean ms |",
        "|---|---:|---:|---:|",
        row("apply (enqueue and wait, idle worker)", "apply"),
        row("enqueue, then wait (listening client, retention)", "enqwait"),
        row("HTTP GET /apply (uvicorn, enqueue and wait)", "http_apply"),
        row("HTTP GET /plain (uvicorn, no queue)", "http_plain"),
        row("HTTP POST /demo/greetings (framework web + worker)", "http_demo"),
        row("enqueue only (no wait)", "enqueue_only"),
        row("PING round trip (caller's connection)", "ping_rtt"),
        "",
        "apply, split (p50 of each step, ms): "
        + ", ".join(
            f"{name} {med.get(f'apply_{name}_p50_ms', float('nan')):.3f}"
            for name in ("listen", "enqueue_reply", "enqueue_to_handler", "handler_to_announced", "announced_to_return")
        ),
        "apply, CPU per call (ms): "
        + ", ".join(
            f"{who} {med.get(f'apply_cpu_{who}_ms', float('nan')):.3f}" for who in ("client", "worker", "redis")
        )
        + f"; wall {med.get('apply_wall_ms', float('nan')):.3f}",
        f"wake-up floor (one-way PUBLISH): p50 {med.get('floor_p50_ms', float('nan')):.3f}, "
        f"p99 {med.get('floor_p99_ms', float('nan')):.3f}",
        "",
        "| idle waiters | commands/s | start ms | used_memory per waiter B | one marker B |",
        "|---|---:|---:|---:|---:|",
    ]
    for tag, label in (("poll", "slow poll on (1 s)"), ("nopoll", "slow poll off")):
        lines.append(
            f"| {label} | {med.get(f'idle_{tag}_cmds_per_s', float('nan')):.1f} | "
            f"{med.get(f'idle_{tag}_start_ms', float('nan')):.0f} | "
            f"{med.get(f'idle_{tag}_used_memory_per_waiter_bytes', float('nan')):.0f} | "
            f"{med.get(f'idle_{tag}_marker_bytes', float('nan')):.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    phases = set(args.phases.split(","))
    work = Path(tempfile.mkdtemp(prefix="framework-bench-wait-"))
    server, url = open_server(args, work)
    bench = Bench(args, url)
    bench.app = "bench.wait_app"
    load_before = os.getloadavg()
    runs = []
    try:
        for rep in range(args.reps):
            result = one_rep(bench, work, rep, phases, args)
            flat = {k: round(v, 4) for k, v in result.items() if isinstance(v, int | float)}
            print(json.dumps({"rep": rep, **flat}), file=sys.stderr)
            runs.append(result)
    finally:
        bench.ctl.close()
        if server is not None:
            server.stop()
    med = median_of(runs)
    summary_ = {
        "server": server.kind if server else url,
        "cpus": os.cpu_count(),
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "args": {k: v for k, v in vars(args).items() if k not in ("queues", "processes", "concurrency")},
        "median": med,
        "runs": runs,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(summary_, indent=2))
    print(table(med))
    print(f"\nserver {summary_['server']}, {args.reps} reps (medians), load {load_before} -> {summary_['load_after']}")


if __name__ == "__main__":
    main()
