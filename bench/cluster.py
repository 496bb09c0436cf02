"""Enqueue and processing on a Redis Cluster against plain TCP to a single server.

    python bench/cluster.py [--n 20000] [--seq 3000] [--rounds 3] [--out results.json]

A single server and a three-primary cluster (the test fixtures' layout: three equal slot ranges) are
started from the embedded Valkey binary on free loopback ports. Each round runs, in turn, three ways,
from empty databases each time:

* ``plain``: ``redis://`` to the single server (the lean connection);
* ``cluster``: ``redis+cluster://`` naming the three primaries (the lean connections, one per primary,
  routed by slot);
* ``cluster-redispy``: the same URL with the lean path turned off (redis-py's Cluster client serves every
  command), which is what a Cluster URL used before the lean path took it.

The phases are those of :mod:`bench.ways` (bulk enqueue, awaited enqueue, an in-process worker of
concurrency 100); the tasks go to the ``default`` queue, whose slot one primary serves. Prints each
round's figures, then the medians per way and their ratios to ``plain``.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.ways import parse_args, report, run_rounds, stop  # noqa: E402
from framework.embedded.binary import find_server_binary  # noqa: E402
from framework.embedded.launch import free_port, spawn  # noqa: E402
from tests.fixtures.cluster import running_cluster  # noqa: E402

WAYS = ("plain", "cluster", "cluster-redispy")


def main() -> None:
    args = parse_args(__doc__ or "")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        port = free_port()
        (folder / "single").mkdir()
        single = spawn(
            [str(find_server_binary()), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            folder / "single",
            folder / "single" / "log",
        )
        try:
            with running_cluster(folder / "cluster") as cluster:
                urls = {"plain": f"redis://127.0.0.1:{port}", "cluster": cluster.url, "cluster-redispy": cluster.url}
                rounds = asyncio.run(run_rounds(args, folder, urls, [port, *cluster.ports]))
        finally:
            stop([single])
    report(rounds, WAYS, args.out)


if __name__ == "__main__":
    main()
