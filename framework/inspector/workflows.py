"""Workflow reads and actions: workflows newest first, one workflow's steps and edges, cancel and retry.

A workflow's records live under its home queue (see ``framework/protocol/lua/_workflow.lua``): a meta hash, the
step states, the graph and the results, indexed by the queue's ``workflows`` ZSET. Every read is pipelined: a
page of workflows costs a few round trips whatever its size, one workflow three or four.

What a step shows is its state as the dashboard names it: a released ("pending") step shows its task's live
asynq state (pending, active, retry, archived, ...), and a step still waiting in a workflow that failed or was
cancelled shows ``cancelled`` (it will not start unless the workflow is retried).

Index entries whose workflow expired (its retention ran out) are skipped, and removed as they are met.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import msgspec

from framework.broker.workflows import WorkflowOps
from framework.errors import WorkflowNotFound
from framework.inspector.namespace import Part, from_unix, json_value, text
from framework.protocol.message import decode_message
from framework.transport.commands import RedisCommands

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from framework.inspector.namespace import Namespace
    from framework.protocol.keys import WorkflowKeys

__all__ = (
    "MAX_OFFSET",
    "MAX_WORKFLOWS",
    "RESULT_PREVIEW",
    "WORKFLOW_STATUSES",
    "WorkflowCancelled",
    "WorkflowDetail",
    "WorkflowReads",
    "WorkflowRetried",
    "WorkflowStates",
    "WorkflowStep",
    "WorkflowSummary",
    "layers",
    "shown_state",
)

WORKFLOW_STATUSES = ("running", "succeeded", "failed", "cancelled")
"""The statuses a workflow has, and :meth:`WorkflowReads.workflows` filters by."""
MAX_WORKFLOWS = 1000
"""The most workflows one :meth:`WorkflowReads.workflows` call returns."""
MAX_OFFSET = 10_000
"""How far into the newest workflows a listing reaches: the indexes are merged from the newest, so an
offset costs reading that many workflows (a filter by queue or status narrows what is walked)."""
RESULT_PREVIEW = 2000
"""Characters of a step's result that :class:`WorkflowStep` keeps (the whole result is decoded only when shorter)."""

_META = ("name", "status", "created", "finished", "total", "done", "failed", "error", "open", "outputs")
_BATCH = 100
"""Index entries read per queue and round trip while listing."""
_ENDED = frozenset({"failed", "cancelled"})


class WorkflowSummary(msgspec.Struct, frozen=True, kw_only=True):
    """One workflow as a list shows it.

    Attributes:
        id: its id.
        queue: its home queue.
        name: its name.
        status: running, succeeded, failed or cancelled.
        created: when it was started.
        finished: when it ended (nothing of it runs any more); None while something does.
        total: its steps.
        done: steps finished (succeeded, or failed with their failure handed on).
        failed: steps failed that block their dependants.
        error: the failure that failed it ("" when none).
    """

    id: str
    queue: str
    name: str
    status: str
    created: datetime | None
    finished: datetime | None
    total: int
    done: int
    failed: int
    error: str


class WorkflowStep(msgspec.Struct, frozen=True, kw_only=True):
    """One step of a workflow.

    Attributes:
        name: its name (unique in its workflow).
        task_type: the type of its task ("" when its stored message cannot be decoded).
        queue: the queue its task goes to.
        task_id: its task's id.
        state: as shown: waiting, pending, active, scheduled, retry, archived, completed (a released step's
            live task state), succeeded, failed, lost or cancelled.
        deps: the steps it depends on, in the order its input lists their results.
        error: the error it failed with ("" when none).
        result_size: bytes of its result (0: none yet).
        result_text: its result (JSON text), cut to :data:`RESULT_PREVIEW` characters.
        result: its result decoded, when it is JSON shorter than the preview (else None).
    """

    name: str
    task_type: str
    queue: str
    task_id: str
    state: str
    deps: list[str]
    error: str = ""
    result_size: int = 0
    result_text: str = ""
    result: Any = None


