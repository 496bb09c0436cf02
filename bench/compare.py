"""Run the peers' benchmark and ours side by side, against one Redis server, and print ONE table.

    python bench/compare.py --peers /path/to/shared/bench/peers [--rounds 3] [--out compare.json]

* The peers' harness (``harness.py`` in ``--peers``) runs each peer's best configuration, as its ``run.sh``
  names them, in the peer's own venv under ``$BENCH_WORK/venv-<peer>`` (build them with the peers'
  ``run.sh install``). Our ``bench/harness.py`` runs in this interpreter.
* One Redis for everything: Debian's ``redis-server`` (the peers' server kind) on a free loopback port,
  ``--save "" --appendonly no``; or ``--redis-url`` to use a running one (it is FLUSHALLed).
* Rounds are interleaved: each round runs every peer once and then each of our configurations once, so
  ratios come from the same minutes; the table shows the median of the rounds.
* With ``redis-benchmark`` installed, the Redis ceiling (one connection, pipelining 1 and 16) comes first.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import Server  # noqa: E402 - the same server start-up as our own harness

# each peer's best configuration from the peers' run.sh (BEST): peer, concurrency, variant
PEER_BEST = [
    ("arq", 100, ""),
    ("saq", 10, ""),
    ("streaq", 100, ""),
    ("taskiq", 10, ""),
    ("rq", 1, "simple"),
    ("dramatiq", 32, ""),
    ("celery", 1, "solo"),
    ("huey", 1, ""),
]

# our configurations: label, harness arguments, environment. "default" is what a user gets with no
# settings: concurrency 100, dequeue batch 64, the worker on uvloop, the handler's INCR through
# ctx.services.redis (redis-py's API); the harness's own client on asyncio's default loop.
OURS = {
    "default": ([], {}),
    "client-uvloop": (["--loop", "uvloop"], {}),  # the enqueueing side on uvloop, as under uvicorn
    "c10": (["--concurrency", "10"], {"FRAMEWORK_DEQUEUE_BATCH": "16"}),  # the earlier defaults
    "p2": (["--processes", "2"], {}),
    "plain-redis-py-handler": ([], {"BENCH_HANDLER_CLIENT": "plain"}),  # the handler on a plain redis-py client
}


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peers", required=True, help="the peers' benchmark directory (harness.py, bench_<peer>.py)")
    ap.add_argument("--work", default=os.environ.get("BENCH_WORK", "/tmp/peers"), help="where the peers' venvs are")
    ap.add_argument("--redis-url", default="", help="use this Redis (it is flushed) instead of starting one")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default="", help="comma-separated peer names to run (default: all)")
    ap.add_argument("--ours", default="default,client-uvloop,p2", help=f"of {', '.join(OURS)}")
    ap.add_argument("--proc-cap", type=float, default=40.0, help="seconds a peer's processing run may take")
    ap.add_argument("--no-ceiling", action="store_true", help="skip redis-benchmark")
    ap.add_argument("--out", default="")
    return ap.parse_args()


def ceiling(port: int) -> dict[str, float]:
    """redis-benchmark ops/s on one connection, pipelining 1 and 16 (what one client process can get)."""
    binary = shutil.which("redis-benchmark")
    if not binary:
        return {}
    out: dict[str, float] = {}
    for conns, pipe in ((1, 1), (1, 16), (50, 16)):
        cmd = [binary, "-p", str(port), "-n", "100000", "-c", str(conns), "-P", str(pipe), "-q", "-t", "set,lpush,rpop"]
        text = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False).stdout
        for line in text.replace("\r", "\n").splitlines():
            if "requests per second" in line:
                name, _, rest = line.partition(":")
                out[f"{name.strip()} c{conns} P{pipe}"] = float(rest.split()[0])
    return out


def run_peer(args: argparse.Namespace, url: str, peer: str, conc: int, variant: str, out: Path) -> dict[str, Any]:
    python = Path(args.work) / f"venv-{peer}" / "bin" / "python"
    if not python.exists():
        print(f"  {peer}: no venv at {python.parent.parent} (run the peers' run.sh install)", file=sys.stderr)
        return {}
    cmd = [str(python), "-B", "harness.py", peer, "--conc", str(conc), "--reps", "1", "--proc-cap", str(args.proc_cap)]
    cmd += ["--out", str(out)] + (["--variant", variant] if variant else [])
    env = dict(os.environ, BENCH_REDIS_URL=url, BENCH_LOGDIR=str(out.parent / "logs"), PYTHONDONTWRITEBYTECODE="1")
    subprocess.run(cmd, cwd=args.peers, env=env, timeout=900, check=False, stdout=subprocess.DEVNULL)
    if not out.exists():
        return {}
    data = json.loads(out.read_text())
    rep = data["reps"][0]
    return {
        "library": data["name"],
        "version": " ".join(f"{k} {v}" for k, v in data["versions"].items() if k not in ("redis", "hiredis")),
        "config": f"c{conc}{' ' + variant if variant else ''}",
        "bulk": rep.get("bulk_enqueue_rate"),
        "seq": rep.get("seq_enqueue_rate"),
        "wall": rep.get("proc_rate_wall"),
        "steady": rep.get("proc_rate_steady"),
        "p50": rep.get("lat_p50_ms"),
        "p99": rep.get("lat_p99_ms"),
        "cmds": rep.get("proc_cmds_per_job"),
    }


def run_ours(url: str, label: str, out: Path) -> dict[str, Any]:
    extra, env_extra = OURS[label]
    cmd = [sys.executable, str(ROOT / "bench" / "harness.py"), "--redis-url", url, "--reps", "1", "--out", str(out)]
    subprocess.run(cmd + extra, env=dict(os.environ, **env_extra), timeout=900, check=False, stdout=subprocess.DEVNULL)
    if not out.exists():
        return {}
    rep = json.loads(out.read_text())["runs"][0]
    return {
        "library": "framework",
        "version": "",
        "config": label,
        "bulk": rep.get("bulk_enqueue_rate"),
        "seq": rep.get("seq_enqueue_rate"),
        "wall": rep.get("process_rate_wall"),
        "steady": rep.get("process_rate_steady"),
        "p50": rep.get("latency_p50_ms"),
        "p99": rep.get("latency_p99_ms"),
        "floor_p50": rep.get("floor_p50_ms"),
        "floor_p99": rep.get("floor_p99_ms"),
        "cmds": rep.get("process_cmds_per_task"),
        "client_cmds": rep.get("census_client_per_task"),
        "lua_cmds": rep.get("census_lua_per_task"),
        "rss": rep.get("worker_peak_rss_mb"),
        "redis_bytes": rep.get("redis_bytes_per_pending_task"),
    }


METRICS = (
    *("bulk", "seq", "wall", "steady", "p50", "p99", "floor_p50", "floor_p99"),
    *("cmds", "client_cmds", "lua_cmds", "rss", "redis_bytes"),
)


def medians(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out = dict(rows[0])
    for key in METRICS:
        vals = [r[key] for r in rows if isinstance(r.get(key), int | float)]
        out[key] = statistics.median(vals) if vals else None
    return out


def fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def table(rows: list[dict[str, Any]], peers: list[dict[str, Any]]) -> str:
    def best(key: str, low: bool = False) -> float | None:
        vals = [p[key] for p in peers if isinstance(p.get(key), int | float)]
        if not vals:
            return None
        return min(vals) if low else max(vals)

    top = {k: best(k) for k in ("bulk", "seq", "wall", "steady")}
    top_lat = best("p50", low=True)
    lines = [
        "| library | config | bulk enq/s | seq enq/s | processing/s wall | steady/s | latency p50 / p99 ms "
        "| Redis cmds/task processing (all) | client-sent / Lua-internal |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        census = f"{fmt(r.get('client_cmds'), 2)} / {fmt(r.get('lua_cmds'), 2)}" if r.get("client_cmds") else ""
        lines.append(
            f"| {r['library']} | {r['config']} | {fmt(r['bulk'])} | {fmt(r['seq'])} | {fmt(r['wall'])} "
            f"| {fmt(r['steady'])} | {fmt(r['p50'], 2)} / {fmt(r['p99'], 2)} | {fmt(r['cmds'], 1)} | {census} |"
        )
    lines += ["", "Ratios, ours / the best peer in the same run (latency: best peer p50 / ours):", ""]
    lines += ["| config | bulk | seq | processing wall | steady | latency p50 |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r["library"] != "framework":
            continue
        cells = [fmt(r[k] / top[k], 2) + "x" if r.get(k) and top[k] else "-" for k in ("bulk", "seq", "wall", "steady")]
        lat = fmt(top_lat / r["p50"], 2) + "x" if r.get("p50") and top_lat else "-"
        lines.append(f"| {r['config']} | {' | '.join(cells)} | {lat} |")
    floors = [r for r in rows if r.get("floor_p50")]
    floor_cells = [f"p50 {fmt(r['floor_p50'], 2)} / p99 {fmt(r['floor_p99'], 2)} ms ({r['config']})" for r in floors]
    if floors:
        lines += [
            "",
            "Latency floor of the machine in the same runs (a bare PUBLISH reaching an idle subscriber process, "
            "bench/wake_floor.py): " + ", ".join(floor_cells) + ".",
        ]
    extras = [r for r in rows if r["library"] == "framework" and (r.get("rss") or r.get("redis_bytes"))]
    if extras:
        lines += ["", "| config | worker peak RSS MB | Redis bytes per pending task |", "|---|---:|---:|"]
        lines += [f"| {r['config']} | {fmt(r.get('rss'), 1)} | {fmt(r.get('redis_bytes'))} |" for r in extras]
    return "\n".join(lines)


def _start_server(work: Path) -> Server:
    """Debian's redis-server, the peers' server kind (our harness would fall back to Valkey without it)."""
    if not shutil.which("redis-server"):
        raise SystemExit("redis-server is not installed (apt-get install redis-server), or pass --redis-url")
    return Server(work)


def main() -> None:
    args = parse_args()
    only = set(filter(None, args.only.split(",")))
    peers = [p for p in PEER_BEST if not only or p[0] in only]
    ours = [o for o in args.ours.split(",") if o]
    for label in ours:
        if label not in OURS:
            raise SystemExit(f"unknown configuration {label!r}; known: {', '.join(OURS)}")
    work = Path(tempfile.mkdtemp(prefix="framework-compare-"))
    server = None
    url = args.redis_url
    if not url:
        server = _start_server(work)
        url = server.url
    results: dict[str, list[dict[str, Any]]] = {}
    try:
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        limits = {} if args.no_ceiling else ceiling(port)
        for rnd in range(args.rounds):
            for peer, conc, variant in peers:
                print(f"round {rnd + 1}: {peer}", file=sys.stderr)
                row = run_peer(args, url, peer, conc, variant, work / f"{peer}-r{rnd}.json")
                if row:
                    results.setdefault(f"peer:{peer}", []).append(row)
            for label in ours:
                print(f"round {rnd + 1}: framework {label}", file=sys.stderr)
                row = run_ours(url, label, work / f"ours-{label}-r{rnd}.json")
                if row:
                    results.setdefault(f"ours:{label}", []).append(row)
    finally:
        if server is not None:
            server.stop()
    rows = [medians(v) for v in results.values()]
    peer_rows = [r for r in rows if r["library"] != "framework"]
    text = table(rows, peer_rows)
    header = [
        f"Machine: {os.cpu_count()} cores, {platform_line()}; Redis {server.kind if server else url}; "
        f"{args.rounds} interleaved rounds, medians; {time.strftime('%Y-%m-%d')}.",
    ]
    if limits:
        header.append(
            "Redis ceiling (redis-benchmark, ops/s): " + ", ".join(f"{k} {v:,.0f}" for k, v in limits.items())
        )
    print("\n".join(header) + "\n\n" + text)
    if args.out:
        Path(args.out).write_text(json.dumps({"ceiling": limits, "rows": rows, "raw": results}, indent=1))


def platform_line() -> str:
    import platform

    mem = ""
    try:
        kb = int(next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal")).split()[1])
        mem = f"{kb / 1024 / 1024:.0f} GiB, "
    except (OSError, StopIteration, ValueError):
        pass
    return f"{mem}{platform.system()} {platform.release()}, CPython {platform.python_version()}"


if __name__ == "__main__":
    main()
