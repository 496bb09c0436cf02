"""The Redis key schema: every key the framework reads or writes is built here and nowhere else.

The layout is Go asynq v0.26's (``asynq:{<queue>}:...``), so Go services, the ``asynq`` CLI and
asynqmon share our queues. Every per-queue key carries the hash tag ``{<queue>}``, so all keys of one
queue live in one Redis Cluster slot and every Lua script touches one slot only.

Keys for features asynq lacks live under a prefix of our own (``framework``), still hash-tagged by
queue where they are per queue, and never change the meaning of an asynq key. Plugins keep their keys
themselves, built under that prefix with :meth:`Schema.ext_key` (``framework:<plugin>:...``).

The namespace is configurable only so that tests can isolate themselves; production uses ``asynq``.
Pure module: no I/O.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = (
    "CORE_SEGMENTS",
    "DEFAULT_EXT",
    "DEFAULT_NS",
    "LimitKeys",
    "QueueKeys",
    "Schema",
    "WorkflowKeys",
    "cluster_slot_problem",
    "day_stamp",
    "unique_digest",
)

DEFAULT_NS = "asynq"
DEFAULT_EXT = "framework"
CORE_SEGMENTS = frozenset(
    {
        "alive",
        "cron",
        "death",
        "forward-pass",
        "handoff",
        "inflight",
        "limit",
        "limits",
        "pending-check",
        "ratelimit",
        "token",
        "tokens",
        "wakeup",
    }
)
"""The first segments of the framework's own ``<ext>:`` keys, which :meth:`Schema.ext_key` keeps from plugins."""
_PLUGIN_NAME = re.compile(r"[A-Za-z0-9_-]+")
QUEUE_KEYS_CACHE = 4096
"""Most queues whose :class:`QueueKeys` a :class:`Schema` keeps. Queue names may come from outside (a status
route with the queue in its URL, a caller's options): past this many the cache starts over, so a process that
is asked about ever new names does not keep the keys of every name it was ever asked about."""


def cluster_slot_problem(queue: str) -> str | None:
    """Why the keys of ``queue`` would not share one Redis Cluster slot, or None when they do.

    A key's hash tag runs from its first ``{`` to the first ``}`` after it, so the tag of ``asynq:{<queue>}:...``
    is the queue name up to its first ``}``: every key of a queue shares it, unless the name starts with ``}``.
    Then the tag is empty, Redis hashes each key whole, and every script on the queue fails with CROSSSLOT
    (Go asynq's keys have the same shape). On one server or Sentinel such a name works.
    """
    if not queue.startswith("}"):
        return None
    return (
        f"queue {queue!r} cannot be used on a Redis Cluster: a name starting with '}}' leaves its keys' hash tag "
        "empty, so Redis hashes each key whole and a queue's keys land in different slots (CROSSSLOT); "
        "use a queue name that does not start with '}'"
    )


def unique_digest(payload: bytes | None) -> str:
    """Return the suffix asynq uses for a uniqueness key: md5 hex of the payload, "" for no payload."""
    if payload is None:
        return ""
    return hashlib.md5(payload, usedforsecurity=False).hexdigest()


