"""Module paths of framework 0.1 (one flat folder), still importable while code moves to the packages.

Before 0.2 the core was one folder of modules (``framework.keys``, ``framework.processor``...). Importing an
old path gives the very module object that now lives in its package (no copy, no warning), and an old module
whose name a package now has (``framework.client``, ``framework.worker``...) lends that package its public
names, so ``from framework.client import Client`` keeps working. Type checkers see only the new paths. The
framework's own code and tests import the new paths only (``tests/framework/test_layers.py`` checks).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from importlib.abc import Loader
    from types import ModuleType

__all__ = ("MOVED", "install", "lend_names")

MOVED: dict[str, str] = {
    "framework.options": "framework.client.options",
    "framework.plain_enqueue": "framework.client.prepared",
    "framework.keys": "framework.protocol.keys",
    "framework.message": "framework.protocol.message",
    "framework.scripts": "framework.protocol.scripts",
    "framework.proto": "framework.protocol.proto",
    "framework.proto.gotime": "framework.protocol.proto.gotime",
    "framework.proto.wire": "framework.protocol.proto.wire",
    "framework.connection": "framework.transport.connection",
    "framework.cluster": "framework.transport.cluster",
    "framework.sentinel": "framework.transport.sentinel",
    "framework.health": "framework.transport.health",
    "framework.resp": "framework.transport.lean.connection",
    "framework.resp_client": "framework.transport.lean.client",
    "framework.resp_errors": "framework.transport.lean.errors",
    "framework.resp_pipe": "framework.transport.lean.pipe",
    "framework.subscriber": "framework.transport.lean.subscriber",
    "framework.fastpipeline": "framework.transport.lean.pipeline",
    "framework.fastredis": "framework.transport.lean.fastredis",
    "framework.redis_wire": "framework.transport.lean.wire",
    "framework.broker_base": "framework.broker.base",
    "framework.broker_enqueue": "framework.broker.enqueue",
    "framework.broker_transitions": "framework.broker.transitions",
    "framework.broker_maintenance": "framework.broker.maintenance",
    "framework.processor": "framework.worker.processor",
    "framework.execution": "framework.worker.execution",
    "framework.outcomes": "framework.worker.outcomes",
    "framework.lease": "framework.worker.lease",
    "framework.queues": "framework.worker.queues",
    "framework.middleware": "framework.worker.middleware",
    "framework.threads": "framework.worker.threads",
    "framework.heartbeat": "framework.worker.heartbeat",
    "framework.supervisor": "framework.worker.supervisor",
    "framework.watchdog": "framework.worker.watchdog",
    "framework.forwarder": "framework.worker.background.forwarder",
    "framework.recoverer": "framework.worker.background.recoverer",
    "framework.janitor": "framework.worker.background.janitor",
    "framework.aggregator": "framework.worker.background.aggregator",
    "framework.periodic": "framework.worker.background.periodic",
    "framework.cron": "framework.scheduler.cron",
    "framework.cron_entry": "framework.task",
    "framework.cron_loader": "framework.scheduler.loader",
    "framework.resolved_entry": "framework.scheduler.resolved",
    "framework.scheduler_ticks": "framework.scheduler.ticks",
    "framework.scheduler_records": "framework.scheduler.records",
    "framework.events": "framework.plugins.events",
    "framework.jinja": "framework.plugins.templates",
    "framework.app": "framework.web.app",
    "framework.demo": "framework.web.demo",
    "framework.demo_routes": "framework.web.demo_routes",
    "framework.favicon": "framework.web.favicon",
    "framework.storage_routes": "framework.web.storage_routes",
    "framework.ratelimit": "framework.web.ratelimit",
    "framework.tokens": "framework.web.tokens",
    "framework.valkey_binary": "framework.embedded.binary",
    "framework.valkey_datadir": "framework.embedded.datadir",
    "framework.valkey_errors": "framework.embedded.errors",
    "framework.valkey_launch": "framework.embedded.launch",
    "framework.valkey_probe": "framework.embedded.probe",
    "framework.valkey_process": "framework.embedded.process",
    "framework.scaffold": "framework.cli.scaffold",
    "framework.pytest_plugin": "framework.testing.pytest_plugin",
}
"""Old module path -> the module's path now."""


class _Alias:
    """Loads an old path as the module already imported (or imported now) under its new path."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.spec: importlib.machinery.ModuleSpec | None = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(self.target)
        self.spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__ = self.spec  # the import system set the alias's spec; the module keeps its own


class _MovedFinder:
    """A meta path finder (the protocol, not ``importlib.abc``'s class: that import costs 17 ms per start)."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        new = MOVED.get(fullname)
        return None if new is None else importlib.machinery.ModuleSpec(fullname, cast("Loader", _Alias(new)))


def install() -> None:
    """Make the old paths importable (once per process)."""
    if not any(isinstance(finder, _MovedFinder) for finder in sys.meta_path):
        # first, so an old path inside a moved package (framework.proto.wire) is never loaded a second time
        # from the package's folder under its old name; every other import costs one dict lookup here
        sys.meta_path.insert(0, _MovedFinder())


def lend_names(package: str, module: str, moved: Mapping[str, str] | None = None) -> Callable[[str], Any]:
    """A package's ``__getattr__`` that serves the public names of the old module it replaced.

    ``module`` serves the names in its ``__all__``; ``moved`` names others that left it for another module
    (name -> module), looked up only for those names (a module importing its package's siblings while it
    loads must not import them back through here).
    """

    def __getattr__(name: str) -> Any:  # noqa: N807 - a module __getattr__
        if moved and name in moved:
            return getattr(importlib.import_module(moved[name]), name)
        target = importlib.import_module(module)
        if name.startswith("_") or name not in getattr(target, "__all__", ()):
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(target, name)

    return __getattr__
