"""Waiting for tasks' outcomes: one Pub/Sub connection and one slow poll per client, shared by every waiter.

A waiter first subscribes to the task's outcome channel and sets its waiting marker
(:meth:`~framework.protocol.keys.QueueKeys.outcome_channel`, :meth:`~framework.protocol.keys.QueueKeys.waiting`),
then reads the task's state once, then waits. The scripts that write a final outcome (``done.lua``,
``mark_complete.lua``, ``archive.lua``, ``cancel.lua``) publish it while the marker exists, so a waiter on a
task our workers run costs no command while it waits. So do the scripts that delete a task before it ran:
the inspector's ``delete_task.lua`` and ``delete_all.lua`` (``deleted``; ``deleted`` and ``queue`` when the
queue is being removed) and the aggregator's ``delete_aggregation_set.lua`` (``aggregated`` and the
aggregate task's id), so such a task is never taken for a success.

A task finished by a Go worker is announced by nobody: the slow poll looks at all the tasks waited for with
three commands per queue (``ZMSCORE`` of the completed and archived sets, one ``EXISTS`` of every record),
whatever the number of waiters, and reads a record only when it finished. It runs ``poll_interval`` seconds
after a waiter starts, then backs off (doubling, up to :data:`POLL_BACKOFF` times the interval) while no new
waiter comes: a task a Go worker finishes is seen within seconds, and waiters that wait long cost a few
commands a minute. A record the poll finds gone is an outcome (``gone``) only once the listener has read
every announcement published before (a ``PING`` on its connection, answered in order): an announced
outcome always wins over the vanished record. ``gone`` is what a Go worker's success without retention
leaves, and also what Go's tools leave when they delete a task or aggregate a group (they announce nothing):
the two cannot be told apart, and ``gone`` is taken for a success without a result.

Not for a Redis Cluster (redis-py's asyncio Cluster client has no Pub/Sub).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from framework.errors import FrameworkError

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.client import PubSub

    from framework.protocol.keys import Schema

__all__ = ("DRAIN_TIMEOUT", "MARKER_SLACK", "POLL_BACKOFF", "Outcome", "Waiters")

DRAIN_TIMEOUT = 10.0
"""Seconds the slow poll waits for the listener to read what was published before it found a record gone."""

POLL_BACKOFF = 16
"""The slow poll's longest pause, in poll intervals (16 s by default), reached by doubling while no waiter starts."""

