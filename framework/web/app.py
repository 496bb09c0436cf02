"""App assembly: the only bridge between the framework and Litestar.

:class:`FrameworkPlugin` gathers plugin routes, static folders, the ``/storage`` route of the local
storage backend, plugins' guards for the OpenAPI schema, the shared Jinja environment, dependency
providers (``services``, ``client``, ``settings``, ``inspector``) and the lifespan that opens Redis,
runs plugin ``startup``/``shutdown`` hooks and, for ``framework run``, the worker and the scheduler in
the same process. :func:`create_app` is the factory.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from litestar import Controller, Litestar, Router
from litestar.config.app import AppConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.handlers import BaseRouteHandler, WebsocketListener
from litestar.openapi.config import OpenAPIConfig
from litestar.plugins import InitPlugin
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from framework.client.client import Client
from framework.errors import ConfigError, PluginError
from framework.logging import configure_logging
from framework.plugins.calls import (
    contributed_folder,
    contributions_by_plugin,
)
from framework.plugins.lifecycle import start_services, stop_services
from framework.plugins.manager import app_plugins, get_plugin_manager, plugin_dirs
from framework.plugins.templates import build_environment
from framework.services import Services
from framework.settings import Settings, load_settings
from framework.storage import LocalStorage
from framework.web.favicon import favicon_route, serves_path
from framework.web.storage_routes import storage_router

if TYPE_CHECKING:
    import pluggy

__all__ = ("FrameworkPlugin", "app_plugins", "create_app", "start_services", "stop_services")


def _services(state: State) -> Services:
    services: Services = state.framework_services
    return services


def _client(state: State) -> Client:
    return _services(state).client


def _settings(state: State) -> Settings:
    return _services(state).settings


def _inspector(state: State) -> Any:
    from framework.inspector import Inspector  # noqa: PLC0415

    services = _services(state)
    inspector = services.extra.get("inspector")
    if inspector is None:
        inspector = services.extra["inspector"] = Inspector(services.redis, services.schema)
    return inspector


def _guarded_schema(config: OpenAPIConfig, guards: list[Any]) -> OpenAPIConfig:
    """A copy of ``config`` whose schema routes pass ``guards`` first (see ``register_schema_guards``)."""
    guarded = copy.copy(config)  # not dataclasses.replace: that would re-run the deprecation checks
    if config.openapi_controller is not None:  # deprecated by Litestar, still honoured
        base = config.openapi_controller
        guarded.openapi_controller = type(base.__name__, (base,), {"guards": [*(base.guards or []), *guards]})
    elif config.openapi_router is not None:
        config.openapi_router.guards.extend(guards)
    else:
        guarded.openapi_router = Router(
            config.path or "/schema",
            route_handlers=[],
            guards=guards,
            include_in_schema=False,
            dto=None,
            return_dto=None,
        )
    return guarded


def _check_route(plugin: str, route: Any) -> None:
    """Refuse, naming ``plugin``, a route Litestar cannot mount (an undecorated function, say).

    Raises:
        PluginError: ``route`` is not a route handler, a controller or websocket listener class, or a router.
    """
    if isinstance(route, BaseRouteHandler | Router):
        return
    if isinstance(route, type) and issubclass(route, Controller | WebsocketListener):
        return
    raise PluginError(
        f"plugin {plugin!r} contributed {route!r} to register_routes, which is not a route handler, controller or "
        "router: decorate a function with a route decorator (get, post, ...)"
    )


class FrameworkPlugin(InitPlugin):
    """The Litestar plugin that mounts the framework and its plugins into an app.

    Args:
        settings: the app's settings.
        plugin_manager: the plugin manager (default: built from the settings).
        run_worker: run a worker inside the web process (``framework run``).
        run_scheduler: run the cron scheduler inside the web process.

    Attributes:
        on_started: called once the lifespan has started everything (the CLI prints its banner then).
        startup_error: what made the lifespan's start-up fail, for the CLI to report in one line (the
            server only logs it, as an exception group from Litestar).
        worker: the worker running in this process, while it runs.
    """

    __slots__ = ("on_started", "pm", "run_scheduler", "run_worker", "settings", "startup_error", "worker")

    def __init__(
        self,
        settings: Settings,
        plugin_manager: pluggy.PluginManager | None = None,
        *,
        run_worker: bool = False,
        run_scheduler: bool = False,
    ) -> None:
        self.settings = settings
        self.pm = plugin_manager or get_plugin_manager(settings, extra=app_plugins(settings))
        self.run_worker = run_worker
        self.run_scheduler = run_scheduler
        self.on_started: Callable[[], object] | None = None
        self.startup_error: Exception | None = None
        self.worker: Any = None

    def _static_routers(self) -> list[Any]:
        routers: list[Any] = []
        for name, folder in plugin_dirs(self.pm, "static"):
            routers.append(
                create_static_files_router(path=f"/static/{name}", directories=[folder], name=f"static-{name}")
            )
        for plugin, contributed in reversed(
            contributions_by_plugin(self.pm, "register_static_dirs", settings=self.settings)
        ):
            for pair in contributed:
                if not (isinstance(pair, tuple | list) and len(pair) == 2 and isinstance(pair[0], str)):
                    raise PluginError(
                        f"plugin {plugin!r} contributed {pair!r} to register_static_dirs, not a (url_path, folder) pair"
                    )
                given = contributed_folder(plugin, "register_static_dirs", pair[1])
                if given is not None:
                    routers.append(create_static_files_router(path=pair[0], directories=[given]))
        storage = self.settings.storage
        if storage.backend == "local" and storage.public_url.startswith("/"):
            store = LocalStorage.from_settings(self.settings)
            try:
                store.objects_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(
                    f"local storage cannot use its folder {store.objects_dir}: {exc.strerror or exc}; make it a "
                    "writable directory, or set data_dir (FRAMEWORK_DATA_DIR) or storage.local_dir to one"
                ) from exc
            routers.append(storage_router(store, storage.public_url))
        return routers

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        """Add routes, templates, dependencies and the lifespan to the app's config.

        Raises:
            PluginError: a plugin's ``register_routes``, ``register_static_dirs``, ``register_schema_guards``,
                ``register_template_dirs`` or ``prepare_jinja2_environment`` raised, or gave something that is
                not a list of what the hook asks for (a file where a folder goes, say); names the plugin.
        """
        settings, pm = self.settings, self.pm
        for plugin, routes in reversed(contributions_by_plugin(pm, "register_routes", settings=settings)):
            for route in routes:
                _check_route(plugin, route)
            app_config.route_handlers.extend(routes)
        app_config.route_handlers.extend(self._static_routers())
        if not serves_path(app_config.route_handlers):
            app_config.route_handlers.append(favicon_route)  # the app's own /favicon.ico wins
        schema_guards: list[Any] = []
        for plugin, guards in reversed(contributions_by_plugin(pm, "register_schema_guards", settings=settings)):
            for guard in guards:
                if not callable(guard):
                    raise PluginError(f"plugin {plugin!r} contributed {guard!r} to register_schema_guards, not a guard")
            schema_guards.extend(guards)
        if schema_guards and app_config.openapi_config is not None:
            app_config.openapi_config = _guarded_schema(app_config.openapi_config, schema_guards)
        env = build_environment(settings, pm)
        app_config.template_config = TemplateConfig(engine=JinjaTemplateEngine.from_environment(env))
        app_config.dependencies.update(
            {
                "services": Provide(_services, sync_to_thread=False),
                "client": Provide(_client, sync_to_thread=False),
                "settings": Provide(_settings, sync_to_thread=False),
                "inspector": Provide(_inspector, sync_to_thread=False),
            }
        )
        app_config.signature_namespace.update({"Client": Client, "Services": Services, "Settings": Settings})
        app_config.lifespan.append(self._lifespan)
        app_config.state.framework_settings = settings
        return app_config

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Litestar) -> AsyncIterator[None]:
        role = "run" if (self.run_worker or self.run_scheduler) else "web"
        try:
            services = await start_services(self.settings, self.pm, role)
        except Exception as exc:
            self.startup_error = exc
            raise
        app.state.framework_services = services
        parts: list[Any] = []
        try:
            try:
                if self.run_worker:
                    from framework.worker.worker import Worker  # noqa: PLC0415

                    worker = Worker(self.settings, plugin_manager=self.pm, services=services)
                    await worker.start()
                    parts.append(worker)
                    self.worker = worker
                if self.run_scheduler:
                    from framework.scheduler.scheduler import Scheduler  # noqa: PLC0415

                    scheduler = Scheduler(
                        self.settings, plugin_manager=self.pm, registry=services.registry, redis=services.redis
                    )
                    await scheduler.start()
                    parts.append(scheduler)
            except Exception as exc:
                self.startup_error = exc
                raise
            if self.on_started is not None:
                self.on_started()
            yield
        finally:
            for part in reversed(parts):
                await part.stop()
            self.worker = None
            await stop_services(services)


def create_app(
    settings: Settings | None = None,
    *,
    plugin_manager: pluggy.PluginManager | None = None,
    run_worker: bool = False,
    run_scheduler: bool = False,
    **litestar_options: Any,
) -> Litestar:
    """Build the Litestar app from settings and plugins.

    Args:
        settings: the app's settings (default: loaded from ``framework.toml`` and the environment).
        plugin_manager: a prepared plugin manager (default: built from the settings).
        run_worker: also run a worker in this process.
        run_scheduler: also run the cron scheduler in this process.
        **litestar_options: passed to :class:`litestar.Litestar` (extra route handlers, middleware, ...).
    """
    settings = settings or load_settings()
    configure_logging(settings.log_level, settings.log_format)
    plugin = FrameworkPlugin(settings, plugin_manager, run_worker=run_worker, run_scheduler=run_scheduler)
    plugins = [plugin, *litestar_options.pop("plugins", [])]
    return Litestar(
        plugins=plugins, debug=settings.env == "development" and settings.log_level == "debug", **litestar_options
    )
