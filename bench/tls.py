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

import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis as redis_sync

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.ways import parse_args, report, run_rounds, stop  # noqa: E402
from framework.embedded.launch import free_port, spawn  # noqa: E402
from tests.fixtures.tls import make_certificates  # noqa: E402

WAYS = ("plain", "tls", "tls-redispy")


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


def main() -> None:
    args = parse_args(__doc__ or "")
    with tempfile.TemporaryDirectory() as tmp:
        proc, port, tls_port, ca = start(Path(tmp))
        tls = f"rediss://127.0.0.1:{tls_port}?ssl_ca_certs={ca}"
        urls = {"plain": f"redis://127.0.0.1:{port}", "tls": tls, "tls-redispy": tls}
        try:
            rounds = asyncio.run(run_rounds(args, Path(tmp), urls, [port]))
        finally:
            stop([proc])
    report(rounds, WAYS, args.out)


if __name__ == "__main__":
    main()
