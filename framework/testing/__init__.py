"""Helpers for testing apps and plugins against a real Redis, as Go asynq's ``testbroker`` does for Go.

* :class:`Seeder` (:mod:`~framework.testing.seed`): put tasks into any state (pending, scheduled,
  aggregating, active with a lease, retry, archived, completed) through the real client and broker, and read
  them back.
* :func:`drain` (:mod:`~framework.testing.draining`): run a worker until its queues are empty (or N tasks are
  processed) and get every outcome it wrote.
* :class:`Faults` and :class:`FaultyBroker` (:mod:`~framework.testing.faults`): make chosen broker calls
  fail or slow down, then pass again, under a worker or a client (their ``wrap_broker`` argument).
* :class:`Harness` (:mod:`~framework.testing.harness`): the app and plugins the framework loads for some
  settings: their task types, cron entries and folders, and workers built as ``framework worker`` builds them.
* :mod:`~framework.testing.pytest_plugin`: the ``pytest11`` plugin: a real Valkey per session, a namespace
  per test, and fixtures (``settings``, ``redis``, ``client``, ``seeder``, ``faults``, ...).

Example::

    from framework import Worker
    from framework.testing import drain


    async def test_welcome_mail(settings, client, seeder):
        info = await client.enqueue(send_welcome, Welcome(user_id=7), retention=60)
        result = await drain(Worker(settings, tasks=[send_welcome]))
        assert result.succeeded == [info.id]
        assert (await seeder.get(info.queue, info.id)).result == b"sent"

May import: anything; nothing in the framework imports it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from framework.testing.draining import DrainResult, DrainTimeout, Outcome, TaskRun, drain
    from framework.testing.faults import Faults, FaultyBroker, InjectedFault
    from framework.testing.harness import Harness
    from framework.testing.proxy import BrokerProxy
    from framework.testing.seed import Seeder

__all__ = (
    "BrokerProxy",
    "DrainResult",
    "DrainTimeout",
    "Faults",
    "FaultyBroker",
    "Harness",
    "InjectedFault",
    "Outcome",
    "Seeder",
    "TaskRun",
    "drain",
)

_LAZY = {
    "BrokerProxy": "framework.testing.proxy",
    "DrainResult": "framework.testing.draining",
    "DrainTimeout": "framework.testing.draining",
    "Faults": "framework.testing.faults",
    "FaultyBroker": "framework.testing.faults",
    "Harness": "framework.testing.harness",
    "InjectedFault": "framework.testing.faults",
    "Outcome": "framework.testing.draining",
    "Seeder": "framework.testing.seed",
    "TaskRun": "framework.testing.draining",
    "drain": "framework.testing.draining",
}
"""Where each name lives. Imported on first use: pytest loads the plugin module of this package in every
session, and it should not pay for the worker's imports."""


if not TYPE_CHECKING:

    def __getattr__(name: str) -> Any:
        """Import each helper on first use (see :data:`_LAZY`)."""
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module 'framework.testing' has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value
        return value
