"""Bulk enqueue from one process: ``client.enqueue_many`` throughput, beside what Redis itself can take.

    python bench/bulk_enqueue.py [--reps 7] [--n 20000] [--chunk 1000] [--rounds 3] [--redis-url URL]
                                 [--trees DIR,DIR] [--profile] [--out FILE]

Each repetition runs in a fresh Python process (one per source tree given by ``--trees``, default this
one; several trees are run in turn, A B A B ..., so a before/after comparison shares the same minutes)
against one Redis started here (as :mod:`bench.harness` does) unless ``--redis-url`` is given. A
repetition warms up (connects, loads the scripts, registers the queue), then ``--rounds`` times from an
empty Redis enqueues ``--n`` no-op tasks (:mod:`bench.noop_app`) through ``enqueue_many`` in calls of
``--chunk``, each awaited, and reports the median rate. Beside it, per task:

* the Redis side: ``INFO commandstats`` microseconds of ``evalsha`` (the time the server spent in the
  scripts) and Redis's own CPU (``INFO cpu``) over a round, and the rate those would allow if Redis were
  the only cost;
* the client's CPU split (``--profile``: one more round under cProfile, its functions' own time grouped
  into building the messages, encoding the command, socket I/O, waiting for Redis and the event loop);
* once per run: ``redis-benchmark -P 1000 -t set,lpush,hset -q`` (when installed), the server's pipelined
  ceiling for the plain commands a task's script runs.

Prints a table; ``--out`` writes the raw figures as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(os.environ.get("BENCH_TREE") or Path(__file__).resolve().parents[1])
sys.path.insert(0, str(ROOT))

# what a profiled function's own time counts as: (file part, function name or "" for any) -> group
_GROUPS: tuple[tuple[str, str, str], ...] = (
    ("", "<method 'poll' of 'select.epoll' objects>", "waiting for Redis (epoll)"),
    ("", "<method 'send' of '_socket.socket' objects>", "socket I/O"),
    ("", "<method 'recv' of '_socket.socket' objects>", "socket I/O"),
    ("", "<method 'recv_into' of '_socket.socket' objects>", "socket I/O"),
    ("", "<method 'feed' of 'hiredis.Reader' objects>", "socket I/O"),
    ("", "<method 'gets' of 'hiredis.Reader' objects>", "socket I/O"),
    ("lean/pipe.py", "", "socket I/O"),
    ("", "<built-in method hiredis.hiredis.pack_command>", "encoding the command"),
    ("lean/client.py", "", "encoding the command"),
    ("broker/enqueue.py", "", "encoding the command"),
    ("lean/connection.py", "", "encoding the command"),
    ("asyncio/", "", "event loop"),
    ("uvloop", "", "event loop"),
)


def group_of(filename: str, name: str) -> str:
    """The group a profiled function's own time belongs to; the rest builds the messages (options, ids, protobuf)."""
    for part, func, group in _GROUPS:
        if (not part or part in filename) and (not func or func == name):
            return group
    return "building the messages"


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--redis-url", default="")
    ap.add_argument("--reps", type=int, default=7, help="processes per tree (the table shows their median)")
    ap.add_argument("--rounds", type=int, default=3, help="measured rounds per process (median)")
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--chunk", type=int, default=1000)
    ap.add_argument("--trees", default="", help="comma-separated source trees to compare (default: this one)")
    ap.add_argument("--profile", action="store_true", help="one more round per process under cProfile")
    ap.add_argument("--out", default="")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return ap.parse_args()


