"""The examples of the docs work as written: the README after its first task, and docs/*.md.

Each Python example meant to run is taken from the document itself and run against a real Valkey with a real
worker, so a change that breaks an example fails here. Most examples are written as they would sit inside a
program (an ``await`` at the top level, a ``client`` at hand, a ``Charge`` payload of the reader's own): what
they assume is given in a few lines here (:data:`PRELUDE` and each test's ``given``), never changed in the text.
Settings snippets load with :func:`framework.settings.load_settings`; commands parse as the CLI parses them.

Left out, as fragments of a larger program rather than examples to run: the README's plugin skeleton
(``framework_hello``, whose tasks and routes modules it does not show), its ``test_hello`` (a body of ``...``),
the ``pyproject.toml`` entry-point table, and the JavaScript of the web section (its event names and fields are
checked against what the route sends).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import re
import sys
import textwrap
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import click
import httpx
import msgspec
import pytest
import redis.exceptions

from framework.broker.limits import EARLY, HOLD, KEEP, LATE, PARK_FALLBACK
from framework.broker.workflows import CHECK_BATCH
from framework.cli import cli
from framework.client.client import Client
from framework.context import TaskContext
from framework.errors import ERROR_TEXT_MAX
from framework.inspector import Inspector
from framework.inspector.limits import KEY_PAGE
from framework.limits import applied_limits
from framework.registry import Registry
from framework.scheduler.loader import load_entries
from framework.settings import Settings, load_settings
from framework.task import TaskDef
from framework.transport.lean.connection import SPIN_MISSES, SPIN_PAUSE, SPIN_SECONDS
from framework.web.app import create_app
from framework.worker.background.recoverer import default_dead_after
from framework.worker.heartbeat import SERVER_INFO_EVERY, WORKER_PAYLOAD_MAX
from framework.worker.outcomes import UNKNOWN_TYPE_DELAYS, UNKNOWN_TYPE_LOG_INTERVAL
from framework.worker.processor import DUPLICATE_DELAY, IDLE_CHECK
from framework.worker.worker import Worker
from tests.fixtures.cli import Cli
from tests.fixtures.web import read_events, serve
from tests.framework.test_layers import LAYERS

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCS = {
    name: (ROOT / "docs" / name).read_text(encoding="utf-8")
    for name in ("deployment.md", "workflows.md", "limits.md", "architecture.md")
}

PRELUDE = """\
import asyncio
from typing import Any

import msgspec

