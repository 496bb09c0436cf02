"""Benchmark of workflows: a 10,000-step chord against the same tasks enqueued plainly, and a chain's hand-off.

    python bench/workflows.py [--redis-url URL] [--reps 3] [--width 10000] [--links 1000] [--out results.json]

Each repetition, from an empty Redis (FLUSHALL), with ``framework worker`` processes serving the default queue:

* chord, for 1 and 3 worker processes (``--processes``): a chord of W no-op members and a callback taking
  their W results, started and awaited from this process -> wall time (start to result), steps/s, Redis
  commands per step (``INFO commandstats``: Lua-internal calls included, our own polling left out); then
  the same W no-op tasks enqueued plainly (``enqueue_many``, 1,000 a call) and run to the last -> the same
  figures;
* chain, on one idle worker process: a chain of L links, each link's input the time the link before
  returned -> hand-off latency (the link's handler start minus the previous handler's return) p50/p99;
* census (one process): a chord and the plain tasks again under ``redis-cli monitor`` -> commands per step
  sent to Redis and run inside scripts, split.

Without ``--redis-url`` a server is started on a free loopback port (as ``bench/harness.py`` does).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis as redis_sync

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import Bench as Harness  # noqa: E402
from bench.harness import Server  # noqa: E402
from bench.workflow_app import COUNT, DONE_KEY, HAND_KEY, LINK, MEMBER, Link, Member, Results  # noqa: E402
from framework.client.client import Client, TaskCall  # noqa: E402
from framework.protocol.keys import Schema  # noqa: E402
from framework.settings import Settings  # noqa: E402
from framework.transport.connection import open_redis  # noqa: E402
from framework.workflow import chain, chord  # noqa: E402

OWN = {"info", "config|resetstat", "flushall", "get", "zcard", "lrange", "echo"}
"""The benchmark's own commands, left out of the counts (polling, reading the hand-off times)."""


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--redis-url", default="")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--width", type=int, default=10_000, help="members of the chord (and plain tasks)")
    ap.add_argument("--links", type=int, default=1_000, help="links of the chain")
    ap.add_argument("--processes", default="1,3", help="worker process counts for the chord")
    ap.add_argument("--phases", default="chord,chain,census")
    ap.add_argument("--out", default="")
    return ap.parse_args()


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


