"""The only code that changes task state: one method per Lua script, atomic in Redis.

* :mod:`~framework.broker.broker`: ``RedisBroker``, which holds its parts on their shared state
  (:mod:`~framework.broker.base`) and answers for them, and ``Broker``, the seam the worker's parts are typed
  against.
* :mod:`~framework.broker.enqueue`: enqueue, schedule, unique and batch enqueue.
* :mod:`~framework.broker.transitions`: the worker's moves (dequeue, done, retry, archive, requeue, defer).
* :mod:`~framework.broker.maintenance`: forward due tasks, recover dead workers' tasks and expired leases,
  trim, aggregate.
* :mod:`~framework.broker.liveness`: a worker's own records, written from its heartbeat thread (leases,
  liveness, in-flight sets, asynq's server records).

May import: the top-level task model, :mod:`framework.protocol`, :mod:`framework.transport`.
"""

from typing import TYPE_CHECKING

if not TYPE_CHECKING:  # the names of framework 0.1's flat ``framework.broker`` module (see framework._compat)
    from framework._compat import lend_names

    __getattr__ = lend_names(__name__, "framework.broker.broker")
