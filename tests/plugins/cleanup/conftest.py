"""Fixtures of the cleanup tests: services on a real store (local folder or SeaweedFS S3), old and young objects."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
from framework_cleanup.builtin import builtin_sweepers
from framework_cleanup.config import load_config

from framework.services import Services
from framework.storage import LocalStorage

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from framework_cleanup.sweepers import Sweeper
    from redis.asyncio import Redis

    from framework.client.client import Client
    from framework.protocol.keys import Schema
    from framework.registry import Registry
    from framework.settings import Settings
    from tests.fixtures.s3 import S3Server


class Store:
    """Services on one backend, and a way to make objects old or young without waiting a day.

    Objects put before :meth:`split` are old, objects put after it are young: the cutoff lies between
    them. On the local backend old files are back-dated; on S3 (whose server sets the modification
    time) the split waits a little more than a second.
    """

    def __init__(self, services: Services, kind: str) -> None:
        self.services = services
        self.kind = kind
        self.cutoff: float | None = None
        self._old: list[str] = []

    @property
    def storage(self) -> Any:
        return self.services.storage

    async def put(self, key: str, data: bytes = b"data", **kwargs: Any) -> None:
        """Store an object: old before :meth:`split`, young after it."""
        await self.storage.put(key, data, **kwargs)
        self.written(key)

    def written(self, key: str) -> None:
        """Note an object stored by other code: old before :meth:`split`."""
        if self.cutoff is None:
            self._old.append(key)

    async def put_record(self, upload_id: str, state: str, created: float, original: str = "") -> None:
        """Store an images-plugin upload record."""
        record = {
            "id": upload_id,
            "state": state,
            "original": original or f"uploads/{upload_id}/original.jpg",
            "created": created,
            "updated": created,
            "thumbnails": [],
        }
        await self.put(f"uploads/{upload_id}/record.json", msgspec.json.encode(record), content_type="application/json")

    async def split(self) -> None:
        """Everything stored so far is old; everything stored from now on is young."""
        assert self.cutoff is None, "split once"
        if isinstance(self.storage, LocalStorage):
            t0 = time.time()
            for key in self._old:
                with contextlib.suppress(FileNotFoundError):  # deleted since
                    os.utime(self.storage.root / key, (t0 - 10, t0 - 10))
            self.cutoff = t0 - 5
        else:
            mark = time.time()
            await asyncio.sleep(1.1)  # S3 modification times have whole seconds
            self.cutoff = mark + 0.05

    def now(self, grace: float) -> float:
        """The ``now`` at which a sweeper with this grace period sees old objects as expired and young ones not."""
        assert self.cutoff is not None, "call split() first"
        return self.cutoff + grace

    def age(self, key: str, seconds: float) -> None:
        """Back-date one object (local backend only)."""
        assert isinstance(self.storage, LocalStorage)
        t = time.time() - seconds
        os.utime(self.storage.root / key, (t, t))

    async def keys(self, prefix: str = "") -> set[str]:
        return {info.key async for info in self.storage.list(prefix)}


def builtin(settings: Settings, name: str) -> Sweeper:
    """The built-in sweeper ``name`` as configured by ``settings``."""
    return {s.name: s for s in builtin_sweepers(settings, load_config(settings))}[name]


@pytest.fixture(params=["local", "s3"])
async def store(
    request: pytest.FixtureRequest,
    settings: Settings,
    redis: Redis,
    schema: Schema,
    client: Client,
    registry: Registry,
) -> AsyncIterator[Store]:
    """A :class:`Store` on the local backend and on SeaweedFS S3."""
    if request.param == "s3":
        server: S3Server = request.getfixturevalue("s3_server")
        bucket: str = request.getfixturevalue("s3_bucket")
        s3 = server.settings(bucket)
        settings = settings.replace(storage=s3.storage)
    services = Services(settings=settings, redis=redis, schema=schema, client=client, registry=registry)
    yield Store(services, request.param)
    await services.storage.close()


@pytest.fixture
async def local_store(services: Services) -> AsyncIterator[Store]:
    """A :class:`Store` on the local backend only (for back-dating objects by days)."""
    yield Store(services, "local")
    await services.storage.close()
