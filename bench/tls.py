"""Enqueue and processing over TLS (``rediss://``) against plain TCP to the same server.

    python bench/tls.py [--n 20000] [--seq 3000] [--rounds 3] [--out results.json]

One ``redis-server`` (Debian's: the embedded Valkey has no TLS) listens on two free loopback ports, one plain
and one TLS, with a CA and a server certificate made for the run. Each round runs, in turn, three ways of
reaching it, from an empty database each time:

* ``plain``: ``redis://`` (the lean connection);
* ``tls``: ``rediss://``, verifying the server against the CA (the lean connection, TLS in memory);
* ``tls-redispy``: the same URL with the lean path turned off (redis-py's pool serves every command), which
  is what a ``rediss://`` URL used before the lean path took it.

Phases, in one process and one event loop (an in-process worker, concurrency 100):

* bulk: N no-op tasks with ``Client.enqueue_many``, 1,000 per call -> tasks/s;
* seq: S tasks enqueued one at a time, each awaited -> tasks/s;
* process: a worker started on the N pending tasks, timed until all ran -> tasks/s.

Prints each round's figures, then the medians per way and their ratios to ``plain``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import redis as redis_sync

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from framework.broker import base  # noqa: E402
from framework.client.client import Client, TaskCall  # noqa: E402
from framework.embedded.launch import free_port, spawn  # noqa: E402
from framework.protocol.keys import Schema  # noqa: E402
from framework.settings import Settings  # noqa: E402
from framework.task import TaskDef  # noqa: E402
from framework.transport.connection import open_redis  # noqa: E402
from framework.worker.worker import Worker  # noqa: E402
from tests.fixtures.tls import make_certificates  # noqa: E402

WAYS = ("plain", "tls", "tls-redispy")
PHASES = ("bulk", "seq", "process")


class Noop(msgspec.Struct, frozen=True):
    """The benchmark's payload (empty)."""


class Counter:
    """Counts the tasks run, and wakes the waiter when ``target`` ran."""

    def __init__(self) -> None:
        self.n = 0
        self.target = 0
        self.done = asyncio.Event()

    async def run(self, ctx: Any, payload: Noop) -> None:
        self.n += 1
        if self.n >= self.target:
            self.done.set()


def start(folder: Path) -> tuple[Any, int, int, Path]:
    """Start the server; returns (process, plain port, TLS port, CA file)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server (with TLS) is needed")
    certs = make_certificates(folder / "certs")
    port, tls_port = free_port(), free_port()
    args = [binary, "--port", str(port), "--tls-port", str(tls_port), "--bind", "127.0.0.1"]
    args += ["--tls-cert-file", str(certs.server_cert), "--tls-key-file", str(certs.server_key)]
    args += ["--tls-ca-cert-file", str(certs.ca), "--tls-auth-clients", "no", "--save", "", "--appendonly", "no"]
    proc = spawn(args, folder, folder / "server.log")
    deadline = time.monotonic() + 20
    while True:
        try:
            with redis_sync.Redis(port=tls_port, ssl=True, ssl_ca_certs=str(certs.ca), socket_timeout=1) as r:
                if r.ping():
                    return proc, port, tls_port, certs.ca
        except redis_sync.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the server did not come up:\n" + (folder / "server.log").read_text()) from None
        time.sleep(0.05)


async def one_way(way: str, url: str, args: argparse.Namespace, folder: Path, flush: Any) -> dict[str, float]:
    """The three phases through one way of reaching the server."""
    flush()
    original = base.fast_path_for  # type: ignore[attr-defined]
    if way == "tls-redispy":
        base.fast_path_for = lambda redis: None  # type: ignore[attr-defined]
    counter = Counter()
    task = TaskDef("bench:noop", Noop, counter.run)
    settings = Settings(
        redis_url=url, namespace="bench", data_dir=str(folder / "data"), queues={"default": 1}, load_plugins=[]
    )
    client = Client(open_redis(url), schema=Schema("bench"), settings=settings, url=url)
    out: dict[str, float] = {}
    try:
        assert (client.broker.fast is None) == (way == "tls-redispy"), way
        await client.enqueue(task, Noop())  # registers the queue, loads the script: not timed
        t0 = time.perf_counter()
        for i in range(0, args.n, 1000):
            await client.enqueue_many([TaskCall(task, Noop()) for _ in range(min(1000, args.n - i))])
        out["bulk"] = args.n / (time.perf_counter() - t0)
        counter.target = args.n + 1
        worker = Worker(settings, tasks=[task])
        t0 = time.perf_counter()
        async with worker:
            await asyncio.wait_for(counter.done.wait(), 300)
            out["process"] = args.n / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for _ in range(args.seq):
            await client.enqueue(task, Noop())
        out["seq"] = args.seq / (time.perf_counter() - t0)
    finally:
        base.fast_path_for = original  # type: ignore[attr-defined]
        await client.close()
    return out


async def bench(
    args: argparse.Namespace, folder: Path, port: int, tls_port: int, ca: Path
) -> list[dict[str, dict[str, float]]]:
    tls = f"rediss://127.0.0.1:{tls_port}?ssl_ca_certs={ca}"
    urls = {"plain": f"redis://127.0.0.1:{port}", "tls": tls, "tls-redispy": tls}
    direct = redis_sync.Redis(port=port)
    rounds: list[dict[str, dict[str, float]]] = []
    for r in range(args.rounds):
        order = WAYS if r % 2 == 0 else WAYS[::-1]  # interleaved, the order alternating
        figures: dict[str, dict[str, float]] = {}
        for way in order:
            figures[way] = await one_way(way, urls[way], args, folder, direct.flushall)
            print(f"round {r + 1} {way:12}", "  ".join(f"{p} {figures[way][p]:9,.0f}/s" for p in PHASES), flush=True)
        rounds.append(figures)
    direct.close()
    return rounds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--seq", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, port, tls_port, ca = start(Path(tmp))
        try:
            rounds = asyncio.run(bench(args, Path(tmp), port, tls_port, ca))
        finally:
            proc.terminate()
            with contextlib.suppress(Exception):
                proc.wait(5)
    medians = {w: {p: statistics.median(r[w][p] for r in rounds) for p in PHASES} for w in WAYS}
    print("\nmedians (tasks/s) and ratio plain / way (1.0 = as fast as plain TCP):")
    for way in WAYS:
        cells = "  ".join(f"{p} {medians[way][p]:9,.0f} ({medians['plain'][p] / medians[way][p]:.2f}x)" for p in PHASES)
        print(f"{way:12} {cells}")
    if args.out:
        Path(args.out).write_text(json.dumps({"rounds": rounds, "medians": medians}, indent=2))


if __name__ == "__main__":
    main()
