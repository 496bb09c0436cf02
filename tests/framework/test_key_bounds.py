"""Keys that must not stay in Redis for ever: what killed workers, changed cron entries, unused tokens, ended
workflows and deleted queues leave behind.

Each test drives the situation with real workers, schedulers and clients (workers killed with SIGKILL,
schedulers started and stopped) against the session Valkey, with the intervals set short (or the clock moved
on), and waits for the leftovers to go.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

from framework.client.client import Client
from framework.clock import SimulatedClock
from framework.inspector import Inspector
from framework.protocol.keys import Schema
from framework.registry import Registry
from framework.scheduler.scheduler import Scheduler
from framework.settings import CronEntrySettings
from framework.task import TaskDef
from framework.web.tokens import Tokens, token_digest
from framework.workflow import chain
from tests.framework.keyed_limit_app import PER_USER, UserJob, start_keyed_worker
from tests.framework.scheduler_app import TICK, tick_task
from tests.framework.worker_app import ROOT, start_worker, stop_process, wait_until

FAST = {"heartbeat_interval": 0.5, "recoverer_interval": 0.5}


async def _server_ids_by_pid(redis: Any, schema: Schema) -> dict[int, str]:
    """pid -> server id of each worker whose asynq server record is live (``<ns>:servers:{host:pid:id}``)."""
    out: dict[int, str] = {}
    for member in await redis.zrangebyscore(schema.servers, time.time(), "+inf"):
        inner = member.decode().rpartition("{")[2].rstrip("}")
        _, pid, sid = inner.split(":", 2)
        out[int(pid)] = sid
    return out


async def test_a_sigkilled_idle_worker_leaves_the_waiters_list_of_a_queue_nobody_enqueues_to(
    settings: Any, redis: Any, schema: Schema, tmp_path: Path
) -> None:
    """An idle worker registers as a waiter; killed, its id must not stay there while the others keep polling.

    No enqueue happens (the queue is fed by Go clients or the forwarder, which hand nothing off), so only the
    recoverer of the surviving worker can take the dead id out; the list's TTL is renewed by the survivor.
    """
    s = settings.replace(**FAST)
    waiters = schema.queue("default").waiters
    procs = [start_worker(s, tmp_path / f"w{i}.log") for i in range(2)]
    try:
        ids: dict[int, str] = {}

        async def both_waiting() -> bool:
            nonlocal ids
            ids = await _server_ids_by_pid(redis, schema)
            listed = {m.decode() for m in await redis.lrange(waiters, 0, -1)}
            return len(ids) == 2 and set(ids.values()) <= listed

        await wait_until(both_waiting, timeout=30)
        victim = procs[0]
        dead_id = ids[victim.pid]
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()

        async def dead_id_gone() -> bool:
            return dead_id.encode() not in await redis.lrange(waiters, 0, -1)

        await wait_until(dead_id_gone, timeout=40)
        survivor_id = ids[procs[1].pid]

        async def survivor_still_waits() -> bool:
            return survivor_id.encode() in await redis.lrange(waiters, 0, -1)

        await wait_until(survivor_still_waits)
    finally:
        for proc in procs:
            stop_process(proc)


async def test_the_records_of_a_cron_entry_no_scheduler_runs_any_more_go_after_cron_forget_after(
    settings: Any, redis_url: str, redis: Any, schema: Schema, tmp_path: Path
) -> None:
    """A deploy changes an entry's spec (so its id): the old id's record, last tick and history must go.

    A real scheduler process runs entry ``tick`` every second and is stopped; the next deploy's scheduler runs
    the entry with another spec. Its heartbeats remove the old entry's records once ``cron_forget_after`` has
    passed since the old scheduler last published it and it last fired.
    """
    log = (tmp_path / "old-scheduler.log").open("wb")
    cmd = [sys.executable, "-m", "tests.framework.scheduler_app", redis_url, settings.namespace]
    old = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)
    log.close()
    try:

        async def fired() -> bool:
            return bool(await redis.hlen(schema.cron_last)) and bool(await redis.hlen(schema.cron_entries))

        await wait_until(fired, timeout=30)
    finally:
        stop_process(old)
    (old_id,) = [field.decode() for field in await redis.hkeys(schema.cron_last)]
    assert await redis.exists(schema.scheduler_history(old_id))

    entry = CronEntrySettings(name="tick", spec="@every 2s", task=TICK, payload={"n": 1})
    s = settings.replace(cron=[entry], cron_forget_after=21.0)
    new = Scheduler(s, registry=Registry([tick_task]))
    await new.start()
    try:
        new_id = new.entries[0].id
        assert new_id != old_id

        async def old_records_gone() -> bool:
            async with redis.pipeline(transaction=False) as pipe:
                pipe.hexists(schema.cron_entries, old_id)
                pipe.hexists(schema.cron_last, old_id)
                pipe.exists(schema.scheduler_history(old_id))
                return not any(await pipe.execute())

        await wait_until(old_records_gone, timeout=60, interval=0.5)

        async def new_records_kept() -> bool:
            return bool(await redis.hexists(schema.cron_entries, new_id)) and bool(
                await redis.hexists(schema.cron_last, new_id)
            )

        await wait_until(new_records_kept)
    finally:
        await new.stop()


async def test_a_sigkilled_workers_members_of_asynqs_servers_and_workers_sets_are_removed(
    settings: Any, redis: Any, schema: Schema, tmp_path: Path
) -> None:
    """asynq's records of a killed worker expire, but their members in ``<ns>:servers``/``<ns>:workers`` stay.

    A deploy that kills workers (or an OOM kill loop) adds two members per process for ever unless a live
    worker removes the long-expired ones; the live worker's own members stay.
    """
    s = settings.replace(**FAST)
    procs = [start_worker(s, tmp_path / f"w{i}.log") for i in range(2)]
    try:
        ids: dict[int, str] = {}

        async def both_listed() -> bool:
            nonlocal ids
            ids = await _server_ids_by_pid(redis, schema)
            return len(ids) == 2

        await wait_until(both_listed, timeout=30)
        victim = procs[0]
        dead_id = ids[victim.pid]
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()

        async def members_of(server_id: str) -> list[bytes]:
            found = []
            for key in (schema.servers, schema.workers):
                found += [m for m in await redis.zrange(key, 0, -1) if m.decode().endswith(f":{server_id}}}")]
            return found

        async def dead_members_gone() -> bool:
            return not await members_of(dead_id)

        await wait_until(dead_members_gone, timeout=60, interval=0.5)
        assert len(await members_of(ids[procs[1].pid])) == 2
    finally:
        for proc in procs:
            stop_process(proc)


async def test_the_index_entries_of_tokens_never_used_go_without_the_cleanup_sweeper(
    redis: Any, schema: Schema
) -> None:
    """An app that mails links nobody clicks, without the cleanup plugin: the token index must not keep them all.

    The records go with their TTL; their index entries are dropped by later issues once an hour has passed
    since they expired (``INDEX_GRACE``; the clock is moved on a day rather than waited for).
    """
    clock = SimulatedClock(time.time())
    tokens = Tokens(redis, schema, clock=clock)
    for i in range(20):
        await tokens.issue("verify-email", str(i), ttl=60)
    assert await redis.zcard(schema.token_index()) == 20
    clock.advance(24 * 3600)
    kept = await tokens.issue("verify-email", "late", ttl=60)
    members = await redis.zrange(schema.token_index(), 0, -1)
    assert members == [f"verify-email:{token_digest(kept)}".encode()]


class Num(msgspec.Struct, frozen=True, kw_only=True):
    """Payload of ``keys:add``."""

    n: int = 0
    prev: int | None = None


async def _add_one(ctx: Any, p: Num) -> int:
    return (p.prev if p.prev is not None else p.n) + 1


ADD = TaskDef("keys:add", Num, _add_one, result=int)


async def test_the_index_entries_of_ended_workflows_go_once_their_records_expired(
    start: Any, client: Client, redis: Any, schema: Schema, settings: Any
) -> None:
    """Every workflow started leaves an entry in its home queue's index; once its records expired it must go.

    Without the cleanup plugin, nothing else removes it: the index would keep every workflow ever started.
    """
    await start(ADD, settings=settings.replace(queues={"default": 1}, workflow_check_interval=0.2))
    infos = [
        await client.start_workflow(chain(ADD.step(Num(n=i)), ADD.step(Num(), input="prev")), retention=1)
        for i in range(5)
    ]
    for info in infos:
        assert await client.wait_workflow(info, timeout=20) is not None
    index = schema.queue("default").workflows()
    assert await redis.zcard(index) == 5

    async def index_emptied() -> bool:
        return await redis.zcard(index) == 0

    await wait_until(index_emptied, timeout=30, interval=0.2)
    for info in infos:
        assert not await redis.exists(schema.queue("default").workflow(info.id).meta)


async def test_deleting_a_queue_drops_the_entries_of_its_expired_workflows(
    start: Any, client: Client, redis: Any, schema: Schema, settings: Any
) -> None:
    """A queue that was home to workflows is deleted: its workflow indexes must not stay behind.

    Neither the workflow checkers (queues workers serve) nor the cleanup plugin (queues in ``<ns>:queues``)
    look at a deleted queue, so its indexes would stay for ever. The worker here checks rarely, so the
    entries are still there when the queue is deleted.
    """
    worker = await start(ADD, settings=settings.replace(queues={"wfq": 1}, workflow_check_interval=3600))
    infos = [
        await client.start_workflow(
            chain(ADD.step(Num(n=i), queue="wfq"), ADD.step(Num(), input="prev", queue="wfq")), retention=1
        )
        for i in range(3)
    ]
    for info in infos:
        assert await client.wait_workflow(info, queue="wfq", timeout=20) is not None
    await worker.stop()
    qk = schema.queue("wfq")

    async def records_expired() -> bool:
        return not any([await redis.exists(qk.workflow(info.id).meta) for info in infos])

    await wait_until(records_expired, timeout=20, interval=0.2)
    assert await redis.zcard(qk.workflows()) == 3
    await Inspector(redis, schema=schema).delete_queue("wfq", force=True)
    assert not await redis.exists(qk.workflows(), qk.workflows_running(), qk.workflows_checked())


async def test_a_dead_holders_slot_of_a_keyed_limit_goes_with_the_key_when_the_key_is_not_used_again(
    client: Client, redis: Any, schema: Schema, settings: Any, tmp_path: Path
) -> None:
    """A task that kills its worker while it holds a user's slot is archived as a poison pill, never run again.

    Its slot would be freed only by a take that finds the user's slots all taken: a user who never comes back
    (or never fills them) would keep the slot, and the user's place in the limit's seen keys, for ever. The
    survivor's janitor must drop the dead holder, then the key.
    """
    s = settings.replace(**FAST, janitor_interval=0.5, queues={"default": 1})
    procs = [start_keyed_worker(s, tmp_path / f"w{i}.log", TEST_MAX_RECOVERIES=0) for i in range(2)]
    try:
        await wait_until(lambda: _live_servers(redis, schema, 2), timeout=30)
        info = await client.enqueue(PER_USER, UserJob(user="u1", crash=True))
        qk, user = schema.queue("default"), schema.limit("per-user", "u1")

        async def archived() -> bool:
            return await redis.hget(qk.task(info.id), "state") == b"archived"

        await wait_until(archived, timeout=40)

        async def key_forgotten() -> bool:
            held = await redis.exists(user.slots)
            return not held and not await redis.sismember(user.keys, "u1")

        await wait_until(key_forgotten, timeout=30, interval=0.2)
    finally:
        for proc in procs:
            stop_process(proc)


async def _live_servers(redis: Any, schema: Schema, count: int) -> bool:
    return len(await _server_ids_by_pid(redis, schema)) == count