class QueueKeys:
    """All keys of one queue. Built once per queue and cached by :class:`Schema`.

    Attributes hold the fixed per-queue keys (Redis type in the comment); methods build the
    keys that carry a task id, a date or a group.
    """

    __slots__ = (
        "active",
        "aggregation_sets",
        "archived",
        "completed",
        "failed",
        "groups",
        "lease",
        "name",
        "paused",
        "pending",
        "prefix",
        "processed",
        "retry",
        "scheduled",
        "suspects",
        "task_prefix",
        "waiters",
        "xprefix",
    )

    def __init__(self, ns: str, ext: str, queue: str) -> None:
        self.name = queue
        self.prefix = f"{ns}:{{{queue}}}:"
        self.xprefix = f"{ext}:{{{queue}}}:"
        p = self.prefix
        self.task_prefix = p + "t:"
        self.pending = p + "pending"  # LIST of task ids (LPUSH in, RPOP out)
        self.active = p + "active"  # LIST of task ids being processed
        self.lease = p + "lease"  # ZSET id -> lease expiry (unix s)
        self.scheduled = p + "scheduled"  # ZSET id -> process_at
        self.retry = p + "retry"  # ZSET id -> retry_at
        self.archived = p + "archived"  # ZSET id -> archived_at
        self.completed = p + "completed"  # ZSET id -> completed_at + retention
        self.paused = p + "paused"  # STRING, exists => paused
        self.processed = p + "processed"  # STRING int, all-time total
        self.failed = p + "failed"  # STRING int, all-time total
        self.groups = p + "groups"  # SET of group names
        self.aggregation_sets = p + "aggregation_sets"  # ZSET set key -> deadline
        self.waiters = self.xprefix + "waiters"  # LIST of idle worker server ids (ours): enqueue hands tasks to them
        self.suspects = self.xprefix + "suspects"  # SET of ids recovered from a worker that died (ours): run alone

    def task(self, task_id: str) -> str:
        """HASH ``<ns>:{q}:t:<id>``: the task record (msg, state, pending_since, ...; ``fw_*`` fields are ours)."""
        return self.task_prefix + task_id

    def processed_day(self, day: str) -> str:
        """STRING ``<ns>:{q}:processed:<YYYY-MM-DD>``: daily processed counter."""
        return f"{self.processed}:{day}"

    def failed_day(self, day: str) -> str:
        """STRING ``<ns>:{q}:failed:<YYYY-MM-DD>``: daily failed counter."""
        return f"{self.failed}:{day}"

    def unique(self, task_type: str, payload: bytes | None) -> str:
        """STRING ``<ns>:{q}:unique:<type>:<md5(payload)>``: uniqueness lock holding the owner's id."""
        return f"{self.prefix}unique:{task_type}:{unique_digest(payload)}"

    def group(self, group: str) -> str:
        """ZSET ``<ns>:{q}:g:<group>``: aggregating task ids scored by time added."""
        return f"{self.prefix}g:{group}"

    def aggregation_set(self, group: str, set_id: str) -> str:
        """ZSET ``<ns>:{q}:g:<group>:<set id>``: tasks staged for one aggregation."""
        return f"{self.prefix}g:{group}:{set_id}"

    # -- our own keys (features asynq lacks) -------------------------------------------------

    def minute_stats(self, kind: str, minute: int) -> str:
        """STRING ``<ext>:{q}:<kind>:m:<unix minute>``: per-minute processed/failed counter (expires)."""
        return f"{self.xprefix}{kind}:m:{minute}"

    def inflight(self, server_id: str) -> str:
        """SET ``<ext>:{q}:inflight:<server id>``: ids of this queue's tasks one worker process took (dequeue adds).

        Per queue, so the dequeue script records it atomically in the queue's slot. The recoverer reads it
        for workers whose heartbeat stopped; entries of finished tasks are removed by the next heartbeat.
        """
        return f"{self.inflight_prefix()}{server_id}"

    def inflight_prefix(self) -> str:
        """The prefix ``<ext>:{q}:inflight:`` of in-flight sets (the enqueue script appends a waiter's id)."""
        return f"{self.xprefix}inflight:"

    def group_prefix(self) -> str:
        """The prefix ``<ns>:{q}:g:`` of group and aggregation-set keys (scripts append the group name)."""
        return f"{self.prefix}g:"

    def progress(self, task_id: str) -> str:
        """HASH ``<ext>:{q}:progress:<id>``: a running task's last progress report (fraction, message, ...; expires)."""
        return f"{self.xprefix}progress:{task_id}"

    def progress_channel(self, task_id: str) -> str:
        """Pub/Sub channel ``<ext>:{q}:progress:<id>:updates``: each progress write of the task, as JSON."""
        return f"{self.xprefix}progress:{task_id}:updates"

    def waiting(self, task_id: str) -> str:
        """STRING ``<ext>:{q}:waiting:<id>``: someone waits for this task's outcome (expires with the longest wait).

        The scripts that write a final outcome (``done``, ``mark_complete``, ``archive``) or delete a task
        before it ran (``cancel``, ``delete_task``, ``delete_all``, ``delete_aggregation_set``) publish it on
        :meth:`outcome_channel` only while this marker exists, and delete it then; a task nobody waits for
        costs them one ``EXISTS`` (one for a whole batch of ``done`` or of a delete-all).
        """
        return f"{self.xprefix}waiting:{task_id}"

    def waited(self) -> str:
        """STRING ``<ext>:{q}:waited``: someone waits for a task of this queue (expires with the longest wait).

        Set beside every :meth:`waiting` marker, with an expiry at least as late, so ``done.lua`` looks at the
        markers of a batch only when the queue has a waiter at all: a batch nobody waits for costs one
        ``EXISTS`` of this key.
        """
        return f"{self.xprefix}waited"

    def outcome_channel(self, task_id: str) -> str:
        """Pub/Sub channel ``<ext>:{q}:outcome:<id>``: the task's final outcome, announced to its waiters.

        A message is the outcome's name: ``done`` (then, after a newline, the result bytes when there is a
        result; the record is deleted), ``completed``, ``archived`` (read the record for the rest),
        ``cancelled`` (deleted by its caller before it ran), ``deleted`` (by the inspector before it ran;
        ``deleted``, newline, ``queue`` when its queue was removed) or ``aggregated``, newline, the id of
        the aggregate task it was merged into.
        """
        return f"{self.xprefix}outcome:{task_id}"

    def cancel_request(self, task_id: str) -> str:
        """STRING ``<ext>:{q}:cancel:<id>``: the caller cancelled this running task (expires): archive, not retry."""
        return f"{self.xprefix}cancel:{task_id}"

    def workflows(self) -> str:
        """ZSET ``<ext>:{q}:workflows``: id -> created (Unix s) of every workflow whose home queue this is."""
        return f"{self.xprefix}workflows"

    def workflows_running(self) -> str:
        """ZSET ``<ext>:{q}:workflows:running``: id -> created of the workflows of this home queue not ended yet."""
        return f"{self.xprefix}workflows:running"

    def workflows_checked(self) -> str:
        """STRING ``<ext>:{q}:workflows:checked``: a worker's claim on this interval's check of the running index.

        Set with NX and an expiry a little shorter than ``workflow_check_interval``, so one worker per interval
        looks for the lost steps of this home queue's workflows.
        """
        return f"{self.xprefix}workflows:checked"

    def workflows_cursor(self) -> str:
        """STRING ``<ext>:{q}:workflows:cursor``: where the next check resumes in the running index (a rank; expires).

        Each check reads a bounded page of :meth:`workflows_running` from here, so a large index is covered
        over several intervals, whichever worker wins each one.
        """
        return f"{self.xprefix}workflows:cursor"

    def workflows_pruned(self) -> str:
        """STRING ``<ext>:{q}:workflows:pruned``: where the next prune of :meth:`workflows` resumes (a rank; expires).

        The workflow checker reads a page of the index from here each interval and drops the entries whose
        workflow records are gone (expired after the workflow ended), so the index does not keep every workflow
        ever started.
        """
        return f"{self.xprefix}workflows:pruned"

    def workflow(self, workflow_id: str) -> WorkflowKeys:
        """The keys of workflow ``workflow_id``, whose home queue this is."""
        return WorkflowKeys(self, workflow_id)

    def cron_claim(self, entry_id: str, tick: int) -> str:
        """STRING ``<ext>:{q}:cron:<entry id>:<tick>``: claim of one cron tick (exactly-once firing)."""
        return f"{self.xprefix}cron:{entry_id}:{tick}"