MARKER_SLACK = 60
"""Seconds a waiting marker outlives its waiter's timeout (a waiter without a timeout keeps one for a day)."""
_FOREVER = 24 * 3600
_LONGEST = 365 * 24 * 3600
"""The longest a marker is set for (a longer timeout would be refused by Redis; the slow poll covers the rest)."""
_FINAL = frozenset({"completed", "archived"})
_TOKENS = itertools.count()


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a task ended, as a waiter learns it.

    Attributes:
        kind: ``done`` (succeeded, record deleted), ``completed`` (succeeded, kept), ``archived``, ``cancelled``
            (deleted by ``Client.cancel`` before it ran), ``deleted`` (deleted by the inspector before it ran),
            ``aggregated`` (merged into an aggregate task) or ``gone`` (its record vanished unannounced: done
            by a worker that announces nothing, without retention, or deleted or aggregated by Go's tools).
        result: the result bytes, when there is one.
        msg: the encoded TaskMessage, for ``completed`` and ``archived``.
        detail: for ``deleted``, ``queue`` when it was deleted with its queue (else ""); for ``aggregated``,
            the aggregate task's id.
    """

    kind: str
    result: bytes | None = None
    msg: bytes | None = None
    detail: str = ""


@dataclass(slots=True, eq=False)
class _Watch:
    queue: str
    task_id: str
    channel: str
    future: asyncio.Future[Outcome]
    users: int = 0
    ready: bool = False
    """The task exists (it was enqueued, or found): from then on a vanished record is an outcome."""
    subscribed: asyncio.Future[None] | None = field(default=None)
    sent: bool = False


class Waiters:
    """The outcome channels a client listens to, and the slow poll; see the module docstring.

    Args:
        redis: the client's asyncio Redis client.
        schema: the key schema.
        poll_interval: seconds between slow polls for tasks nobody announces (None: no poll).
    """

    def __init__(self, redis: Redis, schema: Schema, poll_interval: float | None = 1.0) -> None:
        self.redis = redis
        self.schema = schema
        self.poll_interval = poll_interval
        self._watches: dict[str, _Watch] = {}
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None
        self._checks: set[asyncio.Task[None]] = set()
        self._requests: list[tuple[_Watch, str, int, asyncio.Future[None]]] = []
        self._lock = asyncio.Lock()
        self._pause = poll_interval or 0.0
        """The slow poll's current pause: ``poll_interval``, doubled after each poll while no waiter starts."""
        self._wake: asyncio.Event | None = None
        self._pongs: dict[str, asyncio.Future[None]] = {}
        """The listener's pending ``PING`` tokens (:meth:`_drain`), resolved when their answers are read."""

    # -- watching ------------------------------------------------------------------------------------

    async def watch(self, queue: str, task_id: str, timeout: float | None) -> _Watch:
        """Listen for ``task_id``'s outcome: subscribed (confirmed) and marked before this returns.

        The subscriptions and markers asked for in one event-loop iteration are sent together (one
        ``SUBSCRIBE`` of every new channel, one pipeline of markers), so many waiters starting at once cost
        a few round trips and no extra connections.
        """
        qk = self.schema.queue(queue)
        channel = qk.outcome_channel(task_id)
        ttl = _FOREVER if timeout is None else int(min(timeout, _LONGEST)) + MARKER_SLACK
        loop = asyncio.get_running_loop()
        watch = self._watches.get(channel)
        if watch is None:
            watch = self._watches[channel] = _Watch(queue, task_id, channel, loop.create_future())
            watch.subscribed = loop.create_future()
        watch.users += 1
        marked: asyncio.Future[None] = loop.create_future()
        self._requests.append((watch, qk.waiting(task_id), ttl, marked))
        if len(self._requests) == 1:
            loop.call_soon(self._spawn, self._flush())
        try:
            await asyncio.shield(marked)
            assert watch.subscribed is not None
            await asyncio.shield(watch.subscribed)
        except BaseException:
            self.release(watch)
            raise
        if self._wake is not None and self.poll_interval is not None and self._pause > self.poll_interval:
            self._wake.set()  # the poll was backing off: look at this task poll_interval from now
        self._start_poller()
        return watch

    async def _flush(self) -> None:
        """Send the subscriptions and markers asked for so far (see :meth:`watch`)."""
        requests, self._requests = self._requests, []
        try:
            async with self._lock:
                channels = [w.channel for w, _, _, _ in requests if w.subscribed is not None and not w.sent]
                for watch, _, _, _ in requests:
                    watch.sent = True
                if channels:
                    await self._subscribe(list(dict.fromkeys(channels)))
                flags: dict[str, int] = {}
                for watch, _, ttl, _ in requests:
                    flag = self.schema.queue(watch.queue).waited()
                    flags[flag] = max(ttl, flags.get(flag, 0))
                async with self.redis.pipeline(transaction=False) as pipe:
                    for _, marker, ttl, _ in requests:
                        pipe.set(marker, 1, ex=ttl, nx=True)
                        pipe.expire(marker, ttl, gt=True)
                    for flag, ttl in flags.items():  # the queue's flag outlives each of its markers
                        pipe.set(flag, 1, ex=ttl, nx=True)
                        pipe.expire(flag, ttl, gt=True)
                    await pipe.execute()
        except Exception as exc:  # noqa: BLE001 - handed to each waiter
            for watch, _, _, marked in requests:
                if not marked.done():
                    marked.set_exception(exc)
                if watch.subscribed is not None and not watch.subscribed.done():
                    watch.subscribed.set_exception(exc)
                    watch.subscribed.exception()  # retrieved: the waiter raises ``marked``'s; asyncio would log it
            return
        for _, _, _, marked in requests:
            if not marked.done():
                marked.set_result(None)

    def release(self, watch: _Watch) -> None:
        """One waiter is done with ``watch``; the last one unsubscribes (the marker expires or a script takes it)."""
        watch.users -= 1
        if watch.users > 0 or self._watches.get(watch.channel) is not watch:
            return
        del self._watches[watch.channel]
        if self._pubsub is not None and watch.subscribed is not None and watch.subscribed.done():
            self._spawn(self._unsubscribe(watch.channel))

    async def check(self, watch: _Watch, *, missing_is_outcome: bool, announced: str = "") -> bool:
        """Read the task's state once; settle ``watch`` when it is final. Returns whether the record exists.

        ``missing_is_outcome``: a missing record settles it as ``gone`` (else the caller decides), or as
        ``archived`` (with no message) when that was ``announced``: an archived task whose record was deleted
        (or trimmed from the archive) before it was read failed all the same.
        """
        qk = self.schema.queue(watch.queue)
        state, msg, result = await self.redis.hmget(qk.task(watch.task_id), ["state", "msg", "result"])
        if state is None:
            if missing_is_outcome:
                _settle(watch, Outcome("archived" if announced == "archived" else "gone"))
            return False
        kind = state.decode("utf-8", "replace") if isinstance(state, bytes) else str(state)
        if kind in _FINAL:
            _settle(watch, Outcome(kind, result=_bytes(result), msg=_bytes(msg)))
        return True

    # -- Pub/Sub -------------------------------------------------------------------------------------

    async def _subscribe(self, channels: list[str]) -> None:
        if self._pubsub is None:
            if not hasattr(self.redis, "pubsub"):
                raise FrameworkError("waiting for a task needs Pub/Sub, which this Redis client lacks (Cluster)")
            self._pubsub = self.redis.pubsub()
        await self._pubsub.subscribe(*channels)
        if self._reader is None or self._reader.done():
            self._reader = asyncio.ensure_future(self._read())

    async def _unsubscribe(self, channel: str) -> None:
        async with self._lock:
            if self._pubsub is not None and channel not in self._watches:
                await self._pubsub.unsubscribe(channel)

    async def _read(self) -> None:
        pubsub = self._pubsub
        assert pubsub is not None
        while True:
            message = await pubsub.get_message(timeout=1.0)
            if message is None:
                continue
            if message["type"] == "pong":
                self._ponged(message["data"])
                continue
            channel = message["channel"]
            channel = channel.decode() if isinstance(channel, bytes) else channel
            watch = self._watches.get(channel)
            if watch is None:
                if message["type"] == "subscribe":  # its waiters left before the confirmation came
                    self._spawn(self._unsubscribe(channel))
                continue
            if message["type"] == "subscribe":
                if watch.subscribed is not None and not watch.subscribed.done():
                    watch.subscribed.set_result(None)
            elif message["type"] == "message":
                self._announced(watch, message["data"])

    def _announced(self, watch: _Watch, data: bytes) -> None:
        kind, sep, result = data.partition(b"\n")
        name = kind.decode()
        if name == "done":
            _settle(watch, Outcome("done", result=result if sep else None))
        elif name in ("cancelled", "deleted", "aggregated"):
            _settle(watch, Outcome(name, detail=result.decode("utf-8", "replace")))
        else:  # completed, archived: the rest is in the record
            self._spawn(self._check_quietly(watch, name))

    def _ponged(self, data: bytes | str | None) -> None:
        token = data.decode("utf-8", "replace") if isinstance(data, bytes) else (data or "")
        future = self._pongs.pop(token, None)
        if future is not None and not future.done():
            future.set_result(None)

    async def _drain(self) -> None:
        """Return once the listener has read every message published before this call.

        Redis answers a ``PING`` on the Pub/Sub connection after the messages it already sent there, so a task's
        announcement, published by the same script that deleted its record, is read before the answer.

        Raises:
            TimeoutError: no answer within :data:`DRAIN_TIMEOUT` seconds (the link is in trouble).
        """
        if self._pubsub is None or self._reader is None or self._reader.done():
            return
        token = f"drain-{next(_TOKENS)}"
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pongs[token] = future
        try:
            async with self._lock:
                await self._pubsub.ping(token)
            await asyncio.wait_for(future, DRAIN_TIMEOUT)
        finally:
            self._pongs.pop(token, None)

    async def _check_quietly(self, watch: _Watch, announced: str) -> None:
        with contextlib.suppress(Exception):  # a fault here leaves it to the slow poll
            await self.check(watch, missing_is_outcome=True, announced=announced)

    # -- the slow poll -------------------------------------------------------------------------------

    def _start_poller(self) -> None:
        if self.poll_interval is not None and (self._poller is None or self._poller.done()):
            self._poller = asyncio.ensure_future(self._poll(self.poll_interval))

    async def _poll(self, interval: float) -> None:
        wake = self._wake = asyncio.Event()
        self._pause = interval
        while True:
            try:
                await asyncio.wait_for(wake.wait(), self._pause)
            except TimeoutError:
                self._pause = min(self._pause * 2, interval * POLL_BACKOFF)
            else:  # a waiter started while the poll was backing off: start over from the interval
                wake.clear()
                self._pause = interval
                continue
            watches = [w for w in self._watches.values() if w.ready and not w.future.done()]
            if not watches:
                if not self._watches:
                    return
                continue
            with contextlib.suppress(Exception):  # a fault here only delays the fallback; the next poll retries
                await self._poll_once(watches)

    async def _poll_once(self, watches: list[_Watch]) -> None:
        """Three commands per queue, whatever the number of watches; records are read only for finished tasks."""
        by_queue: dict[str, list[_Watch]] = {}
        for watch in watches:
            by_queue.setdefault(watch.queue, []).append(watch)
        async with self.redis.pipeline(transaction=False) as pipe:
            for queue, group in by_queue.items():
                qk = self.schema.queue(queue)
                ids = [w.task_id for w in group]
                pipe.execute_command("ZMSCORE", qk.completed, *ids)
                pipe.execute_command("ZMSCORE", qk.archived, *ids)
                pipe.exists(*(qk.task(i) for i in ids))
            replies = await pipe.execute()
        suspects: list[_Watch] = []
        for n, group in enumerate(by_queue.values()):
            completed, archived, present = replies[3 * n : 3 * n + 3]
            finished = [w for w, a, b in zip(group, completed, archived, strict=True) if a is not None or b is not None]
            suspects += finished
            if int(present) < len(group):  # some record vanished: find which
                suspects += [w for w in group if w not in finished]
        missing = [w for w in suspects if not await self.check(w, missing_is_outcome=False)]
        if missing:
            await self._drain()  # an announcement published before the record vanished settles it first
            for watch in missing:
                _settle(watch, Outcome("gone"))

    # -- lifecycle -----------------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    async def close(self) -> None:
        """Stop listening; waiters still waiting see :class:`~framework.errors.FrameworkError`."""
        for watch in list(self._watches.values()):
            if not watch.future.done():
                watch.future.set_exception(FrameworkError("the client was closed while waiting"))
                watch.future.exception()  # retrieved: a waiter that is gone already must not be reported
        self._watches.clear()
        tasks = [t for t in (self._reader, self._poller, *self._checks) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        if self._pubsub is not None:
            await self._pubsub.aclose()
            self._pubsub = None


def _bytes(value: bytes | str | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


def _settle(watch: _Watch, outcome: Outcome) -> None:
    if not watch.future.done():
        watch.future.set_result(outcome)
