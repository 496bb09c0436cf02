"""A process's life with its plugins: the shared services, and the ``startup``/``shutdown`` hooks around them.

Every serving process fires ``startup`` once, after Redis is connected and before its first request or task,
and ``shutdown`` once after the last: the web app through its lifespan (roles ``web`` and ``run``), a worker
that builds its own services in :meth:`~framework.worker.worker.Worker.start` (role ``worker``), and
``framework scheduler`` (role ``scheduler``). Kept apart from the web app so a worker or a scheduler does not
import Litestar.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from framework.client.client import Client
from framework.clock import SystemClock
from framework.logging import get_logger
from framework.plugins.calls import PLUGIN_FAILURES, plugin_callers, plugin_failed
from framework.plugins.events import await_me_maybe, fire_callers
from framework.plugins.manager import collect_task_types
from framework.protocol.keys import Schema
from framework.registry import Registry
from framework.services import Services
from framework.transport.connection import check_connection, open_redis, resolve_redis_url

if TYPE_CHECKING:
    import pluggy

    from framework.settings import Settings

__all__ = ("fire_shutdown", "fire_startup", "start_services", "stop_services")


async def start_services(settings: Settings, pm: pluggy.PluginManager | None, role: str) -> Services:
    """Open Redis (embedded when no URL is set), build the shared services and fire ``startup`` hooks."""
    url = await asyncio.to_thread(resolve_redis_url, settings)
    redis = open_redis(url)
    client: Client | None = None
    try:
        await check_connection(redis, url)
        registry = Registry()
        if pm is not None:
            collect_task_types(pm, settings, registry)
        schema = Schema(settings.namespace)
        client = Client(redis, schema=schema, settings=settings, registry=registry, clock=SystemClock(), url=url)
        services = Services(
            settings=settings,
            redis=redis,
            schema=schema,
            client=client,
            registry=registry,
            role=role,
            plugin_manager=pm,
        )
        from framework.plugins.templates import build_environment  # noqa: PLC0415 - Jinja only where a process serves

        services.jinja = build_environment(settings, pm)
        services.extra["redis_url"] = url
        if pm is not None:
            await fire_startup(pm, services)
    except BaseException:
        await (client.close() if client is not None else redis.aclose())  # no connection is left open
        raise
    return services


async def fire_startup(pm: pluggy.PluginManager, services: Services) -> None:
    """Fire ``startup`` one plugin at a time, in pluggy's order (the app's first).

    When one fails (or the start is cancelled while it runs), the plugins whose ``startup`` had completed
    get ``shutdown``, the last started first, before the error propagates: what they acquired is released.
    A ``shutdown`` failing then is logged (see :func:`fire_shutdown`) and the start-up error is the one raised.

    Raises:
        PluginError: an implementation raised (or called ``sys.exit``); names the plugin.
    """
    started: set[str] = set()
    for plugin, call in reversed(plugin_callers(pm, "startup")):
        try:
            for result in call(services=services):
                await await_me_maybe(result)
        except BaseException as exc:
            await fire_shutdown(pm, services, started)
            if isinstance(exc, PLUGIN_FAILURES):
                raise plugin_failed(plugin, "startup", exc) from exc
            raise
        started.add(plugin)


async def fire_shutdown(pm: pluggy.PluginManager, services: Services, only: set[str] | None = None) -> None:
    """Fire ``shutdown`` one plugin at a time, in the reverse of ``startup``'s order (the app's last).

    Whatever an implementation raises, ``BaseException`` included, is logged as ``plugin_hook_failed``
    naming the plugin, and the next plugin still shuts down (see :mod:`framework.plugins.events`); only a
    cancellation of the caller itself goes through.

    Args:
        pm: the plugin manager.
        services: the process's shared services.
        only: the plugins to shut down (default: every plugin implementing the hook).
    """
    callers = [(plugin, call) for plugin, call in plugin_callers(pm, "shutdown") if only is None or plugin in only]
    await fire_callers(callers, "shutdown", get_logger("framework.plugins.lifecycle"), services=services)


async def stop_services(services: Services) -> None:
    """Fire ``shutdown`` hooks (errors logged, never raised), then close the client and Redis.

    The client and Redis are closed whatever the hooks do, a cancellation of this call included.
    """
    try:
        if services.plugin_manager is not None:
            await fire_shutdown(services.plugin_manager, services)
    finally:
        await services.client.close()  # its waiters' subscription, its hot-path connection, then Redis (shared)
