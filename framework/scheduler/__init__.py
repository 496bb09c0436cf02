"""The cron scheduler: fires each entry once per tick however many replicas run.

* :mod:`~framework.scheduler.scheduler`: ``Scheduler``, the firing loop (no leader: each tick is claimed once).
* :mod:`~framework.scheduler.cron`: cron expressions and next fire times (pure).
* :mod:`~framework.scheduler.loader`: entries from settings
  and plugins; :mod:`~framework.scheduler.resolved`: an entry bound to its task.
* :mod:`~framework.scheduler.ticks`: one tick's enqueue; :mod:`~framework.scheduler.records`: history asynq reads.

May import: the model, :mod:`framework.protocol`, :mod:`framework.transport`, :mod:`framework.broker`,
:mod:`framework.client`.
"""

from typing import TYPE_CHECKING

if not TYPE_CHECKING:  # the names of framework 0.1's flat ``framework.scheduler`` module (see framework._compat)
    from framework._compat import lend_names

    __getattr__ = lend_names(__name__, "framework.scheduler.scheduler")
