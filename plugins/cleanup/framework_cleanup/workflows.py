"""The ``workflows`` sweeper: index entries of expired workflows, and workflows abandoned while "running".

A workflow's records expire by themselves once it ends (its retention after a success, ``keep_failed``
otherwise), but two things are left behind:

* its entries in its home queue's indexes ``<ext>:{home}:workflows`` and ``<ext>:{home}:workflows:running``
  (ZSETs id -> created), which nothing removes when the records expire. The sweeper removes the entries
  whose workflow records are gone, from both indexes of every queue, in a ``WATCH`` transaction so a
  workflow started again under the same id meanwhile keeps its entries.
* workflows that never end: a step archived (by a tool, or after its retries) while its workflow could not
  fail at once, or a step nobody will ever run again, leaves the workflow in the running index for ever,
  its records kept. One is **abandoned** when it was created more than ``workflows_abandoned_after`` ago
  (default 30 days), none of its released steps has a live task (pending, active, scheduled, retry or
  aggregating), and none of them was archived within that time. The sweeper ends it as
  :meth:`framework.Client.cancel_workflow` does (status ``cancelled``; its records then expire after
  ``keep_failed``, and it leaves the running index), notes why in its ``error`` field when it has none,
  and logs ``cleanup_workflow_abandoned``. ``Client.retry_workflow`` still resumes it until it expires.

Nothing created within the grace period is touched. Both parts are dry-run aware, and each abandoned
workflow is claimed while it is ended, so two runs at once count it once.

No workflow of ours has an id or a home queue name that is not UTF-8 text, but another client may write
one into an index (Go may write any bytes). Such a name is read with ``surrogateescape`` and its keys and
members are given back to Redis as stored, so its index entries are pruned like any other; reports and logs
show it with its bytes escaped. One whose records exist and that looks abandoned is left alone, reported as
an error: the client cannot address it to end it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from framework import WorkflowNotFound

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from redis.asyncio import Redis

    from framework_cleanup.sweepers import SweepContext, SweepFn, SweepResult

__all__ = ("LIVE_STATES", "as_text", "sweep_workflows")

LIVE_STATES = frozenset({"pending", "active", "scheduled", "retry", "aggregating"})
"""Task states in which a step's task still runs or will run by itself."""
_BATCH = 200


def sweep_workflows(abandoned_after: float) -> SweepFn:
    """A sweep over every queue's workflow indexes (see the module docstring)."""

    async def sweep(ctx: SweepContext) -> SweepResult:
        redis = ctx.services.redis
        for home in sorted(as_text(q) for q in await redis.smembers(ctx.services.schema.all_queues)):
            # a queue name that is not UTF-8 (Go may write any bytes) is read escaped and swept like the others
            await _prune_index(ctx, home)
            await _end_abandoned(ctx, home, abandoned_after)
        return ctx.result

    return sweep


async def _pages(redis: Redis, key: str, before: float) -> AsyncIterator[list[str]]:
    """The ids in ZSET ``key`` scored (created) before ``before``, a page at a time."""
    page: list[str] = []
    async for member, score in redis.zscan_iter(_raw(key), count=_BATCH):
        if score < before:
            page.append(as_text(member))
            if len(page) >= _BATCH:
                yield page
                page = []
    if page:
        yield page


async def _prune_index(ctx: SweepContext, home: str) -> None:
    """Remove from both of ``home``'s indexes the entries whose workflow records are gone."""
    redis, qk = ctx.services.redis, ctx.services.schema.queue(home)
    indexes = (qk.workflows(), qk.workflows_running())
    pruned = 0
    for index in indexes:
        async for page in _pages(redis, index, ctx.cutoff):
            metas = {wid: qk.workflow(wid).meta for wid in page}
            if ctx.dry_run:
                gone = await _gone(redis, metas)
            else:
                gone = await _remove_entries(redis, metas, indexes)
            for wid in gone:
                # once per workflow: a run removes an id from both indexes at once; a dry run removes none
                if index == indexes[0] or not ctx.dry_run or await redis.zscore(_raw(indexes[0]), _raw(wid)) is None:
                    ctx.result.add(_escaped(metas[wid]))
            pruned += len(gone)
    if pruned:
        ctx.logger.info("cleanup_workflow_index_pruned", home=_escaped(home), entries=pruned)


async def _gone(redis: Redis, metas: dict[str, str]) -> list[str]:
    async with redis.pipeline(transaction=False) as pipe:
        for meta in metas.values():
            pipe.exists(_raw(meta))
        found = await pipe.execute()
    return [wid for wid, n in zip(metas, found, strict=True) if not n]


async def _remove_entries(redis: Redis, metas: dict[str, str], indexes: tuple[str, str]) -> list[str]:
    """ZREM from ``indexes`` the ids whose meta hash does not exist, unless one appears meanwhile (then: none).

    Returns only the ids this call removed from at least one index: an id another run removed first is left
    out, so that two runs at once count each entry once.
    """
    from redis.exceptions import WatchError  # noqa: PLC0415 - redis-py loads with the sweep, not with the plugin

    async with redis.pipeline(transaction=True) as pipe:
        await pipe.watch(*(_raw(meta) for meta in metas.values()))
        gone = [wid for wid, meta in metas.items() if not await pipe.exists(_raw(meta))]
        if not gone:
            return []  # leaving the block resets the pipeline, which unwatches
        pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        for wid in gone:
            for index in indexes:
                pipe.zrem(_raw(index), _raw(wid))
        try:
            removed: list[int] = await pipe.execute()
        except WatchError:  # a workflow was started under one of these ids: the next run sees the rest
            return []
    width = len(indexes)
    return [wid for i, wid in enumerate(gone) if any(removed[i * width : (i + 1) * width])]


