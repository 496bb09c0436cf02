"""The machine's floor for enqueue-to-start latency: one PUBLISH reaching an idle subscriber in another process.

    python bench/wake_floor.py --redis-url URL [--n 500]

What every queue's latency figure sits on: the enqueueing process writes one command, Redis wakes up and
forwards it, an idle process wakes up and reads it. Here the publisher is a bare asyncio connection on
the loop the harness's enqueueing client runs on (asyncio's default unless ``--loop uvloop``), pacing
``--n`` messages 5 ms apart, each carrying ``time.time()``; the subscriber is a bare connection on uvloop
(as the worker) that records ``time.time() - t0`` on arrival. No queue code runs on either side, so the
gap between this and a queue's p50 is that queue's own work (building and sending the task, its script,
starting the handler).

:func:`measure` is what ``bench/harness.py``'s latency phase calls.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from urllib.parse import urlsplit

import hiredis

CHANNEL = b"bench:wake-floor"


class _Subscriber(asyncio.Protocol):
    """Takes the time first thing in ``data_received``, then finds the t0 of each message in the data."""

    def __init__(self, n: int, done: asyncio.Future[list[float]]) -> None:
        self.n = n
        self.done = done
        self.buffer = b""
        self.lat: list[float] = []
        self.subscribed = False

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self.buffer += data
        if not self.subscribed:  # the SUBSCRIBE confirmation ends with the count of channels
            if b":1\r\n" not in self.buffer:
                return
            self.subscribed = True
            self.buffer = self.buffer.split(b":1\r\n", 1)[1]
            print("ready", flush=True)
        # a message: *3 $7 message $<len> channel $<len> t0, seven lines
        lines = self.buffer.split(b"\r\n")
        while len(lines) > 7:
            self.lat.append((now - float(lines[6])) * 1000.0)
            lines = lines[7:]
        self.buffer = b"\r\n".join(lines)
        if len(self.lat) >= self.n and not self.done.done():
            self.done.set_result(self.lat)


async def _subscribe(host: str, port: int, n: int) -> list[float]:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[list[float]] = loop.create_future()
    transport, _ = await loop.create_connection(lambda: _Subscriber(n, done), host, port)
    transport.write(hiredis.pack_command((b"SUBSCRIBE", CHANNEL)))
    try:
        return await done
    finally:
        transport.close()


async def _publish(host: str, port: int, n: int) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    for _ in range(n):
        writer.write(hiredis.pack_command((b"PUBLISH", CHANNEL, repr(time.time()).encode())))
        await reader.readline()
        await asyncio.sleep(0.005)
    writer.close()


def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile of sorted ``values``, interpolated between the two nearest ranks."""
    k = (len(values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def measure(url: str, n: int = 500) -> dict[str, float]:
    """p50/p99 ms of a bare PUBLISH to an idle subscriber process (see the module docstring)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    sub = subprocess.Popen(
        [sys.executable, __file__, "--subscriber", "--redis-url", url, "--n", str(n)],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert sub.stdout is not None
        if sub.stdout.readline().strip() != "ready":
            raise RuntimeError("the wake-floor subscriber did not start")
        time.sleep(0.5)  # idle, as the worker is when a latency job comes
        asyncio.run(_publish(host, port, n))
        out, _ = sub.communicate(timeout=60)
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()
    lat = sorted(json.loads(out))
    return {"floor_p50_ms": percentile(lat, 50), "floor_p99_ms": percentile(lat, 99)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--redis-url", required=True)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--subscriber", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.subscriber:
        import uvloop

        parts = urlsplit(args.redis_url)
        lat = uvloop.run(_subscribe(parts.hostname or "127.0.0.1", parts.port or 6379, args.n))
        print(json.dumps(lat), flush=True)
        return
    print(json.dumps(measure(args.redis_url, args.n)))


if __name__ == "__main__":
    main()
