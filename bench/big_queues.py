"""Looking at a big queue: stats, task pages and the dashboard with a million pending tasks.

    python bench/big_queues.py [--redis-url URL] [--pending 1000000] [--archived 100000] [--reps 5]
                               [--drain 50000] [--phases fill,inspect,http,worker] [--out big.json]

Phases, on one queue (``default``):

* fill: from an empty Redis, ``--archived`` tasks are enqueued (``Client.enqueue_many``, 5,000 a call)
  and moved to the archive as asynq keeps it (``ZADD archived <time> <id>``, the task hash's ``state``
  set to ``archived``), then ``--pending`` tasks are enqueued the same way -> enqueue rate, and Redis
  memory per pending task (``used_memory`` before and after the pending ones);
* inspect: medians of ``--reps`` runs of ``framework tasks stats`` (a fresh process, total wall; also
  ``--no-memory``, and the same command on an empty namespace for the start-up share), the same reads
  in-process (:meth:`Inspector.all_queue_info` with and without memory, and the admin's
  :func:`framework_admin.queries.stats`, which the overview calls), ``framework tasks ls`` of the
  first pending page, of a page in the middle of the pending list and of the first archived page (in
  process as well: :meth:`Inspector.list_tasks`);
* http: ``framework web`` with the admin plugin in its own process; medians of ``GET /admin`` (the
  overview page) and ``GET /api/admin/jobs/stats`` on one keep-alive connection;
* worker: ONE ``framework worker`` (``bench.noop_app``, default settings) drains ``--drain`` tasks off
  the big queue, then, after a FLUSHALL, off a queue of just ``--drain`` tasks -> tasks/s of each
  (from spawn, and steady from the first finished task).

Without ``--redis-url`` a server is started on a free loopback port, as :mod:`bench.harness` does.
With ``--redis-url`` and no ``fill`` phase, the queue already there is measured (the worker phase
drains it, and flushes the server).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import http.client
import json
import os
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

from bench.harness import Bench, median_of, open_server  # noqa: E402
from bench.noop_app import Noop, noop  # noqa: E402
from framework.client.client import Client, TaskCall  # noqa: E402
from framework.embedded.launch import free_port  # noqa: E402
from framework.inspector import Inspector  # noqa: E402
from framework.protocol.keys import Schema  # noqa: E402
from framework.settings import Settings  # noqa: E402
from framework.transport.connection import open_redis  # noqa: E402

QUEUE = "default"
BATCH = 5000
TOKEN = "bench-admin-token-0123456789abcdef"


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--redis-url", default="")
    ap.add_argument("--pending", type=int, default=1_000_000)
    ap.add_argument("--archived", type=int, default=100_000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--drain", type=int, default=50_000)
    ap.add_argument("--worker-reps", type=int, default=3)
    ap.add_argument("--phases", default="fill,inspect,http,worker")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    # what bench.harness.Bench.start_worker reads
    args.queues, args.processes, args.concurrency = f"{QUEUE}=1", 1, 0
    return args


def used_memory(ctl: redis_sync.Redis) -> int:
    return int(ctl.info("memory")["used_memory"])


async def enqueue(url: str, n: int) -> float:
    """Enqueue ``n`` no-op tasks, ``BATCH`` a call; returns seconds taken."""
    client = Client(open_redis(url), settings=Settings(redis_url=url, log_level="warning"))
    try:
        t = time.perf_counter()
        for i in range(0, n, BATCH):
            await client.enqueue_many([TaskCall(noop, Noop()) for _ in range(min(BATCH, n - i))])
        return time.perf_counter() - t
    finally:
        await client.close()


def archive_pending(ctl: redis_sync.Redis, when: float) -> int:
    """Move every pending task of the queue to the archive, in asynq's layout; returns how many."""
    qk = Schema().queue(QUEUE)
    ids = [i.decode() if isinstance(i, bytes) else str(i) for i in ctl.lrange(qk.pending, 0, -1)]
    for i in range(0, len(ids), BATCH):
        pipe = ctl.pipeline(transaction=False)
        for offset, task_id in enumerate(ids[i : i + BATCH]):
            pipe.zadd(qk.archived, {task_id: int(when) - len(ids) + i + offset})
            pipe.hset(qk.task(task_id), "state", "archived")
        pipe.execute()
    ctl.delete(qk.pending)
    return len(ids)


