"""Benchmark of the framework's queue on the workload the Python peer benchmark uses.

    python bench/harness.py [--redis-url URL] [--reps 3] [--n 20000] [--out results.json]

Phases per repetition, each from an empty Redis (FLUSHALL):

* bulk: enqueue N no-op tasks through the fastest path (``Client.enqueue_many``, 1,000 per call)
  -> tasks/s, and Redis memory per pending task (``INFO memory`` before and after);
* process: spawn ONE ``framework worker`` process (serving one queue, as the peers' workers do; default
  settings otherwise, or ``--concurrency``/``--processes``) and time it from spawn until all
  N (+1 warm-up) tasks ran -> tasks/s wall and steady (from the first finished task), Redis commands per
  task (``INFO commandstats``, Lua-internal calls included, the handler's own INCR and the harness's
  polling subtracted), worker RSS now and at its peak;
* seq: S tasks enqueued one at a time, each awaited -> tasks/s;
* latency: a warm idle worker, L tasks enqueued 5 ms apart; the handler records start - enqueue time;
  then the machine's floor for the same measurement (:mod:`bench.wake_floor`: a bare PUBLISH to an idle
  subscriber process, no queue code on either side);
* census: 5,000 tasks processed under ``redis-cli monitor`` -> commands per task sent by the worker and
  run inside its Lua scripts.

The handler sends its INCR with redis-py's API through ``ctx.services.redis``, as the peers' handlers do
with their own redis-py client; on a single server that client runs ordinary commands on an
auto-pipelining connection (:mod:`framework.transport.lean.fastredis`). ``BENCH_HANDLER_CLIENT=plain`` gives the
handler a plain ``redis.asyncio.Redis`` instead, to show what redis-py alone costs.

Without ``--redis-url`` a server is started on a free loopback port: Debian's ``redis-server`` when
installed (the peers' server kind), else the embedded Valkey binary.
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
from typing import Any

import redis as redis_sync

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import wake_floor  # noqa: E402
from bench.noop_app import DONE_KEY, LAT_KEY, Noop, noop  # noqa: E402
from framework.client.client import Client, TaskCall  # noqa: E402
from framework.embedded.launch import free_port  # noqa: E402
from framework.embedded.process import start_test_server  # noqa: E402
from framework.settings import Settings  # noqa: E402
from framework.transport.connection import open_redis  # noqa: E402

OWN = {"info", "config|resetstat", "flushall", "get"}


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--redis-url", default="")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--seq", type=int, default=5000)
    ap.add_argument("--lat", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=0, help="worker concurrency (0 = the default setting)")
    ap.add_argument("--processes", type=int, default=1)
    ap.add_argument(
        "--queues",
        default="default=1",
        help="queues the worker serves (FRAMEWORK_QUEUES); the peers' workers serve one queue, so do we by default",
    )
    ap.add_argument("--phases", default="bulk,process,seq,latency,census")
    ap.add_argument(
        "--loop",
        choices=("default", "uvloop"),
        default="default",
        help="event loop of the harness's enqueueing client: asyncio's default, or uvloop (the worker runs on "
        "its default, event_loop = auto: uvloop when installed)",
    )
    ap.add_argument("--out", default="")
    return ap.parse_args()


class Server:
    """A Redis for the benchmark: Debian's redis-server if installed, else the embedded Valkey."""

    def __init__(self, folder: Path) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.valkey: Any = None
        binary = shutil.which("redis-server")
        if binary:
            port = free_port()
            self.proc = subprocess.Popen(
                [
                    binary,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(folder),
                ],
                stdout=subprocess.DEVNULL,
            )
            self.url = f"redis://127.0.0.1:{port}/0"
            self.kind = subprocess.run(
                [binary, "--version"], capture_output=True, text=True, check=False
            ).stdout.split()[2]
            client = redis_sync.Redis.from_url(self.url)
            for _ in range(100):
                try:
                    client.ping()
                    break
                except redis_sync.ConnectionError:
                    time.sleep(0.05)
            client.close()
        else:
            self.valkey = start_test_server(folder)
            self.url = self.valkey.url
            self.kind = "valkey (embedded)"

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
        if self.valkey is not None:
            self.valkey.stop()


