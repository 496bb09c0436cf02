"""Workflows with real worker processes SIGKILLed at each point of a step's finish, and a 10,000-step chord.

Each crash test starts one worker process alone (the victim), brings it to the chosen point, kills it with
SIGKILL, then starts a survivor whose recoverer finds the dead worker's task through its lease. The handlers
record every run in Redis (:mod:`tests.framework.workflow_app`), so a test can tell a step that ran twice.
What we promise: the killed step runs at least once more when it was killed before its finishing script ran,
never again after; every other step runs exactly once; the workflow ends once, with the right result.

Also: a step that kills every worker (archived as a poison pill, failing its workflow), a chord whose last two
members finish together in two processes, a worker killed in the middle of a chord, and a 10,000-step chord
on three processes (its callback once, after all; the commands a step costs beside a plain task).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from framework.client.client import Client, TaskCall
from framework.embedded.process import start_test_server
from framework.errors import WorkflowFailed
from framework.protocol.keys import Schema
from framework.settings import Settings
from framework.transport.connection import open_redis
from framework.workflow import chain, chord
from tests.framework.worker_app import ROOT, env_for, stop_process, wait_until
from tests.framework.workflow_app import ADD, COLLECT, Many, Num

pytestmark = pytest.mark.slow

FAST = {"heartbeat_interval": 0.25, "recoverer_interval": 0.25}
DEAD_AFTER = 2.5


@pytest.fixture
async def client(client: Client) -> AsyncIterator[Client]:
    yield client
    await client.waiters.close()


class Processes:
    """The worker processes of one test; each is stopped (or found dead) when the test ends."""

    def __init__(self, settings: Settings, folder: Path) -> None:
        self.settings = settings.replace(**FAST)
        self.folder = folder
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *, queues: dict[str, int] | None = None, **extra: Any) -> subprocess.Popen[bytes]:
        """Launch a ``workflow_app`` worker serving ``queues`` (``extra``: its ``TEST_*`` environment)."""
        s = self.settings if queues is None else self.settings.replace(queues=queues)
        log = self.folder / f"w{len(self.procs)}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.framework.workflow_app"],
                cwd=ROOT,
                env=env_for(s, TEST_DEAD_AFTER=DEAD_AFTER, **extra),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        return proc

    def supervisor(self, processes: int, **extra: Any) -> subprocess.Popen[bytes]:
        """Launch a supervisor of ``processes`` ``workflow_app`` workers (it restarts one that dies)."""
        args = ["--processes", str(processes), "--factory", "tests.framework.workflow_app:make_worker"]
        with (self.folder / f"w{len(self.procs)}.log").open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "framework.worker.supervisor", *args],
                cwd=ROOT,
                env=env_for(self.settings, TEST_DEAD_AFTER=DEAD_AFTER, **extra),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            stop_process(proc)

    def logs(self) -> str:
        return "".join(p.read_text() for p in sorted(self.folder.glob("w*.log")))


@pytest.fixture
def procs(settings: Settings, tmp_path: Path) -> Iterator[Processes]:
    processes = Processes(settings, tmp_path)
    yield processes
    processes.stop()


async def _runs(redis: Any, ns: str) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in (await redis.hgetall(f"{ns}:test:runs")).items()}


async def _list(redis: Any, key: str) -> list[str]:
    return [raw.decode() for raw in await redis.lrange(key, 0, -1)]


def _kill(proc: subprocess.Popen[bytes]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)


VICTIM = "victim"
"""Step a's queue, the only one the victim serves: it runs a and nothing else (a worker takes new tasks while
an outcome is being written, so a victim serving every queue could run b and c before it is killed)."""


def _chain_of_three(*, hang: bool = False, retention: int = 0) -> Any:
    return chain(
        ADD.step(Num(n=1, hang=hang), name="a", queue=VICTIM, retention=retention),
        ADD.step(Num(), input="prev", name="b", retention=retention),
        ADD.step(Num(), input="prev", name="c", retention=retention),
    )


async def _killed_then_recovered(
    client: Client, redis: Any, procs: Processes, workflow: Any, point: str, **hold: Any
) -> dict[str, int]:
    """Start ``workflow`` on a lone victim, SIGKILL it once ``point`` (a ``test:`` list) names step a, recover.

    The survivor starts after the kill; its recoverer finds the victim dead (``dead_after``) and requeues what
    the victim held. Returns the runs per step name once the workflow succeeded (its result checked: 4).
    """
    ns = procs.settings.namespace
    victim = procs.start(queues={VICTIM: 1}, **hold)
    info = await client.start_workflow(workflow)
    a_id = info.steps["a"][1]

    async def reached() -> bool:
        if point == "runs":
            return (await _runs(redis, ns)).get(a_id, 0) >= 1
        return "a" in await _list(redis, f"{ns}:test:{point}")

    await wait_until(reached, timeout=30)
    _kill(victim)
    procs.start(queues={VICTIM: 1, "default": 1})
    assert await client.wait_workflow(info, timeout=60) == 4
    runs = await _runs(redis, ns)
    by_name = {name: runs.get(task_id, 0) for name, (_, task_id) in info.steps.items()}
    wk = client.schema.queue(info.queue).workflow(info.id)
    states = {k.decode(): v.decode() for k, v in (await redis.hgetall(wk.state)).items()}
    assert states == dict.fromkeys(("a", "b", "c"), "succeeded")
    meta = await redis.hmget(wk.meta, "status", "done", "open", "failed")
    assert meta == [b"succeeded", b"3", b"0", b"0"]  # each step counted once
    return by_name


async def test_killed_while_the_handler_runs(client: Client, redis: Any, procs: Processes) -> None:
    runs = await _killed_then_recovered(client, redis, procs, _chain_of_three(hang=True), "runs")
    assert runs["a"] >= 2  # killed in it: run again (at least once)
    assert (runs["b"], runs["c"]) == (1, 1)
    assert "task_recovered" in procs.logs()


@pytest.mark.parametrize("retention", [0, 60], ids=["done", "complete"])
async def test_killed_after_the_handler_returned_before_the_finishing_script(
    client: Client, redis: Any, procs: Processes, retention: int
) -> None:
    wf = _chain_of_three(retention=retention)
    runs = await _killed_then_recovered(client, redis, procs, wf, "held", TEST_HOLD="before", TEST_HOLD_STEPS="a")
    assert runs["a"] >= 2  # its outcome was never written: run again
    assert (runs["b"], runs["c"]) == (1, 1)
    assert "task_recovered" in procs.logs()


@pytest.mark.parametrize("retention", [0, 60], ids=["done", "complete"])
async def test_killed_right_after_the_finishing_script_ran(
    client: Client, redis: Any, procs: Processes, retention: int
) -> None:
    wf = _chain_of_three(retention=retention)
    runs = await _killed_then_recovered(client, redis, procs, wf, "finished", TEST_HOLD="after", TEST_HOLD_STEPS="a")
    assert runs == {"a": 1, "b": 1, "c": 1}  # the workflow advanced in its script: nothing runs again


async def test_a_step_that_kills_every_worker_is_archived_and_fails_its_workflow(
    client: Client, redis: Any, procs: Processes
) -> None:
    procs.supervisor(2, TEST_MAX_RECOVERIES=1)
    wf = chain(ADD.step(Num(n=1, crash=True), name="a"), ADD.step(Num(), input="prev", name="b"))
    info = await client.start_workflow(wf)
    with pytest.raises(WorkflowFailed) as caught:
        await client.wait_workflow(info, timeout=90)
    # the recoverer archived it as a poison pill through the step's archive: the workflow learnt at once
    assert "step a: poison pill: the worker running this task died 2 times" in caught.value.error
    runs = await _runs(redis, procs.settings.namespace)
    assert runs == {info.steps["a"][1]: 2}  # b never ran
    wk = client.schema.queue(info.queue).workflow(info.id)
    states = {k.decode(): v.decode() for k, v in (await redis.hgetall(wk.state)).items()}
    assert states == {"a": "failed", "b": "waiting"}

    async def logged() -> bool:  # the recoverer logs it just after the archive the workflow learnt from
        return "task_poison_pill" in procs.logs()

    await wait_until(logged, timeout=10)


ROUNDS = 20


async def test_a_chords_callback_is_released_once_when_its_last_two_members_finish_in_two_processes(
    client: Client, redis: Any, procs: Processes
) -> None:
    ns = procs.settings.namespace
    # a worker takes a new task while an outcome is written, so each member goes to a queue of its own
    for i in range(2):
        procs.start(queues={f"q{i}": 1, "default": 1}, TEST_HOLD="before", TEST_HOLD_STEPS="m0,m1")
    for r in range(ROUNDS):
        await redis.delete(f"{ns}:test:held")
        wf = chord(
            [ADD.step(Num(n=10 * r + i), name=f"m{i}", queue=f"q{i}") for i in range(2)],
            COLLECT.step(Many(), input="values", name="cb"),
        )
        info = await client.start_workflow(wf)

        async def both_held() -> bool:
            return sorted(await _list(redis, f"{ns}:test:held")) == ["m0", "m1"]

        await wait_until(both_held, timeout=30)
        pids = await redis.hmget(f"{ns}:test:pid", [info.steps["m0"][1], info.steps["m1"][1]])
        assert pids[0] != pids[1]  # one member held in each process
        await redis.rpush(f"{ns}:test:go", "1", "1")  # both finishing scripts now, together
        assert await client.wait_workflow(info, queue="q0", timeout=30) == [10 * r + 1, 10 * r + 2]
        runs = await _runs(redis, ns)
        assert [runs[info.steps[name][1]] for name in ("m0", "m1", "cb")] == [1, 1, 1]
        wk = client.schema.queue("q0").workflow(info.id)
        assert await redis.hmget(wk.meta, "done", "open") == [b"3", b"0"]
    started = await _list(redis, f"{ns}:test:started")
    assert len(started) == 3 * ROUNDS


async def test_a_worker_killed_in_the_middle_of_a_chord_leaves_it_to_finish_once(
    client: Client, redis: Any, procs: Processes
) -> None:
    ns = procs.settings.namespace
    width = 3000
    victim, *_ = [procs.start(FRAMEWORK_CONCURRENCY=10) for _ in range(3)]
    members = [ADD.step(Num(n=i, pause=0.01), name=f"m{i}") for i in range(width)]
    info = await client.start_workflow(chord(members, COLLECT.step(Many(), input="values", name="cb")))
    callback = info.steps["cb"][1]

    async def a_third_done() -> bool:
        return int(await redis.llen(f"{ns}:test:started")) >= width // 3

    await wait_until(a_third_done, timeout=60)
    _kill(victim)
    assert callback not in await _list(redis, f"{ns}:test:started")  # killed while the group ran
    assert await client.wait_workflow(info, timeout=90) == [i + 1 for i in range(width)]
    ran = [line.split() for line in await _list(redis, f"{ns}:test:ran")]
    runs = Counter(task_id for task_id, _ in ran)
    by_victim = {task_id for task_id, pid in ran if int(pid) == victim.pid}
    assert by_victim  # the victim did run members
    assert set(runs) == {task_id for _, task_id in info.steps.values()}  # every step ran
    again = {task_id for task_id, n in runs.items() if n > 1}
    assert again <= by_victim  # only the steps the killed process was running or finishing ran twice
    assert runs[callback] == 1
    assert ran[-1][0] == callback  # after every member's (last) run


# -- scale ----------------------------------------------------------------------------------------

WIDTH = 10_000
OWN = {"info", "echo", "llen", "lrange", "hgetall", "subscribe", "unsubscribe", "ping", "client", "hello"}


class Census:
    """Commands the server ran while it was on (``MONITOR``): sent by clients, and run inside Lua scripts.

    The test's own commands (polling, reading results) are left out by name.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.sent: Counter[str] = Counter()
        self.lua: Counter[str] = Counter()

    async def run(self, redis: Any, work: Callable[[], Awaitable[None]]) -> None:
        """Count what the server runs while ``work()`` runs."""
        monitor = Redis.from_url(self.url)
        conn = await monitor.connection_pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await conn.send_command("MONITOR")
            assert await conn.read_response() in (b"OK", "OK")
            await work()
            await redis.echo("census:end")
            while True:
                line = await conn.read_response()
                if b"census:end" in line:
                    break
                src, _, rest = line.partition(b"] ")
                name = rest.split(b'"')[1].decode().lower() if b'"' in rest else ""
                if name in OWN:
                    continue
                (self.lua if src.endswith(b" lua") else self.sent)[name] += 1
        finally:
            await conn.disconnect()
            await monitor.aclose()


