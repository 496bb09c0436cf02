"""The bulk path of :meth:`Client.enqueue_many <framework.client.client.Client.enqueue_many>`: plain tasks streamed.

A batch whose tasks are all plain (a :class:`~framework.task.TaskDef` with call-site options at most
``queue``, ``max_retry``, ``timeout`` and ``retention``, leaving it a plain pending task) skips the general
path's per-task message building: each task is spliced from its type's prepared pieces
(:class:`~framework.client.prepared.PlainEnqueue`) into ``enqueue_many.lua`` calls of one queue each, written
as they are packed (the first one small, so Redis starts at once), with the :class:`TaskInfo` results
built while Redis stores them. The bytes stored are those the general path stores (a test checks them).
On a Cluster each queue's calls go to its primary's lean connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeAlias

import msgspec
from redis.exceptions import ConnectionError, ResponseError, TimeoutError  # noqa: A004

from framework.broker.broker import RedisBroker
from framework.client.options import refusal, resolve_options
from framework.client.prepared import UNPREPARED, PlainEnqueue, eligible, new_task_ids
from framework.client.values import TaskCall, TaskInfo
from framework.errors import EnqueueFailed, FrameworkError
from framework.protocol.scripts import SCRIPTS
from framework.task import TaskDef
from framework.transport.lean.errors import ReplyError

if TYPE_CHECKING:
    from framework.client.client import Client
    from framework.transport.lean.connection import RespConnection

__all__ = ("BULK_BATCH", "BULK_FIRST", "BulkEnqueue")

BULK_OPTIONS = frozenset({"queue", "max_retry", "timeout", "retention"})
"""Call-site options a task of :meth:`Client.enqueue_many` may have and still take the bulk path."""
BULK_BATCH = 256
"""Most tasks one ``enqueue_many.lua`` call of the bulk path stores."""
BULK_FIRST = 64
"""Most tasks the first ``enqueue_many.lua`` call of a bulk enqueue stores (Redis waits for it)."""
_BulkCall: TypeAlias = "tuple[asyncio.Future[list[Any]], bytes, RespConnection, PlainEnqueue, int]"
"""One merged call: its reply, its bytes, the connection it went on, a task type of it, how many tasks it holds."""


def _refused(plain: PlainEnqueue, exc: ResponseError) -> EnqueueFailed:
    """The error of a task of a batch Redis refused before any was sent: not stored (it has no id yet)."""
    error = EnqueueFailed(
        f"enqueue of a {plain.taskdef.type!r} task failed, nothing was stored: {refusal(exc, plain.opts.queue)}"
    )
    error.__cause__ = exc
    return error


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


class BulkEnqueue:
    """The bulk path of one :class:`~framework.client.client.Client` (see the module docstring).

    Args:
        client: the client whose broker, options cache and checks it uses.
    """

    __slots__ = ("_client",)

    def __init__(self, client: Client) -> None:
        self._client = client

    def plan(self, calls: list[TaskCall]) -> list[PlainEnqueue] | None:
        """Each call's prepared plain enqueue, or None when one of them needs the general path (or none is given).

        A call qualifies with a :class:`TaskDef` and options among ``queue``, ``max_retry``, ``timeout`` and
        ``retention`` that leave it a plain pending task (:func:`~framework.client.prepared.eligible`); the
        options are resolved once per task type and set of options, not once per task.
        """
        client = self._client
        if not calls or client.broker.lean is None or type(client.broker) is not RedisBroker:
            return None
        plains: list[PlainEnqueue] = []
        cache = client._plain
        last_task: Any = None
        last: PlainEnqueue | None = None
        for call in calls:
            task, options = call.task, call.options
            if not options:
                if task is not last_task:
                    last_task = task
                    last = client._plain_for(task) if isinstance(task, TaskDef) else None
                if last is None:
                    return None
                plains.append(last)
                continue
            last_task = None  # the next call without options looks its task up again
            if not isinstance(task, TaskDef) or not options.keys() <= BULK_OPTIONS:
                return None
            try:
                key: Any = (task, *sorted((k, type(v), v) for k, v in options.items()))  # True == 1: types too
                plain = cache.get(key, UNPREPARED)
            except TypeError:  # an unhashable value: the general path checks it
                return None
            if plain is UNPREPARED:
                plain = self._prepare_with_options(task, options, key)
            if plain is None:
                return None
            plains.append(plain)
        return plains

    def _prepare_with_options(self, taskdef: TaskDef[Any], options: Mapping[str, Any], key: Any) -> PlainEnqueue | None:
        """The fast path for ``taskdef`` with these call-site options (None: they need the general one)."""
        client = self._client
        opts = resolve_options(taskdef, options, client.settings, client.clock.now())  # a bad option raises here
        return client._keep_plain(key, PlainEnqueue(client.broker, taskdef, opts) if eligible(opts) else None)

    async def run(self, calls: list[TaskCall], plains: list[PlainEnqueue]) -> list[TaskInfo | FrameworkError]:
        """:meth:`enqueue_many` of plain tasks: merged script calls written as they are built.

        Every payload is encoded (and checked) before anything is sent. The tasks then go in runs of one
        queue, at most :data:`BULK_BATCH` per ``enqueue_many.lua`` call (the bytes the general path sends
        for them), each call written as soon as it is packed, so Redis stores one run while the next is
        built; the replies are read at the end.

        A link lost part-way leaves the calls written before it unanswered and the rest unsent:
        :meth:`~framework.client.client.Client._checked_many` reports them (:class:`BatchInterrupted`).
        """
        datas = self._encode(calls, plains)
        client = self._client
        try:
            conns = await self._connections({p.opts.queue for p in plains})
        except (ConnectionError, TimeoutError, OSError) as exc:
            raise client._unreachable(exc) from exc
        except ResponseError as exc:  # registering the queues was refused (out of memory...): nothing was sent
            return [_refused(plain, exc) for plain in plains]
        infos: list[TaskInfo] = []
        sent: list[_BulkCall] = []
        with contextlib.suppress(ConnectionError, TimeoutError, OSError):  # the calls not written: never sent
            self._send(conns, plains, datas, infos, sent)
        codes = await self._replies(sent)
        return client._checked_many(codes, infos, len(calls))

    def _encode(self, calls: list[TaskCall], plains: list[PlainEnqueue]) -> list[bytes]:
        """Each call's payload, encoded; the first bad one (wrong type, too large) raises, in call order."""
        limit = self._client.max_payload_size
        first = plains[0]
        if plains.count(first) == len(plains):  # one task type: one loop without lookups
            encode = first.taskdef.encode
            try:
                datas = [encode(call.payload) for call in calls]
            except Exception:  # noqa: BLE001 - the loop below raises the first error, in order
                datas = []
            if datas and not (limit and max(map(len, datas)) > limit):
                return datas
        datas = []
        for call, plain in zip(calls, plains, strict=True):
            data = plain.taskdef.encode(call.payload)
            if limit and len(data) > limit:
                self._client._check_size(plain.taskdef.type, data)
            datas.append(data)
        return datas

    async def _connections(self, queues: set[str]) -> dict[str, RespConnection]:
        """Each queue's lean connection, open, with ``enqueue_many.lua`` loaded and the queues registered.

        One server's connection serves every queue; on a Cluster each queue gets its primary's.
        """
        broker = self._client.broker
        lean = broker.lean
        assert lean is not None
        new = queues - broker._known_queues
        if new:
            await broker.register_queues(new)
        await lean.ready()
        conns = {queue: lean.connection_for(self._client.schema.queue(queue).pending) for queue in queues}
        script = SCRIPTS["enqueue_many"]
        for conn in set(conns.values()):
            if not conn.connected:
                await conn.open()
            if script.sha not in conn.scripts:
                await conn.execute("SCRIPT", "LOAD", script.source)
                conn.scripts.add(script.sha)
        return conns

    def _send(
        self,
        conns: dict[str, RespConnection],
        plains: list[PlainEnqueue],
        datas: list[bytes],
        infos: list[TaskInfo],
        sent: list[_BulkCall],
    ) -> None:
        """Write the merged calls, one run at a time, each to ``sent``; each task's TaskInfo is appended to ``infos``.

        The first call holds at most :data:`BULK_FIRST` tasks, so Redis starts early; each later run's ids,
        arguments and TaskInfos are made while Redis stores the run before it.
        """
        n = len(plains)
        plain_batch = self._client.broker.plain_batch
        start = 0
        size = BULK_FIRST
        while start < n:
            plain = plains[start]
            queue = plain.opts.queue
            end = min(n, start + size)
            size = BULK_BATCH
            chunk = plains[start:end]
            if chunk.count(plain) == end - start:  # one task type and set of options (the usual case)
                ids = new_task_ids(end - start)
                run = datas[start:end]
                pieces = [plain.bulk_many(ids, run)]
            else:  # cut at the next queue
                k = start + 1
                while k < end and plains[k].opts.queue == queue:
                    k += 1
                end = k
                ids = new_task_ids(end - start)
                run = datas[start:end]
                pieces = [p.bulk_args(i.encode(), d) for p, i, d in zip(plains[start:end], ids, run, strict=True)]
            now = self._client.clock.now()
            command = plain_batch(queue, pieces, end - start)
            conn = conns[queue]
            sent.append((conn.send_now(command, 1), command, conn, plain, end - start))
            infos += self._infos(plains[start:end], ids, run, now)  # built while Redis stores the run
            start = end

    def _infos(self, plains: list[PlainEnqueue], ids: list[str], datas: list[bytes], now: float) -> list[TaskInfo]:
        """The TaskInfos of one run (what :meth:`_plain_info` builds): copies of one per task type and options."""
        replace = msgspec.structs.replace
        info_of = self._client._plain_info
        first = plains[0]
        if plains.count(first) == len(plains):
            template = info_of(first, "", b"", now)
            return [replace(template, id=i, payload=d, headers={}) for i, d in zip(ids, datas, strict=True)]
        templates: dict[PlainEnqueue, TaskInfo] = {}
        out = []
        for plain, task_id, data in zip(plains, ids, datas, strict=True):
            base = templates.get(plain)
            if base is None:
                base = templates[plain] = info_of(plain, "", b"", now)
            out.append(replace(base, id=task_id, payload=data, headers={}))
        return out

    @staticmethod
    async def _replies(sent: list[_BulkCall]) -> list[Any]:
        """Each task's code (1 stored, 0 task id taken), in order.

        In the place of each task of a call Redis refused: its error; of a call never answered: the connection
        error.
        """
        codes: list[Any] = []
        try:
            for fut, command, conn, plain, size in sent:
                try:
                    (reply,) = await fut
                    if type(reply) is ReplyError:  # NOSCRIPT or a Cluster's redirection: it did not run, sent again
                        reply = await plain.after_error(conn, reply, command, SCRIPTS["enqueue_many"])
                except (ResponseError, ConnectionError, TimeoutError, OSError) as exc:
                    reply = [exc] * size
                codes += reply
        finally:
            for fut, *_ in sent:  # on an early exit, nobody else reads what the rest get
                if not fut.done():
                    fut.add_done_callback(_retrieve)
                elif not fut.cancelled():
                    fut.exception()
        return codes
