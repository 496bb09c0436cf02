"""Fixtures for the admin plugin's tests: test task types, an app with a worker, seeded tasks, Chromium."""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import msgspec
import pytest
from litestar.testing import AsyncTestClient
from playwright.sync_api import Browser, BrowserType, Page, Playwright, sync_playwright

from framework.errors import RetryAfter
from framework.hookspecs import hookimpl
from framework.plugins.manager import get_plugin_manager
from framework.task import TaskDef
from framework.web.app import create_app
from tests.plugins.admin.server import LiveServer

TOKEN = "admin-token-for-tests-0123456789"
READONLY = "readonly-token-for-tests-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
RO_AUTH = {"Authorization": f"Bearer {READONLY}"}
XSS = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


class Job(msgspec.Struct, frozen=True, kw_only=True):
    """Payload of the test tasks."""

    text: str = ""
    fail_times: int = 0
    sleep: float = 0.0


FAILS: Counter[str] = Counter()
"""Failures so far per task id (the flaky task fails ``fail_times`` times, then succeeds)."""


async def _ok(ctx: Any, p: Job) -> None:
    await asyncio.sleep(p.sleep)
    await ctx.write_result(msgspec.json.encode({"echo": p.text}))


async def _flaky(ctx: Any, p: Job) -> None:
    if FAILS[ctx.id] < p.fail_times:
        FAILS[ctx.id] += 1
        raise RuntimeError(f"boom {p.text}")
    await ctx.write_result(b'{"ok": true}')


async def _later(ctx: Any, p: Job) -> None:
    raise RetryAfter(3600, f"not yet: {p.text}")


async def _block(ctx: Any, p: Job) -> None:
    await asyncio.sleep(p.sleep or 60)


OK = TaskDef("admin-test:ok", Job, _ok, queue="default", retention=3600)
FLAKY = TaskDef("admin-test:flaky", Job, _flaky, queue="default", max_retry=0, retention=3600)
LATER = TaskDef("admin-test:later", Job, _later, queue="default", max_retry=5)
BLOCK = TaskDef("admin-test:block", Job, _block, queue="critical", timeout=120)


class TestTasks:
    """A plugin contributing the test task types."""

    @hookimpl
    def register_task_types(self, settings: Any) -> list[Any]:
        return [OK, FLAKY, LATER, BLOCK]


def admin_pm(settings: Any, *extra: tuple[str, object]) -> Any:
    """A plugin manager with the admin (and email) plugins, the test tasks and ``extra`` plugins."""
    return get_plugin_manager(settings, extra=[("admin_tests", TestTasks()), *extra])


@pytest.fixture
def admin_settings(settings: Any) -> Any:
    """Settings with both admin tokens, the admin and email plugins, and quick worker loops."""
    return settings.replace(
        admin_token=TOKEN,
        admin_readonly_token=READONLY,
        load_plugins=["admin", "email"],
        shutdown_timeout=0.3,
        forward_interval=0.2,
        heartbeat_interval=0.5,
    )


@pytest.fixture
async def api(admin_settings: Any) -> AsyncIterator[AsyncTestClient[Any]]:
    """The app (with a worker in-process) behind a test client."""
    app = create_app(admin_settings, plugin_manager=admin_pm(admin_settings), run_worker=True)
    async with AsyncTestClient(app) as tc:
        yield tc


