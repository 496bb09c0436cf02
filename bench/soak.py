"""Memory soak of one worker process: many short tasks of every outcome, and its RSS as it goes.

    python bench/soak.py [--redis-url URL] [--n 100000] [--concurrency 100]

N tasks are enqueued up front (``enqueue_many``, 1,000 per call) into one queue, in this mix: 82 % succeed,
6 % fail their first attempt and succeed on the retry (retried at once), 4 % sleep past their 1 s timeout
(one retry, then archived), 4 % are of a type no worker registers (archived at once:
``unknown_type_wait=0``) and 4 % carry a payload that does not decode (archived at once). Then ONE
``framework worker`` process runs them (``bench.soak_app``) and its RSS (``VmRSS`` of ``/proc/<pid>/status``)
is read when 10 %, 50 % and 100 % of the tasks have left the queue (pending, scheduled, retry and active all
empty at 100 %). A worker that keeps something per task would show it as RSS growing between 10 % and 100 %.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import Bench, open_server  # noqa: E402
from bench.soak_app import Job, job  # noqa: E402
from framework.client.client import Client, TaskCall  # noqa: E402
from framework.protocol.keys import Schema  # noqa: E402
from framework.protocol.message import decode_message  # noqa: E402
from framework.transport.connection import open_redis  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--redis-url", default="")
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--concurrency", type=int, default=100)
    return p.parse_args()


def calls(n: int) -> list[TaskCall]:
    """The mix of the module docstring, interleaved so every stretch of the run sees every outcome."""
    out: list[TaskCall] = []
    for i in range(n):
        kind = i % 50
        if kind < 2:
            out.append(TaskCall(job, Job(sleep=3.0), {"timeout": 1}))
        elif kind < 4:
            out.append(TaskCall("soak:unknown", b"{}"))
        elif kind < 6:
            out.append(TaskCall("soak:job", b"not json"))
        elif kind < 9:
            out.append(TaskCall(job, Job(fail=True)))
        else:
            out.append(TaskCall(job, Job()))
    return out


async def enqueue(url: str, n: int) -> None:
    redis = open_redis(url)
    client = Client(redis)
    try:
        todo = calls(n)
        for start in range(0, n, 1000):
            for info in await client.enqueue_many(todo[start : start + 1000]):
                if isinstance(info, Exception):
                    raise info
    finally:
        await client.close()


def left(bench: Bench) -> int:
    """Tasks not finished yet: pending, scheduled, retry and active."""
    qk = Schema().queue("default")
    pipe = bench.ctl.pipeline(transaction=False)
    pipe.llen(qk.pending)
    pipe.zcard(qk.scheduled)
    pipe.zcard(qk.retry)
    pipe.llen(qk.active)
    return sum(int(x) for x in pipe.execute())


def archived(bench: Bench) -> dict[str, int]:
    """The archived tasks (asynq keeps the newest 10,000) by the first word of their error."""
    qk = Schema().queue("default")
    counts: Counter[str] = Counter()
    ids: list[bytes] = bench.ctl.zrange(qk.archived, 0, -1)  # type: ignore[assignment]
    for task_id in ids:
        raw: bytes | None = bench.ctl.hget(qk.task(task_id.decode()), "msg")  # type: ignore[assignment]
        counts[decode_message(raw).error_msg.split(":")[0] if raw else "?"] += 1
    return dict(counts)


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        server, url = open_server(argparse.Namespace(redis_url=args.redis_url), work)
        try:
            bench = Bench(argparse.Namespace(queues="default=1", processes=1, concurrency=args.concurrency), url)
            bench.app = "bench.soak_app"
            bench.ctl.flushall()
            t0 = time.perf_counter()
            asyncio.run(enqueue(url, args.n))
            enqueued = time.perf_counter() - t0
            os.environ["FRAMEWORK_UNKNOWN_TYPE_WAIT"] = "0"
            log = Path(os.environ.get("SOAK_LOG", str(work / "worker.log")))  # SOAK_LOG: keep the worker's log
            worker = bench.start_worker(log)
            marks = [10, 50, 100]  # % of the tasks that left the queue
            rss: dict[str, float] = {}
            started = time.perf_counter()
            try:
                while marks:
                    remaining = left(bench)
                    done = 100.0 * (args.n - remaining) / args.n
                    for mark in [m for m in marks if done >= m]:
                        marks.remove(mark)
                        rss[f"{mark}%"] = mb = round(bench.rss_mb(worker.pid), 1)
                        print(f"{mark}% after {time.perf_counter() - started:.1f} s: RSS {mb} MB", flush=True)
                    if worker.poll() is not None:
                        tail = log.read_text()[-3000:]
                        raise SystemExit(f"the worker ended with status {worker.returncode}:\n{tail}")
                    time.sleep(0.2)
            finally:
                Bench.stop_worker(worker)
            result = {
                "tasks": args.n,
                "enqueue_s": round(enqueued, 1),
                "run_s": round(time.perf_counter() - started, 1),
                "rss_mb": rss,
                "archived": archived(bench),
            }
            print(json.dumps(result, indent=2))
        finally:
            if server is not None:
                server.stop()


if __name__ == "__main__":
    main()
