"""The recoverer: brings back tasks whose worker died.

Two paths:

* **Dead workers (fast).** Our workers record themselves as alive every heartbeat, with the tasks they
  run. A worker silent for ``dead_after`` seconds is dead: its tasks go back to the head of their queue
  within seconds, spending no retry. A task that keeps killing its worker (a poison pill) is archived
  after ``max_recoveries``.
* **Expired leases (asynq's).** Any task whose lease ended more than 30 s ago (a Go worker, or one of
  ours that died before recording its tasks) is retried as a failure, or archived when out of retries.

Tasks left active without a lease entry are given an expired lease so the second path finds them.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from framework.broker import LEASE_SECONDS
from framework.message import decode_message, encode_message
from framework.retry import default_retry_delay

if TYPE_CHECKING:
    from collections.abc import Iterable

    import structlog

    from framework.broker import RedisBroker
    from framework.task import RetryDelay

__all__ = ("LEASE_EXPIRED_ERROR", "Recoverer")

LEASE_EXPIRED_ERROR = "asynq: task lease expired"
_REPAIR_EVERY = 60.0


class Recoverer:
    """Recovers tasks of dead workers and of expired leases on ``queues``.

    Args:
        broker: the Redis broker.
        queues: the queues this worker serves.
        interval: seconds between passes.
        logger: the worker's logger.
        dead_after: seconds without a heartbeat after which a worker counts as dead.
        max_recoveries: recoveries after which a task is archived as a poison pill.
        retry_delay: the retry policy for expired leases.
    """

    def __init__(
        self,
        broker: RedisBroker,
        queues: Iterable[str],
        interval: float,
        logger: structlog.typing.FilteringBoundLogger,
        *,
        dead_after: float = 10.0,
        max_recoveries: int = 3,
        retry_delay: RetryDelay | None = None,
    ) -> None:
        self.broker = broker
        self.queues = list(queues)
        self.interval = interval
        self.log = logger
        self.dead_after = dead_after
        self.max_recoveries = max_recoveries
        self.retry_delay = retry_delay or default_retry_delay
        self._stop = asyncio.Event()
        self._last_repair = 0.0

    @property
    def _redis(self) -> Any:
        return self.broker.redis

    async def recover_dead_workers(self) -> int:
        """Requeue the tasks of workers whose heartbeat stopped; returns how many tasks moved."""
        schema = self.broker.schema
        now = self.broker.clock.now()
        dead = await self._redis.zrangebyscore(schema.alive, "-inf", now - self.dead_after)
        moved = 0
        newest_dead_lease = now + LEASE_SECONDS - self.dead_after
        for raw_sid in dead:
            sid = raw_sid.decode()
            key = schema.inflight(sid)
            tasks = await self._redis.hgetall(key)
            settled = True
            for raw_id, raw_queue in tasks.items():
                task_id, queue = raw_id.decode(), raw_queue.decode()
                result = await self.broker.recover(queue, task_id, newest_dead_lease, self.max_recoveries)
                if isinstance(result, list):
                    await self._archive_poison(queue, result[1])
                elif result == 1:
                    moved += 1
                    self.log.info("task_recovered", task_id=task_id, queue=queue, dead_worker=sid)
                elif result == -1:
                    settled = False
            if settled:
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.delete(key)
                    pipe.zrem(schema.alive, sid)
                    await pipe.execute()
        return moved

    async def _archive_poison(self, queue: str, data: bytes) -> None:
        msg = decode_message(data)
        msg.error_msg = (
            f"worker died {self.max_recoveries + 1} times while running this task; archived as a poison pill "
            "(a crash, out-of-memory kill or os._exit in the handler?)"
        )
        msg.last_failed_at = int(self.broker.clock.now())
        await self.broker.archive(queue, msg.id, encode_message(msg))
        self.log.error("task_poison_pill", task_id=msg.id, queue=queue, type=msg.type)

    async def recover_expired_leases(self) -> int:
        """Retry (or archive) tasks whose lease ended more than 30 s ago, as asynq does."""
        now = self.broker.clock.now()
        count = 0
        for queue in self.queues:
            for data in await self.broker.list_lease_expired(queue, now - LEASE_SECONDS):
                msg = decode_message(data)
                msg.error_msg = LEASE_EXPIRED_ERROR
                msg.last_failed_at = int(now)
                if msg.retried >= msg.retry:
                    await self.broker.archive(queue, msg.id, encode_message(msg))
                else:
                    delay = self.retry_delay(msg.retried, RuntimeError(LEASE_EXPIRED_ERROR))
                    msg.retried += 1
                    await self.broker.retry(queue, msg.id, encode_message(msg), int(now + delay), failure=True)
                count += 1
                self.log.warning("task_lease_expired", task_id=msg.id, queue=queue)
        return count

    async def repair(self) -> int:
        """Give expired leases to active tasks that have none."""
        total = 0
        for queue in self.queues:
            total += await self.broker.repair_orphans(queue)
        return total

    async def recover_once(self) -> None:
        """One pass of every path."""
        await self.recover_dead_workers()
        await self.recover_expired_leases()
        now = self.broker.clock.now()
        if now - self._last_repair >= _REPAIR_EVERY:
            self._last_repair = now
            await self.repair()

    async def run(self) -> None:
        """Recover until stopped."""
        while not self._stop.is_set():
            try:
                await self.recover_once()
            except (RedisError, OSError) as exc:
                self.log.warning("recoverer_failed", error=f"{type(exc).__name__}: {exc}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval)

    def stop(self) -> None:
        """Stop after the current pass."""
        self._stop.set()
