"""A blocking client for code without an event loop: :class:`SyncClient`.

It runs a :class:`~framework.client.client.Client` on a private event loop in a background thread, except
for the plain enqueue (a task type with its defaults), which the calling thread sends itself over a
blocking socket of its own.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any, Unpack

from framework.client.client import Client
from framework.errors import FrameworkError, RedisUnavailable
from framework.task import EnqueueOptions, TaskDef
from framework.transport.lean.blocking import ClusterThreadConnections, Forks, ThreadConnections
from framework.transport.lean.cluster import ClusterRespClient
from framework.transport.lean.errors import REDIRECTIONS

if TYPE_CHECKING:
    from collections.abc import Coroutine, Iterable

    from framework.client.values import TaskCall, TaskInfo
    from framework.client.workflows import WorkflowInfo
    from framework.workflow import Workflow

__all__ = ("SyncClient",)


class SyncClient:
    """A blocking client for code without an event loop; runs a :class:`Client` on a private loop.

    The plain enqueue (a :class:`TaskDef` with its default options, once its queue is registered) does not
    go through that loop: the calling thread sends the prepared command itself over a blocking socket of
    its own (one per thread, made on first use; on a Cluster one per thread and primary, the primary found
    in the loop's slot map), which saves the hop to the loop's thread and back. Every method may be called
    from several threads at once.

    A client made before a ``fork`` (a web server that preloads the app, then forks its workers) works in
    the child too: the child has none of the parent's threads, so its first call makes it a loop thread, a
    :class:`Client` and blocking connections of its own. The parent's connections are left alone (the
    child's writes on them would interleave with the parent's); the loop's are kept unused.

    Args:
        url: the Redis URL.
        **kwargs: passed to :class:`Client` (schema, settings, registry, clock).
    """

    def __init__(self, url: str, **kwargs: Any) -> None:
        self._url = url
        self._kwargs = kwargs
        self._inherited: tuple[Any, ...] = ()
        self._closed = False
        self._start()

    def _start(self) -> None:
        """Start the loop's thread and make the client and the blocking connections, for this process."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="framework-sync-client", daemon=True)
        self._thread.start()
        self._client: Client = self._run(self._make(self._url, self._kwargs))
        lean = self._client.broker.lean
        self._blocking: ThreadConnections | ClusterThreadConnections | None = None
        if isinstance(lean, ClusterRespClient):
            self._blocking = ClusterThreadConnections(lean)
        elif lean is not None:
            self._blocking = ThreadConnections(lean.address, **lean.options)
        self._forks = Forks.count  # last: another thread of this process that sees it sees the rest

    @property
    def _current(self) -> Client:
        """The client, made again first in a forked child (whose first call finds the parent's).

        Raises:
            FrameworkError: this client was closed.
        """
        if self._closed:
            raise FrameworkError(f"this SyncClient of {self._client._url} was closed: make a new one")
        if self._forks != Forks.count:
            self._rebuild()
        return self._client

    def _rebuild(self) -> None:
        """In a forked child: a loop thread, a client and blocking connections of its own.

        The parent's loop and client are kept, unused: their sockets are the parent's too, and closing or
        collecting them here could unregister them from the epoll instance the parent shares with this
        process. The parent's blocking connections are let go: collecting them only closes this process's
        copies of their sockets.
        """
        with Forks.lock:
            if self._forks == Forks.count:
                return  # another thread of this child rebuilt it
            self._inherited = (self._loop, self._thread, self._client, self._inherited)
            self._blocking = None
            self._start()

    @staticmethod
    async def _make(url: str, kwargs: dict[str, Any]) -> Client:
        return Client.from_url(url, **kwargs)

    def _run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def enqueue(self, task: TaskDef[Any] | str, payload: Any = None, **options: Unpack[EnqueueOptions]) -> TaskInfo:
        """Enqueue one task; same arguments and errors as :meth:`Client.enqueue`."""
        client = self._current
        blocking = self._blocking
        if not options and blocking is not None and isinstance(task, TaskDef):
            plain = client._plain_for(task)
            if plain is not None and plain.opts.queue in client.broker._known_queues:
                conn = blocking.get_for(plain.route)
                if conn is not None:
                    try:
                        return client._enqueue_blocking(plain, payload, conn)
                    except REDIRECTIONS:
                        blocking.forget()  # a Cluster redirected it (it did not run): through the loop
                    except RedisUnavailable:  # the client forgot a Cluster's slot map already
                        blocking.failed(conn)
                        raise
        result: TaskInfo = self._run(client.enqueue(task, payload, **options))
        return result

    def enqueue_many(self, tasks: Iterable[TaskCall]) -> list[TaskInfo | FrameworkError]:
        """Enqueue many tasks in one round trip; see :meth:`Client.enqueue_many`."""
        result: list[TaskInfo | FrameworkError] = self._run(self._current.enqueue_many(list(tasks)))
        return result

    def wait(
        self,
        task: TaskInfo | str,
        *,
        queue: str = "default",
        timeout: float | None = None,
        taskdef: TaskDef[Any] | None = None,
    ) -> Any:
        """Wait for a task's result; same arguments, guarantees and errors as :meth:`Client.wait`."""
        return self._run(self._current.wait(task, queue=queue, timeout=timeout, taskdef=taskdef))

    def apply(
        self,
        task: TaskDef[Any] | str,
        payload: Any = None,
        *,
        wait_timeout: float | None = None,
        **options: Unpack[EnqueueOptions],
    ) -> Any:
        """Enqueue a task and wait for its result; see :meth:`Client.apply`."""
        return self._run(self._current.apply(task, payload, wait_timeout=wait_timeout, **options))

    def start_workflow(self, workflow: Workflow, **options: Any) -> WorkflowInfo:
        """See :meth:`Client.start_workflow`."""
        info: WorkflowInfo = self._run(self._current.start_workflow(workflow, **options))
        return info

    def wait_workflow(
        self, workflow: WorkflowInfo | str, *, queue: str = "default", timeout: float | None = None
    ) -> Any:
        """See :meth:`Client.wait_workflow`."""
        return self._run(self._current.wait_workflow(workflow, queue=queue, timeout=timeout))

    def run_workflow(self, workflow: Workflow, *, wait_timeout: float | None = None, **start: Any) -> Any:
        """See :meth:`Client.run_workflow`."""
        return self._run(self._current.run_workflow(workflow, wait_timeout=wait_timeout, **start))

    def cancel_workflow(self, workflow: WorkflowInfo | str, *, queue: str = "default") -> str:
        """See :meth:`Client.cancel_workflow`."""
        status: str = self._run(self._current.cancel_workflow(workflow, queue=queue))
        return status

    def cancel(self, task: TaskInfo | str, *, queue: str = "default") -> str:
        """Cancel a task; see :meth:`Client.cancel`."""
        result: str = self._run(self._current.cancel(task, queue=queue))
        return result

    def close(self) -> None:
        """Close the connection pool and the threads' connections, and stop the background loop.

        In a forked child that never used this client, nothing of its own is open: the parent's are left alone.
        Closing twice does nothing more; any later call raises :class:`~framework.errors.FrameworkError`.
        """
        if self._closed:
            return
        self._closed = True
        if self._forks != Forks.count:
            self._blocking = None
            return
        if self._blocking is not None:
            self._blocking.close()
        self._run(self._client.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
