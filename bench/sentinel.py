"""Enqueue and processing through a Sentinel URL against plain TCP to the same server.

    python bench/sentinel.py [--n 20000] [--seq 3000] [--rounds 3] [--out results.json]

One server and one sentinel watching it (quorum 1) are started on free loopback ports. Each round runs,
in turn, three ways of reaching that server, from an empty database each time:

* ``plain``: ``redis://`` to the server (the lean connection);
* ``sentinel``: ``redis+sentinel://`` to the sentinel (the lean connection that follows the primary);
* ``sentinel-redispy``: the same URL with the lean path turned off (redis-py's Sentinel pool serves every
  command), which is what a Sentinel URL used before the lean path took it.

Phases, in one process and one event loop (an in-process worker, concurrency 100):

* bulk: N no-op tasks with ``Client.enqueue_many``, 1,000 per call -> tasks/s;
* seq: S tasks enqueued one at a time, each awaited -> tasks/s;
* process: a worker started on the N pending tasks, timed until all ran -> tasks/s.

Prints each round's figures, then the medians per way and their ratios to ``plain``.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis as redis_sync

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.ways import parse_args, report, run_rounds, stop  # noqa: E402
from framework.embedded.binary import find_server_binary  # noqa: E402
from framework.embedded.launch import free_port, spawn  # noqa: E402

WAYS = ("plain", "sentinel", "sentinel-redispy")


def _wait_up(port: int, what: str) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            with redis_sync.Redis(port=port, socket_timeout=1) as r:
                if r.ping():
                    return
        except redis_sync.ConnectionError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not come up") from None
        time.sleep(0.05)


def start(folder: Path) -> tuple[list[Any], int, int]:
    """Start a server and a sentinel watching it; returns (processes, server port, sentinel port)."""
    binary = str(find_server_binary())
    port, sport = free_port(), free_port()
    (folder / "server").mkdir()
    (folder / "sentinel").mkdir()
    server = spawn(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        folder / "server",
        folder / "server" / "log",
    )
    _wait_up(port, "the server")
    conf = folder / "sentinel" / "sentinel.conf"
    conf.write_text(f"port {sport}\nbind 127.0.0.1\ndir {folder / 'sentinel'}\nsentinel monitor m 127.0.0.1 {port} 1\n")
    sentinel = spawn([binary, str(conf), "--sentinel"], folder / "sentinel", folder / "sentinel" / "log")
    _wait_up(sport, "the sentinel")
    return [server, sentinel], port, sport


def main() -> None:
    args = parse_args(__doc__ or "")
    with tempfile.TemporaryDirectory() as tmp:
        procs, port, sport = start(Path(tmp))
        sentinel = f"redis+sentinel://127.0.0.1:{sport}/m"
        urls = {"plain": f"redis://127.0.0.1:{port}", "sentinel": sentinel, "sentinel-redispy": sentinel}
        try:
            rounds = asyncio.run(run_rounds(args, Path(tmp), urls, [port]))
        finally:
            stop(procs)
    report(rounds, WAYS, args.out)


if __name__ == "__main__":
    main()
