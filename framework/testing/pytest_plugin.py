"""pytest fixtures for apps and plugins built on the framework (a ``pytest11`` entry point).

Every test gets a real Valkey (started once per session from the embedded binary on a free loopback
port) and a namespace of its own, so tests never see each other's keys and never need FLUSHALL.

Fixtures: ``valkey_server``, ``redis_url``, ``namespace``, ``schema``, ``settings``, ``redis``,
``client``, ``registry``, ``services``; and the helpers of :mod:`framework.testing` bound to them:
``seeder`` (a :class:`~framework.testing.seed.Seeder` on ``client``) and ``faults`` (an empty
:class:`~framework.testing.faults.Faults` plan).

A test may stop or kill ``valkey_server`` to see what happens when Redis goes away; if it leaves the server
down (it failed before restarting it, say), the server is started again, with its data, before the next test.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from framework.client.client import Client
    from framework.embedded.process import ValkeyProcess
    from framework.protocol.keys import Schema
    from framework.registry import Registry
    from framework.services import Services
    from framework.settings import Settings
    from framework.testing.faults import Faults
    from framework.testing.seed import Seeder

__all__ = (
    "client",
    "faults",
    "namespace",
    "redis",
    "redis_url",
    "registry",
    "schema",
    "seeder",
    "services",
    "settings",
    "valkey_server",
)


@pytest.fixture(scope="session")
def valkey_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyProcess]:
    """A real Valkey for the whole session, on a free 127.0.0.1 port, with AOF so it can be restarted."""
    from framework.embedded.process import start_test_server  # noqa: PLC0415

    server = start_test_server(tmp_path_factory.mktemp("valkey"), appendonly=True)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _valkey_server_restored(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test that uses the session Valkey, start it again if the test left it stopped or killed.

    A test may take the server down to see what the app does when Redis goes away; one that fails before it
    brings the server back would otherwise leave every later test of the session without Redis. Tests that
    do not use it (pure ones, or a ``redis_url`` fixture of the app's own) do not start it.
    """
    server = request.getfixturevalue("valkey_server") if "valkey_server" in request.fixturenames else None
    yield
    if server is not None and not server.running:
        server.start()


@pytest.fixture(scope="session")
def redis_url(valkey_server: ValkeyProcess) -> str:
    """The session Valkey's URL."""
    return valkey_server.url


@pytest.fixture
def namespace() -> str:
    """A key namespace unique to this test."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def schema(namespace: str) -> Schema:
    """The key schema of this test's namespace."""
    from framework.protocol.keys import Schema  # noqa: PLC0415

    return Schema(namespace)


@pytest.fixture
def settings(redis_url: str, namespace: str, tmp_path: Path) -> Settings:
    """Settings pointing at the session Valkey, this test's namespace and a temporary data dir."""
    from framework.settings import Settings  # noqa: PLC0415

    return Settings(redis_url=redis_url, namespace=namespace, data_dir=str(tmp_path / "data"))


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    """An asyncio Redis client on the session Valkey."""
    from framework.transport.connection import open_redis  # noqa: PLC0415

    conn = open_redis(redis_url)
    try:
        yield conn
    finally:
        await conn.aclose()


@pytest.fixture
def registry() -> Registry:
    """An empty task registry; tests add their task types."""
    from framework.registry import Registry  # noqa: PLC0415

    return Registry()


@pytest.fixture
async def client(redis: Redis, schema: Schema, settings: Settings, registry: Registry) -> AsyncIterator[Client]:
    """An enqueue client for this test's namespace.

    Its waiters' listener and its hot-path connection are closed after the test (a listener left running
    would keep the event loop from closing); the Redis client is the ``redis`` fixture's.
    """
    from framework.client.client import Client  # noqa: PLC0415

    made = Client(redis, schema=schema, settings=settings, registry=registry, url=settings.redis_url or "")
    try:
        yield made
    finally:
        await made.waiters.close()
        made.broker.close()


@pytest.fixture
def services(settings: Settings, redis: Redis, schema: Schema, client: Client, registry: Registry) -> Services:
    """The shared services object handlers see as ``ctx.services``."""
    from framework.services import Services  # noqa: PLC0415

    return Services(settings=settings, redis=redis, schema=schema, client=client, registry=registry)


@pytest.fixture
def seeder(client: Client) -> Seeder:
    """Seeds this test's namespace with tasks in any state, and reads them back."""
    from framework.testing.seed import Seeder  # noqa: PLC0415

    return Seeder(client)


@pytest.fixture
def faults() -> Faults:
    """An empty fault plan: pass ``wrap_broker=faults.wrap`` to a worker or client, then fail or delay calls."""
    from framework.testing.faults import Faults  # noqa: PLC0415

    return Faults()


def pytest_configure(config: Any) -> None:
    """Register the markers the fixtures use."""
    config.addinivalue_line("markers", "slow: a test that takes several seconds")
