"""A worker program whose plugin's event hooks end the process: ``python -m tests.framework.plugin_faults_app``.

It serves :data:`tests.framework.worker_app.JOB` (runs recorded in Redis as that module describes) with one
plugin, ``exiting``, whose ``task_succeeded`` calls ``sys.exit`` and whose ``task_retried`` raises
``KeyboardInterrupt``: what a careless third-party plugin may do, and what must not end the worker.
"""

from __future__ import annotations

import asyncio
import sys

from framework.hookspecs import hookimpl
from framework.plugins.manager import get_plugin_manager
from framework.settings import load_settings
from framework.worker.worker import Worker
from tests.framework.worker_app import JOB


class ExitingEvents:
    """Event hooks that raise what ends a process."""

    @hookimpl
    def task_succeeded(self) -> None:
        """Exit, as a plugin calling ``sys.exit`` on a fatal error of its own does."""
        sys.exit(3)

    @hookimpl
    async def task_retried(self) -> None:
        """Raise ``KeyboardInterrupt`` from an awaited implementation."""
        raise KeyboardInterrupt


def main() -> None:
    """Run one worker with the ``exiting`` plugin until SIGTERM/SIGINT."""
    settings = load_settings()
    pm = get_plugin_manager(settings, extra=[("exiting", ExitingEvents())])
    asyncio.run(Worker(settings, tasks=[JOB], plugin_manager=pm).run())


if __name__ == "__main__":
    main()
