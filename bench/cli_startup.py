"""Start-up time of the ``framework`` command: the median wall time of several runs of each command.

    python bench/cli_startup.py [--runs 7] [--redis-url URL] [--json]

Each command runs as a user runs it (``python -m framework ...``, a fresh process, output discarded)
in a scratch folder, so no ``framework.toml`` of the current folder is read. ``--help`` needs no server;
``tasks stats`` needs one: ``--redis-url`` (or ``REDIS_URL``), else it starts the embedded Valkey once
in the scratch folder's data directory (reused by every run, stopped at the end), so the figure is the
command's own start-up and one round of queries, not a server start. One warm-up run of each command
comes first (the page cache, ``.pyc`` files: the runs may write them even where ``PYTHONDONTWRITEBYTECODE``
is set, as an installed framework has them). Where the time goes: ``python -X importtime -m framework
--help``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS: dict[str, tuple[str, ...]] = {
    "framework --help": ("--help",),
    "framework tasks --help": ("tasks", "--help"),
    "framework tasks stats": ("tasks", "stats"),
    "framework plugins": ("plugins",),
}
TARGETS = {"framework --help": 0.3, "framework tasks stats": 0.5}
"""The median each command should stay under, in seconds, on a 2-CPU machine."""


def _time(args: tuple[str, ...], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "framework", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"framework {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return elapsed


def measure(runs: int, redis_url: str | None) -> dict[str, dict[str, float]]:
    """``{command: {median, min, max}}`` in seconds over ``runs`` runs after one warm-up."""
    with tempfile.TemporaryDirectory(prefix="cli-startup-") as scratch:
        cwd = Path(scratch)
        skip = {"REDIS_URL", "PYTHONDONTWRITEBYTECODE"}
        env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEWORK_") and k not in skip}
        env.update(COLUMNS="120", NO_COLOR="1", FRAMEWORK_DATA_DIR=str(cwd / "data"))
        valkey = None
        if redis_url:
            env["REDIS_URL"] = redis_url
        else:
            from framework.embedded.server import EmbeddedValkey

            valkey = EmbeddedValkey(cwd / "data" / "valkey")
            valkey.ensure()
        try:
            out = {}
            for name, args in COMMANDS.items():
                _time(args, cwd, env)
                times = [_time(args, cwd, env) for _ in range(runs)]
                out[name] = {"median": statistics.median(times), "min": min(times), "max": max(times)}
            return out
        finally:
            if valkey is not None:
                valkey.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs of each command (default 7)")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"), help="server for tasks stats")
    parser.add_argument("--json", action="store_true", help="print JSON")
    options = parser.parse_args()
    results = measure(max(1, options.runs), options.redis_url)
    if options.json:
        print(json.dumps(results, indent=2))
        return
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{'command':<24} {'median':>8} {'min':>8} {'max':>8} {'target':>8}   ({options.runs} runs, ", end="")
    print(f"{os.cpu_count()} CPUs, load {load})")
    for name, r in results.items():
        target = f"{TARGETS[name]:.3f}s" if name in TARGETS else "-"
        print(f"{name:<24} {r['median']:>7.3f}s {r['min']:>7.3f}s {r['max']:>7.3f}s {target:>8}")


if __name__ == "__main__":
    main()
