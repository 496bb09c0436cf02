"""The :class:`ResolvedEntry`: a cron entry validated and ready to fire, with its id, claim TTL and asynq forms.

**Entry ids** are UUID5s of (name, spec, time zone, task type): stable across restarts and replicas, and
shown by ``asynq cron ls`` / accepted by ``asynq cron history``. Changing the payload or the options
keeps the id; changing the queue moves the claim to the new queue's slot, so replicas running old and new
settings at the same time can both fire a tick.

**Claim TTL.** ``max(1 h, 2 x the gap to the entry's next tick)``: far longer than clock skew, the 60 s
lateness window and a run-missed catch-up (which happens before the next tick), so no scheduler can
still try a tick whose claim has expired. A claim is a few dozen bytes.

asynq's Inspector reads an entry's spec and options in Go's forms (:attr:`ResolvedEntry.go_spec`,
:attr:`ResolvedEntry.go_options`); the ``_go_*`` helpers write them.
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass

from framework.client.options import ResolvedOptions
from framework.protocol.message import encode_message, new_message
from framework.scheduler.cron import Schedule

__all__ = ("CLAIM_TTL_MIN", "ResolvedEntry", "entry_id")

CLAIM_TTL_MIN = 3600
"""Lower bound of a tick claim's TTL, in seconds."""
_ENTRY_NAMESPACE = uuid.UUID("3b1f6c8e-5d2a-4f0b-9e47-2c8d1a6b7f90")
_GO_ESCAPES = {'"': '\\"', "\\": "\\\\", "\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r"}
_GO_ESCAPES |= {"\t": "\\t", "\v": "\\v"}


def entry_id(name: str, spec: str, tz: str, task_type: str) -> str:
    """The stable UUID of a cron entry: a UUID5 of its name, spec, time zone and task type."""
    return str(uuid.uuid5(_ENTRY_NAMESPACE, "\x1f".join((name, spec, tz, task_type))))


@dataclass(frozen=True, slots=True)
class ResolvedEntry:
    """A validated cron entry, ready to fire. Built by :func:`~framework.scheduler.loader.load_entries`.

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
    options: ResolvedOptions
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

    def message(self, task_id: str, unique_key: str = "") -> bytes:
        """The encoded ``TaskMessage`` of one tick (``unique_key``: its lock, for a unique task type)."""
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
                unique_key=unique_key,
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