class Bench:
    def __init__(self, args: argparse.Namespace, url: str) -> None:
        self.args = args
        self.url = url
        self.ctl = redis_sync.Redis.from_url(url)
        self.settings = Settings(redis_url=url, log_level="warning")
        self.app = "bench.noop_app"

    # -- helpers -----------------------------------------------------------------------------------

    def cmdstats(self) -> dict[str, int]:
        return {k.replace("cmdstat_", ""): v["calls"] for k, v in self.ctl.info("commandstats").items()}

    @staticmethod
    def lib_commands(stats: dict[str, int], own_incr: int = 0, own_rpush: int = 0) -> dict[str, int]:
        out = {k: v for k, v in stats.items() if k not in OWN}
        out["incrby"] = out.get("incrby", 0) - own_incr
        out["rpush"] = out.get("rpush", 0) - own_rpush
        return {k: v for k, v in out.items() if v > 0}

    def start_worker(self, log: Path) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env.update(
            {
                "PYTHONPATH": str(ROOT),
                "REDIS_URL": self.url,
                "FRAMEWORK_APP": self.app,
                "FRAMEWORK_LOAD_PLUGINS": "",
                "FRAMEWORK_LOG_LEVEL": "warning",
                "FRAMEWORK_QUEUES": self.args.queues,
            }
        )
        cmd = [sys.executable, "-m", "framework", "worker", "--processes", str(self.args.processes)]
        if self.args.concurrency:
            cmd += ["--concurrency", str(self.args.concurrency)]
        with log.open("w") as f:
            return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)

    @staticmethod
    def stop_worker(p: subprocess.Popen[bytes]) -> None:
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                return
            try:
                p.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    @staticmethod
    def rss_mb(pid: int, field: str = "VmRSS:") -> float:
        """Resident memory of the worker's process group; ``VmHWM:`` gives each process's peak."""
        total = 0
        try:
            children = subprocess.run(
                ["pgrep", "-g", str(pid)], capture_output=True, text=True, check=False
            ).stdout.split()
        except FileNotFoundError:
            children = [str(pid)]
        for child in children or [str(pid)]:
            try:
                for line in Path(f"/proc/{child}/status").read_text().splitlines():
                    if line.startswith(field):
                        total += int(line.split()[1])
            except OSError:
                continue
        return total / 1024

    def done(self) -> int:
        return int(self.ctl.get(DONE_KEY) or 0)

    def wait_done(self, target: int, timeout: float) -> tuple[int, tuple[float, int] | None, int]:
        start = time.perf_counter()
        first: tuple[float, int] | None = None
        polls = 0
        while True:
            count = self.done()
            polls += 1
            now = time.perf_counter()
            if count >= 1 and first is None:
                first = (now, count)
            if count >= target or now - start > timeout:
                return count, first, polls
            time.sleep(0.005)

    async def _client(self) -> Client:
        return Client(open_redis(self.url), settings=self.settings)

    # -- phases ------------------------------------------------------------------------------------

    async def bulk(self) -> dict[str, Any]:
        self.ctl.flushall()
        client = await self._client()
        await noop.enqueue(client, Noop())  # warm-up: connects, loads scripts, registers the queue
        self.ctl.config_resetstat()
        used_before = int(self.ctl.info("memory")["used_memory"])
        t = time.perf_counter()
        chunk = 1000
        for i in range(0, self.args.n, chunk):
            await client.enqueue_many([TaskCall(noop, Noop()) for _ in range(min(chunk, self.args.n - i))])
        dt = time.perf_counter() - t
        stats = self.lib_commands(self.cmdstats())
        used_after = int(self.ctl.info("memory")["used_memory"])
        await client.close()
        return {
            "redis_bytes_per_pending_task": (used_after - used_before) / self.args.n,
            "bulk_enqueue_rate": self.args.n / dt,
            "bulk_cmds_per_task": sum(stats.values()) / self.args.n,
            "bulk_cmds": stats,
        }

    def process(self, log_dir: Path, rep: int) -> dict[str, Any]:
        self.ctl.config_resetstat()
        total = self.args.n + 1
        t0 = time.perf_counter()
        worker = self.start_worker(log_dir / f"process-{rep}.log")
        try:
            count, first, _polls = self.wait_done(total, 150.0)
            t_end = time.perf_counter()
            rss = self.rss_mb(worker.pid)
            peak = self.rss_mb(worker.pid, "VmHWM:")
        finally:
            self.stop_worker(worker)
        stats = self.lib_commands(self.cmdstats(), own_incr=count)
        stats["get"] = 0
        stats = {k: v for k, v in stats.items() if v > 0}
        wall = t_end - t0
        steady = (count - first[1]) / (t_end - first[0]) if first and t_end > first[0] else 0.0
        idle_cmds = {k: v for k, v in stats.items() if k in ("evalsha", "zadd", "set", "publish")}
        return {
            "processed": count,
            "process_rate_wall": count / wall,
            "process_rate_steady": steady,
            "startup_s": (first[0] - t0) if first else None,
            "process_cmds_per_task": sum(stats.values()) / max(count, 1),
            "process_cmds": stats,
            "client_evalsha_per_task": idle_cmds.get("evalsha", 0) / max(count, 1),
            "worker_rss_mb": rss,
            "worker_peak_rss_mb": peak,
        }

    async def seq(self) -> dict[str, Any]:
        self.ctl.flushall()
        client = await self._client()
        await noop.enqueue(client, Noop())
        self.ctl.config_resetstat()
        t = time.perf_counter()
        for _ in range(self.args.seq):
            await noop.enqueue(client, Noop())
        dt = time.perf_counter() - t
        stats = self.lib_commands(self.cmdstats())
        await client.close()
        return {"seq_enqueue_rate": self.args.seq / dt, "seq_cmds_per_task": sum(stats.values()) / self.args.seq}

    async def latency(self, log_dir: Path, rep: int) -> dict[str, Any]:
        self.ctl.flushall()
        worker = self.start_worker(log_dir / f"latency-{rep}.log")
        client = await self._client()
        try:
            await noop.enqueue(client, Noop())
            self.wait_done(1, 60.0)
            await asyncio.sleep(0.5)
            self.ctl.config_resetstat()
            idle_start = self.cmdstats()
            await asyncio.sleep(2.0)
            idle = self.lib_commands(self.cmdstats())
            idle = {k: v - idle_start.get(k, 0) for k, v in idle.items() if v - idle_start.get(k, 0) > 0}
            for _ in range(self.args.lat):
                await noop.enqueue(client, Noop(t0=time.time()))
                await asyncio.sleep(0.005)
            self.wait_done(self.args.lat + 1, 60.0)
            lat = [float(x) for x in self.ctl.lrange(LAT_KEY, 0, -1)]
        finally:
            await client.close()
            self.stop_worker(worker)
        lat.sort()
        return {
            "latency_p50_ms": wake_floor.percentile(lat, 50),
            "latency_p99_ms": wake_floor.percentile(lat, 99),
            "latency_max_ms": lat[-1],
            "idle_cmds_per_s": sum(idle.values()) / 2.0,
        }