class Bench:
    def __init__(self, args: argparse.Namespace, url: str, work: Path) -> None:
        self.args = args
        self.url = url
        self.work = work
        self.ctl = redis_sync.Redis.from_url(url)
        self.settings = Settings(redis_url=url, log_level="warning")
        self.schema = Schema(self.settings.namespace)

    def commands(self) -> int:
        stats = self.ctl.info("commandstats")
        return sum(v["calls"] for k, v in stats.items() if k.removeprefix("cmdstat_") not in OWN)

    def redis_cpu(self) -> float:
        cpu = self.ctl.info("cpu")
        return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])

    def start_workers(self, processes: int, log: Path) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env.update(
            {
                "PYTHONPATH": str(ROOT),
                "FRAMEWORK_REDIS_URL": self.url,
                "FRAMEWORK_APP": "bench.workflow_app",
                "FRAMEWORK_LOAD_PLUGINS": "",
                "FRAMEWORK_LOG_LEVEL": "warning",
                "FRAMEWORK_QUEUES": "default=1",
            }
        )
        cmd = [sys.executable, "-m", "framework", "worker", "--processes", str(processes)]
        with log.open("w") as f:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while int(self.ctl.zcard(self.schema.alive)) < processes:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"workers did not start; see {log}")
            time.sleep(0.05)
        return proc

    def client(self) -> Client:
        return Client(open_redis(self.url), settings=self.settings, url=self.url)

    async def warm(self, client: Client) -> None:
        """One short workflow and one task: connections open, scripts loaded, queue registered."""
        assert await client.run_workflow(chord([MEMBER.step(Member())], COUNT.step(Results(), input="values"))) == 1
        before = int(self.ctl.get(DONE_KEY) or 0)
        await client.enqueue(MEMBER, Member())
        while int(self.ctl.get(DONE_KEY) or 0) <= before:
            await asyncio.sleep(0.005)

    async def run_chord(self, client: Client) -> dict[str, float]:
        width = self.args.width
        wf = chord([MEMBER.step(Member(), name=f"m{i}") for i in range(width)], COUNT.step(Results(), input="values"))
        self.ctl.config_resetstat()
        cpu = self.redis_cpu()
        t = time.perf_counter()
        info = await client.start_workflow(wf)
        started = time.perf_counter() - t
        assert await client.wait_workflow(info, timeout=600) == width
        wall = time.perf_counter() - t
        return {
            "wall_s": wall,
            "start_s": started,
            "per_s": (width + 1) / wall,
            "cmds": self.commands() / (width + 1),
            "redis_cpu_s": self.redis_cpu() - cpu,
        }

    async def run_plain(self, client: Client) -> dict[str, float]:
        width = self.args.width
        self.ctl.set(DONE_KEY, 0)
        self.ctl.config_resetstat()
        cpu = self.redis_cpu()
        t = time.perf_counter()
        for c in range(0, width, 1000):
            await client.enqueue_many([TaskCall(MEMBER, Member()) for _ in range(min(1000, width - c))])
        while int(self.ctl.get(DONE_KEY) or 0) < width:
            await asyncio.sleep(0.005)
        wall = time.perf_counter() - t
        return {
            "wall_s": wall,
            "per_s": width / wall,
            "cmds": self.commands() / width,
            "redis_cpu_s": self.redis_cpu() - cpu,
        }

    async def chord_phase(self, processes: int, rep: int) -> dict[str, float]:
        self.ctl.flushall()
        workers = self.start_workers(processes, self.work / f"chord-{processes}-{rep}.log")
        client = self.client()
        try:
            await self.warm(client)
            out = {f"chord_{k}": v for k, v in (await self.run_chord(client)).items()}
            out.update({f"plain_{k}": v for k, v in (await self.run_plain(client)).items()})
        finally:
            await client.waiters.close()
            await client.redis.aclose()
            Harness.stop_worker(workers)
        return {f"p{processes}_{k}": v for k, v in out.items()}

    async def chain_phase(self, rep: int) -> dict[str, float]:
        self.ctl.flushall()
        workers = self.start_workers(1, self.work / f"chain-{rep}.log")
        client = self.client()
        try:
            await self.warm(client)
            links = self.args.links
            wf = chain(
                LINK.step(Link(), name="l0"), *[LINK.step(Link(), input="prev", name=f"l{i}") for i in range(1, links)]
            )
            t = time.perf_counter()
            await client.run_workflow(wf, wait_timeout=600)
            wall = time.perf_counter() - t
        finally:
            await client.waiters.close()
            await client.redis.aclose()
            Harness.stop_worker(workers)
        hands = [float(v) for v in self.ctl.lrange(HAND_KEY, 0, -1)]
        assert len(hands) == links - 1, len(hands)
        return {
            "hand_p50_ms": pct(hands, 50),
            "hand_p99_ms": pct(hands, 99),
            "hand_mean_ms": statistics.fmean(hands),
            "chain_links_per_s": links / wall,
        }

    async def census_phase(self) -> dict[str, float]:
        """Commands per step sent and run in scripts, from a MONITOR log (one worker process)."""
        if not shutil.which("redis-cli"):
            return {}
        self.ctl.flushall()
        workers = self.start_workers(1, self.work / "census.log")
        client = self.client()
        host, port = self.url.removeprefix("redis://").split("/")[0].split(":")
        out: dict[str, float] = {}
        try:
            await self.warm(client)
            for name, run in (("chord", self.run_chord), ("plain", self.run_plain)):
                path = self.work / f"monitor-{name}.txt"
                with path.open("w") as f:
                    mon = subprocess.Popen(
                        ["redis-cli", "-h", host, "-p", port, "monitor"], stdout=f, start_new_session=True
                    )
                try:
                    time.sleep(0.5)
                    self.ctl.echo("bench:mark:start")
                    await run(client)
                    self.ctl.echo("bench:mark:end")
                    time.sleep(0.5)
                finally:
                    os.killpg(mon.pid, signal.SIGTERM)
                    mon.wait(10)
                sent, lua = count_monitor(path)
                steps = self.args.width + (1 if name == "chord" else 0)
                out[f"census_{name}_sent"] = sent / steps
                out[f"census_{name}_lua"] = lua / steps
        finally:
            await client.waiters.close()
            await client.redis.aclose()
            Harness.stop_worker(workers)
        return out