def fill(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    bench.ctl.flushall()
    t = time.perf_counter()
    asyncio.run(enqueue(bench.url, args.archived))
    archived = archive_pending(bench.ctl, time.time())
    archive_s = time.perf_counter() - t
    used0 = used_memory(bench.ctl)
    took = asyncio.run(enqueue(bench.url, args.pending))
    used1 = used_memory(bench.ctl)
    return {
        "fill_archived": archived,
        "fill_archived_s": archive_s,
        "fill_pending_rate": args.pending / took,
        "redis_bytes_per_pending_task": (used1 - used0) / args.pending,
        "used_memory_mb": used1 / 2**20,
    }


def cli_env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEWORK_")}
    env.update(PYTHONPATH=str(ROOT), REDIS_URL=url, COLUMNS="160", NO_COLOR="1", FRAMEWORK_LOG_LEVEL="warning")
    return env


def time_cli(env: dict[str, str], *args: str) -> float:
    t = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "framework", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    elapsed = (time.perf_counter() - t) * 1000
    if done.returncode != 0:
        raise RuntimeError(f"framework {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return elapsed


def median_ms(fn: Callable[[], float], reps: int) -> float:
    fn()  # warm-up
    return statistics.median(fn() for _ in range(reps))


async def inspect_inproc(url: str, reps: int, deep_page: int) -> dict[str, float]:
    from framework_admin import queries

    redis = open_redis(url)
    ins = Inspector(redis)
    out: dict[str, float] = {}

    async def timed(name: str, make: Any) -> None:
        await make()
        runs = []
        for _ in range(reps):
            t = time.perf_counter()
            await make()
            runs.append((time.perf_counter() - t) * 1000)
        out[name] = statistics.median(runs)

    try:
        await timed("inproc_queue_info_memory_ms", lambda: ins.all_queue_info(memory=True))
        await timed("inproc_queue_info_ms", lambda: ins.all_queue_info(memory=False))
        await timed("inproc_admin_stats_ms", lambda: queries.stats(ins))
        await timed("inproc_ls_pending_first_ms", lambda: ins.list_tasks(QUEUE, "pending", page=1, size=20))
        await timed("inproc_ls_pending_deep_ms", lambda: ins.list_tasks(QUEUE, "pending", page=deep_page, size=20))
        await timed("inproc_ls_archived_first_ms", lambda: ins.list_tasks(QUEUE, "archived", page=1, size=20))
        await timed("inproc_admin_archived_page_ms", lambda: queries.list_tasks(ins, "archived", page_size=10))
    finally:
        await redis.aclose()
    return out


def inspect(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    pending = int(bench.ctl.llen(Schema().queue(QUEUE).pending))
    deep = max(1, pending // 2 // 20)
    env = cli_env(bench.url)
    empty = dict(env, FRAMEWORK_NAMESPACE="bench-empty")
    r = args.reps
    out: dict[str, Any] = {"pending_at_inspect": pending, "deep_page": deep}
    out["cli_stats_empty_ms"] = median_ms(lambda: time_cli(empty, "tasks", "stats"), r)
    out["cli_stats_ms"] = median_ms(lambda: time_cli(env, "tasks", "stats"), r)
    out["cli_stats_no_memory_ms"] = median_ms(lambda: time_cli(env, "tasks", "stats", "--no-memory"), r)
    out["cli_jobs_stats_ms"] = median_ms(lambda: time_cli(env, "jobs", "stats"), r)
    out["cli_ls_pending_first_ms"] = median_ms(lambda: time_cli(env, "tasks", "ls", QUEUE, "pending"), r)
    out["cli_ls_pending_deep_ms"] = median_ms(
        lambda: time_cli(env, "tasks", "ls", QUEUE, "pending", "--page", str(deep)), r
    )
    out["cli_ls_archived_first_ms"] = median_ms(lambda: time_cli(env, "tasks", "ls", QUEUE, "archived"), r)
    out.update(asyncio.run(inspect_inproc(bench.url, r, deep)))
    return out


def start_web(url: str, work: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = cli_env(url)
    env.update(FRAMEWORK_LOAD_PLUGINS="admin", FRAMEWORK_ADMIN_TOKEN=TOKEN)
    cmd = [sys.executable, "-m", "framework", "web", "--host", "127.0.0.1", "--port", str(port)]
    with (work / "web.log").open("w") as log:
        web = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    for _ in range(300):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/healthz")
            conn.getresponse().read()
            conn.close()
            return web, port
        except OSError:
            time.sleep(0.05)
    Bench.stop_worker(web)
    raise RuntimeError(f"framework web did not start; see {work / 'web.log'}")


def http_phase(bench: Bench, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    web, port = start_web(bench.url, work)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        headers = {"Authorization": f"Bearer {TOKEN}"}

        def get(path: str) -> float:
            t = time.perf_counter()
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            body = response.read()
            elapsed = (time.perf_counter() - t) * 1000
            if response.status != 200:
                raise RuntimeError(f"GET {path}: {response.status} {body[:200]!r}")
            return elapsed

        deep = max(1, int(bench.ctl.llen(Schema().queue(QUEUE).pending)) // 2 // 25)
        paths = {
            "http_overview_ms": "/admin",
            "http_api_stats_ms": "/api/admin/jobs/stats",
            "http_queue_page_ms": f"/admin/queues/{QUEUE}",
            "http_pending_page_ms": f"/admin/jobs/pending?queue={QUEUE}",
            "http_pending_deep_page_ms": f"/admin/jobs/pending?queue={QUEUE}&page={deep}",
            "http_failed_page_ms": "/admin/jobs/failed",
            "http_pending_by_type_ms": f"/admin/jobs/pending?type={noop.type}",
            "http_workflows_page_ms": "/admin/workflows",
        }
        out = {key: median_ms(functools.partial(get, path), args.reps) for key, path in paths.items()}
        conn.close()
        return out
    finally:
        Bench.stop_worker(web)


def drain(bench: Bench, work: Path, n: int, tag: str, rep: int) -> dict[str, float]:
    bench.ctl.delete("bench:done")
    t0 = time.perf_counter()
    worker = bench.start_worker(work / f"worker-{tag}-{rep}.log")
    try:
        count, first, _ = bench.wait_done(n, 300.0)
        t_end = time.perf_counter()
    finally:
        Bench.stop_worker(worker)
    steady = (count - first[1]) / (t_end - first[0]) if first and t_end > first[0] else 0.0
    return {f"drain_{tag}_rate_wall": count / (t_end - t0), f"drain_{tag}_rate_steady": steady}


def worker_phase(bench: Bench, work: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    pending = Schema().queue(QUEUE).pending
    for rep in range(args.worker_reps):
        runs.append({"big_pending_before": int(bench.ctl.llen(pending)), **drain(bench, work, args.drain, "big", rep)})
    for rep in range(args.worker_reps):
        bench.ctl.flushall()
        asyncio.run(enqueue(bench.url, args.drain))
        runs[rep].update(drain(bench, work, args.drain, "short", rep))
    return runs


def table(med: dict[str, Any]) -> str:
    def ms(key: str) -> str:
        value = med.get(key)
        return f"{value:.1f}" if isinstance(value, int | float) else "-"

    rows = [
        ("`framework tasks stats` (process wall)", "cli_stats_ms"),
        ("`framework tasks stats --no-memory`", "cli_stats_no_memory_ms"),
        ("`framework jobs stats`", "cli_jobs_stats_ms"),
        ("`framework tasks stats`, empty namespace (start-up share)", "cli_stats_empty_ms"),
        ("`Inspector.all_queue_info()` (memory estimate)", "inproc_queue_info_memory_ms"),
        ("`Inspector.all_queue_info(memory=False)`", "inproc_queue_info_ms"),
        ("admin `queries.stats` (overview's stats)", "inproc_admin_stats_ms"),
        ("`GET /admin` (overview page, HTTP)", "http_overview_ms"),
        ("`GET /api/admin/jobs/stats` (HTTP)", "http_api_stats_ms"),
        ("`GET /admin/queues/default` (queue page, memory estimate)", "http_queue_page_ms"),
        ("`GET /admin/jobs/pending?queue=default` (page 1)", "http_pending_page_ms"),
        ("`GET /admin/jobs/pending?queue=default&page=<middle>`", "http_pending_deep_page_ms"),
        ("`GET /admin/jobs/failed` (page 1, every queue)", "http_failed_page_ms"),
        ("`GET /admin/jobs/pending?type=bench:noop` (type filter)", "http_pending_by_type_ms"),
        ("`GET /admin/workflows`", "http_workflows_page_ms"),
        ("`framework tasks ls default pending` (page 1)", "cli_ls_pending_first_ms"),
        ("`framework tasks ls default pending --page <middle>`", "cli_ls_pending_deep_ms"),
        ("`framework tasks ls default archived` (page 1)", "cli_ls_archived_first_ms"),
        ("`Inspector.list_tasks` pending page 1", "inproc_ls_pending_first_ms"),
        ("`Inspector.list_tasks` pending, middle page", "inproc_ls_pending_deep_ms"),
        ("`Inspector.list_tasks` archived page 1", "inproc_ls_archived_first_ms"),
    ]
    lines = ["| measurement | median ms |", "|---|---:|"]
    lines += [f"| {label} | {ms(key)} |" for label, key in rows]
    lines.append("")
    for tag in ("big", "short"):
        wall, steady = med.get(f"drain_{tag}_rate_wall"), med.get(f"drain_{tag}_rate_steady")
        if wall:
            lines.append(f"dequeue, {tag} queue: {wall:,.0f} tasks/s wall, {steady:,.0f}/s steady")
    if "redis_bytes_per_pending_task" in med:
        lines.append(
            f"Redis memory per pending task: {med['redis_bytes_per_pending_task']:.0f} bytes "
            f"(used_memory {med['used_memory_mb']:.0f} MB); fill {med['fill_pending_rate']:,.0f} tasks/s"
        )
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    phases = set(args.phases.split(","))
    work = Path(tempfile.mkdtemp(prefix="framework-bench-big-"))
    server, url = open_server(args, work)
    bench = Bench(args, url)
    load_before = os.getloadavg()
    result: dict[str, Any] = {}
    worker_runs: list[dict[str, Any]] = []
    try:
        if "fill" in phases:
            result.update(fill(bench, args))
            print(json.dumps(result), file=sys.stderr)
        if "inspect" in phases:
            result.update(inspect(bench, args))
        if "http" in phases:
            result.update(http_phase(bench, work, args))
        if "worker" in phases:
            worker_runs = worker_phase(bench, work, args)
            result.update(median_of(worker_runs))
    finally:
        bench.ctl.close()
        if server is not None:
            server.stop()
    summary = {
        "server": server.kind if server else url,
        "cpus": os.cpu_count(),
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "args": {k: v for k, v in vars(args).items() if k not in ("queues", "processes", "concurrency")},
        "median": result,
        "worker_runs": worker_runs,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2))
    print(table(result))
    print(f"\nserver {summary['server']}, load {load_before} -> {summary['load_after']}")


if __name__ == "__main__":
    main()
