"""Limit reads: each task limit's values, how much of it is in use now, how many tasks wait on it, its counters.

Workers list the limits their task types declare in ``<ext>:limits`` when they start (:func:`limit_declarations`
builds the entries, :func:`encode_declarations` their JSON): limit name -> rate, burst, concurrency, whether it is
keyed, the task types that use it and the keys with overrides, with the settings' values already merged over the
code's. :class:`LimitReads` lists those limits with what their keys hold now (see
:class:`~framework.protocol.keys.LimitKeys`):

* ``in_use``: slots held (``ZCARD slots``), summed over the keys of a keyed limit;
* ``waiting``: tasks put off by the limit that have not started yet (``waiting`` entries due no more than a minute
  ago: older ones belong to tasks deleted while they waited), summed the same way;
* ``started``, ``delayed``, ``parked``: the limit's counters since it was first used.

A keyed limit's keys are read a bounded page at a time (:data:`KEY_PAGE`); its busiest keys come back as rows of
their own. Every read is pipelined: a listing costs three or four round trips whatever the number of limits.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import msgspec

from framework.inspector.namespace import Part, text
from framework.limits import applied_limits

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from framework.task import TaskDef

__all__ = (
    "BUSIEST_KEYS",
    "KEY_PAGE",
    "LimitDeclaration",
    "LimitInfo",
    "LimitKeyUse",
    "LimitReads",
    "encode_declarations",
    "limit_declarations",
)

KEY_PAGE = 1000
"""The most keys of one keyed limit read per listing (the rest are counted in ``keys`` but not summed)."""
BUSIEST_KEYS = 10
"""Per-key rows a keyed limit comes with: its busiest keys (most in use, then most waiting)."""
WAITING_GRACE_MS = 60_000
"""A ``waiting`` entry due longer ago than this is left out: its task was deleted while it waited."""


class LimitDeclaration(msgspec.Struct, frozen=True, kw_only=True):
    """A limit as the workers declare it (an entry of ``<ext>:limits``), the settings' values merged in.

    Attributes:
        rate: the rate as text (``"50/s"``), "" for none.
        burst: tasks that may start at once after a quiet spell.
        concurrency: the most tasks running at once, 0 for no cap.
        keyed: whether each key of the payload counts alone.
        task_types: the task types that count against it.
        overrides: keys given values of their own (in the code or the settings).
    """

    rate: str = ""
    burst: int = 1
    concurrency: int = 0
    keyed: bool = False
    task_types: list[str] = msgspec.field(default_factory=list)
    overrides: list[str] = msgspec.field(default_factory=list)


class LimitKeyUse(msgspec.Struct, frozen=True, kw_only=True):
    """One key of a keyed limit, as its busiest keys list it.

    Attributes:
        key: the key.
        in_use: slots its tasks hold now.
        waiting: its tasks put off and not started yet.
    """

    key: str
    in_use: int
    waiting: int


class LimitInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One limit: its values, what it holds now and its counters.

    Attributes:
        name: its name.
        rate: the rate as text (``"50/s"``), "" for none.
        burst: tasks that may start at once after a quiet spell.
        concurrency: the most tasks running at once (per key, for a keyed limit), 0 for no cap.
        keyed: whether each key counts alone.
        task_types: the task types that count against it.
        overrides: keys with values of their own.
        in_use: slots held now (over every key read).
        waiting: tasks put off by it and not started yet (over every key read).
        started: tasks it let start, since it was first used.
        delayed: tasks its rate put off.
        parked: tasks that waited for one of its slots.
        keys: keys a keyed limit has seen (0 for one that is not keyed).
        busiest: a keyed limit's busiest keys (at most :data:`BUSIEST_KEYS`), most in use first.
    """

    name: str
    rate: str
    burst: int
    concurrency: int
    keyed: bool
    task_types: list[str]
    overrides: list[str]
    in_use: int
    waiting: int
    started: int
    delayed: int
    parked: int
    keys: int = 0
    busiest: list[LimitKeyUse] = msgspec.field(default_factory=list)


def limit_declarations(
    tasks: Iterable[TaskDef[Any]], settings: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, LimitDeclaration]:
    """The limits ``tasks`` declare, by name, with the ``[limits.<name>]`` settings merged over the code's values.

    Task types naming the same limit share one entry (the values of the first type, by name, that declares it).
    """
    found: dict[str, LimitDeclaration] = {}
    for task in sorted(tasks, key=lambda t: t.type):
        for limit in task.limits:
            name = limit.name or task.type
            known = found.get(name)
            if known is not None:
                if task.type not in known.task_types:
                    found[name] = msgspec.structs.replace(known, task_types=[*known.task_types, task.type])
                continue
            table = (settings or {}).get(name) or {}
            [whole] = applied_limits([dataclasses.replace(limit, key=None, overrides={})], task.type, None, settings)
            overrides = set(limit.overrides) | set(dict(table.get("overrides") or {}))
            found[name] = LimitDeclaration(
                rate=str(whole.rate) if whole.rate is not None else "",
                burst=whole.burst,
                concurrency=whole.concurrency,
                keyed=limit.key is not None,
                task_types=[task.type],
                overrides=sorted(overrides),
            )
    return found