def count_monitor(path: Path) -> tuple[int, int]:
    """(commands sent by clients, commands run inside scripts) between the marks, less our own."""
    sent = lua = 0
    on = False
    for line in path.read_text(errors="replace").splitlines():
        if "bench:mark:" in line:
            on = "bench:mark:start" in line
            continue
        if not on or "] " not in line:
            continue
        src, rest = line.split("] ", 1)
        name = rest.split('"')[1].lower() if '"' in rest else ""
        if name in OWN or name in ("set", "config"):
            continue  # ours: polling, reset of the counter and of the stats
        if src.endswith(" lua"):
            lua += 1
        else:
            sent += 1
    return sent, lua


def table(med: dict[str, float], processes: list[int]) -> str:
    rows = [
        "| workload | processes | wall s | steps/s | Redis commands per step | Redis CPU s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for p in processes:
        if f"p{p}_chord_wall_s" not in med:
            continue
        for kind, label in (("chord", "chord (10,000 + callback)"), ("plain", "same no-op tasks, plain")):
            rows.append(
                f"| {label} | {p} | {med[f'p{p}_{kind}_wall_s']:.2f} | {med[f'p{p}_{kind}_per_s']:,.0f} |"
                f" {med[f'p{p}_{kind}_cmds']:.2f} | {med[f'p{p}_{kind}_redis_cpu_s']:.2f} |"
            )
    out = "\n".join(rows)
    if "hand_p50_ms" in med:
        out += (
            f"\n\nchain hand-off (handler return -> next handler start): p50 {med['hand_p50_ms']:.2f} ms,"
            f" p99 {med['hand_p99_ms']:.2f} ms, mean {med['hand_mean_ms']:.2f} ms;"
            f" {med['chain_links_per_s']:,.0f} links/s"
        )
    if "census_chord_sent" in med:
        out += (
            f"\ncensus (1 process): chord step {med['census_chord_sent']:.2f} sent + {med['census_chord_lua']:.2f}"
            f" in scripts; plain task {med['census_plain_sent']:.2f} sent + {med['census_plain_lua']:.2f} in scripts"
        )
    return out


def main() -> None:
    args = parse_args()
    phases = set(args.phases.split(","))
    processes = [int(p) for p in args.processes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="framework-bench-wf-"))
    server = None if args.redis_url else Server(work)
    url = args.redis_url or server.url  # type: ignore[union-attr]
    bench = Bench(args, url, work)
    runs = []
    try:
        for rep in range(args.reps):
            result: dict[str, float] = {}
            if "chord" in phases:
                for p in processes:
                    result.update(asyncio.run(bench.chord_phase(p, rep)))
            if "chain" in phases:
                result.update(asyncio.run(bench.chain_phase(rep)))
            if "census" in phases and rep == 0:
                result.update(asyncio.run(bench.census_phase()))
            print(json.dumps({"rep": rep, **result}), file=sys.stderr)
            runs.append(result)
    finally:
        bench.ctl.close()
        if server is not None:
            server.stop()
    keys = sorted({k for r in runs for k in r})
    med = {k: statistics.median(r[k] for r in runs if k in r) for k in keys}
    summary = {
        "server": server.kind if server else url,
        "width": args.width,
        "links": args.links,
        "median": med,
        "runs": runs,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2))
    print(table(med, processes))


if __name__ == "__main__":
    main()
