"""One enqueue at a time: awaited ``Client.enqueue``, ``SyncClient.enqueue``, beside the loopback floor.

    python bench/enqueue_latency.py [--n 5000] [--rounds 5] [--trees before=DIR,after=DIR]

Starts its own ``redis-server`` on a free loopback port (``--save "" --appendonly no``). Each round runs
one child process per source tree (``--trees``; default: this tree), one after the other, so trees
compared in one run share the same minutes (each child imports ``framework`` from its tree); the table
shows the median of the rounds, in calls per second. Each child measures, N calls each, one at a time,
every call waiting for its reply:

* ``raw PING``: ``PING`` over a blocking socket (no library): the loopback round-trip floor;
* ``raw EVALSHA``: the enqueue script over a blocking socket, its commands packed beforehand: the floor
  for an enqueue (the round trip and the script's own time);
* the same two polling the socket for the reply instead of sleeping in ``recv`` (on a virtual machine whose
  CPUs halt when idle, being woken costs more than the round trip: these are the floors there);
* ``redis-py PING`` (synchronous) and ``redis-py evalsha`` (asyncio, the same script, keys and arguments
  as an enqueue, each task with its own id, prepared beforehand);
* ``enqueue`` (awaited, in one coroutine) on asyncio's default loop and on uvloop;
* ``SyncClient.enqueue`` in a plain loop.

Every enqueue is of a task type with its default options (:mod:`bench.noop_app`), the commonest call.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

KINDS = (
    ("raw_ping", "raw PING (blocking socket)"),
    ("raw_evalsha", "raw EVALSHA enqueue (blocking socket)"),
    ("raw_ping_polled", "raw PING (polling the socket)"),
    ("raw_evalsha_polled", "raw EVALSHA enqueue (polling the socket)"),
    ("redispy_ping", "redis-py PING (sync)"),
    ("redispy_evalsha", "redis-py evalsha enqueue (asyncio)"),
    ("enqueue_asyncio", "await enqueue (asyncio loop)"),
    ("enqueue_uvloop", "await enqueue (uvloop)"),
    ("sync_enqueue", "SyncClient.enqueue"),
)


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else 0.0


def _read_replies(sock: socket.socket, n: int, *, poll: bool = False) -> None:
    """Read until ``n`` complete one-line replies (``+PONG``, ``:1``) arrived; ``poll``: never sleep in ``recv``."""
    got = 0
    while got < n:
        try:
            data = sock.recv(65536, socket.MSG_DONTWAIT if poll else 0)
        except BlockingIOError:
            continue
        if not data:
            raise ConnectionError("server closed the connection")
        got += data.count(b"\r\n")


def _raw(address: tuple[str, int], commands: list[bytes], *, poll: bool = False) -> float:
    """One command at a time over a plain socket: the thread sleeps in ``recv``, or (``poll``) spins on it."""
    sock = socket.create_connection(address)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        t = time.perf_counter()
        for command in commands:
            sock.sendall(command)
            _read_replies(sock, 1, poll=poll)
        return _rate(len(commands), time.perf_counter() - t)
    finally:
        sock.close()


def _prepared_calls(url: str, n: int) -> tuple[Any, list[tuple[list[str], list[Any]]]]:
    """The enqueue script and ``n`` distinct enqueues' keys and arguments, as the client sends them."""
    from bench.noop_app import Noop, noop
    from framework.client.client import Client
    from framework.client.prepared import new_task_ids

    client = Client.from_url(url)
    script = None
    calls = []
    for task_id in new_task_ids(n):
        _, (script, keys, args), _ = client._build(noop, Noop(), {}, task_id)
        calls.append((list(keys), list(args)))
    return script, calls


