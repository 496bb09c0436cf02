"""The :class:`Inspector`: admin queries and operations on queues, tasks, servers and schedulers."""

from __future__ import annotations

from framework.inspector.actions import ActionsMixin
from framework.inspector.queues import QueuesMixin
from framework.inspector.schedulers import SchedulersMixin
from framework.inspector.servers import ServersMixin
from framework.inspector.tasks import TasksMixin

__all__ = ("Inspector",)


class Inspector(QueuesMixin, TasksMixin, ActionsMixin, ServersMixin, SchedulersMixin):
    """Reads and steers the queues of one namespace; used by the admin plugin and ``framework jobs``.

    Works on data written by Go asynq as well as by this framework. Every read is paged or sampled,
    so it stays cheap on queues of any size; every change to a task is one atomic Lua script.

    Args:
        redis: an asyncio Redis client (bytes replies, as :func:`framework.transport.connection.open_redis` makes).
        schema: the key schema (default: asynq's namespace).
        clock: where "now" comes from (default: the wall clock).

    Example:
        >>> inspector = Inspector(redis, Schema(settings.namespace))
        >>> page = await inspector.list_tasks("default", "retry", page=1, size=20)
    """
