"""The cron scheduler: enqueues each tick of each cron entry exactly once, however many schedulers run.

Entries come from settings (``[[cron]]``) and from plugins (``register_cron_entries``). :func:`load_entries`
checks every one at startup (spec, time zone, task type, payload, options) and fails naming the entry and
where it came from; ``framework cron ls`` and ``framework run`` use it too.

**Exactly once.** Every scheduler (``framework scheduler``, ``framework run``, or one per worker replica)
computes the same tick times (``framework.cron``; ``@every`` ticks are epoch-aligned) and, at each tick of
each entry, calls ``cron_enqueue.lua``. The script claims ``<ext>:{queue}:cron:<entry id>:<tick>`` with
``SET NX EX`` and enqueues the task in the same atomic step, so a scheduler that dies mid-tick has either
enqueued the tick or left it to the others, and two schedulers never both enqueue it. The task id
``cron:<entry id>:<tick>`` is deterministic too, and the script refuses an id that already exists.
Nothing depends on which scheduler runs first: a clock a second or two ahead fires a tick that much
earlier, and the claim makes the others' attempts no-ops.

**Claim TTL.** ``max(1 h, 2 x the gap to the entry's next tick)``: far longer than clock skew, the 60 s
lateness window and a run-missed catch-up (which happens before the next tick), so no scheduler can
still try a tick whose claim has expired. A claim is a few dozen bytes.

**Entry ids** are UUID5s of (name, spec, time zone, task type): stable across restarts and replicas, and
shown by ``asynq cron ls`` / accepted by ``asynq cron history``. Changing the payload or the options
keeps the id; changing the queue moves the claim to the new queue's slot, so replicas running old and new
settings at the same time can both fire a tick.

**Late and missed ticks.** A tick that comes due while a scheduler runs is fired even if the scheduler gets
to it late (event loop blocked, Redis briefly away), up to :data:`MISSED_AFTER` seconds late. Ticks that
came due while no scheduler ran are skipped, except that an entry with ``run_missed`` runs its most recent
missed tick once (``<ext>:cron:last`` records the last fired tick of each entry). An entry that has never
fired has no missed ticks.

**Visibility** (asynq's format): every 10 s each scheduler writes its entries as ``SchedulerEntry``
protobufs to ``<ns>:schedulers:{<host>:<pid>:<uuid>}`` (TTL 20 s, ``<ns>:schedulers`` score = expiry), and
the scheduler that enqueued a tick adds a ``SchedulerEnqueueEvent`` to ``<ns>:scheduler_history:<entry
id>`` (at most 1000 kept). History and ``cron:last`` are written after the enqueue, so a scheduler killed
in between leaves the task enqueued without its history event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec
from redis.exceptions import RedisError

from framework.broker import RedisBroker
from framework.clock import Clock, SystemClock
from framework.connection import check_connection, open_redis, resolve_redis_url
from framework.cron import CronSpecError, Schedule, parse_schedule
from framework.cron_entry import CronEntry
from framework.errors import ConfigError, FrameworkError, InvalidOption, PayloadTypeError, PluginError
from framework.keys import Schema
from framework.logging import configure_logging, get_logger
from framework.message import encode_enqueue_event, encode_message, encode_scheduler_entry, new_message
from framework.options import EnqueueOptions, resolve_options
from framework.registry import Registry
from framework.task import TaskDef

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    import pluggy
    from redis.asyncio import Redis

    from framework.settings import Settings

__all__ = (
    "CLAIM_TTL_MIN",
    "HISTORY_MAX",
    "MISSED_AFTER",
    "Enqueued",
    "ResolvedEntry",
    "Scheduler",
    "entry_id",
    "load_entries",
)

MISSED_AFTER = 60.0
"""Seconds after which a tick nobody fired counts as missed instead of late."""
CLAIM_TTL_MIN = 3600
"""Lower bound of a tick claim's TTL, in seconds."""
HISTORY_MAX = 1000
"""Enqueue events kept per entry, as asynq keeps."""
HEARTBEAT_INTERVAL = 10.0
ENTRIES_TTL = 20
_MAX_SLEEP = 10.0
_RETRY_DELAY = 1.0
_ENTRY_NAMESPACE = uuid.UUID("3b1f6c8e-5d2a-4f0b-9e47-2c8d1a6b7f90")
_CRON_OPTIONS = frozenset({"queue", "max_retry", "timeout", "retention", "headers"})
_GO_ESCAPES = {'"': '\\"', "\\": "\\\\", "\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r"}
_GO_ESCAPES |= {"\t": "\\t", "\v": "\\v"}