async def _end_abandoned(ctx: SweepContext, home: str, abandoned_after: float) -> None:
    """End the running workflows of ``home`` that are abandoned (see the module docstring)."""
    redis, qk = ctx.services.redis, ctx.services.schema.queue(home)
    since = ctx.now - abandoned_after
    async for page in _pages(redis, qk.workflows_running(), min(ctx.cutoff, since)):
        for wid in page:
            wk = qk.workflow(wid)
            meta = await redis.hgetall(_raw(wk.meta))
            if not meta or not await _abandoned(ctx, wk.state, wk.graph, since):
                continue
            if not (_is_text(wid) and _is_text(home)):
                _not_ended(ctx, home, wid)
                continue
            async with ctx.exclusive(wk.meta) as won:
                if not won:
                    continue
                if not ctx.dry_run and not await _end(ctx, home, wid, wk.meta, abandoned_after):
                    continue
            ctx.result.add(wk.meta)
            ctx.logger.info(
                "cleanup_workflow_abandoned",
                home=home,
                workflow=wid,
                name=_shown(meta.get(b"name")),
                status=_shown(meta.get(b"status")),
                created=_created(meta.get(b"created")),
            )


def _not_ended(ctx: SweepContext, home: str, wid: str) -> None:
    """Report an abandoned workflow whose id or home queue is not UTF-8: the client cannot name it to end it."""
    workflow, queue = _escaped(wid), _escaped(home)
    ctx.logger.warning("cleanup_workflow_not_ended", home=queue, workflow=workflow, reason="not UTF-8")
    ctx.result.error(
        f"workflow '{workflow}' of queue '{queue}' looks abandoned but is left alone: its id or queue name is "
        "not UTF-8 text (another client wrote it), so the client cannot end it"
    )


def _shown(value: bytes | str | None) -> str:
    """A field of a workflow record, for the log: any bytes, even ones that are not UTF-8 text."""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value or "")


def _created(value: bytes | str | None) -> float | str:
    """A workflow record's creation time, for the log: the number, or the field as it is when it is not one."""
    try:
        return float(value or 0)
    except ValueError:
        return _shown(value)


async def _abandoned(ctx: SweepContext, state_key: str, graph_key: str, since: float) -> bool:
    """Whether no released step of the workflow has a live task, or one archived after ``since``."""
    redis, schema = ctx.services.redis, ctx.services.schema
    states = await redis.hgetall(_raw(state_key))
    released = [as_text(step) for step, state in states.items() if state == b"pending"]
    if not released:
        return True
    where = await redis.hmget(_raw(graph_key), [_raw(f"t:{step}") for step in released])
    async with redis.pipeline(transaction=False) as pipe:
        for spec in where:
            queue, _, task_id = as_text(spec or b"").partition("\n")
            qk = schema.queue(queue)
            pipe.hget(_raw(qk.task(task_id)), "state")
            pipe.zscore(_raw(qk.archived), _raw(task_id))
        replies: list[Any] = await pipe.execute()
    for i in range(0, len(replies), 2):
        task_state, archived_at = replies[i], replies[i + 1]
        if task_state is not None and as_text(task_state) in LIVE_STATES:
            return False
        if archived_at is not None and archived_at >= since:
            return False
    return True


async def _end(ctx: SweepContext, home: str, wid: str, meta: str, abandoned_after: float) -> bool:
    """Cancel the workflow and note why; False when it was gone or had ended meanwhile."""
    try:
        before = await ctx.services.client.cancel_workflow(wid, queue=home)
    except WorkflowNotFound:
        return False
    if before not in ("running", "failed"):
        return False
    days = abandoned_after / 86400
    reason = (
        f"Abandoned: no step of it ran for {days:g} days; ended by the cleanup plugin's workflows sweeper "
        "(Client.retry_workflow resumes it until it expires)"
    )
    redis = ctx.services.redis
    if await redis.exists(meta):  # ended now: it expires after keep_failed, which HSETNX keeps
        await redis.hsetnx(meta, "error", reason)
    return True


def as_text(value: bytes | str) -> str:
    """A Redis reply as text (the client may decode replies or not).

    Bytes that are not UTF-8 (another client's) are decoded with ``surrogateescape``, so that :func:`_raw` gives
    back what was stored.
    """
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else str(value)


def _is_text(name: str) -> bool:
    """Whether ``name`` is UTF-8 text, not bytes :func:`as_text` escaped."""
    try:
        name.encode()
    except UnicodeEncodeError:
        return False
    return True


def _raw(name: str) -> str | bytes:
    """A key or member built from :func:`as_text` output as Redis stores it: the text, or its bytes when not UTF-8."""
    return name if _is_text(name) else name.encode("utf-8", "surrogateescape")


def _escaped(name: str) -> str:
    r"""A name for a report or a log: bytes that are not UTF-8 written as ``\xff``."""
    return name if _is_text(name) else name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
