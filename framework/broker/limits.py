"""Limits in Redis: take a task's slots and rate tokens (or put it off), and free its slots when it ends.

``limit_take.lua`` runs once per limited task a worker took, before its handler; calls issued in the same
event-loop iteration share one round trip on the lean connection, so a batch costs one extra round trip.
``limit_release.lua`` runs once its outcome is written (and keeps its slots instead while a handler given up on
still runs). Limits need one Redis server (or Sentinel): a limit's keys and the queues' keys live in different
slots of a Cluster.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from framework.broker.base import BrokerPart
from framework.protocol.scripts import SCRIPTS

if TYPE_CHECKING:
    from collections.abc import Sequence

    from framework.limits import Applied

__all__ = ("EARLY", "HOLD", "KEEP", "LATE", "PARK_FALLBACK", "LimitOps", "Taken")

PARK_FALLBACK = 30
"""Seconds a task parked for a concurrency slot waits in the scheduled set before it is looked at anyway."""
HOLD = 2.0
"""Seconds within which a task whose rate token is reserved waits in its worker (started on time) rather than
in the scheduled set; one due later comes back from the scheduled set :data:`EARLY` s before its time, so a
forwarder passing every second still brings it back in time to be held and started on time."""
EARLY = 1.5
"""Seconds before its reserved moment a task put off by a rate is due back from the scheduled set."""
KEEP = 30.0
"""Seconds a slot kept for a handler given up on (it runs on past its outcome) holds unless its worker renews it;
the worker renews it every third of that while the handler runs, so one that dies holding it leaks it no longer."""
LATE = 1.0
"""Seconds past its reserved moment a task may still start on its rate token. One that asks later (its worker died
holding it and the recoverer put it back, or no worker was free to take it back) gives the token up and asks for a
new one: the rate has moved on since, and started on the old token it would start next to a task on a fresh one."""


class Taken:
    """What :meth:`LimitOps.take` answered for one task.

    Attributes:
        code: 0 may start; 3 its rate token is reserved for ``due``, which is near: it stays active, and its worker
            asks again then; 1 the same, but far: put off to the scheduled set; 2 parked for a slot (until a slot
            frees, or ``due`` at the latest); -1 no longer active here.
        due: Unix s when it may start (codes 1 and 2).
    """

    __slots__ = ("code", "due")

    def __init__(self, code: int, due: float = 0.0) -> None:
        self.code = code
        self.due = due


class LimitOps(BrokerPart):
    """The limit scripts, on the broker's hot connection.

    Args:
        state: what the broker's parts share.
    """

    async def prune_limit_keys(self, name: str, cursor: str = "0", count: int = 500) -> tuple[str, int]:
        """One page of a keyed limit's seen keys walked: dead slot holders dropped, then keys holding nothing.

        Returns the cursor to go on from ("0": walked through) and how many were dropped.
        """
        keys = self.schema.limit(name)
        args: list[Any] = [keys.key_prefix, cursor, count, self.schema.ns, f"{self.clock.now() * 1000:.3f}"]
        reply = await self.hot.evalsha(SCRIPTS["limit_prune_keys"], [keys.keys], args)
        nxt, dropped = reply
        return (nxt.decode() if isinstance(nxt, bytes) else str(nxt)), int(dropped)

    async def limit_take(self, queue: str, task_id: str, limits: Sequence[Applied], inflight_key: str = "") -> Taken:
        """Take ``task_id``'s slots and tokens, or put it off without spending a retry (``limit_take.lua``).

        "Now" is this worker's clock, not Redis' (as asynq schedules on its clients' clocks, and so tests can drive
        time): rates assume the hosts' clocks agree; a skew of ``d`` s lets at most ``d`` x rate more tasks start in
        a window than the rate allows.
        """
        qk = self.schema.queue(queue)
        keys = [qk.task(task_id), qk.active, qk.lease, qk.scheduled, inflight_key]
        args: list[Any] = [task_id, queue, f"{self.clock.now() * 1000:.3f}", self.schema.ns, PARK_FALLBACK, len(limits)]
        for applied in limits:
            keys += self.schema.limit(applied.name, applied.key).script_keys()
            interval = applied.rate.interval_ms if applied.rate is not None else 0
            args += [f"{interval:.6f}", applied.burst, applied.concurrency, applied.key]
        args += [int(HOLD * 1000), int(EARLY * 1000), int(LATE * 1000)]
        reply = await self.hot.evalsha(SCRIPTS["limit_take"], keys, args)
        return Taken(int(reply[0]), float(reply[1]) / 1000 if len(reply) > 1 else 0.0)

    async def limit_release(
        self, queue: str, task_id: str, limits: Sequence[Applied], *, holder: str = "", keep_until: float = 0.0
    ) -> int:
        """Free the slots ``task_id`` held and make one parked task per freed slot pending (``limit_release.lua``).

        A handler given up on still runs when its outcome is written: with ``keep_until`` (Unix s), its slots are
        kept for it instead until then, under ``holder`` (the task's queue and id, then a token of this run, each on
        a line: a name no later run of the task takes); calling again moves that time on. With ``holder`` alone,
        the slots kept under it are freed.
        """
        keys = self._slot_keys(limits)
        if not keys:
            return 0
        mine = f"{queue}\n{task_id}"
        if keep_until:
            args: list[Any] = [mine, self.schema.ns, 0, "", holder, f"{keep_until:.3f}"]
        else:
            args = [holder or mine, self.schema.ns, int(self.clock.now() * 1e9), self._channel]
        return int(await self.hot.evalsha(SCRIPTS["limit_release"], keys, args))

    def _slot_keys(self, limits: Sequence[Applied]) -> list[str]:
        """The slots and parked keys of each limit in ``limits`` with a concurrency cap, in turn."""
        keys: list[str] = []
        for applied in limits:
            if applied.concurrency:
                lk = self.schema.limit(applied.name, applied.key)
                keys += (lk.slots, lk.parked)
        return keys