def entry_id(name: str, spec: str, tz: str, task_type: str) -> str:
    """The stable UUID of a cron entry: a UUID5 of its name, spec, time zone and task type."""
    return str(uuid.uuid5(_ENTRY_NAMESPACE, "\x1f".join((name, spec, tz, task_type))))


@dataclass(frozen=True, slots=True)
class ResolvedEntry:
    """A validated cron entry, ready to fire. Built by :func:`load_entries`.

    Attributes:
        id: stable UUID (:func:`entry_id`).
        name: the entry's name.
        schedule: when it fires (spec and time zone).
        task_type: the task type it enqueues.
        payload: the encoded payload.
        options: the resolved enqueue options (queue, retries, timeout, retention, headers).
        run_missed: after downtime, run the most recent missed tick once.
        source: ``settings``, the plugin's name, or ``app`` for entries given in code.
    """

    id: str
    name: str
    schedule: Schedule
    task_type: str
    payload: bytes
    options: EnqueueOptions
    run_missed: bool
    source: str

    @property
    def spec(self) -> str:
        """The cron spec."""
        return self.schedule.spec

    @property
    def tz(self) -> str:
        """The IANA time zone of the spec."""
        return self.schedule.tz

    def task_id(self, tick: int) -> str:
        """The deterministic id of the task of ``tick`` (integer Unix seconds)."""
        return f"cron:{self.id}:{tick}"

    def message(self, task_id: str) -> bytes:
        """The encoded ``TaskMessage`` of one tick."""
        o = self.options
        return encode_message(
            new_message(
                type=self.task_type,
                payload=self.payload,
                id=task_id,
                queue=o.queue,
                retry=o.max_retry,
                timeout=o.timeout,
                deadline=o.deadline,
                retention=o.retention,
                headers=o.headers,
            )
        )

    def claim_ttl(self, tick: float) -> int:
        """Seconds the claim of ``tick`` lives: ``max(1 h, 2 x the gap to the next tick)``."""
        return max(CLAIM_TTL_MIN, math.ceil(2 * (self.schedule.next_after(tick) - tick)))

    @property
    def go_spec(self) -> str:
        """The spec as Go's robfig/cron writes it; a time zone other than UTC becomes a ``CRON_TZ=`` prefix."""
        if self.tz == "UTC" or self.schedule.is_interval:
            return self.spec
        return f"CRON_TZ={self.tz} {self.spec}"

    @property
    def go_options(self) -> tuple[str, ...]:
        """The enqueue options in Go's ``Option.String()`` forms, which asynq's Inspector parses."""
        o = self.options
        out = [f"Queue({_go_quote(o.queue)})", f"MaxRetry({o.max_retry})"]
        if o.timeout:
            out.append(f"Timeout({_go_duration(o.timeout)})")
        if o.retention:
            out.append(f"Retention({_go_duration(o.retention)})")
        out.extend(f"Header({_go_json([k, v])})" for k, v in sorted(o.headers.items()))
        return tuple(out)


class Enqueued(NamedTuple):
    """A tick this scheduler enqueued (returned by :meth:`Scheduler.fire_due`)."""

    entry: str
    tick: float
    task_id: str


def _go_duration(seconds: int) -> str:
    """Whole seconds as Go's ``time.Duration.String()`` (``30s``, ``1m30s``, ``1h0m0s``)."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def _go_quote(text: str) -> str:
    """A string as Go's ``strconv.Quote`` (``%q``) writes it."""
    out = []
    for ch in text:
        if ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(f"\\u{ord(ch):04x}" if ord(ch) < 0x10000 else f"\\U{ord(ch):08x}")
    return '"' + "".join(out) + '"'


