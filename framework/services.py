"""Shared services of one running process: settings, Redis, the client, storage, and a typed stash.

One :class:`Services` exists per process role (web app, worker, scheduler). Handlers reach it through
``ctx.services``; route handlers get it injected. Plugins keep their own singletons (an email backend,
say) in :attr:`Services.stash` under a :class:`~framework.context.StashKey`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

if TYPE_CHECKING:
    from collections.abc import Callable

    from redis.asyncio import Redis

    from framework.client.client import Client
    from framework.protocol.keys import Schema
    from framework.registry import Registry
    from framework.settings import Settings
    from framework.storage import Storage

__all__ = ("Services", "Stash", "StashKey")

T = TypeVar("T")


class StashKey(Generic[T]):
    """A typed key into a :class:`Stash` (``ctx.stash``, ``services.stash``), so plugins share values without clashes.

    Args:
        name: a readable name, used only in ``repr``.
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"StashKey({self.name!r})"


class Stash:
    """A dict keyed by :class:`StashKey` whose values keep their type."""

    __slots__ = ("_data",)

    def __init__(self) -> None:
        self._data: dict[StashKey[Any], Any] = {}

    def __getitem__(self, key: StashKey[T]) -> T:
        return cast("T", self._data[key])

    def __setitem__(self, key: StashKey[T], value: T) -> None:
        self._data[key] = value

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def get(self, key: StashKey[T], default: T | None = None) -> T | None:
        """Return the value under ``key`` or ``default``."""
        return cast("T | None", self._data.get(key, default))


class Services:
    """The process's shared services. Set up by the framework; read by plugins and handlers.

    A plain class rather than a dataclass, so web frameworks that validate injected values by their
    annotations treat it as an opaque object.

    Attributes:
        settings: the app's settings.
        redis: the shared asyncio Redis connection pool.
        schema: the Redis key schema in use.
        client: the enqueue client.
        registry: every registered task type.
        role: ``web``, ``worker``, ``scheduler`` or ``run`` (all three in one process).
        stash: typed per-plugin singletons.
        plugin_manager: the pluggy plugin manager (None when no plugins are loaded).
        jinja: the shared Jinja environment (app templates override plugin templates); a worker builds
            it on first use (see :meth:`jinja_from`), so one that renders nothing never imports Jinja.
        extra: free-form values shared inside the process (the Redis URL, an inspector, ...).
    """

    __slots__ = (
        "_jinja",
        "_jinja_factory",
        "_storage",
        "client",
        "extra",
        "plugin_manager",
        "redis",
        "registry",
        "role",
        "schema",
        "settings",
        "stash",
    )

    def __init__(
        self,
        *,
        settings: Settings,
        redis: Redis,
        schema: Schema,
        client: Client,
        registry: Registry,
        role: str = "worker",
        plugin_manager: Any = None,
        jinja: Any = None,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.schema = schema
        self.client = client
        self.registry = registry
        self.role = role
        self.plugin_manager = plugin_manager
        self._jinja: Any = jinja
        self._jinja_factory: Callable[[], Any] | None = None
        self.stash = Stash()
        self.extra: dict[str, Any] = {}
        self._storage: Storage | None = None

    @property
    def jinja(self) -> Any:
        """The shared Jinja environment (None when the process has none)."""
        if self._jinja is None and self._jinja_factory is not None:
            factory, self._jinja_factory = self._jinja_factory, None
            self._jinja = factory()
        return self._jinja

    @jinja.setter
    def jinja(self, env: Any) -> None:
        self._jinja, self._jinja_factory = env, None

    def jinja_from(self, factory: Callable[[], Any]) -> None:
        """Build :attr:`jinja` with ``factory`` when it is first read."""
        self._jinja, self._jinja_factory = None, factory

    @property
    def storage(self) -> Storage:
        """The object storage service, created on first use from ``settings.storage``."""
        if self._storage is None:
            from framework.storage import open_storage  # noqa: PLC0415 - optional backends load lazily

            self._storage = open_storage(self.settings)
        return self._storage
