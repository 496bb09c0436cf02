"""A worker paused (SIGSTOP) between its dequeue and the start of the task: it must not run it or write for it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from framework.broker.broker import RedisBroker
from framework.clock import SystemClock
from framework.logging import get_logger
from framework.worker.background.recoverer import Recoverer
from tests.framework.worker_app import JOB, ROOT, Job, env_for, stop_process, task_record, wait_until

FAST = {"heartbeat_interval": 0.5, "recoverer_interval": 0.5}

# A worker whose dequeue replies reach its event loop late: what a SIGSTOP (or a VM/GC pause, or a slow
# network reply) does when it lands after dequeue.lua ran in Redis but before the worker started the task.
# The delay only widens that window so the test can hit it; the SIGSTOP itself is real.
_SLOW_REPLY_APP = """
import asyncio, os
from framework.settings import load_settings
from framework.testing.proxy import BrokerProxy
from framework.worker.worker import Worker
from tests.framework.worker_app import JOB

class SlowReply(BrokerProxy):
    async def intercept(self, name, call, args, kwargs):
        result = await call(*args, **kwargs)
        if name == "dequeue" and result:
            await asyncio.sleep(float(os.environ["TEST_REPLY_DELAY"]))
        return result

asyncio.run(Worker(load_settings(), tasks=[JOB], dead_after=2.5, wrap_broker=SlowReply).run())
"""


async def test_a_worker_paused_between_dequeue_and_start_does_not_clobber_the_rerun(
    settings: Any, client: Any, redis: Any, schema: Any, tmp_path: Path
) -> None:
    """Worker A is SIGSTOPped right after its dequeue ran in Redis. It is judged dead, its task is recovered
    and taken by worker B. When A resumes it neither runs the task nor writes its outcome: its lease, counted
    from the dequeue as the one in Redis, is long gone, and B's run is left alone."""
    s = settings.replace(**FAST)
    app = tmp_path / "slow_app.py"
    app.write_text(_SLOW_REPLY_APP)
    log = tmp_path / "a.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, str(app)],
            cwd=ROOT,
            env={**env_for(s, TEST_REPLY_DELAY=3), "PYTHONPATH": str(ROOT)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    qk = schema.queue("default")
    runs_key = f"{s.namespace}:test:runs"
    broker = RedisBroker(redis, schema, SystemClock())
    rec = Recoverer(broker, ["default"], get_logger("test"), dead_after=2.5, max_recoveries=3)
    stopped = False
    try:

        async def alive() -> bool:
            return bool(await redis.zcard(schema.alive))

        await wait_until(alive, timeout=30)
        info = await client.enqueue(JOB, Job())

        async def taken_by_a() -> bool:
            return await redis.lpos(qk.active, info.id) is not None

        await wait_until(taken_by_a, timeout=10, interval=0.005)
        os.kill(proc.pid, signal.SIGSTOP)  # within the reply delay: A has not started the task
        stopped = True
        assert int(await redis.hget(runs_key, info.id) or 0) == 0

        async def recovered() -> bool:
            await rec.recover_dead_workers()
            return (await task_record(redis, schema, "default", info.id)).get("state") == "pending"

        await wait_until(recovered, timeout=20, interval=0.25)
        # worker B (played here) takes the task: it is active and leased to B now
        taken = await broker.dequeue("default", 1, qk.inflight("worker-b"), alone=True)
        assert [t for t, _ in taken] == [info.id]
        os.kill(proc.pid, signal.SIGCONT)
        stopped = False
        await asyncio.sleep(4.0)  # A's reply delay is over (it ran out while stopped); A acts now if it will
        runs_on_a = int(await redis.hget(runs_key, info.id) or 0)
        record = await task_record(redis, schema, "default", info.id)
    finally:
        if stopped:
            os.kill(proc.pid, signal.SIGCONT)
        stop_process(proc)
    # expected: A neither runs the task again nor touches it; B still holds it (active)
    assert (runs_on_a, record.get("state")) == (0, "active")
