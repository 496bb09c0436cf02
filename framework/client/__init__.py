"""The producer side: :class:`~framework.client.client.Client` and its enqueue options.

* :mod:`~framework.client.client`: ``Client``; :mod:`~framework.client.sync`: ``SyncClient``, for code without
  an event loop.
* :mod:`~framework.client.values`: ``TaskInfo`` (what an enqueue stored), ``TaskCall`` (one task of a batch).
* :mod:`~framework.client.options`: the options a call may give, checked and merged (call, task, settings).
* :mod:`~framework.client.prepared`: the hot enqueue path, a message packed once into ready ``EVALSHA`` pieces;
  :mod:`~framework.client.bulk`: the bulk path of ``enqueue_many``, built from those pieces.
* :mod:`~framework.client.waiting`, :mod:`~framework.client.workflows`: waiting for outcomes, workflows.

May import: the top-level task model, :mod:`framework.protocol`, :mod:`framework.transport`,
:mod:`framework.broker`. Never the worker, scheduler, web or command line.
"""

from typing import TYPE_CHECKING

if not TYPE_CHECKING:  # the names of framework 0.1's flat ``framework.client`` module (see framework._compat)
    from framework._compat import lend_names

    __getattr__ = lend_names(__name__, "framework.client.client", {"SyncClient": "framework.client.sync"})