def census(bench: Bench, log_dir: Path, n: int = 5000) -> dict[str, Any]:
    """Commands per processed task from a MONITOR log: sent by the worker vs run inside its Lua scripts."""
    if not shutil.which("redis-cli"):
        return {}
    bench.ctl.flushall()
    saved = bench.args.n
    bench.args.n = n
    try:
        asyncio.run(bench.bulk())
    finally:
        bench.args.n = saved
    host, port = bench.url.removeprefix("redis://").split("/")[0].split(":")
    path = log_dir / "monitor.txt"
    with path.open("w") as out:
        mon = subprocess.Popen(["redis-cli", "-h", host, "-p", port, "monitor"], stdout=out, start_new_session=True)
    try:
        time.sleep(0.5)
        bench.ctl.echo("bench:mark:start")
        worker = bench.start_worker(log_dir / "census.log")
        try:
            bench.wait_done(n + 1, 120.0)
            time.sleep(0.5)
            bench.ctl.echo("bench:mark:end")
        finally:
            bench.stop_worker(worker)
    finally:
        os.killpg(mon.pid, signal.SIGTERM)
        mon.wait(10)
    client: dict[str, int] = {}
    lua: dict[str, int] = {}
    on = False
    for line in path.read_text(errors="replace").splitlines():
        if "bench:mark:" in line:
            on = "bench:mark:start" in line
            continue
        if not on or "] " not in line or "bench:done" in line or "bench:lat" in line:
            continue
        src, rest = line.split("] ", 1)
        name = rest.split('"')[1].lower() if '"' in rest else rest.split()[0].lower()
        into = lua if src.endswith(" lua") else client
        into[name] = into.get(name, 0) + 1
    return {
        "census_client_per_task": sum(client.values()) / n,
        "census_lua_per_task": sum(lua.values()) / n,
        "census_client": client,
        "census_lua": lua,
    }


def open_server(args: argparse.Namespace, work: Path) -> tuple[Server | None, str]:
    """The server to measure on: ``--redis-url``, or a private one started in ``work``."""
    if args.redis_url:
        return None, args.redis_url
    server = Server(work)
    return server, server.url


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = {k for r in runs for k, v in r.items() if isinstance(v, int | float)}
    return {k: statistics.median(r[k] for r in runs if isinstance(r.get(k), int | float)) for k in sorted(keys)}


def main() -> None:
    args = parse_args()
    if args.loop == "uvloop":  # the harness's own client too: an ASGI app under uvicorn enqueues from uvloop
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    phases = set(args.phases.split(","))
    work = Path(tempfile.mkdtemp(prefix="framework-bench-"))
    server, url = open_server(args, work)
    bench = Bench(args, url)
    runs = []
    try:
        for rep in range(args.reps):
            result: dict[str, Any] = {}
            if "bulk" in phases or "process" in phases:
                result.update(asyncio.run(bench.bulk()))
            if "process" in phases:
                result.update(bench.process(work, rep))
            if "seq" in phases:
                result.update(asyncio.run(bench.seq()))
            if "latency" in phases:
                result.update(asyncio.run(bench.latency(work, rep)))
                result.update(wake_floor.measure(url, args.lat))
            if "census" in phases:
                result.update(census(bench, work))
            print(
                json.dumps({"rep": rep, **{k: v for k, v in result.items() if not isinstance(v, dict)}}),
                file=sys.stderr,
            )
            runs.append(result)
    finally:
        bench.ctl.close()
        if server is not None:
            server.stop()
    summary = {
        "library": "framework",
        "server": server.kind if server else url,
        "processes": args.processes,
        "concurrency": args.concurrency or Settings().concurrency,
        "n": args.n,
        "median": median_of(runs),
        "runs": runs,
    }
    text = json.dumps(summary, indent=2)
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
