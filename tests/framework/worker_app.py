"""A tiny worker program for the process tests: ``python -m tests.framework.worker_app``.

Settings come from the environment (``FRAMEWORK_*``, see :func:`env_for`). What a task does is chosen
by its payload (:class:`Job`). Each run is recorded in Redis under ``<namespace>:test:`` so the tests can
see runs, the pid that ran a task, and completions, whatever process ran them:

* ``runs`` HASH task id -> number of runs started;
* ``pid`` HASH task id -> pid of the last process that started it;
* ``done`` LIST ids of runs that completed (a task that ran twice to completion appears twice);
* ``live`` HASH task id -> runs of it going on now; ``overlap`` HASH task id -> runs that started while
  another run of the same task was still going on (what a worker must never do in one process).

``TEST_DEAD_AFTER`` and ``TEST_MAX_RECOVERIES`` set the worker's ``dead_after``/``max_recoveries``.
Also usable as a supervisor factory: ``tests.framework.worker_app:make_worker``, and as an app module
(``FRAMEWORK_APP=tests.framework.worker_app``): ``framework worker`` then serves the same task types.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import redis as redis_sync

from framework.hookspecs import hookimpl
from framework.protocol.message import decode_message
from framework.settings import Settings, load_settings
from framework.task import TaskDef
from framework.worker.worker import Worker

ROOT = Path(__file__).resolve().parents[2]


class Job(msgspec.Struct, frozen=True, kw_only=True):
    """What a test task does.

    Attributes:
        sleep: seconds to sleep (async sleep, or time.sleep in the sync variant).
        crash: kill the process (``os._exit(3)``) on every run.
        crash_runs: kill the process on the first N runs only.
        fail: raise ``RuntimeError(fail)``.
        fail_runs: raise only on the first N runs (0 = on every run).
        block: seconds to block the event loop (``time.sleep`` in the async handler: a slow worker).
        linger: seconds the async handler runs, swallowing every cancellation (a handler that ignores
            its timeout and the shutdown).
        slow_runs: sleep, block and linger on the first N runs only (0 = on every run).
    """

    sleep: float = 0.0
    crash: bool = False
    crash_runs: int = 0
    fail: str = ""
    fail_runs: int = 0
    block: float = 0.0
    linger: float = 0.0
    slow_runs: int = 0


def _keys(ns: str) -> tuple[str, str, str]:
    return f"{ns}:test:runs", f"{ns}:test:pid", f"{ns}:test:done"


def _live_keys(ns: str) -> tuple[str, str]:
    return f"{ns}:test:live", f"{ns}:test:overlap"


async def _linger(seconds: float) -> None:
    """Run for ``seconds``, whatever cancellation comes (what a handler must not do)."""
    until = time.monotonic() + seconds
    while (left := until - time.monotonic()) > 0:
        try:
            await asyncio.sleep(left)
        except asyncio.CancelledError:
            continue


async def handle(ctx: Any, job: Job) -> None:
    """The async variant: record, then behave as the payload says."""
    r = ctx.services.redis
    runs_key, pid_key, done_key = _keys(ctx.services.settings.namespace)
    live_key, overlap_key = _live_keys(ctx.services.settings.namespace)
    async with r.pipeline(transaction=False) as pipe:
        pipe.hincrby(runs_key, ctx.id, 1)
        pipe.hset(pid_key, ctx.id, os.getpid())
        pipe.hincrby(live_key, ctx.id, 1)
        runs, _, live = await pipe.execute()
    if live > 1:
        await r.hincrby(overlap_key, ctx.id, 1)
    try:
        if job.crash or runs <= job.crash_runs:
            os._exit(3)
        slow = not job.slow_runs or runs <= job.slow_runs
        if job.block and slow:
            time.sleep(job.block)  # blocks the whole event loop, as a CPU-bound handler would
        if job.linger and slow:
            await _linger(job.linger)
        if job.sleep and slow:
            await asyncio.sleep(job.sleep)
        if job.fail and (not job.fail_runs or runs <= job.fail_runs):
            raise RuntimeError(job.fail)
        await r.rpush(done_key, ctx.id)
    finally:
        await asyncio.shield(r.hincrby(live_key, ctx.id, -1))


_sync_clients: dict[str, redis_sync.Redis] = {}


def handle_sync(ctx: Any, job: Job) -> None:
    """The sync variant (runs in a thread): same records through a blocking client."""
    settings = ctx.services.settings
    r = _sync_clients.get(settings.redis_url)
    if r is None:
        r = _sync_clients[settings.redis_url] = redis_sync.Redis.from_url(settings.redis_url)
    runs_key, pid_key, done_key = _keys(settings.namespace)
    live_key, overlap_key = _live_keys(settings.namespace)
    runs = r.hincrby(runs_key, ctx.id, 1)
    r.hset(pid_key, ctx.id, os.getpid())
    if int(r.hincrby(live_key, ctx.id, 1)) > 1:  # type: ignore[arg-type]
        r.hincrby(overlap_key, ctx.id, 1)
    try:
        if job.crash or int(runs) <= job.crash_runs:  # type: ignore[arg-type]
            os._exit(3)
        if job.sleep and (not job.slow_runs or int(runs) <= job.slow_runs):  # type: ignore[arg-type]
            time.sleep(job.sleep)
        if job.fail and (not job.fail_runs or int(runs) <= job.fail_runs):  # type: ignore[arg-type]
            raise RuntimeError(job.fail)
        r.rpush(done_key, ctx.id)
    finally:
        r.hincrby(live_key, ctx.id, -1)


def _fast_retry(retried: int, error: BaseException) -> float:
    return 0.5


JOB = TaskDef("test:job", Job, handle, max_retry=5, retry_delay=_fast_retry)
SYNC_JOB = TaskDef("test:sync", Job, handle_sync, max_retry=5, retry_delay=_fast_retry)


@hookimpl
def register_task_types(settings: Settings) -> list[TaskDef[Any]]:
    """The task types, for ``framework worker`` with this module as the app."""
    return [JOB, SYNC_JOB]


def make_worker(settings: Settings) -> Worker:
    """The worker of this program (also a supervisor factory)."""
    dead_after = float(os.environ.get("TEST_DEAD_AFTER") or 0) or None
    max_recoveries = int(os.environ.get("TEST_MAX_RECOVERIES") or 3)
    return Worker(settings, tasks=[JOB, SYNC_JOB], dead_after=dead_after, max_recoveries=max_recoveries)


# -- helpers for the tests that launch this program ----------------------------------------------


def env_for(settings: Settings, **extra: Any) -> dict[str, str]:
    """The environment that makes ``load_settings()`` in a child give ``settings`` (plus ``extra`` vars)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEWORK_")}
    defaults = msgspec.to_builtins(Settings())
    for name, value in msgspec.to_builtins(settings).items():
        if value == defaults.get(name):
            continue
        key = "FRAMEWORK_" + name.upper()
        env[key] = json.dumps(value) if isinstance(value, dict | list | bool) else str(value)
    env["FRAMEWORK_LOAD_PLUGINS"] = ""
    env["PYTHONUNBUFFERED"] = "1"
    env.update({k: str(v) for k, v in extra.items()})
    return env