class WorkflowKeys:
    """The keys of one workflow, under its home queue's prefix (see ``framework/protocol/lua/_workflow.lua``).

    Attributes:
        id: the workflow id.
        home: the home queue's keys.
        meta: HASH ``<ext>:{home}:wf:<id>``: name, status, counters, retention, final steps, error.
        state: HASH ``...:state``: step -> waiting, pending, succeeded, failed, lost or cancelled.
        graph: HASH ``...:graph``: per step its dependencies, dependants, task, message, policy and error.
        results: HASH ``...:results``: step -> result (JSON).
        channel: Pub/Sub channel ``...:end``: each new status (failed, succeeded, cancelled).
    """

    __slots__ = ("channel", "graph", "home", "id", "meta", "results", "state")

    def __init__(self, home: QueueKeys, workflow_id: str) -> None:
        self.id = workflow_id
        self.home = home
        self.meta = base = f"{home.xprefix}wf:{workflow_id}"
        self.state = base + ":state"
        self.graph = base + ":graph"
        self.results = base + ":results"
        self.channel = base + ":end"

    def script_keys(self) -> list[str]:
        """meta, state, graph, results and the home queue's running index: the keys every ``wf_*`` script takes."""
        return [self.meta, self.state, self.graph, self.results, self.home.workflows_running()]