def child(url: str, n: int) -> dict[str, float]:
    """Every measurement of one tree, calls per second."""
    import hiredis
    import redis
    import redis.asyncio

    host, port = url.removeprefix("redis://").split("/")[0].split(":")
    address = (host, int(port))
    control = redis.Redis.from_url(url)
    control.flushall()
    out: dict[str, float] = {}

    out["raw_ping"] = _raw(address, [b"*1\r\n$4\r\nPING\r\n"] * n)
    out["raw_ping_polled"] = _raw(address, [b"*1\r\n$4\r\nPING\r\n"] * n, poll=True)

    script, calls = _prepared_calls(url, n)
    control.script_load(script.source)
    packed = [hiredis.pack_command(("EVALSHA", script.sha, len(k), *k, *a)) for k, a in calls]
    out["raw_evalsha"] = _raw(address, packed)
    control.flushall()
    out["raw_evalsha_polled"] = _raw(address, packed, poll=True)
    control.flushall()

    t = time.perf_counter()
    for _ in range(n):
        control.ping()
    out["redispy_ping"] = _rate(n, time.perf_counter() - t)

    async def redispy_evalsha() -> float:
        r = redis.asyncio.Redis.from_url(url)
        await r.ping()
        t = time.perf_counter()
        for keys, args in calls:
            await r.evalsha(script.sha, len(keys), *keys, *args)
        dt = time.perf_counter() - t
        await r.aclose()
        return _rate(n, dt)

    out["redispy_evalsha"] = asyncio.run(redispy_evalsha())
    control.flushall()

    out.update(_enqueues(url, n, control))
    control.close()
    return out


def _enqueues(url: str, n: int, control: Any) -> dict[str, float]:
    """Awaited enqueues on both loops, then ``SyncClient.enqueue``."""
    import uvloop

    from bench.noop_app import Noop, noop
    from framework.client.client import Client
    from framework.client.sync import SyncClient

    out: dict[str, float] = {}

    async def awaited() -> float:
        client = Client.from_url(url)
        payload = Noop()
        await noop.enqueue(client, payload)  # connects, registers the queue, loads the script
        t = time.perf_counter()
        for _ in range(n):
            await client.enqueue(noop, payload)
        dt = time.perf_counter() - t
        await client.close()
        return _rate(n, dt)

    out["enqueue_asyncio"] = asyncio.run(awaited())
    control.flushall()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        out["enqueue_uvloop"] = runner.run(awaited())
    control.flushall()

    with SyncClient(url) as sync:
        payload = Noop()
        sync.enqueue(noop, payload)
        t = time.perf_counter()
        for _ in range(n):
            sync.enqueue(noop, payload)
        out["sync_enqueue"] = _rate(n, time.perf_counter() - t)
    control.flushall()
    return out


def _start_server(folder: str) -> tuple[subprocess.Popen[bytes], str]:
    import redis

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=folder,
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    probe = redis.Redis.from_url(url)
    for _ in range(200):
        try:
            probe.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    probe.close()
    return proc, url


def main() -> None:
    """Run the rounds and print the table (medians, calls per second)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--trees", default=f"this={ROOT}", help="name=dir,...: source trees to compare, interleaved")
    ap.add_argument("--out", default="", help="write every round's figures here (JSON)")
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.n)))
        return
    trees = [item.split("=", 1) for item in args.trees.split(",")]
    runs: dict[str, list[dict[str, float]]] = {name: [] for name, _ in trees}
    with tempfile.TemporaryDirectory() as folder:
        proc, url = _start_server(folder)
        try:
            for r in range(args.rounds):
                for name, tree in trees:
                    env = {**os.environ, "PYTHONPATH": tree}
                    done = subprocess.run(
                        [sys.executable, __file__, "--child", url, "--n", str(args.n)],
                        cwd=tree,
                        env=env,
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
                    print(f"round {r + 1} {name}: " + ", ".join(f"{k} {v:,.0f}" for k, v in runs[name][-1].items()))
        finally:
            proc.terminate()
            proc.wait(10)
    if args.out:
        Path(args.out).write_text(json.dumps(runs, indent=1))
    names = [name for name, _ in trees]
    print(f"\nmedians of {args.rounds} rounds, {args.n:,} calls each, calls/s")
    print("| measurement | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for key, label in KINDS:
        cells = [f"{statistics.median(run[key] for run in runs[name]):,.0f}" for name in names]
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
