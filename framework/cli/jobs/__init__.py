"""``framework jobs``: inspect and steer the job queues (enqueue, stats, list, show, run, archive, ...).

Every command prints a rich table, or JSON with ``--json`` (for scripts). Bulk commands show their
progress on stderr, and the destructive ones ask first unless ``--yes``. A queue or task that does not
exist exits with status 1; a bad argument with status 2 (click's usage error).

The commands are split by noun: ``enqueue``, ``queues`` (stats, history, pause, unpause,
delete-queue), ``tasks`` (ls, show, retry, archive, delete, cancel), ``bulk`` (run-all, archive-all,
delete-all) and ``servers``.
"""

from __future__ import annotations

from framework.cli.jobs import bulk, enqueue, queues, servers, tasks  # noqa: F401 - they add their commands
from framework.cli.jobs._common import jobs

__all__ = ("jobs",)