class WorkflowDetail(msgspec.Struct, frozen=True, kw_only=True):
    """One workflow with its steps and the edges between them.

    Attributes:
        summary: what a list shows of it.
        open: steps released as tasks and not finished.
        outputs: its final steps (the result is theirs).
        steps: every step, in the order they were added.
        edges: (dependency, dependant) pairs.
        counts: steps per shown state.
    """

    summary: WorkflowSummary
    open: int
    outputs: list[str]
    steps: list[WorkflowStep]
    edges: list[tuple[str, str]]
    counts: dict[str, int]


class WorkflowStates(msgspec.Struct, frozen=True, kw_only=True):
    """A workflow's status and each step's shown state: what a page following it live polls.

    Attributes:
        summary: what a list shows of it.
        states: step -> state as :class:`WorkflowStep` shows it.
        counts: steps per shown state.
    """

    summary: WorkflowSummary
    states: dict[str, str]
    counts: dict[str, int]


class WorkflowCancelled(msgspec.Struct, frozen=True, kw_only=True):
    """What cancelling a workflow did.

    Attributes:
        id: the workflow's id.
        queue: its home queue.
        status: its status before (a succeeded or cancelled workflow is left as it is).
        deleted: released steps whose tasks were deleted before they ran.
        stopping: running steps whose workers were asked to stop.
    """

    id: str
    queue: str
    status: str
    deleted: int
    stopping: int


class WorkflowRetried(msgspec.Struct, frozen=True, kw_only=True):
    """What retrying a workflow did.

    Attributes:
        id: the workflow's id.
        queue: its home queue.
        status: its status before (a succeeded or running workflow without failed steps is left as it is).
        again: steps run again.
    """

    id: str
    queue: str
    status: str
    again: int


def _int(value: Any) -> int:
    try:
        return int(text(value) or 0)
    except ValueError:
        return 0


def _float(value: Any) -> float:
    try:
        return float(text(value) or 0)
    except ValueError:
        return 0.0


def _summary(workflow_id: str, queue: str, meta: list[Any]) -> WorkflowSummary:
    """A summary from the meta fields read in :data:`_META` order."""
    name, status, created, finished, total, done, failed, error = meta[:8]
    return WorkflowSummary(
        id=workflow_id,
        queue=queue,
        name=text(name),
        status=text(status),
        created=from_unix(_float(created)),
        finished=from_unix(_float(finished)),
        total=_int(total),
        done=_int(done),
        failed=_int(failed),
        error=text(error),
    )


def shown_state(raw: str, status: str, live: str | None = None) -> str:
    """A step's state as shown: a released step's live task state; a waiting step of an ended failure cancelled.

    Args:
        raw: the step's stored state (waiting, pending, succeeded, failed, lost, cancelled).
        status: its workflow's status.
        live: the ``state`` field of its task's hash, for a released step (None: the task is gone).
    """
    if raw == "waiting" and status in _ENDED:
        return "cancelled"
    if raw == "pending" and live:
        return live
    return raw


