"""The only code that changes task state: one method per Lua script, atomic in Redis.

* :mod:`~framework.broker.broker`: ``RedisBroker``, put together from its sides on shared state
  (:mod:`~framework.broker.base`).
* :mod:`~framework.broker.enqueue`: enqueue, schedule, unique and batch enqueue.
* :mod:`~framework.broker.transitions`: the worker's moves (dequeue, done, retry, archive, requeue, leases).
* :mod:`~framework.broker.maintenance`: forward due tasks, recover expired leases, trim, aggregate.

May import: the top-level task model, :mod:`framework.protocol`, :mod:`framework.transport`.
"""

from typing import TYPE_CHECKING

if not TYPE_CHECKING:  # the names of framework 0.1's flat ``framework.broker`` module (see framework._compat)
    from framework._compat import lend_names

    __getattr__ = lend_names(__name__, "framework.broker.broker")