from framework import Client, Inspector, Limit, TaskContext, TaskDef, Worker, chain, chord, group
"""
"""What every example may use without importing it (the README's examples import only what is new to them)."""


def section(text: str, heading: str) -> str:
    """The part of ``text`` under the ``## heading``, up to the next heading of that level."""
    assert f"\n## {heading}\n" in text, heading
    return text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


def blocks(text: str, lang: str) -> list[str]:
    """The fenced ``lang`` blocks of ``text``, in order."""
    return re.findall(rf"```{lang}\n(.*?)```", text, re.DOTALL)


def split_example(code: str) -> tuple[str, str]:
    """An example's definitions and its calls: the calls start at the first top-level line with an ``await``."""
    lines = code.splitlines()
    for i, line in enumerate(lines):
        if line and not line[0].isspace() and "await " in line:
            return "\n".join(lines[:i]), "\n".join(lines[i:])
    raise AssertionError(f"no top-level await in the example:\n{code}")


async def run_example(code: str, given: str, settings: Settings, client: Client, where: str) -> dict[str, Any]:
    """Run an example's definitions, then its calls with a worker for every task type it defines.

    Returns the names the calls bound, to check what the example says it gives.
    """
    definitions, calls = split_example(code)
    namespace: dict[str, Any] = {"__name__": "docs_example_" + re.sub(r"\W+", "_", where)}
    exec(compile(PRELUDE + given + "\n" + definitions, f"<{where}>", "exec"), namespace)
    body = f"async def _calls(client):\n{textwrap.indent(calls, '    ')}\n    return locals()\n"
    exec(compile(body, f"<{where}: calls>", "exec"), namespace)
    tasks = [v for v in namespace.values() if isinstance(v, TaskDef)]
    assert tasks, where
    async with Worker(settings, tasks=tasks):
        bound: dict[str, Any] = await namespace["_calls"](client)
    return {**namespace, **bound}


async def test_readme_waiting_for_a_result(settings: Settings, client: Client) -> None:
    code = blocks(section(README, "Waiting for a result"), "python")[0]
    given = "class Numbers(msgspec.Struct, frozen=True):\n    values: list[int]\n"
    seen = await run_example(code, given, settings, client, "README: Waiting for a result")
    assert seen["total"] == seen["Total"](amount=4)  # decoded into the result type, as the comment says
    assert seen["info"].state == "pending"


CRAWL = """\
urls = ["https://a.example/", "https://bb.example/x"]


async def download(url):
    return url.encode()
"""
"""What the crawl examples take as the reader's own: the pages to fetch and how (the bytes of the URL, here)."""


async def test_readme_workflows(settings: Settings, client: Client) -> None:
    code = blocks(section(README, "Workflows"), "python")[0]
    seen = await run_example(code, CRAWL, settings, client, "README: Workflows")
    assert seen["total"] == sum(len(u) for u in seen["urls"])


async def test_docs_workflows_shapes(settings: Settings, client: Client, capsys: pytest.CaptureFixture[str]) -> None:
    code = blocks(section(DOCS["workflows.md"], "Shapes and typed inputs"), "python")[0]
    seen = await run_example(code, CRAWL, settings, client, "docs/workflows.md")
    assert seen["result"] is None
    assert f"crawled {sum(len(u) for u in seen['urls'])} bytes" in capsys.readouterr().out


async def _limits_of(settings: Settings) -> dict[str, Any]:
    async with Inspector.from_settings(settings) as inspector:
        return {info.name: info for info in await inspector.limits()}


async def test_readme_limits(settings: Settings, client: Client) -> None:
    code = blocks(section(README, "Rate and concurrency limits"), "python")[0]
    given = (
        "class Charge(msgspec.Struct, frozen=True):\n    customer_id: str\n\n"
        "async def do_charge(ctx, p):\n    return None\n"
    )
    namespace: dict[str, Any] = {}
    exec(compile(PRELUDE + given + code, "<README: limits>", "exec"), namespace)
    charge = namespace["charge"]
    async with Worker(settings, tasks=[charge]):
        await client.apply(charge, namespace["Charge"](customer_id="acme"), wait_timeout=30)
        limits = await _limits_of(settings)
    limit = limits["payments-api"]
    assert (limit.rate, limit.concurrency, limit.keyed, limit.overrides) == ("20/s", 5, True, ["acme"])
    assert limit.started == 1
    acme = applied_limits(charge.limits, charge.type, namespace["Charge"](customer_id="acme"), settings.limits)
    assert [(str(a.rate), a.concurrency, a.key) for a in acme] == [("100/s", 20, "acme")]


async def test_docs_limits_with_their_settings(settings: Settings, client: Client, tmp_path: Path, cli: Cli) -> None:
    text = DOCS["limits.md"]
    code = blocks(section(text, "Declaring limits"), "python")[0]
    given = (
        "class Email(msgspec.Struct, frozen=True):\n    to: str\n\n"
        "class Charge(msgspec.Struct, frozen=True):\n    merchant_id: str\n\n"
        "async def send_email(ctx, p):\n    return None\n\n"
        "async def do_charge(ctx, p):\n    return None\n"
    )
    namespace: dict[str, Any] = {}
    exec(compile(PRELUDE + given + code, "<docs/limits.md>", "exec"), namespace)
    toml = tmp_path / "framework.toml"
    toml.write_text(blocks(section(text, "Declaring limits"), "toml")[0], encoding="utf-8")
    tuned = msgspec.structs.replace(settings, limits=load_settings(toml, environ={}).limits)
    send, charge, Charge = namespace["send"], namespace["charge"], namespace["Charge"]  # noqa: N806
    async with Worker(tuned, tasks=[send, charge]):
        await client.apply(charge, Charge(merchant_id="big-shop"), wait_timeout=30)
        limits = await _limits_of(tuned)
    assert (limits["resend"].rate, limits["resend"].task_types) == ("10/s", ["email:send"])
    assert (limits["payments-api"].rate, limits["payments-api"].burst) == ("200/s", 20)
    keyed = limits["billing:charge"]  # the unnamed limit is named after its task type
    assert (keyed.concurrency, keyed.keyed, keyed.overrides, keyed.started) == (5, True, ["big-shop"], 1)
    big = applied_limits(charge.limits, charge.type, Charge(merchant_id="big-shop"), tuned.limits)
    assert [(a.name, a.concurrency) for a in big] == [("payments-api", 0), ("billing:charge", 40)]
    # "framework tasks limits (and --json); framework tasks stats adds a Limits table (its --json stays the queues)"
    listed = cli("tasks", "limits", "--json")
    assert listed.returncode == 0, listed.stderr
    assert sorted(row["name"] for row in json.loads(listed.stdout)) == ["billing:charge", "payments-api", "resend"]
    stats = cli("tasks", "stats")
    assert stats.returncode == 0 and "Limits" in stats.stdout and "payments-api" in stats.stdout, stats
    stats_json = cli("tasks", "stats", "--json")
    assert {"queue", "pending"} <= set(json.loads(stats_json.stdout)[0]), stats_json.stdout


# -- the web app -------------------------------------------------------------------------------------------

APP_HOOKS = """

from framework import hookimpl


@hookimpl
def register_task_types(settings):
    return [report_task]


@hookimpl
def register_routes(settings):
    return [make_report, report_status, start_report, report_events]
"""
"""The app's hooks the README names (``register_task_types``, ``register_routes``) around its routes."""


@pytest.fixture
async def readme_app(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    """The README's web example as an app module, served with a worker in the process; its base URL."""
    code = blocks(section(README, "Results and progress in a web app"), "python")[0]
    module = f"readme_web_app_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{module}.py").write_text(code + APP_HOOKS, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("FRAMEWORK_LOAD_PLUGINS", raising=False)
    app_settings = msgspec.structs.replace(settings, app=module, load_plugins=[])
    try:
        async with serve(create_app(app_settings, run_worker=True)) as base:
            yield base
    finally:
        sys.modules.pop(module, None)


async def test_readme_web_app(readme_app: str) -> None:
    async with httpx.AsyncClient(base_url=readme_app, timeout=30) as http:
        done = await http.post("/reports", json={"pages": 3})
        assert done.status_code == 200, done.text
        body = done.json()
        assert (body["state"], body["queue"], body["result"]) == ("completed", "default", {"pages": 3})
        status = await http.get(f"/reports/{body['id']}")
        assert (status.status_code, status.json()) == (200, body)
        missing = await http.get("/reports/no-such-task")
        assert (missing.status_code, missing.json()["state"]) == (404, "not_found")

        started = await http.post("/reports/started", json={"pages": 2})
        assert started.status_code == 202
        events: list[tuple[str, Any]] = []
        async with http.stream("GET", started.json()["events_url"]) as stream:
            await read_events(stream, events)
    # what the README's JavaScript reads: "progress" events with a percent, then "result" with the result
    js = blocks(section(README, "Results and progress in a web app"), "js")[0]
    assert re.findall(r'addEventListener\("(\w+)"', js) == ["progress", "result", "failure"]
    assert [name for name, _ in events][-1] == "result"
    assert all(isinstance(data["percent"], int) for name, data in events if name == "progress")
    assert events[-1][1]["result"] == {"pages": 2}


# -- settings -----------------------------------------------------------------------------------------------


def test_readme_settings_snippet_loads(tmp_path: Path) -> None:
    from framework_email.config import EmailConfig

    toml = tmp_path / "framework.toml"
    toml.write_text(blocks(section(README, "Settings"), "toml")[0], encoding="utf-8")
    loaded = load_settings(toml, environ={})
    assert loaded.redis_url == "redis://:secret@redis.internal:6379/0"
    assert loaded.queues == {"critical": 6, "default": 3, "low": 1}
    assert (loaded.concurrency, loaded.shutdown_timeout) == (20, 8.0)
    assert (loaded.queue_limits["low"].max, loaded.queue_limits["critical"].reserved) == (4, 2)
    email = msgspec.convert(loaded.plugins["email"], EmailConfig)
    assert (email.backend, email.smtp.host, email.smtp.port, email.smtp.security) == (
        "smtp",
        "smtp.example.com",
        587,
        "starttls",
    )


def test_readme_settings_environment_loads() -> None:
    words = re.findall(r"`(FRAMEWORK_[A-Z_]+)=([^`]+)`", section(README, "Settings"))
    env = dict(words)
    assert len(env) == 6, words
    loaded = load_settings(environ=env)
    assert (loaded.concurrency, loaded.queues) == (20, {"critical": 6, "default": 3, "low": 1})
    assert (loaded.load_plugins, loaded.block_plugins) == (["email", "admin"], ["images"])
    assert (loaded.log_level, loaded.log_format) == ("debug", "json")


def test_deployment_environment_table_loads() -> None:
    rows = re.findall(r"^\| `(FRAMEWORK_[A-Z_]+)` \| `([^`]+)` \|", DOCS["deployment.md"], re.MULTILINE)
    loaded = load_settings(environ=dict(rows))
    assert {
        variable.removeprefix("FRAMEWORK_").lower(): getattr(loaded, variable.removeprefix("FRAMEWORK_").lower())
        for variable, _ in rows
    } == {
        "env": "production",
        "queues": {"critical": 6, "default": 3, "low": 1},
        "concurrency": 20,
        "shutdown_timeout": 25.0,
    }
    assert load_settings(environ={"FRAMEWORK_REDIS_URL": "redis://h:6379/0"}).redis_url == "redis://h:6379/0"
    inline = re.search(r"`(queue_limits = \{[^`]*\})`", DOCS["deployment.md"])
    assert inline is not None
    assert load_settings(environ={}, **tomllib.loads(inline.group(1))).queue_limits["critical"].reserved == 2


def test_readme_cron_snippet_loads_and_resolves(tmp_path: Path) -> None:
    toml = tmp_path / "framework.toml"
    toml.write_text(blocks(section(README, "Cron"), "toml")[0], encoding="utf-8")
    loaded = load_settings(toml, environ={})

    class Report(msgspec.Struct, frozen=True):
        kind: str

    async def generate(ctx: Any, p: Report) -> None:
        return None

    registry = Registry()
    registry.add(TaskDef("report:generate", Report, generate))
    (entry,) = load_entries(loaded, registry=registry)
    assert (entry.name, entry.task_type, entry.payload) == ("nightly-report", "report:generate", b'{"kind":"daily"}')
    assert entry.schedule.tz == "Europe/Berlin"


def test_readme_bad_cron_entry_stops_the_scheduler_naming_it(tmp_path: Path, cli: Cli) -> None:
    """The README's entry, in an app without its task type: the scheduler does not start, and says which entry."""
    (tmp_path / "framework.toml").write_text(blocks(section(README, "Cron"), "toml")[0], encoding="utf-8")
    done = cli("scheduler", timeout=30)
    assert done.returncode == 1, done
    assert "error: cron entry 'nightly-report' from settings: unknown task type 'report:generate'" in done.stderr


def test_documented_defaults_match_the_code() -> None:
    """The numbers docs/deployment.md and docs/workflows.md give as defaults are the settings' defaults."""
    deployment, defaults = DOCS["deployment.md"], Settings()
    stated = {
        "concurrency": (r"handlers one worker process runs at once \(default (\d+)\)", defaults.concurrency),
        "shutdown_timeout": (r"`shutdown_timeout`\s+seconds \(default (\d+)\)", defaults.shutdown_timeout),
        "cancel_grace": (r"`cancel_grace` seconds \(default (\d+)\)", defaults.cancel_grace),
        "loop_block_threshold": (r"`loop_block_threshold` seconds \(default (\d+);", defaults.loop_block_threshold),
        "unknown_type_wait": (r"`unknown_type_wait` seconds \(default (\d+),", defaults.unknown_type_wait),
        "max_payload_size": (r"`max_payload_size` bytes \(default (\d+) MiB", defaults.max_payload_size / 2**20),
        "max_result_size": (r"`max_result_size` bytes\s+\(default (\d+) MiB", defaults.max_result_size / 2**20),
        "dead_after": (r"`max\(6, 4 \u00d7 heartbeat_interval\)`, (\d+) s by default", None),
    }
    for name, (pattern, value) in stated.items():
        found = re.search(pattern, deployment)
        assert found is not None, name
        expected = default_dead_after(defaults.heartbeat_interval) if value is None else value
        assert float(found.group(1)) == expected, name
    interval = re.search(r"every `workflow_check_interval` seconds \(default (\d+)\)", DOCS["workflows.md"])
    assert interval is not None and float(interval.group(1)) == defaults.workflow_check_interval
    tuning = section(README, "Performance")
    assert re.search(rf"`concurrency` \(default {defaults.concurrency};", tuning)
    assert f"`dequeue_batch` (default {defaults.dequeue_batch})" in tuning
    assert defaults.event_loop == "auto"


def _number(text: str) -> float:
    words = {"Eight": 8, "second": 1}
    return float(words.get(text, text.replace(",", "")))


def test_documented_numbers_match_the_constants() -> None:
    """Intervals, sizes and bounds the docs give in words are the values the code uses."""
    stated = [
        ("deployment.md", r"rewritten every (\d+) s\)", SERVER_INFO_EVERY),
        ("deployment.md", r"only the first (\d+) KiB of each running task's payload", WORKER_PAYLOAD_MAX / 1024),
        ("deployment.md", r"is cut to ([\d,]+) characters", ERROR_TEXT_MAX),
        ("deployment.md", r"polls its socket for up to (\d+) \u00b5s", SPIN_SECONDS * 1e6),
        ("deployment.md", r"(\w+) windows in a row that run out", SPIN_MISSES),
        ("deployment.md", r"turn it off for the next ([\d,]+) commands", SPIN_PAUSE),
        ("deployment.md", r"idle workers still check their queues once a (second)", IDLE_CHECK),
        ("deployment.md", r"goes back to the retry set for (\d+) s\s+without spending a retry", DUPLICATE_DELAY),
        ("deployment.md", r"it is due again after (\d+) s,", UNKNOWN_TYPE_DELAYS[0]),
        ("deployment.md", r"doubles\), at most (\d+) minutes", UNKNOWN_TYPE_DELAYS[1] / 60),
        ("deployment.md", r"at most one line every (\d+) s per type and queue", UNKNOWN_TYPE_LOG_INTERVAL),
        ("limits.md", r"moment is less than (\d+) s away", HOLD),
        ("limits.md", r"until ([\d.]+) s before its moment", EARLY),
        ("limits.md", r"more than (\d+) s after its moment", LATE),
        ("limits.md", r"comes back after (\d+) s in any case", PARK_FALLBACK),
        ("limits.md", r"kept for (\d+) s at a time and renewed every (?:\d+) s", KEEP),
        ("limits.md", r"kept for (?:\d+) s at a time and renewed every (\d+) s", KEEP / 3),
        ("limits.md", r"\(up to\s+([\d,]+) of them\)", KEY_PAGE),
        ("workflows.md", r"looks at up to (\d+) running workflows", CHECK_BATCH),
    ]
    for doc, pattern, value in stated:
        found = re.search(pattern, DOCS[doc])
        assert found is not None, (doc, pattern)
        assert _number(found.group(1)) == value, (doc, pattern, value)


async def test_a_capped_pool_raises_rather_than_waits(redis_url: str) -> None:
    """docs/deployment.md: ``open_redis(url, max_connections=...)``; a full pool raises a ``ConnectionError``."""
    found = re.search(r"`open_redis\(url, max_connections=(\d+)\)` from `([a-z.]+)`", DOCS["deployment.md"])
    assert found is not None
    open_redis = importlib.import_module(found.group(2)).open_redis
    capped = open_redis(redis_url, max_connections=2)
    try:  # blocking commands take a pool connection each
        replies = await asyncio.gather(
            *(capped.blpop(["docs:none"], timeout=1) for _ in range(3)), return_exceptions=True
        )
    finally:
        await capped.aclose()
    assert [type(r) for r in replies].count(type(None)) == 2, replies
    assert any(isinstance(r, redis.exceptions.ConnectionError) and "Too many connections" in str(r) for r in replies)


def test_workflows_lost_step_error_is_the_scripts() -> None:
    """docs/workflows.md quotes the error of a step whose task vanished: it is the text wf_check.lua writes."""
    quoted = blocks(section(DOCS["workflows.md"], "Steps and Go asynq"), "")[0]
    script = (ROOT / "framework" / "protocol" / "lua" / "wf_check.lua").read_text(encoding="utf-8")
    call = script[script.index('wf_failed(W, step, "StepLost') : script.index(', "lost")')]
    task, queue, space, without, rest = re.findall(r'"([^"]*)"', call)
    written = f"{task}<id>{queue}<q>{space}vanished{without}{rest}"
    assert " ".join(quoted.split()) == f"step <name>: {written}"


# -- commands and the map of the code -----------------------------------------------------------------------

PLACEHOLDERS = {"ID": "wf-1", "QUEUE": "default", "TASK_ID": "t-1", "$(nproc)": "2"}


def _parses(words: list[str]) -> None:
    """Parse ``framework WORDS`` as the CLI does, without running it (unknown commands or options raise)."""
    command: click.Command = cli
    args = list(words)
    with click.Context(cli) as ctx:
        while isinstance(command, click.Group) and args and not args[0].startswith("-"):
            found = command.get_command(ctx, args[0])
            assert found is not None, words
            command, args = found, args[1:]
    if isinstance(command, click.Group) and not args:
        return  # the group itself, named for its commands
    command.make_context(command.name or "framework", args)


@pytest.mark.parametrize("doc", ["deployment.md", "workflows.md", "limits.md"])
def test_every_command_line_in_the_docs_parses(doc: str) -> None:
    lines = re.findall(r"`framework ([a-z][^`|/]*)`", DOCS[doc])
    assert lines, doc
    for line in lines:
        words = [PLACEHOLDERS.get(w, w) for w in line.split()]
        _parses(words)


def test_architecture_layers_are_the_tested_ones() -> None:
    """The diagram lists the packages in the order tests/framework/test_layers.py enforces, highest first."""
    diagram = blocks(section(DOCS["architecture.md"], "The layers"), "")[0].split("task model")[0]
    drawn = [re.findall(r"\b([a-z]+)/(?:\s|$)", line) for line in diagram.splitlines()]
    order = [names for names in drawn if names and names != ["background"]]
    enforced = [sorted(names) for names in reversed(LAYERS) if "model" not in names]
    assert [sorted(n for n in names if n != "background") for names in order] == enforced


def test_modules_and_scripts_the_docs_name_exist() -> None:
    """Every ``framework.x.y`` the docs name imports (or is an attribute), every ``*.lua`` is a script."""
    for name, text in [*DOCS.items(), ("README.md", README)]:
        for dotted in set(re.findall(r"`(framework(?:\.[a-z_]+)+)`", text)) - {"framework.toml"}:
            parts = dotted.split(".")
            for cut in range(len(parts), 0, -1):
                try:
                    obj: Any = importlib.import_module(".".join(parts[:cut]))
                except ImportError:
                    continue
                break
            for attr in parts[cut:]:
                obj = getattr(obj, attr, None)
                assert obj is not None, f"{name}: {dotted}"
        for script in set(re.findall(r"`([a-z_]+\.lua)`", text)):
            assert (ROOT / "framework" / "protocol" / "lua" / script).is_file(), f"{name}: {script}"
        owners = {"client": Client, "inspector": Inspector, "ctx": TaskContext}
        for owner, attr in re.findall(r"`(client|Client|inspector|Inspector|ctx)\.([a-z_]+)", text):
            assert hasattr(owners[owner.lower()], attr), f"{name}: {owner}.{attr}"