class LimitKeys:
    """The keys of one limit (and key within it), hash-tagged by the limit's name.

    Attributes:
        name: the limit's name.
        key: the key within it ("" = the limit as a whole).
        tat: STRING ``<ext>:limit:{<name>}[:<key>]:tat``: the rate's theoretical arrival time (Unix ms, GCRA).
            Beside it, ``...:tat:interval`` (STRING, ms): the interval it was counted at, so that a changed rate
            rescales it (written by ``limit_take.lua``, same expiry).
        slots: ZSET ``...:slots``: ``queue + newline + id`` of each task holding a slot -> a backstop expiry (Unix s);
            a slot kept for a handler given up on that still runs: ``queue + newline + id + newline + token`` -> minus
            the Unix s it is kept until (``limit_release.lua``).
        parked: LIST ``...:parked``: ``queue + newline + id`` of tasks waiting for a slot, oldest first.
        waiting: ZSET ``...:waiting``: ``queue + newline + id`` of tasks put off by it -> when they may start (ms).
        stats: HASH ``<ext>:limit:{<name>}:stats``: started, delayed and parked counts (whole limit).
        keys: SET ``<ext>:limit:{<name>}:keys``: the keys a keyed limit has seen.
        key_prefix: ``<ext>:limit:{<name>}:k:``, what each key's own names (tat, slots...) start with.
    """

    __slots__ = ("key", "key_prefix", "keys", "name", "parked", "slots", "stats", "tat", "waiting")

    def __init__(self, ext: str, name: str, key: str = "") -> None:
        self.name = name
        self.key = key
        root = f"{ext}:limit:{{{name}}}"
        self.key_prefix = f"{root}:k:"
        base = self.key_prefix + key if key else root
        self.tat = base + ":tat"
        self.slots = base + ":slots"
        self.parked = base + ":parked"
        self.waiting = base + ":waiting"
        self.stats = root + ":stats"
        self.keys = root + ":keys"

    def script_keys(self) -> list[str]:
        """tat, slots, parked, waiting, stats and keys: the six keys ``limit_take.lua`` takes per limit."""
        return [self.tat, self.slots, self.parked, self.waiting, self.stats, self.keys]


