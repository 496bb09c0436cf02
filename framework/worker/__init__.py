"""Running tasks: the worker process and its parts.

* :mod:`~framework.worker.worker`: ``Worker``, assembly and lifecycle (start, signals, graceful shutdown).
* :mod:`~framework.worker.processor`: the fetch loop; :mod:`~framework.worker.execution`: one task run under
  its timeout and deadline; :mod:`~framework.worker.outcomes`: writing what happened (done, retry, archive);
  :mod:`~framework.worker.ledger`: the tasks held, and what the heartbeat and watchdog threads may see of them.
* :mod:`~framework.worker.lease`, :mod:`~framework.worker.queues`, :mod:`~framework.worker.middleware`,
  :mod:`~framework.worker.threads`, :mod:`~framework.worker.watchdog`, :mod:`~framework.worker.heartbeat`.
* :mod:`~framework.worker.supervisor`: several worker processes under one parent.
* :mod:`framework.worker.background`: the periodic jobs beside the fetch loop.

May import: everything below it (model, protocol, transport, broker, client, plugins). Never web or cli.
"""

from typing import TYPE_CHECKING

if not TYPE_CHECKING:  # the names of framework 0.1's flat ``framework.worker`` module (see framework._compat)
    from framework._compat import lend_names

    __getattr__ = lend_names(__name__, "framework.worker.worker")