# -- one repetition (a child process) ----------------------------------------------------------------


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Warm up, then ``--rounds`` timed rounds (and one profiled): the figures of one repetition."""
    import redis as redis_sync

    from bench.noop_app import Noop, noop
    from framework.client.client import Client, TaskCall
    from framework.transport.connection import open_redis

    ctl = redis_sync.Redis.from_url(args.redis_url)
    client = Client(open_redis(args.redis_url))
    chunk, n = args.chunk, args.n

    async def one_round() -> float:
        t = time.perf_counter()
        for i in range(0, n, chunk):
            await client.enqueue_many([TaskCall(noop, Noop()) for _ in range(min(chunk, n - i))])
        return time.perf_counter() - t

    def redis_side() -> tuple[float, float]:
        stats = ctl.info("commandstats").get("cmdstat_evalsha", {})
        cpu = ctl.info("cpu")
        return float(stats.get("usec", 0)), float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])

    try:
        ctl.flushall()
        await client.enqueue_many([TaskCall(noop, Noop()) for _ in range(chunk)])  # warm-up
        rates, usec, rcpu, ccpu = [], [], [], []
        for _ in range(args.rounds):
            ctl.flushall()
            ctl.config_resetstat()
            r0 = redis_side()
            c0 = time.process_time()
            dt = await one_round()
            c1 = time.process_time()
            r1 = redis_side()
            rates.append(n / dt)
            usec.append((r1[0] - r0[0]) / n)
            rcpu.append((r1[1] - r0[1]) * 1e6 / n)
            ccpu.append((c1 - c0) * 1e6 / n)
        stored = int(ctl.llen("asynq:{default}:pending"))
        out: dict[str, Any] = {
            "rate": statistics.median(rates),
            "evalsha_usec_per_task": statistics.median(usec),
            "redis_cpu_usec_per_task": statistics.median(rcpu),
            "client_cpu_usec_per_task": statistics.median(ccpu),
            "stored_last_round": stored,
        }
        if args.profile:
            ctl.flushall()
            profiler = cProfile.Profile()
            profiler.enable()
            await one_round()
            profiler.disable()
            groups: dict[str, float] = {}
            for (filename, _, name), row in pstats.Stats(profiler).stats.items():  # type: ignore[attr-defined]
                key = group_of(filename, name)
                groups[key] = groups.get(key, 0.0) + row[2]
            total = sum(groups.values())
            out["profile_share"] = {k: v / total for k, v in sorted(groups.items())}
        return out
    finally:
        await client.close()
        ctl.close()


# -- the run (the parent process) --------------------------------------------------------------------


def redis_benchmark(url: str) -> dict[str, float]:
    """``redis-benchmark -P 1000 -t set,lpush,hset -n 200000 -q`` against the server: requests/s per command."""
    if not shutil.which("redis-benchmark"):
        return {}
    host, port = url.removeprefix("redis://").split("/")[0].split(":")
    cmd = ["redis-benchmark", "-h", host, "-p", port, "-P", "1000", "-t", "set,lpush,hset", "-n", "200000", "-q"]
    text = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout
    out = {}
    for line in text.replace("\r", "\n").splitlines():
        if "requests per second" in line and ":" in line:
            name, rest = line.split(":", 1)
            out[name.strip().lower()] = float(rest.split()[0])
    return out


def run_child(tree: Path, args: argparse.Namespace, url: str) -> dict[str, Any]:
    env = dict(os.environ, BENCH_TREE=str(tree), PYTHONPATH=str(tree))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--redis-url", url]
    cmd += ["--n", str(args.n), "--chunk", str(args.chunk), "--rounds", str(args.rounds)]
    if args.profile:
        cmd.append("--profile")
    done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"repetition in {tree} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def table(trees: list[Path], runs: dict[str, list[dict[str, Any]]], bench: dict[str, float]) -> str:
    rows = [
        ("enqueue_many tasks/s", "rate", "{:,.0f}"),
        ("Redis evalsha usec/task", "evalsha_usec_per_task", "{:.2f}"),
        ("Redis CPU usec/task", "redis_cpu_usec_per_task", "{:.2f}"),
        ("client CPU usec/task", "client_cpu_usec_per_task", "{:.2f}"),
    ]
    names = [t.name or str(t) for t in trees]
    lines = ["| | " + " | ".join(names) + " |", "|---|" + "---:|" * len(trees)]
    for label, key, fmt in rows:
        cells = [fmt.format(statistics.median(r[key] for r in runs[str(t)])) for t in trees]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    evalsha = [statistics.median(r["evalsha_usec_per_task"] for r in runs[str(t)]) for t in trees]
    lines.append("| rate Redis's script time allows | " + " | ".join(f"{1e6 / u:,.0f}" for u in evalsha) + " |")
    spread = [runs[str(t)] for t in trees]
    lines.append(
        "| rate min-max | "
        + " | ".join(f"{min(r['rate'] for r in s):,.0f}-{max(r['rate'] for r in s):,.0f}" for s in spread)
        + " |"
    )
    shares = [r.get("profile_share") for t in trees for r in runs[str(t)]]
    if any(shares):
        groups = sorted({g for s in shares if s for g in s})
        for g in groups:
            cells = [
                f"{statistics.median(r['profile_share'].get(g, 0.0) for r in runs[str(t)]) * 100:.0f} %" for t in trees
            ]
            lines.append(f"| profile: {g} | " + " | ".join(cells) + " |")
    for name, rate in bench.items():
        lines.append(f"| redis-benchmark -P 1000 {name} | {rate:,.0f} |" + " |" * (len(trees) - 1))
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    if args.child:
        print(json.dumps(asyncio.run(measure(args))))
        return
    from bench.harness import open_server

    trees = [Path(t).resolve() for t in args.trees.split(",") if t] or [ROOT]
    work = Path(tempfile.mkdtemp(prefix="framework-bulk-"))
    server, url = open_server(args, work)
    try:
        bench = redis_benchmark(url)
        runs: dict[str, list[dict[str, Any]]] = {str(t): [] for t in trees}
        for rep in range(args.reps):
            for tree in trees if rep % 2 == 0 else list(reversed(trees)):
                result = run_child(tree, args, url)
                runs[str(tree)].append(result)
                print(f"rep {rep} {tree.name}: {result['rate']:,.0f}/s", file=sys.stderr)
        print(table(trees, runs, bench))
        if args.out:
            Path(args.out).write_text(json.dumps({"redis_benchmark": bench, "runs": runs}, indent=1))
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