async def test_three_processes_run_a_10000_step_chord_and_its_callback_once_after_all(
    tmp_path: Path, capsys: Any
) -> None:
    server = start_test_server(tmp_path / "valkey")
    redis = open_redis(server.url)
    ns = "scale"
    s = Settings(redis_url=server.url, namespace=ns, data_dir=str(tmp_path / "data"))
    client = Client(redis, settings=s, schema=Schema(ns), url=server.url)
    procs = Processes(s, tmp_path)
    try:
        for _ in range(3):
            procs.start()

        async def alive() -> bool:
            return int(await redis.zcard(client.schema.alive)) == 3

        await wait_until(alive, timeout=30)

        async def plain() -> None:
            for c in range(0, WIDTH, 1000):
                await client.enqueue_many([TaskCall(ADD, Num(n=i)) for i in range(c, c + 1000)])

            async def all_ran() -> bool:
                return int(await redis.llen(f"{ns}:test:started")) >= WIDTH

            await wait_until(all_ran, timeout=120, interval=0.2)

        plain_census = Census(server.url)
        await plain_census.run(redis, plain)
        await redis.delete(f"{ns}:test:started", f"{ns}:test:runs")
        wf = chord(
            [ADD.step(Num(n=i), name=f"m{i}") for i in range(WIDTH)], COLLECT.step(Many(), input="values", name="cb")
        )
        result: list[Any] = []

        async def workflow() -> None:
            info = await client.start_workflow(wf)
            result.append(info)
            result.append(await client.wait_workflow(info, timeout=180))

        chord_census = Census(server.url)
        await chord_census.run(redis, workflow)
        info, value = result
        assert value == [i + 1 for i in range(WIDTH)]  # every result, in the group's order
        started = await _list(redis, f"{ns}:test:started")
        callback = info.steps["cb"][1]
        assert len(started) == WIDTH + 1
        assert started[-1] == callback  # after all 10,000 members ...
        assert started.count(callback) == 1  # ... and once
        assert set((await _runs(redis, ns)).values()) == {1}
    finally:
        procs.stop()
        await client.waiters.close()
        await redis.aclose()
        server.stop()
    # no polling: the last member's script releases the callback; a step costs at most one command more
    # than the same task enqueued plainly (it is acknowledged alone, with the advance: plain acks are batched)
    sent = {name: c.sent.total() / WIDTH for name, c in (("plain", plain_census), ("chord", chord_census))}
    lua = {name: c.lua.total() / WIDTH for name, c in (("plain", plain_census), ("chord", chord_census))}
    with capsys.disabled():
        print(
            f"\ncommands per task, sent (run in scripts): plain {sent['plain']:.2f} ({lua['plain']:.2f}),"
            f" chord step {sent['chord']:.2f} ({lua['chord']:.2f}); sent by name, chord {dict(chord_census.sent)},"
            f" plain {dict(plain_census.sent)}"
        )
    # per step at most one more; the workflow as a whole adds a handful that do not grow with it (its start
    # script, the waiter's reads, the workers' periodic checks while it runs): 50 in all is allowed for those
    assert sent["chord"] - sent["plain"] <= 1.0 + 50 / WIDTH, sent