def _go_json(value: list[str]) -> str:
    """JSON as Go's ``encoding/json`` writes it (HTML characters escaped)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


# -- loading and validation ---------------------------------------------------------------------


def load_entries(
    settings: Settings,
    pm: pluggy.PluginManager | None = None,
    registry: Registry | None = None,
    *,
    entries: Iterable[CronEntry] = (),
    now: float | None = None,
) -> list[ResolvedEntry]:
    """Collect the cron entries of settings, plugins and code, and validate every one.

    Args:
        settings: the app's settings (``settings.cron`` and queue defaults).
        pm: the plugin manager whose ``register_cron_entries`` hooks are called.
        registry: the known task types (entries name their task by type string).
        entries: more entries, given in code (source ``app`` unless set).
        now: the current Unix time, for option validation.

    Returns:
        The entries in order: settings, plugins, code.

    Raises:
        ConfigError: an entry from settings or code is invalid; the message names it and its origin.
        PluginError: an entry from a plugin is invalid; the message names it and the plugin.
    """
    raw: list[tuple[Any, str, str | None]] = []  # (entry, source, the plugin that contributed it)
    for cs in settings.cron:
        options = {"queue": cs.queue} if cs.queue else {}
        entry = CronEntry(cs.name, cs.spec, cs.task, cs.payload, cs.tz, options, cs.run_missed, "settings")
        raw.append((entry, "settings", None))
    if pm is not None:
        raw.extend(_plugin_entries(pm, settings))
    raw.extend((e, getattr(e, "source", "") or "app", None) for e in entries)
    reg = registry if registry is not None else Registry()
    at = SystemClock().now() if now is None else now
    out: list[ResolvedEntry] = []
    seen: dict[str, str] = {}
    for entry, source, plugin in raw:
        resolved = _resolve(entry, source, plugin, reg, settings, at)
        if resolved.name in seen:
            problem = f"the name is already used by the entry from {seen[resolved.name]}"
            raise _entry_error(resolved.name, source, plugin, problem)
        seen[resolved.name] = _where(source, plugin)
        out.append(resolved)
    return out


def _plugin_entries(pm: pluggy.PluginManager, settings: Settings) -> list[tuple[Any, str, str | None]]:
    from framework.plugins import _results_by_plugin  # noqa: PLC0415 - contributions with their plugin

    out: list[tuple[Any, str, str | None]] = []
    for plugin, contributed in _results_by_plugin(pm, "register_cron_entries", settings=settings):
        if not isinstance(contributed, list | tuple):
            if contributed is None:
                continue
            raise PluginError(f"plugin {plugin!r}: register_cron_entries must return a list, got {contributed!r}")
        out.extend((e, getattr(e, "source", "") or plugin, plugin) for e in contributed)
    return out


def _where(source: str, plugin: str | None) -> str:
    return f"plugin {plugin!r}" if plugin else source


def _entry_error(name: str, source: str, plugin: str | None, problem: str) -> FrameworkError:
    cls = PluginError if plugin else ConfigError
    return cls(f"cron entry {name!r} from {_where(source, plugin)}: {problem}")


def _resolve(
    entry: Any, source: str, plugin: str | None, registry: Registry, settings: Settings, now: float
) -> ResolvedEntry:
    if not isinstance(entry, CronEntry):
        raise _entry_error(repr(entry)[:60], source, plugin, "is not a framework.cron_entry.CronEntry")
    name = entry.name

    def fail(problem: str) -> FrameworkError:
        return _entry_error(name, source, plugin, problem)

    if not isinstance(name, str) or not name.strip():
        raise fail("the name must be a non-blank string")
    if not isinstance(entry.spec, str):
        raise fail(f"the spec must be a string, got {entry.spec!r}")
    try:
        schedule = parse_schedule(entry.spec, entry.tz)
    except CronSpecError as exc:
        raise fail(str(exc)) from None
    taskdef = _taskdef(entry.task, registry, fail)
    try:
        payload = _payload_bytes(taskdef, entry.payload)
    except PayloadTypeError as exc:
        raise fail(str(exc)) from None
    if not isinstance(entry.options or {}, Mapping):
        raise fail(f"options must be a mapping of enqueue options, got {entry.options!r}")
    options = dict(entry.options or {})
    bad = sorted(set(options) - _CRON_OPTIONS)
    if bad:
        allowed = ", ".join(sorted(_CRON_OPTIONS))
        raise fail(f"option(s) {', '.join(bad)} cannot be used for a cron entry (allowed: {allowed})")
    try:
        resolved = resolve_options(taskdef, options, settings, now)
    except InvalidOption as exc:
        raise fail(str(exc)) from None
    return ResolvedEntry(
        id=entry_id(name, schedule.spec, schedule.tz, taskdef.type),
        name=name,
        schedule=schedule,
        task_type=taskdef.type,
        payload=payload,
        options=resolved,
        run_missed=bool(entry.run_missed),
        source=source,
    )


def _taskdef(task: Any, registry: Registry, fail: Callable[[str], FrameworkError]) -> TaskDef[Any]:
    if isinstance(task, TaskDef):
        return task
    if not isinstance(task, str) or not task.strip():
        raise fail(f"task must be a TaskDef or a task type string, got {task!r}")
    found = registry.get(task)
    if found is None:
        known = ", ".join(sorted(t.type for t in registry)) or "none"
        raise fail(f"unknown task type {task!r} (registered types: {known})")
    return found


def _payload_bytes(taskdef: TaskDef[Any], payload: Any) -> bytes:
    if taskdef.payload is bytes:
        if payload is None or payload == {}:
            return b""
        return bytes(payload) if isinstance(payload, bytes | bytearray) else taskdef.encode(taskdef.convert(payload))
    if payload is None:
        payload = {}
    if not isinstance(payload, taskdef.payload):
        if isinstance(payload, msgspec.Struct):
            expected = getattr(taskdef.payload, "__name__", "other")
            raise PayloadTypeError(f"task {taskdef.type!r} takes a {expected} payload, got {type(payload).__name__}")
        payload = taskdef.convert(payload)
    return taskdef.encode(payload)


# -- the scheduler ------------------------------------------------------------------------------


class Scheduler:
    """Fires cron entries. Run any number of them: together they enqueue each tick exactly once.

    Args:
        settings: the app's settings (``cron`` entries, namespace, Redis URL, queue defaults).
        entries: more entries, given in code.
        plugin_manager: the plugin manager (``register_cron_entries``, and task types when no registry is given).
        registry: the known task types (default: collected from the plugins).
        redis: an existing Redis client to use (default: opened from the settings, and closed on stop).
        clock: where time comes from.

    Raises:
        ConfigError: an entry from settings or code is invalid (raised here, before anything runs).
        PluginError: an entry from a plugin is invalid.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        entries: Iterable[CronEntry] = (),
        plugin_manager: pluggy.PluginManager | None = None,
        registry: Registry | None = None,
        redis: Redis | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.log = get_logger("framework.scheduler")
        if registry is None:
            registry = Registry()
            if plugin_manager is not None:
                from framework.plugins import collect_task_types  # noqa: PLC0415

                collect_task_types(plugin_manager, settings, registry)
        self.registry = registry
        self.entries = load_entries(settings, plugin_manager, registry, entries=entries, now=self.clock.now())
        self.schema = Schema(settings.namespace)
        self.host, self.pid, self.scheduler_id = socket.gethostname(), os.getpid(), str(uuid.uuid4())
        self.key = self.schema.scheduler_entries(self.host, self.pid, self.scheduler_id)
        self._redis = redis
        self._owns_redis = redis is None
        self._broker: RedisBroker | None = None
        self._cursor: dict[str, float] = {}  # entry id -> time up to which its ticks are handled
        self._next: dict[str, float] = {}  # entry id -> its next tick to handle
        self._failed = False
        self._stop = asyncio.Event()
        self._stopped = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._started = self._stopping = False

    async def _connect(self) -> tuple[Redis, RedisBroker]:
        if self._redis is None:
            url = await asyncio.to_thread(resolve_redis_url, self.settings)
            redis = open_redis(url)
            try:
                await check_connection(redis, url)
            except FrameworkError:
                await redis.aclose()
                raise
            self._redis = redis
        if self._broker is None:
            self._broker = RedisBroker(self._redis, self.schema, self.clock)
        return self._redis, self._broker

    # -- firing ----------------------------------------------------------------------------------

    async def fire_due(self) -> list[Enqueued]:
        """Enqueue every tick that is due at the clock's current time; return those this scheduler won.

        The first call sets the starting point: ticks before it are not fired, except the most recent
        missed tick of a ``run_missed`` entry that has fired before. Later calls fire the ticks since the
        previous call, at most :data:`MISSED_AFTER` seconds late (older ones are missed).

        Raises:
            RedisError: Redis failed before any tick was tried (ticks that fail are retried on the next call).
        """
        await self._connect()
        now = self.clock.now()
        self._failed = False
        if not self._cursor:
            await self._begin(now)
        out: list[Enqueued] = []
        for entry in self.entries:
            if self._next[entry.id] <= now:
                out.extend(await self._catch_up(entry, now))
        return out

    async def _begin(self, now: float) -> None:
        last = await self._last_ticks()
        for e in self.entries:
            self._cursor[e.id] = now
            self._next[e.id] = e.schedule.next_after(now)
            latest = e.schedule.prev_at_or_before(now)
            if e.id not in last or latest is None or last[e.id] >= math.floor(latest):
                continue  # never fired (nothing missed), or nothing missed since
            if e.run_missed:
                self._next[e.id] = latest  # before the cursor: handled as missed by _catch_up
            else:
                self.log.info("cron_ticks_missed", entry=e.name, last=last[e.id], latest=latest, run_missed=False)

    async def _catch_up(self, e: ResolvedEntry, now: float) -> list[Enqueued]:
        start = max(self._cursor[e.id], now - MISSED_AFTER)
        ticks = list(e.schedule.ticks_between(start, now))
        out: list[Enqueued] = []
        if self._next[e.id] <= start:
            self.log.warning("cron_ticks_missed", entry=e.name, first=self._next[e.id], run_missed=e.run_missed)
            if e.run_missed and not ticks:
                try:
                    out.extend(await self._run_missed(e, now))
                except (RedisError, OSError) as exc:
                    self._fire_failed(e, None, exc)
                    return out
        for tick in ticks:
            try:
                fired = await self._fire(e, tick)
            except (RedisError, OSError) as exc:
                self._fire_failed(e, tick, exc)
                return out
            if fired is not None:
                out.append(fired)
        self._cursor[e.id] = now
        self._next[e.id] = e.schedule.next_after(now)
        return out

    def _fire_failed(self, e: ResolvedEntry, tick: float | None, exc: BaseException) -> None:
        """Keep ``tick`` due, so the next pass tries it again while it is not yet missed."""
        self._failed = True
        self.log.warning("cron_enqueue_failed", entry=e.name, tick=tick, error=f"{type(exc).__name__}: {exc}")
        if tick is not None:
            self._cursor[e.id] = math.nextafter(tick, -math.inf)
            self._next[e.id] = tick

    async def _run_missed(self, e: ResolvedEntry, now: float) -> list[Enqueued]:
        latest = e.schedule.prev_at_or_before(now)
        if latest is None:
            return []
        last = (await self._last_ticks([e.id])).get(e.id)
        if last is not None and last >= math.floor(latest):
            return []
        fired = await self._fire(e, latest)
        return [] if fired is None else [fired]

    async def _fire(self, e: ResolvedEntry, tick: float) -> Enqueued | None:
        _, broker = await self._connect()
        n = math.floor(tick)
        task_id = e.task_id(n)
        won = await broker.cron_enqueue(e.options.queue, e.id, n, task_id, e.message(task_id), e.claim_ttl(tick))
        if not won:
            self.log.debug("cron_tick_taken", entry=e.name, tick=n)
            return None
        self.log.info("cron_enqueued", entry=e.name, entry_id=e.id, tick=n, task_id=task_id, queue=e.options.queue)
        try:
            await self._record(e, n, task_id)
        except (RedisError, OSError) as exc:
            self.log.warning("cron_history_failed", entry=e.name, tick=n, error=f"{type(exc).__name__}: {exc}")
        return Enqueued(e.name, tick, task_id)

    async def _record(self, e: ResolvedEntry, tick: int, task_id: str) -> None:
        """Write the enqueue event to asynq's history (capped at 1000) and the entry's last fired tick."""
        redis, _ = await self._connect()
        now = self.clock.now()
        history = self.schema.scheduler_history(e.id)
        async with redis.pipeline(transaction=False) as pipe:
            pipe.zremrangebyrank(history, 0, -HISTORY_MAX)
            pipe.zadd(history, {encode_enqueue_event(task_id, now): int(now)})
            pipe.hset(self.schema.cron_last, e.id, tick)
            await pipe.execute()

    async def _last_ticks(self, ids: list[str] | None = None) -> dict[str, int]:
        """The last fired tick of each entry (all of this scheduler's by default) that has fired."""
        redis, _ = await self._connect()
        ids = [e.id for e in self.entries] if ids is None else ids
        if not ids:
            return {}
        values = await redis.hmget(self.schema.cron_last, ids)
        return {i: int(v) for i, v in zip(ids, values, strict=True) if v is not None}

    # -- visibility ------------------------------------------------------------------------------

    async def beat(self) -> None:
        """Write this scheduler's entries as asynq ``SchedulerEntry`` records (TTL 20 s), for ``asynq cron ls``."""
        redis, _ = await self._connect()
        now = self.clock.now()
        last = await self._last_ticks()
        records = [
            encode_scheduler_entry(
                id=e.id,
                spec=e.go_spec,
                task_type=e.task_type,
                task_payload=e.payload,
                enqueue_options=e.go_options,
                next_enqueue_time=self._next.get(e.id) or e.schedule.next_after(now),
                prev_enqueue_time=last.get(e.id),
            )
            for e in self.entries
        ]
        ours: dict[Any, bytes] = {e.id: msgspec.json.encode(self._describe(e, now)) for e in self.entries}
        async with redis.pipeline(transaction=False) as pipe:
            pipe.zadd(self.schema.schedulers, {self.key: int(now) + ENTRIES_TTL})
            pipe.zremrangebyscore(self.schema.schedulers, "-inf", int(now) - CLAIM_TTL_MIN)  # long-dead schedulers
            pipe.delete(self.key)
            if records:
                pipe.lpush(self.key, *records)
                pipe.expire(self.key, ENTRIES_TTL)
                pipe.hset(self.schema.cron_entries, mapping=ours)
            await pipe.execute()

    def _describe(self, e: ResolvedEntry, now: float) -> dict[str, Any]:
        """Our own record of an entry (name, source, time zone: what asynq's record lacks)."""
        return {
            "id": e.id,
            "name": e.name,
            "spec": e.spec,
            "tz": e.tz,
            "task_type": e.task_type,
            "queue": e.options.queue,
            "source": e.source,
            "run_missed": e.run_missed,
            "seen_at": int(now),
        }

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, fire what is due, publish the entries, and keep firing in the background."""
        if self._started:
            return
        self._started = True
        await self._connect()
        if not self.entries:
            self.log.info("scheduler_idle", reason="no cron entries")
            return
        await self.fire_due()
        await self.beat()
        self._tasks = [asyncio.create_task(self._loop()), asyncio.create_task(self._heartbeat())]
        self.log.info("scheduler_started", scheduler_id=self.scheduler_id, entries=[e.name for e in self.entries])

    async def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                await self.fire_due()
            except (RedisError, OSError, FrameworkError) as exc:
                self._failed = True
                self.log.warning("scheduler_redis_error", error=f"{type(exc).__name__}: {exc}")
            await self._sleep(self._delay())

    def _delay(self) -> float:
        """Seconds until the next tick of any entry (at most 10 s; 1 s after a failure)."""
        if self._failed or not self._next:
            return _RETRY_DELAY
        return min(max(min(self._next.values()) - self.clock.now(), 0.0), _MAX_SLEEP)

    async def _heartbeat(self) -> None:
        while not await self._sleep(HEARTBEAT_INTERVAL):
            try:
                await self.beat()
            except (RedisError, OSError, FrameworkError) as exc:
                self.log.warning("scheduler_heartbeat_failed", error=f"{type(exc).__name__}: {exc}")

    async def _sleep(self, seconds: float) -> bool:
        """Sleep, waking early on stop; return whether the scheduler is stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)
        return self._stop.is_set()

    async def stop(self) -> None:
        """Stop firing, remove this scheduler's entry records, and close Redis if the scheduler opened it."""
        if self._stopping:
            return
        self._stopping = True
        self._stop.set()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=5.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._redis is not None:
            if self._tasks:
                with contextlib.suppress(RedisError, OSError):
                    async with self._redis.pipeline(transaction=False) as pipe:
                        pipe.zrem(self.schema.schedulers, self.key)
                        pipe.delete(self.key)
                        await pipe.execute()
            if self._owns_redis:
                await self._redis.aclose()
        self._stopped.set()
        self.log.info("scheduler_stopped", scheduler_id=self.scheduler_id)

    async def wait(self) -> None:
        """Wait until the scheduler has stopped."""
        await self._stopped.wait()

    async def run(self) -> None:
        """Start, run until SIGTERM/SIGINT, then stop; a second signal exits at once."""
        configure_logging(self.settings.log_level, self.settings.log_format)
        await self.start()
        loop = asyncio.get_running_loop()
        signals = 0

        def on_signal() -> None:
            nonlocal signals
            signals += 1
            if signals == 1:
                loop.create_task(self.stop())  # noqa: RUF006 - awaited through self.wait()
            else:
                self.log.warning("scheduler_exit_now", note="second signal")
                os._exit(130)

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        try:
            await self.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    async def __aenter__(self) -> Scheduler:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