async def wait_for(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll the async ``check`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def stats(tc: AsyncTestClient[Any]) -> dict[str, Any]:
    response = await tc.get("/api/admin/jobs/stats", headers=AUTH)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


@pytest.fixture
async def seeded(api: AsyncTestClient[Any], client: Any) -> AsyncTestClient[Any]:
    """Tasks in every state but active: 2 completed, 1 archived (markup in payload and error), 1 retry,
    1 scheduled (all in ``default``) and 1 pending in ``parked`` (a queue no worker serves)."""
    FAILS.clear()
    await client.enqueue(OK, Job(text="one"), task_id="ok-1")
    await client.enqueue(OK, Job(text="two"), task_id="ok-2")
    await client.enqueue(FLAKY, Job(text=XSS, fail_times=1), task_id="bad-1")
    await client.enqueue(LATER, Job(text="later"), task_id="later-1")
    await client.enqueue(OK, Job(text="sched"), task_id="sched-1", process_in=3600)
    await client.enqueue(OK, Job(text="parked"), task_id="park-1", queue="parked")

    async def ready() -> bool:
        t = (await stats(api))["totals"]
        return t["completed"] >= 2 and t["archived"] >= 1 and t["retry"] >= 1 and t["scheduled"] >= 1

    await wait_for(ready)
    return api


async def task_state(api: Any, task_id: str, queue: str) -> str | None:
    """A task's state through the JSON API (None: no such task)."""
    r = await api.get("/api/admin/task", params={"id": task_id, "queue": queue}, headers=AUTH)
    if r.status_code == 404:
        return None
    assert r.status_code == 200, r.text
    state: str = r.json()["state"]
    return state


@pytest.fixture
def live(admin_settings: Any) -> Iterator[LiveServer]:
    """The app with its worker, served by uvicorn; the dashboard refreshes every half second."""
    settings = admin_settings.replace(plugins={"admin": {"refresh_seconds": 0.5}})
    server = LiveServer(create_app(settings, plugin_manager=admin_pm(settings), run_worker=True)).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def page_errors(page: Page) -> Iterator[list[str]]:
    """JavaScript errors on the page; a test fails if there are any."""
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    yield errors
    assert errors == []


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf-token" content="([^"]+)"', html)
    assert match, "no CSRF token on the page"
    return match.group(1)


async def login(tc: Any, token: str = TOKEN, name: str = "ada") -> str:
    """Sign in through the form; returns the CSRF token."""
    page = await tc.get("/admin/login")
    assert page.status_code == 200
    csrf = csrf_of(page.text)
    r = await tc.post(
        "/admin/login", data={"token": token, "name": name, "_csrf": csrf, "next": "/admin"}, follow_redirects=False
    )
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/admin"
    return csrf


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    """Debian's Chromium, headless, with no background network traffic (the tests run offline)."""
    return {**browser_type_launch_args, "executable_path": "/usr/bin/chromium", "args": CHROMIUM_ARGS}


# pytest-playwright keeps Playwright (and its browser) for the whole session. Its sync API runs its event loop
# on the main thread, and that loop stays the thread's running loop until Playwright stops, so no async test
# can run after the first browser test. Here Playwright lives for one test module: a module's browser tests
# run after its other tests (see ``pytest_collection_modifyitems``), and Playwright stops when the module ends,
# so the next module's async tests run, in a serial session and in each process of a parallel one.


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    """Playwright for one test module."""
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def browser_type(playwright: Playwright, browser_name: str) -> BrowserType:
    """The browser type the tests run (Chromium)."""
    browser_type: BrowserType = getattr(playwright, browser_name)
    return browser_type


@pytest.fixture(scope="module")
def launch_browser(browser_type_launch_args: dict[str, Any], browser_type: BrowserType) -> Callable[..., Browser]:
    """Launches a browser with the launch arguments above (and a test's own)."""

    def launch(**kwargs: Any) -> Browser:
        return browser_type.launch(**{**browser_type_launch_args, **kwargs})

    return launch


@pytest.fixture(scope="module")
def browser(launch_browser: Callable[..., Browser]) -> Iterator[Browser]:
    """One browser for a test module's browser tests."""
    browser = launch_browser()
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def browser_context_args() -> dict[str, Any]:
    """New pages' options: the defaults."""
    return {}


@pytest.hookimpl(trylast=True)  # after pytest regroups items by their parametrized fixtures
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run each module's browser tests after its other tests, keeping each module's tests together.

    While Playwright runs (module-scoped above) its loop is the main thread's running loop and pytest-asyncio
    cannot run an async test; it stops when the module's last test is done. Modules stay whole, in their
    order, so a module-scoped fixture is set up once and a parallel run can hand out whole files.
    """
    browser = {item for item in items if "page" in getattr(item, "fixturenames", ())}
    if not browser:
        return
    modules: dict[Any, list[pytest.Item]] = {}
    for item in items:
        modules.setdefault(item.module if isinstance(item, pytest.Function) else item.parent, []).append(item)
    items[:] = [item for group in modules.values() for item in sorted(group, key=lambda item: item in browser)]
