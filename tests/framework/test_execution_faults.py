"""What a worker writes for a task whose handler ends badly, and how it stops.

A handler that swallows its cancellation or turns it into another exception (the cancellation's reason decides
the outcome), raises a ``BaseException`` or ``KeyboardInterrupt`` (its failure, and the worker lives on), raises
a ``CancelledError`` of its own, returns a result that cannot be stored or asks for an infinite retry delay: each
task still gets an outcome and leaves nothing in flight. Each test runs a real worker (in this process, or one
in a subprocess) against the session Valkey and checks the task's record.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest

from framework.errors import RetryAfter
from framework.task import TaskDef
from tests.framework.worker_app import task_record, wait_until


class N(msgspec.Struct, frozen=True, kw_only=True):
    n: int = 0


def _never(retried: int, error: BaseException) -> float:
    return 600.0


@pytest.fixture
def run(start: Any, settings: Any) -> Any:
    async def go(*tasks: TaskDef[Any], **changes: Any) -> Any:
        return await start(*tasks, settings=settings.replace(cancel_grace=1.0, **changes))

    return go


async def _state(redis: Any, schema: Any, task_id: str) -> str:
    return (await task_record(redis, schema, "default", task_id)).get("state", "")


async def test_a_handler_that_swallows_the_cancel_channel_and_returns_is_failed_not_succeeded(
    run: Any, client: Any, redis: Any, schema: Any
) -> None:
    """A handler cancelled through asynq:cancel that swallows the cancellation and returns within the grace is
    failed all the same (retried), not written as succeeded."""
    started = asyncio.Event()

    async def handle(ctx: Any, p: N) -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            return  # swallows the cancellation and returns at once (well within the grace)

    task = TaskDef("r:swallow-cancel", N, handle, retry_delay=_never)
    worker = await run(task)
    info = await client.enqueue(task, N())
    await asyncio.wait_for(started.wait(), 10)
    assert worker.processor.cancel(info.id)

    async def settled() -> bool:  # an outcome is written: a retry, or (wrongly) a done that deleted it
        if ("default", info.id) in worker.processor.inflight:
            return False
        return await _state(redis, schema, info.id) != "active"

    await wait_until(settled, timeout=30)
    await asyncio.sleep(0.3)  # and a batched done, if there were one too, would be written by now
    record = await task_record(redis, schema, "default", info.id)
    assert record.get("state") == "retry", f"cancelled task was written as {record.get('state') or 'done (deleted)'}"
    assert record["msg"].error_msg == "TaskCancelled: task cancelled through the asynq:cancel channel"


class HandlerAbort(BaseException):
    """A BaseException subclass user code raises (as gevent's Timeout or pytest's Failed are)."""


async def test_a_handler_raising_a_base_exception_gets_an_outcome_and_frees_its_slot(
    run: Any, client: Any, redis: Any, schema: Any
) -> None:
    """A BaseException other than CancelledError/SystemExit (GeneratorExit, or a library's own) must still become an
    outcome: otherwise its runner dies, the task stays in flight forever (lease extended by the heartbeat, slot
    taken)."""

    async def handle(ctx: Any, p: N) -> None:
        if p.n == 0:
            raise HandlerAbort("boom")

    task = TaskDef("r:base-exc", N, handle, retry_delay=_never)
    worker = await run(task, concurrency=1)
    bad = await client.enqueue(task, N(n=0))

    async def left() -> bool:  # its outcome is written, then it leaves the in-flight set
        return await _state(redis, schema, bad.id) not in ("pending", "active") and (
            ("default", bad.id) not in worker.processor.inflight
        )

    try:
        await wait_until(left, timeout=30)
    except AssertionError:
        record = await task_record(redis, schema, "default", bad.id)
        assert ("default", bad.id) not in worker.processor.inflight, "task stuck in flight after its runner died"
        raise AssertionError(f"no outcome written: {record.get('state')}") from None
    record = await task_record(redis, schema, "default", bad.id)
    assert record.get("state") == "retry"
    assert record["msg"].retried == 1
    # and the slot is free for the next task (concurrency 1)
    good = await client.enqueue(task, N(n=1))

    async def good_done() -> bool:
        return not await redis.exists(schema.queue("default").task(good.id))

    await wait_until(good_done, timeout=5)


async def test_retry_after_an_infinite_delay_still_writes_an_outcome(
    run: Any, client: Any, redis: Any, schema: Any
) -> None:
    """``RetryAfter(float("inf"))`` (a provider's huge Retry-After parsed as float) must not leave the task active."""

    async def handle(ctx: Any, p: N) -> None:
        raise RetryAfter(float("inf"))

    task = TaskDef("r:inf", N, handle)
    worker = await run(task)
    info = await client.enqueue(task, N())

    async def settled() -> bool:  # the outcome written, then the slot let go (a moment after the reply)
        state = await _state(redis, schema, info.id)
        return state in ("retry", "archived") and ("default", info.id) not in worker.processor.inflight

    await wait_until(settled, timeout=5)


@pytest.mark.parametrize("swallow", [False, True], ids=["turned-into-an-error", "swallowed"])
async def test_a_handler_that_turns_or_swallows_the_shutdown_cancellation_is_requeued_without_spending_a_retry(
    settings: Any, client: Any, redis: Any, schema: Any, swallow: bool
) -> None:
    """At shutdown an unfinished task is put back without spending a retry, whatever its handler does with the
    CancelledError: a cleanup that turns it into another exception (``except BaseException: raise MyError``) or
    swallows it and returns must not change that."""
    from framework.worker.worker import Worker

    started = asyncio.Event()

    async def handle(ctx: Any, p: N) -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            if swallow:
                return
            raise RuntimeError("connection closed while cancelling") from None

    task = TaskDef("r:convert", N, handle, retry_delay=_never)
    worker = Worker(settings.replace(shutdown_timeout=0.3, cancel_grace=1.0), tasks=[task])
    await worker.start()
    info = await client.enqueue(task, N())
    await asyncio.wait_for(started.wait(), 10)
    await worker.stop()
    record = await task_record(redis, schema, "default", info.id)
    assert (record.get("state"), record["msg"].retried, record["msg"].error_msg) == ("pending", 0, "")


@pytest.mark.parametrize("reason", ["timeout", "cancel"])
async def test_a_handler_that_turns_its_cancellation_into_an_error_gets_the_outcome_its_reason_calls_for(
    run: Any, client: Any, redis: Any, schema: Any, reason: str
) -> None:
    """Cancelled at its deadline or through asynq:cancel, a handler whose cleanup raises another exception is
    failed with the cancellation's error (TimeoutError, TaskCancelled), not with its own."""
    started = asyncio.Event()

    async def handle(ctx: Any, p: N) -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            raise RuntimeError("cleanup failed") from None

    task = TaskDef(f"r:convert-{reason}", N, handle, retry_delay=_never)
    worker = await run(task)
    info = await client.enqueue(task, N(), **({"timeout": 1} if reason == "timeout" else {}))
    await asyncio.wait_for(started.wait(), 10)
    if reason == "cancel":
        assert worker.processor.cancel(info.id)

    async def retrying() -> bool:
        return await _state(redis, schema, info.id) == "retry"

    await wait_until(retrying)
    msg = (await task_record(redis, schema, "default", info.id))["msg"]
    expected = (
        "TimeoutError: task timed out after 1s"
        if reason == "timeout"
        else "TaskCancelled: task cancelled through the asynq:cancel channel"
    )
    assert (msg.retried, msg.error_msg) == (1, expected)


async def test_a_second_stop_waits_for_the_shutdown_the_first_started(
    settings: Any, client: Any, redis: Any, schema: Any
) -> None:
    """``stop()`` called twice (a signal's stop, then ``async with``'s exit): the second returns only once the worker
    has stopped, or the caller tears the loop down under a shutdown still writing its outcomes."""
    from framework.worker.worker import Worker

    started = asyncio.Event()

    async def handle(ctx: Any, p: N) -> None:
        started.set()
        await asyncio.sleep(1.5)

    task = TaskDef("r:twice", N, handle)
    worker = Worker(settings.replace(shutdown_timeout=10), tasks=[task])
    await worker.start()
    info = await client.enqueue(task, N())
    await asyncio.wait_for(started.wait(), 10)
    first = asyncio.ensure_future(worker.stop())
    await asyncio.sleep(0.05)
    await worker.stop()
    try:
        assert first.done(), "second stop() returned while the first was still shutting down"
        assert not await redis.exists(schema.queue("default").task(info.id))
    finally:
        await first


async def test_a_result_that_cannot_be_encoded_still_gives_the_task_an_outcome(
    run: Any, client: Any, redis: Any, schema: Any
) -> None:
    """A returned value msgspec cannot encode (a cyclic structure: RecursionError, not TypeError) must not leave the
    task active in Redis (it would be recovered later and run a second time, spending a retry)."""

    async def handle(ctx: Any, p: N) -> Any:
        cyclic: dict[str, Any] = {}
        cyclic["self"] = cyclic
        return cyclic

    task = TaskDef("r:cyclic", N, handle, retry_delay=_never)
    worker = await run(task)
    info = await client.enqueue(task, N())

    async def handled() -> bool:
        return ("default", info.id) not in worker.processor.inflight

    await wait_until(handled)

    async def written() -> bool:  # a done outcome is written in a batch, a moment later
        return await _state(redis, schema, info.id) != "active"

    try:
        await wait_until(written, timeout=10)
    except AssertionError:
        raise AssertionError("task left active after its handler returned") from None


async def test_max_retry_zero_archives_at_the_first_failure_with_asynq_fields(
    run: Any, client: Any, redis: Any, schema: Any
) -> None:
    async def handle(ctx: Any, p: N) -> None:
        raise ValueError("bad input")

    task = TaskDef("r:zero", N, handle, max_retry=0)
    await run(task)
    info = await client.enqueue(task, N())

    async def archived() -> bool:
        return await _state(redis, schema, info.id) == "archived"

    await wait_until(archived)
    msg = (await task_record(redis, schema, "default", info.id))["msg"]
    assert (msg.retried, msg.retry, msg.error_msg) == (0, 0, "ValueError: bad input")
    assert msg.last_failed_at > 0


_KBI_APP = """
import asyncio, msgspec
from framework.settings import load_settings
from framework.task import TaskDef
from framework.worker.worker import Worker

class N(msgspec.Struct, frozen=True, kw_only=True):
    n: int = 0

def handle(ctx, p):
    raise KeyboardInterrupt("raised by the handler's own code")

def later(retried, error):
    return 600.0

asyncio.run(Worker(load_settings(), tasks=[TaskDef("r:kbi", N, handle, retry_delay=later)]).run())
"""


async def test_a_sync_handler_raising_keyboard_interrupt_fails_its_task_and_the_worker_process_lives_on(
    settings: Any, client: Any, redis: Any, schema: Any, tmp_path: Any
) -> None:
    """A KeyboardInterrupt raised in a sync handler's thread is the handler's failure (no signal can arrive in a
    thread): it must become the task's outcome, not end the worker process with every other task in it."""
    import subprocess
    import sys

    from tests.framework.worker_app import ROOT, env_for, stop_process

    task = TaskDef("r:kbi", N, lambda ctx, p: None)
    log = tmp_path / "kbi.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", _KBI_APP], cwd=ROOT, env=env_for(settings), stdout=out, stderr=subprocess.STDOUT
        )
    try:
        info = await client.enqueue(task, N())

        async def taken() -> bool:
            return await _state(redis, schema, info.id) not in ("", "pending") or proc.poll() is not None

        await wait_until(taken, timeout=30)

        async def settled() -> bool:
            return await _state(redis, schema, info.id) == "retry" or proc.poll() is not None

        await wait_until(settled, timeout=10)
        await asyncio.sleep(0.5)
        assert proc.poll() is None, f"worker process died (status {proc.returncode}):\n{log.read_text()[-1500:]}"
        record = await task_record(redis, schema, "default", info.id)
        assert (record["state"], record["msg"].retried) == ("retry", 1)
    finally:
        stop_process(proc)


async def test_a_cancelled_error_raised_by_the_handler_itself_is_a_failure_not_a_task_left_active(
    run: Any, client: Any, redis: Any, schema: Any
) -> None:
    """A CancelledError the handler raises on its own (it awaited a future another component cancelled) while
    nobody cancelled the runner is the handler's failure, retried now: the task is not left active and unleased
    for the recoverer."""

    async def handle(ctx: Any, p: N) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.cancel()
        await fut  # raises CancelledError; the runner itself was never cancelled

    task = TaskDef("r:own-cancel", N, handle, retry_delay=_never)
    worker = await run(task)
    info = await client.enqueue(task, N())

    async def released() -> bool:  # an outcome is written, a moment after it leaves the in-flight set
        return await _state(redis, schema, info.id) not in ("", "pending", "active") and (
            ("default", info.id) not in worker.processor.inflight
        )

    await wait_until(released, timeout=30)
    await asyncio.sleep(0.5)  # nothing else is written later
    record = await task_record(redis, schema, "default", info.id)
    assert (record["state"], record["msg"].retried) == ("retry", 1)