class Schema:
    """Global keys and a cache of :class:`QueueKeys` (at most :data:`QUEUE_KEYS_CACHE`), for one namespace.

    Args:
        ns: the asynq namespace; ``asynq`` for anything shared with Go.
        ext: the prefix of the framework's own keys (default ``framework``, or ``<ns>:fw`` for
            another namespace, so one namespace's keys never mix with another's).
    """

    def __init__(self, ns: str = DEFAULT_NS, ext: str | None = None) -> None:
        if ext is None:
            ext = DEFAULT_EXT if ns == DEFAULT_NS else f"{ns}:fw"
        self.ns = ns
        self.ext = ext
        self.all_queues = f"{ns}:queues"  # SET of every queue name
        self.servers = f"{ns}:servers"  # ZSET server key -> expiry
        self.workers = f"{ns}:workers"  # ZSET workers key -> expiry
        self.schedulers = f"{ns}:schedulers"  # ZSET scheduler entries key -> expiry
        self.cancel_channel = f"{ns}:cancel"  # Pub/Sub channel of task ids to cancel
        self.wakeup_channel = f"{ext}:wakeup"  # Pub/Sub channel: queue names with new work
        self.handoff_prefix = f"{ext}:handoff:"  # + server id: Pub/Sub channel of tasks handed to an idle worker
        self.cron_entries = f"{ext}:cron:entries"  # HASH entry id -> our entry record
        self.cron_last = f"{ext}:cron:last"  # HASH entry id -> last fired tick (Unix s)
        self.alive = f"{ext}:alive"  # ZSET server id -> time of its last heartbeat (Unix s)
        self._queues: dict[str, QueueKeys] = {}

    def queue(self, name: str) -> QueueKeys:
        """Return the (cached) keys of queue ``name``."""
        qk = self._queues.get(name)
        if qk is None:
            if len(self._queues) >= QUEUE_KEYS_CACHE:
                self._queues.clear()
            qk = self._queues[name] = QueueKeys(self.ns, self.ext, name)
        return qk

    def server(self, host: str, pid: int, server_id: str) -> str:
        """STRING ``<ns>:servers:{<host>:<pid>:<id>}``: ServerInfo protobuf."""
        return f"{self.servers}:{{{host}:{pid}:{server_id}}}"

    def worker_set(self, host: str, pid: int, server_id: str) -> str:
        """HASH ``<ns>:workers:{<host>:<pid>:<id>}``: task id -> WorkerInfo protobuf."""
        return f"{self.workers}:{{{host}:{pid}:{server_id}}}"

    def scheduler_entries(self, host: str, pid: int, scheduler_id: str) -> str:
        """LIST ``<ns>:schedulers:{<host>:<pid>:<id>}``: SchedulerEntry protobufs."""
        return f"{self.schedulers}:{{{host}:{pid}:{scheduler_id}}}"

    def scheduler_history(self, entry_id: str) -> str:
        """ZSET ``<ns>:scheduler_history:<entry id>``: SchedulerEnqueueEvent protobufs by time."""
        return f"{self.ns}:scheduler_history:{entry_id}"

    def queue_set_claim(self, purpose: str, queues: Iterable[str]) -> str:
        """STRING ``<ext>:<purpose>:<digest of the queue names>``: a claim (``SET NX PX``) on a periodic look.

        The workers serving exactly the same queues share it: the first to claim it looks for all of them
        (``pending-check``: the idle check of the pending lists; ``forward-pass``: the forwarder's pass).
        """
        digest = hashlib.sha1("\n".join(sorted(queues)).encode(), usedforsecurity=False).hexdigest()[:16]
        return f"{self.ext}:{purpose}:{digest}"

    def death(self, server_id: str) -> str:
        """STRING ``<ext>:death:<server id>``: how many tasks a dead worker held, as first seen by a recoverer."""
        return f"{self.ext}:death:{server_id}"

    def handoff_channel(self, server_id: str) -> str:
        """Pub/Sub channel ``<ext>:handoff:<server id>``: tasks an enqueue handed straight to this idle worker."""
        return self.handoff_prefix + server_id

    def token(self, purpose: str, digest: str) -> str:
        """STRING ``<ext>:token:<purpose>:<sha256>``: a one-time token record (expires)."""
        return f"{self.ext}:token:{purpose}:{digest}"

    def token_index(self) -> str:
        """ZSET ``<ext>:tokens:index``: ``<purpose>:<sha256>`` of every live one-time token -> its expiry (Unix s)."""
        return f"{self.ext}:tokens:index"

    def limit(self, name: str, key: str = "") -> LimitKeys:
        """The keys of task limit ``name`` (and ``key`` within it); see :class:`LimitKeys`."""
        return LimitKeys(self.ext, name, key)

    def limits_index(self) -> str:
        """HASH ``<ext>:limits``: limit name -> its declaration as JSON, as the workers last saw it.

        Rate, burst, concurrency and whether it is keyed: what the dashboard and ``framework tasks stats`` list.
        """
        return f"{self.ext}:limits"

    def rate_limit(self, name: str, client: str) -> str:
        """ZSET ``<ext>:ratelimit:<name>:<client>``: one client's recent events -> their time (Unix s; expires)."""
        return f"{self.ext}:ratelimit:{name}:{client}"

    def ext_key(self, plugin: str, *parts: str) -> str:
        """A key of plugin ``plugin``'s own: ``<ext>:<plugin>:<part>:<part>...``.

        Plugins build every key they use with this, named after themselves, so their keys share the
        namespace (one ``SCAN`` of ``<ns>:*`` or of ``<ext>:*`` finds them) and never meet the
        framework's or another plugin's.

        Args:
            plugin: the plugin's name; not one of the framework's own key segments (``cron``, ``token``, ...).
            *parts: the rest of the key, joined with ``:``.

        Raises:
            ValueError: ``plugin`` is not a name (letters, digits, ``_``, ``-``) or is one of the framework's
                own segments.
        """
        if not _PLUGIN_NAME.fullmatch(plugin) or plugin in CORE_SEGMENTS:
            raise ValueError(f"invalid plugin name {plugin!r} for a key: use the plugin's own name")
        return ":".join((self.ext, plugin, *parts))


@lru_cache(maxsize=4096)
def day_stamp(unix_seconds: int) -> str:
    """Return the UTC date ``YYYY-MM-DD`` of a Unix time, as asynq's daily counters use."""
    return datetime.fromtimestamp(unix_seconds, UTC).strftime("%Y-%m-%d")