def start_worker(settings: Settings, log: Path, **extra: Any) -> subprocess.Popen[bytes]:
    """Launch this program as a worker process; its output goes to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.framework.worker_app"],
            cwd=ROOT,
            env=env_for(settings, **extra),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def start_supervisor(
    settings: Settings, processes: int, log: Path, *, scheduler: bool = False, **extra: Any
) -> subprocess.Popen[bytes]:
    """Launch ``python -m framework.worker.supervisor`` with this program's workers."""
    args = ["--processes", str(processes), "--factory", "tests.framework.worker_app:make_worker"]
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "framework.worker.supervisor", *args, *(["--scheduler"] if scheduler else [])],
            cwd=ROOT,
            env=env_for(settings, **extra),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> int:
    """SIGTERM ``proc`` (if running) and wait; SIGKILL it after ``timeout``. Returns its status."""
    if proc.poll() is None:
        proc.terminate()
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


async def wait_until(predicate: Callable[[], Awaitable[bool]], timeout: float = 15.0, interval: float = 0.02) -> float:
    """Poll ``predicate`` until it is true; returns the seconds it took. Fails the test after ``timeout``."""
    start = time.monotonic()
    while not await predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not reached within {timeout} s")
        await asyncio.sleep(interval)
    return time.monotonic() - start


async def task_record(redis: Any, schema: Any, queue: str, task_id: str) -> dict[str, Any]:
    """A task's hash, with ``msg`` decoded (``{}`` when the task does not exist)."""
    raw = await redis.hgetall(schema.queue(queue).task(task_id))
    out: dict[str, Any] = {k.decode(): v for k, v in raw.items()}
    if "msg" in out:
        out["msg"] = decode_message(out["msg"])
    if "state" in out:
        out["state"] = out["state"].decode()
    return out


def main() -> None:
    """Run one worker until SIGTERM/SIGINT."""
    asyncio.run(make_worker(load_settings()).run())


if __name__ == "__main__":
    main()


async def require_password(server_url: str, password: str) -> str:
    """Make a test server ask for ``password``; returns ``redis://:<password>@host:port`` (no database)."""
    from redis.asyncio import Redis

    admin = Redis.from_url(server_url)
    try:
        await admin.config_set("requirepass", password)
    finally:
        await admin.aclose()
    host_port = server_url.removeprefix("redis://").split("/")[0]
    return f"redis://:{password}@{host_port}"
