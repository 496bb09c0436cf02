"""The Prometheus endpoint: a custom ``prometheus_client`` collector over an inspector snapshot.

Each scrape reads every queue once through the inspector (counts are O(1) per queue), the live
servers and the task limits, then renders these metrics in the text exposition format:

=======================================  =======  ===================================================
metric                                   type     labels / meaning
=======================================  =======  ===================================================
``framework_queue_tasks``                gauge    ``queue``, ``state``: tasks in each state
``framework_queue_size``                 gauge    ``queue``: tasks in every state
``framework_queue_latency_seconds``      gauge    ``queue``: how long the oldest pending task waits
``framework_queue_paused``               gauge    ``queue``: 1 when paused
``framework_tasks_processed_total``      counter  ``queue``: tasks processed (succeeded or failed)
``framework_tasks_failed_total``         counter  ``queue``: tasks that failed
``framework_servers``                    gauge    live worker processes
``framework_worker_slots``               gauge    ``state`` = ``busy``/``total``: task slots of live servers
``framework_limit_in_use``               gauge    ``limit``: slots held now (over its keys, when keyed)
``framework_limit_waiting``              gauge    ``limit``: tasks it put off that have not started yet
``framework_limit_started_total``        counter  ``limit``: tasks it let start
``framework_limit_delayed_total``        counter  ``limit``: tasks its rate put off
``framework_limit_parked_total``         counter  ``limit``: tasks that waited for one of its slots
=======================================  =======  ===================================================
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from collections.abc import Iterator

    from framework.inspector import Inspector, LimitInfo, QueueInfo, ServerStatus

__all__ = ("QueueCollector", "render_metrics")

_STATES = ("pending", "active", "scheduled", "retry", "archived", "completed", "aggregating")


class QueueCollector:
    """A Prometheus collector over one inspector snapshot (queues, servers and task limits).

    Args:
        queues: every queue's snapshot.
        servers: the live servers.
        limits: the task limits' snapshot (none: no limit metrics).
    """

    def __init__(
        self, queues: list[QueueInfo], servers: list[ServerStatus], limits: list[LimitInfo] | None = None
    ) -> None:
        self.queues = queues
        self.servers = servers
        self.limits = limits or []

    @classmethod
    async def read(cls, inspector: Inspector) -> QueueCollector:
        """Take a snapshot through ``inspector``."""
        return cls(
            await inspector.all_queue_info(memory=False), await inspector.servers(), await inspector.limits(busiest=0)
        )

    def collect(self) -> Iterator[Metric]:
        """Yield the metric families (called by the registry while rendering)."""
        tasks = GaugeMetricFamily("framework_queue_tasks", "Tasks in a queue, by state.", labels=["queue", "state"])
        size = GaugeMetricFamily("framework_queue_size", "Tasks in a queue, in every state.", labels=["queue"])
        latency = GaugeMetricFamily(
            "framework_queue_latency_seconds", "Seconds the oldest pending task has waited.", labels=["queue"]
        )
        paused = GaugeMetricFamily("framework_queue_paused", "1 when the queue is paused.", labels=["queue"])
        processed = CounterMetricFamily(
            "framework_tasks_processed", "Tasks processed (succeeded or failed).", labels=["queue"]
        )
        failed = CounterMetricFamily("framework_tasks_failed", "Tasks that failed.", labels=["queue"])
        for q in self.queues:
            for state in _STATES:
                tasks.add_metric([q.queue, state], getattr(q, state))
            size.add_metric([q.queue], q.size)
            latency.add_metric([q.queue], q.latency or 0.0)
            paused.add_metric([q.queue], 1.0 if q.paused else 0.0)
            processed.add_metric([q.queue], q.processed_total)
            failed.add_metric([q.queue], q.failed_total)
        yield from (tasks, size, latency, paused, processed, failed)
        yield GaugeMetricFamily("framework_servers", "Live worker processes.", value=len(self.servers))
        slots = GaugeMetricFamily("framework_worker_slots", "Task slots of live worker processes.", labels=["state"])
        slots.add_metric(["busy"], sum(len(s.workers) for s in self.servers))
        slots.add_metric(["total"], sum(s.server.concurrency for s in self.servers))
        yield slots
        yield from self._limit_metrics()

    def _limit_metrics(self) -> Iterator[Metric]:
        in_use = GaugeMetricFamily("framework_limit_in_use", "Slots of a task limit held now.", labels=["limit"])
        waiting = GaugeMetricFamily(
            "framework_limit_waiting", "Tasks a limit put off that have not started yet.", labels=["limit"]
        )
        started = CounterMetricFamily("framework_limit_started", "Tasks a limit let start.", labels=["limit"])
        delayed = CounterMetricFamily("framework_limit_delayed", "Tasks a limit's rate put off.", labels=["limit"])
        parked = CounterMetricFamily(
            "framework_limit_parked", "Tasks that waited for one of a limit's slots.", labels=["limit"]
        )
        for lim in self.limits:
            in_use.add_metric([lim.name], lim.in_use)
            waiting.add_metric([lim.name], lim.waiting)
            started.add_metric([lim.name], lim.started)
            delayed.add_metric([lim.name], lim.delayed)
            parked.add_metric([lim.name], lim.parked)
        yield from (in_use, waiting, started, delayed, parked)


async def render_metrics(inspector: Inspector) -> bytes:
    """The metrics in Prometheus' text format, read now through ``inspector``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(await QueueCollector.read(inspector))
    return generate_latest(registry)
