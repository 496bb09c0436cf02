"""A worker program with a keyed, capped task type: ``python -m tests.framework.keyed_limit_app``.

Settings come from ``FRAMEWORK_*`` (see :func:`tests.framework.worker_app.env_for`); ``TEST_MAX_RECOVERIES``
sets the worker's ``max_recoveries``. ``keys:per-user`` tasks hold a slot of limit ``per-user`` (2 at once per
user); one with ``crash`` kills its process while it holds the slot.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec

from framework.limits import Limit
from framework.settings import Settings, load_settings
from framework.task import TaskDef
from framework.worker.worker import Worker
from tests.framework.worker_app import ROOT, env_for

__all__ = ("PER_USER", "UserJob", "start_keyed_worker")


class UserJob(msgspec.Struct, frozen=True, kw_only=True):
    """A task of one user: kill the process holding the user's slot, or finish at once."""

    user: str
    crash: bool = False


async def per_user(ctx: Any, job: UserJob) -> None:
    if job.crash:
        os._exit(3)  # dies holding the user's slot


PER_USER = TaskDef(
    "keys:per-user", UserJob, per_user, limit=Limit(concurrency=2, key=lambda p: p.user, name="per-user")
)


def start_keyed_worker(settings: Settings, log: Path, **extra: Any) -> subprocess.Popen[bytes]:
    """Launch this program as a worker process; its output goes to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.framework.keyed_limit_app"],
            cwd=ROOT,
            env=env_for(settings, **extra),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def main() -> None:
    """Run one worker with this task type until SIGTERM."""
    max_recoveries = int(os.environ.get("TEST_MAX_RECOVERIES") or 3)
    asyncio.run(Worker(load_settings(), tasks=[PER_USER], max_recoveries=max_recoveries).run())


if __name__ == "__main__":
    main()