def encode_declarations(declared: Mapping[str, LimitDeclaration]) -> dict[Any, bytes]:
    """The fields of ``<ext>:limits`` for ``declared``: name -> JSON (keys typed as redis-py takes field names)."""
    return {name: msgspec.json.encode(d) for name, d in declared.items()}


_DECODER = msgspec.json.Decoder(LimitDeclaration)


def _decode(raw: Any) -> LimitDeclaration:
    try:
        return _DECODER.decode(raw if isinstance(raw, bytes) else text(raw).encode())
    except (msgspec.DecodeError, msgspec.ValidationError):
        return LimitDeclaration()


def _int(value: Any) -> int:
    try:
        return int(text(value) or 0)
    except ValueError:
        return 0


class LimitReads(Part):
    """The limit reads of :class:`~framework.inspector.core.Inspector`."""

    __slots__ = ()

    async def limits(self, *, busiest: int = BUSIEST_KEYS) -> list[LimitInfo]:
        """Every declared limit, by name, with its current use, its waiting tasks and its counters.

        Args:
            busiest: per-key rows of a keyed limit (its busiest keys).
        """
        raw: dict[Any, Any] = await self._redis.hgetall(self._schema.limits_index())
        declared = {text(k): _decode(v) for k, v in raw.items()}
        if not declared:
            return []
        names = sorted(declared)
        since = self._ns.now() * 1000 - WAITING_GRACE_MS
        async with self._redis.pipeline(transaction=False) as pipe:
            for name in names:
                keys = self._schema.limit(name)
                pipe.hgetall(keys.stats)
                pipe.zcard(keys.slots)
                pipe.zcount(keys.waiting, since, "+inf")
                pipe.scard(keys.keys)
            first: list[Any] = await pipe.execute()
        seen = {name: _int(first[4 * i + 3]) for i, name in enumerate(names)}
        keyed = [n for n in names if declared[n].keyed and seen[n]]
        members = await self._key_pages(keyed)
        per_key: dict[str, list[LimitKeyUse]] = {}
        pairs = [(name, key) for name in keyed for key in members[name]]
        if pairs:
            async with self._redis.pipeline(transaction=False) as pipe:
                for name, key in pairs:
                    keys = self._schema.limit(name, key)
                    pipe.zcard(keys.slots)
                    pipe.zcount(keys.waiting, since, "+inf")
                counts: list[Any] = await pipe.execute()
            for i, (name, key) in enumerate(pairs):
                use = LimitKeyUse(key=key, in_use=counts[2 * i], waiting=counts[2 * i + 1])
                per_key.setdefault(name, []).append(use)
        out = []
        for i, name in enumerate(names):
            d = declared[name]
            stats = {text(k): _int(v) for k, v in first[4 * i].items()}
            rows = per_key.get(name, [])
            rows.sort(key=lambda r: (-r.in_use, -r.waiting, r.key))
            out.append(
                LimitInfo(
                    name=name,
                    rate=d.rate,
                    burst=d.burst,
                    concurrency=d.concurrency,
                    keyed=d.keyed,
                    task_types=d.task_types,
                    overrides=d.overrides,
                    in_use=_int(first[4 * i + 1]) + sum(r.in_use for r in rows),
                    waiting=_int(first[4 * i + 2]) + sum(r.waiting for r in rows),
                    started=stats.get("started", 0),
                    delayed=stats.get("delayed", 0),
                    parked=stats.get("parked", 0),
                    keys=seen[name] if d.keyed else 0,
                    busiest=[r for r in rows if r.in_use or r.waiting][: max(0, busiest)],
                )
            )
        return out

    async def throttled(self) -> int:
        """Tasks put off by a limit and not started yet, over every limit (a task waiting on two counts twice)."""
        return sum(info.waiting for info in await self.limits(busiest=0))

    async def _key_pages(self, names: list[str]) -> dict[str, list[str]]:
        """Up to :data:`KEY_PAGE` keys of each keyed limit in ``names``, a SSCAN step of each per round trip."""
        found: dict[str, list[str]] = {name: [] for name in names}
        cursors = dict.fromkeys(names, 0)
        while cursors:
            order = list(cursors)
            async with self._redis.pipeline(transaction=False) as pipe:
                for name in order:
                    pipe.sscan(self._schema.limit(name).keys, cursors[name], count=KEY_PAGE)
                replies: list[Any] = await pipe.execute()
            for name, (cursor, batch) in zip(order, replies, strict=True):
                found[name].extend(text(k) for k in batch)
                if int(cursor) == 0 or len(found[name]) >= KEY_PAGE:
                    del cursors[name]
                    found[name] = sorted(set(found[name]))[:KEY_PAGE]
                else:
                    cursors[name] = int(cursor)
        return found
