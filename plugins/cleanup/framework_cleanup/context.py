"""What a sweep gets and fills: :class:`SweepContext` (services, time, dry run, claims) and :class:`SweepResult`.

:meth:`SweepContext.remove_object` is the safe way to delete a storage object from a sweep: it honours
the dry run, claims the object in Redis for the moment it takes to delete it (so two runs at once never
both count it) and counts it only if it was still there.
"""

from __future__ import annotations

import contextlib
import secrets
from typing import TYPE_CHECKING

import msgspec

from framework.storage import StorageError, StorageUnavailable
from framework_cleanup.keys import claim_key

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import structlog

    from framework import Services
    from framework.storage import ObjectInfo

__all__ = ("MAX_ERRORS", "SAMPLE_SIZE", "SweepContext", "SweepResult")

SAMPLE_SIZE = 20
"""Removed items a result keeps by name (the count and bytes cover all of them)."""
MAX_ERRORS = 50
"""Error messages a result keeps."""


_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
"""Delete the claim ``KEYS[1]`` if it still holds this run's token ``ARGV[1]``."""


class SweepResult(msgspec.Struct, kw_only=True):
    """What one sweep removed (or, in a dry run, would remove). Filled by the sweep.

    Attributes:
        removed: how many items were removed.
        bytes: bytes freed (0 where a store cannot tell).
        items: the first :data:`SAMPLE_SIZE` removed items' keys.
        errors: items that could not be removed, with the reason (at most :data:`MAX_ERRORS`).
    """

    removed: int = 0
    bytes: int = 0
    items: list[str] = msgspec.field(default_factory=list)
    errors: list[str] = msgspec.field(default_factory=list)

    def add(self, item: str, size: int = 0) -> None:
        """Count one removed item of ``size`` bytes."""
        self.removed += 1
        self.bytes += max(0, int(size))
        if len(self.items) < SAMPLE_SIZE:
            self.items.append(item)

    def error(self, message: str) -> None:
        """Record a problem with one item; the sweep goes on."""
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(message)


class SweepContext:
    """What a sweep gets: the services, the time, the dry-run flag and a result to fill. Set by the engine.

    Attributes:
        services: the process's services (``redis``, ``schema``, ``storage``, ``settings``, ...).
        sweeper: the sweeper's name.
        dry_run: list what would be removed, remove nothing.
        now: the Unix time the run started at.
        grace: the sweeper's grace period in seconds.
        result: a result the sweep may fill and return (the engine reports it even if the sweep raises).
        logger: a structlog logger bound to the sweeper's name.
        claim_ttl: seconds a claim taken by :meth:`exclusive` lasts if the run dies holding it.
    """

    __slots__ = ("claim_ttl", "dry_run", "grace", "logger", "now", "result", "services", "sweeper")

    def __init__(
        self,
        services: Services,
        sweeper: str,
        *,
        dry_run: bool,
        now: float,
        grace: float,
        logger: structlog.typing.FilteringBoundLogger,
        claim_ttl: float = 60.0,
    ) -> None:
        self.services = services
        self.sweeper = sweeper
        self.dry_run = dry_run
        self.now = now
        self.grace = grace
        self.logger = logger
        self.claim_ttl = claim_ttl
        self.result = SweepResult()

    @property
    def cutoff(self) -> float:
        """``now - grace``: only what was last modified before this may be removed."""
        return self.now - self.grace

    @contextlib.asynccontextmanager
    async def exclusive(self, item: str) -> AsyncIterator[bool]:
        """Claim ``item`` for this run while the block runs; yields whether the claim was won.

        Another run holding the claim makes this yield False: skip the item, that run counts it. The claim
        is released when the block ends, unless it expired meanwhile (the block took longer than
        ``claim_ttl``) and another run took it. In a dry run nothing is written and the claim is always won.
        """
        if self.dry_run:
            yield True
            return
        key = claim_key(self.services.schema, self.sweeper, item)
        token = secrets.token_hex(8).encode()
        won = bool(await self.services.redis.set(key, token, nx=True, px=max(1, int(self.claim_ttl * 1000))))
        try:
            yield won
        finally:
            if won:  # only while the claim is still ours: once it expired, another run may hold it
                await self.services.redis.eval(_RELEASE, 1, key, token)

    async def remove_object(self, info: ObjectInfo) -> bool:
        """Delete one storage object and count it (dry run: only count it); return whether it was counted.

        An object another run is deleting, or that is already gone, is not counted. A store error for
        this object is recorded in ``result.errors``; an unreachable store raises
        :class:`~framework.storage.StorageUnavailable` and ends the sweep.
        """
        if self.dry_run:
            self.result.add(info.key, info.size)
            return True
        async with self.exclusive(info.key) as won:
            if not won:
                return False
            try:
                deleted = await self.services.storage.delete(info.key)
            except StorageUnavailable:
                raise
            except StorageError as exc:
                self.result.error(f"{info.key}: {exc}")
                return False
        if deleted:
            self.result.add(info.key, info.size)
        return deleted