def _counts(states: dict[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for state in states.values():
        counts[state] = counts.get(state, 0) + 1
    return dict(sorted(counts.items()))


def _lines(value: Any) -> list[str]:
    return [part for part in text(value).split("\n") if part]


class WorkflowReads(Part):
    """The workflow reads and actions of :class:`~framework.inspector.core.Inspector`."""

    __slots__ = ("_ops",)

    def __init__(self, ns: Namespace) -> None:
        super().__init__(ns)
        self._ops = WorkflowOps(
            RedisCommands(ns.redis), ns.schema, ns.clock, handoff=False, wakeup=ns.schema.wakeup_channel
        )

    async def _queues(self, queue: str | None) -> list[str]:
        if queue is not None:
            return [queue]
        return sorted(text(q) for q in await self._redis.smembers(self._schema.all_queues))

    async def workflows(
        self, queue: str | None = None, status: str | None = None, *, limit: int = 50, offset: int = 0
    ) -> list[WorkflowSummary]:
        """Workflows newest first, of one home queue or every queue, optionally of one status only.

        A running listing walks the queues' running indexes only; another status reads the workflows in
        batches until the page is full.

        Raises:
            ValueError: an unknown status, or a bad limit or offset.
        """
        if status is not None and status not in WORKFLOW_STATUSES:
            raise ValueError(f"unknown workflow status {status!r}; use one of: {', '.join(WORKFLOW_STATUSES)}")
        if not 1 <= limit <= MAX_WORKFLOWS:
            raise ValueError(f"limit={limit!r} is invalid: must be between 1 and {MAX_WORKFLOWS}")
        if not 0 <= offset <= MAX_OFFSET:
            raise ValueError(
                f"offset={offset!r} is invalid: must be 0 to {MAX_OFFSET} (listings reach the newest "
                f"{MAX_OFFSET + MAX_WORKFLOWS:,} workflows; filter by queue or status for older ones)"
            )
        names = await self._queues(queue)
        indexes = {
            name: self._schema.queue(name).workflows_running()
            if status == "running"
            else self._schema.queue(name).workflows()
            for name in names
        }
        wanted = offset + limit
        found: list[WorkflowSummary] = []
        newest = _Newest(self._redis, indexes)
        while len(found) < wanted:
            rows = await newest.batch()
            if not rows:
                break
            summaries, gone = await self._read(rows)
            newest.removed(gone)
            found.extend(w for w in summaries if status is None or w.status == status)
        return found[offset:wanted]

    async def _read(self, rows: list[tuple[float, str, str]]) -> tuple[list[WorkflowSummary], list[tuple[str, str]]]:
        """The summaries of ``rows`` (created, queue, id) in one round trip, and the expired ones' (queue, id).

        The expired ones leave their indexes.
        """
        async with self._redis.pipeline(transaction=False) as pipe:
            for _, queue, wid in rows:
                pipe.hmget(self._schema.queue(queue).workflow(wid).meta, list(_META))
            metas = await pipe.execute()
        gone = [(queue, wid) for (_, queue, wid), meta in zip(rows, metas, strict=True) if meta[1] is None]
        if gone:
            async with self._redis.pipeline(transaction=False) as pipe:
                for queue, wid in gone:
                    qk = self._schema.queue(queue)
                    pipe.zrem(qk.workflows(), wid)
                    pipe.zrem(qk.workflows_running(), wid)
                await pipe.execute()
        summaries = [
            _summary(wid, queue, meta) for (_, queue, wid), meta in zip(rows, metas, strict=True) if meta[1] is not None
        ]
        return summaries, gone

    async def home(self, workflow_id: str, queue: str | None = None) -> str:
        """The home queue of workflow ``workflow_id``: ``queue``, or whichever queue's index has it.

        Raises:
            WorkflowNotFound: no such workflow (never started, or expired).
        """
        if queue is not None:
            return queue
        names = await self._queues(None)
        async with self._redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.exists(self._schema.queue(name).workflow(workflow_id).meta)
            found = await pipe.execute()
        homes = [name for name, hit in zip(names, found, strict=True) if hit]
        if not homes:
            raise WorkflowNotFound(f"no workflow {workflow_id!r} in any queue (never started, or expired)")
        return homes[0]

    async def _live(self, wk: WorkflowKeys, graph: dict[str, str], pending: list[str]) -> dict[str, str | None]:
        """The live task state of each released step (None: its task is gone), in one round trip."""
        if not pending:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for step in pending:
                where = graph.get(f"t:{step}", "").split("\n")
                task_key = self._schema.queue(where[0]).task(where[1] if len(where) > 1 else "")
                pipe.hget(task_key, "state")
            replies = await pipe.execute()
        return {step: (text(r) or None) for step, r in zip(pending, replies, strict=True)}

    async def _read_one(
        self, workflow_id: str, queue: str | None, *, full: bool
    ) -> tuple[str, WorkflowKeys, list[Any], dict[str, str], dict[Any, Any], dict[Any, Any]]:
        """Home queue, keys, meta and step states of a workflow, with its graph and results when ``full``.

        Raises:
            WorkflowNotFound: no such workflow (never started, or expired).
        """
        home = await self.home(workflow_id, queue)
        wk = self._schema.queue(home).workflow(workflow_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hmget(wk.meta, list(_META))
            pipe.hgetall(wk.state)
            if full:
                pipe.hgetall(wk.graph)
                pipe.hgetall(wk.results)
            replies = await pipe.execute()
        meta = replies[0]
        if meta[1] is None:
            raise WorkflowNotFound(f"no workflow {workflow_id!r} in queue {home!r} (never started, or expired)")
        states = {text(k): text(v) for k, v in replies[1].items()}
        graph, results = (replies[2], replies[3]) if full else ({}, {})
        return home, wk, meta, states, graph, results

    async def workflow(self, workflow_id: str, queue: str | None = None) -> WorkflowDetail:
        """One workflow with its steps (live states, dependencies, errors, results) and edges.

        Raises:
            WorkflowNotFound: no such workflow (never started, or expired).
        """
        home, wk, meta, states, raw_graph, raw_results = await self._read_one(workflow_id, queue, full=True)
        summary = _summary(workflow_id, home, meta)
        graph_bytes = {text(k): v for k, v in raw_graph.items()}
        graph = {k: text(v) for k, v in graph_bytes.items() if not k.startswith("m:")}
        results = {text(k): v for k, v in raw_results.items()}
        live = await self._live(wk, graph, [s for s, st in states.items() if st == "pending"])
        steps: list[WorkflowStep] = []
        edges: list[tuple[str, str]] = []
        shown: dict[str, str] = {}
        for name in _order(states, graph):
            where = graph.get(f"t:{name}", "").split("\n")
            deps = _lines(graph.get(f"d:{name}"))
            edges += [(dep, name) for dep in deps]
            shown[name] = shown_state(states[name], summary.status, live.get(name))
            steps.append(
                WorkflowStep(
                    name=name,
                    task_type=_task_type(graph_bytes.get(f"m:{name}")),
                    queue=where[0],
                    task_id=where[1] if len(where) > 1 else "",
                    state=shown[name],
                    deps=deps,
                    error=graph.get(f"e:{name}", ""),
                    **_result(results.get(name)),
                )
            )
        return WorkflowDetail(
            summary=summary,
            open=_int(meta[8]),
            outputs=_lines(meta[9]),
            steps=steps,
            edges=edges,
            counts=_counts(shown),
        )

    async def workflow_states(self, workflow_id: str, queue: str | None = None) -> WorkflowStates:
        """A workflow's status and each step's shown state, without its messages and results (cheap to poll).

        Raises:
            WorkflowNotFound: no such workflow (never started, or expired).
        """
        home, wk, meta, states, _, _ = await self._read_one(workflow_id, queue, full=False)
        summary = _summary(workflow_id, home, meta)
        pending = [s for s, st in states.items() if st == "pending"]
        graph: dict[str, str] = {}
        if pending:
            where = await self._redis.hmget(wk.graph, [f"t:{s}" for s in pending])
            graph = {f"t:{s}": text(w) for s, w in zip(pending, where, strict=True)}
        live = await self._live(wk, graph, pending)
        shown = {name: shown_state(st, summary.status, live.get(name)) for name, st in states.items()}
        return WorkflowStates(summary=summary, states=shown, counts=_counts(shown))

    async def cancel(self, workflow_id: str, queue: str | None = None) -> WorkflowCancelled:
        """Cancel a workflow: released steps not running are deleted, running ones asked to stop.

        Raises:
            WorkflowNotFound: no such workflow (never started, or expired).
        """
        home = await self.home(workflow_id, queue)
        status, deleted, stopping = await self._ops.cancel(home, workflow_id)
        if not status:
            raise WorkflowNotFound(f"no workflow {workflow_id!r} in queue {home!r} (never started, or expired)")
        return WorkflowCancelled(id=workflow_id, queue=home, status=status, deleted=deleted, stopping=stopping)

    async def retry(self, workflow_id: str, queue: str | None = None) -> WorkflowRetried:
        """Run a failed or cancelled workflow again from the steps that failed or were cancelled.

        Raises:
            WorkflowNotFound: no such workflow (never started, or expired).
        """
        home = await self.home(workflow_id, queue)
        status, again = await self._ops.retry(home, workflow_id)
        if not status:
            raise WorkflowNotFound(f"no workflow {workflow_id!r} in queue {home!r} (never started, or expired)")
        return WorkflowRetried(id=workflow_id, queue=home, status=status, again=again)


class _Newest:
    """Index entries newest first across several queues' index ZSETs: a merge of each one read in batches.

    Args:
        redis: the client.
        indexes: queue -> its index ZSET (id -> created).
    """

    def __init__(self, redis: Redis, indexes: dict[str, str]) -> None:
        self.redis = redis
        self.indexes = indexes
        self.pos = dict.fromkeys(indexes, 0)
        self.buffers: dict[str, list[tuple[float, str]]] = {q: [] for q in indexes}
        self.done: set[str] = set()

    async def _refill(self) -> None:
        """Read the next batch of every index whose buffer ran out, in one round trip."""
        empty = [q for q, buf in self.buffers.items() if not buf and q not in self.done]
        if not empty:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for q in empty:
                pipe.zrevrange(self.indexes[q], self.pos[q], self.pos[q] + _BATCH - 1, withscores=True)
            replies = await pipe.execute()
        for q, reply in zip(empty, replies, strict=True):
            rows = [(float(score), text(member)) for member, score in reply]
            rows.reverse()  # popped from the end: newest last
            self.pos[q] += len(rows)
            self.buffers[q] = rows
            if len(rows) < _BATCH:
                self.done.add(q)

    def removed(self, entries: list[tuple[str, str]]) -> None:
        """``entries`` (queue, id), read already, left their indexes: the later entries moved up by as many ranks."""
        for queue, _ in entries:
            self.pos[queue] -= 1

    async def batch(self) -> list[tuple[float, str, str]]:
        """The next (at most) :data:`_BATCH` entries as (created, queue, id), newest first; [] at the end."""
        out: list[tuple[float, str, str]] = []
        while len(out) < _BATCH:
            await self._refill()
            heads = [(-buf[-1][0], q) for q, buf in self.buffers.items() if buf]
            if not heads:
                break
            _, q = min(heads)
            created, wid = self.buffers[q].pop()
            out.append((created, q, wid))
        return out


def layers(detail: WorkflowDetail) -> list[list[str]]:
    """The steps of ``detail`` in layers: each step in the layer of its longest path from a first step.

    A step comes after every one of its dependencies; within a layer, steps keep the order they were added.
    """
    names = [step.name for step in detail.steps]
    deps = {step.name: [d for d in step.deps if d != step.name] for step in detail.steps}
    dependants: dict[str, list[str]] = {name: [] for name in names}
    left = dict.fromkeys(names, 0)
    for name in names:
        for dep in deps[name]:
            if dep in dependants:
                dependants[dep].append(name)
                left[name] += 1
    depth = dict.fromkeys(names, 0)
    ready = [name for name in names if left[name] == 0]
    while ready:
        name = ready.pop()
        for after in dependants[name]:
            depth[after] = max(depth[after], depth[name] + 1)
            left[after] -= 1
            if left[after] == 0:
                ready.append(after)
    out: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for name in names:
        out[depth[name]].append(name)
    return out


def _order(states: dict[str, str], graph: dict[str, str]) -> list[str]:
    """The steps in the order they were added: their task ids end in ``-<index>``; names break ties."""

    def index(name: str) -> tuple[int, str]:
        task_id = graph.get(f"t:{name}", "").rpartition("\n")[2]
        tail = task_id.rpartition("-")[2]
        return (int(tail) if tail.isdigit() else 1 << 62, name)

    return sorted(states, key=index)


def _task_type(message: bytes | None) -> str:
    if not message:
        return ""
    try:
        return decode_message(message).type
    except Exception:  # noqa: BLE001 - an undecodable message shows without a type
        return ""


def _result(value: bytes | None) -> dict[str, Any]:
    """The result fields of :class:`WorkflowStep` for a stored result (JSON bytes)."""
    if value is None:
        return {}
    body = text(value)
    out: dict[str, Any] = {"result_size": len(value), "result_text": body[:RESULT_PREVIEW]}
    if len(body) <= RESULT_PREVIEW:
        parsed, is_json = json_value(value)
        if is_json:
            out["result"] = parsed
    return out
