"""``framework tasks``: inspect and steer the task queues (enqueue, stats, list, show, run, archive, ...).

Every command prints a rich table, or JSON with ``--json`` (for scripts). Bulk commands show their
progress on stderr, and the destructive ones ask first unless ``--yes``. A queue or task that does not
exist exits with status 1; a bad argument with status 2 (click's usage error). ``framework jobs``, the
group's old name, runs the same commands.

The commands are split by what they act on: ``enqueue``, ``queues`` (stats, history, pause, unpause,
delete-queue), ``items`` (ls, show, retry, archive, delete, cancel: tasks one at a time), ``bulk``
(run-all, archive-all, delete-all), ``servers`` and ``limits``.
"""

from __future__ import annotations

from framework.cli.tasks import bulk, enqueue, items, limits, queues, servers  # noqa: F401 - they add their commands
from framework.cli.tasks._common import tasks

__all__ = ("tasks",)
