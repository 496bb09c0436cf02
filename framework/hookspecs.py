"""Every hook a plugin can implement: the plugin author's reference.

Mark implementations with :data:`hookimpl` and point a ``framework`` entry point at the module::

    [project.entry-points.framework]
    myplugin = "framework_myplugin.hooks"

Naming: ``register_*`` returns a list of contributions and is called once at assembly; ``prepare_*``
mutates the object it is given; ``startup``/``shutdown`` are lifecycle; ``task_*`` are events;
``*_for`` is a first-result lookup; ``check_*`` validates and changes nothing. Assembly hooks are
synchronous. Lifecycle and event hooks may return an awaitable, which the framework awaits. Hooks only
ever gain arguments; an implementation may accept any subset of a hook's arguments. Assembly hooks get
``plugin_manager``, the manager calling them, to ask other plugins for what they contribute (the hooks
those plugins declare); lifecycle hooks find it on ``services.plugin_manager``.

Every hook is called through the plugin manager, so ``FRAMEWORK_TRACE_PLUGINS=1`` traces each call and
``@hookimpl(wrapper=True)`` implementations wrap them. Collect hooks whose contributions are tagged with
their plugin (task types, cron entries, aggregators), the ``check_config`` checks, ``startup``,
``shutdown`` and the task events are called once per plugin (see :mod:`framework.plugins.calls`): a
wrapper wraps each of those calls and sees that one plugin's results.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from collections.abc import Awaitable
    from pathlib import Path

    import click
    import jinja2

    from framework.context import TaskContext
    from framework.services import Services
    from framework.settings import Settings
    from framework.task import CronEntry, Middleware, TaskDef

__all__ = ("PROJECT", "hookimpl", "hookspec")

PROJECT = "framework"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# -- assembly: called once while an app, worker or scheduler is built ----------------------------


@hookspec
def register_task_types(settings: Settings, plugin_manager: pluggy.PluginManager) -> list[TaskDef[Any]]:  # type: ignore[empty-body]
    """Contribute task types.

    Args:
        settings: the app's settings.
        plugin_manager: the plugin manager calling the hook, to ask other plugins for their contributions.

    Returns:
        The plugin's :class:`~framework.task.TaskDef` objects. A type string contributed twice
        stops start-up with an error naming both plugins.

    Kind: collect. Fires: once, when the worker, web app or scheduler is assembled.
    """


@hookspec
def register_cron_entries(settings: Settings, plugin_manager: pluggy.PluginManager) -> list[CronEntry]:  # type: ignore[empty-body]
    """Contribute periodic tasks to the scheduler.

    Args:
        settings: the app's settings.
        plugin_manager: the plugin manager calling the hook, to ask other plugins for their contributions.

    Returns:
        :class:`~framework.task.CronEntry` objects. An invalid spec, unknown task type or a
        payload that does not fit its task stops start-up naming the entry and this plugin.

    Kind: collect. Fires: once, when the scheduler is assembled (and for ``framework cron ls``).
    """


@hookspec
def register_middleware(settings: Settings) -> list[Middleware]:  # type: ignore[empty-body]
    """Contribute task middleware: ``(handler) -> handler`` wrappers around every task run.

    Args:
        settings: the app's settings.

    Returns:
        Middleware in the order this plugin wants them, outermost first. The chain is: built-in
        logging and counters (outermost), then plugins in load order (built-ins, then third-party,
        each plugin's list in order), then the handler (innermost). A middleware that is not
        callable, or gives no run when called with the next one, stops the worker's start-up naming
        it; a run that calls the next one without awaiting it fails the task (see
        :mod:`framework.worker.middleware`).

    Kind: collect. Fires: once per worker process, when the worker is assembled.
    """


@hookspec
def register_routes(settings: Settings, plugin_manager: pluggy.PluginManager) -> list[Any]:  # type: ignore[empty-body]
    """Contribute Litestar route handlers, controllers or routers to the web app.

    Args:
        settings: the app's settings.
        plugin_manager: the plugin manager calling the hook, to ask other plugins for their contributions.

    Returns:
        Litestar ``ControllerRouterHandler`` values; they are mounted as given.

    Kind: collect. Fires: once, when ``create_app()`` builds the app.
    """


@hookspec
def register_template_dirs(settings: Settings, plugin_manager: pluggy.PluginManager) -> list[Path]:  # type: ignore[empty-body]
    """Contribute Jinja template folders beyond the plugin's own ``templates/`` (found automatically).

    Args:
        settings: the app's settings.
        plugin_manager: the plugin manager calling the hook, to ask other plugins for their contributions.

    Returns:
        Folders to add to the template loader chain, after the app's own folder, so the app can
        override any template (and extend the original through the ``default:`` prefix). Something that
        is not a list of folder paths stops start-up naming the plugin; a folder that does not exist is
        skipped with a ``plugin_folder_missing`` warning.

    Kind: collect. Fires: once, when the Jinja environment is built.
    """


@hookspec
def register_static_dirs(settings: Settings, plugin_manager: pluggy.PluginManager) -> list[tuple[str, Path]]:  # type: ignore[empty-body]
    """Contribute static file folders beyond the plugin's own ``static/`` (served at ``/static/<plugin>``).

    Args:
        settings: the app's settings.
        plugin_manager: the plugin manager calling the hook, to ask other plugins for their contributions.

    Returns:
        ``(url_path, folder)`` pairs, served as static files by the web app. A pair whose folder is not
        a folder path stops start-up naming the plugin; one that does not exist is skipped with a
        ``plugin_folder_missing`` warning.

    Kind: collect. Fires: once, when ``create_app()`` builds the app.
    """


@hookspec
def register_schema_guards(settings: Settings, plugin_manager: pluggy.PluginManager) -> list[Any]:  # type: ignore[empty-body]
    """Contribute Litestar guards in front of the app's OpenAPI schema (``/schema`` and every page under it).

    The schema describes every route of the app, plugins' included, so a plugin whose routes are
    private (the admin's JSON API) can keep the schema for the people allowed to use them.

    Args:
        settings: the app's settings.
        plugin_manager: the plugin manager calling the hook, to ask other plugins for their contributions.

    Returns:
        Litestar guards (``async def guard(connection, route_handler) -> None``, raising to refuse).
        Every contributed guard must pass; when no plugin contributes one, the schema is public.

    Kind: collect. Fires: once, when ``create_app()`` builds the app.
    """


@hookspec
def check_config(settings: Settings, plugin_manager: pluggy.PluginManager) -> None:
    """Check this plugin's settings the way start-up would, without connecting to anything.

    Decode the plugin's section (``settings.plugin_config(name, ConfigStruct)``) and check what the
    plugin would otherwise only find when a process starts (a backend name, a required setting).

    Args:
        settings: the app's settings.
        plugin_manager: the app's plugin manager, to look up what other plugins contribute.

    Raises:
        framework.errors.ConfigError: a setting is wrong; the message names it and what is allowed.
            Any other exception is reported as a problem of this plugin too.

    Kind: collect (each implementation is called on its own). Fires: for ``framework doctor``.
    """


@hookspec
def prepare_jinja2_environment(
    env: jinja2.Environment, settings: Settings, plugin_manager: pluggy.PluginManager
) -> None:
    """Adjust the Jinja environment: add filters, globals or extensions.

    Args:
        env: the one Jinja environment used by the web app and by plugins that render templates.
        settings: the app's settings.
        plugin_manager: the plugin manager calling the hook, to ask other plugins for their contributions.

    Kind: mutate. Fires: once, after the environment is created and before any template renders. An
    exception stops start-up, naming the plugin.
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add commands to the ``framework`` command line.

    Args:
        cli: the root click group; call ``cli.add_command(...)`` or decorate with ``@cli.command()``.
            Add to the root group itself (a built-in group loads only when it runs), under a name no
            built-in command has: taking one raises ``PluginError``.

    Kind: mutate. Fires: once, when the ``framework`` command starts, unless the command line runs a
    built-in command (``framework tasks stats`` needs no plugin's command, so none are loaded).
    """


@hookspec
def register_aggregators(settings: Settings, plugin_manager: pluggy.PluginManager) -> list[Any]:  # type: ignore[empty-body]
    """Contribute group aggregators that turn a group's tasks into one task.

    Args:
        settings: the app's settings.
        plugin_manager: the plugin manager calling the hook, to ask other plugins for their contributions.

    Returns:
        :class:`~framework.worker.background.aggregator.Aggregator` objects (group name or task type, limits, function).

    Kind: collect. Fires: once per worker process, when the worker is assembled.
    """


# -- lifecycle ------------------------------------------------------------------------------------


@hookspec
def startup(services: Services) -> Awaitable[None] | None:
    """Set up what the plugin needs (connections, backends) when a process starts.

    Args:
        services: the process's shared services; ``services.role`` says which process this is.

    Kind: fire (awaitable allowed). Fires: once per process, after Redis is connected and before the
    first request or task, the app's first, then the plugins from the last loaded to the first. An
    exception (or ``sys.exit``) stops start-up with a ``PluginError`` naming the plugin; before it is
    raised, the plugins whose ``startup`` had completed get :func:`shutdown`, the last started first (the
    failing plugin, and those not started yet, get none).
    """


@hookspec
def shutdown(services: Services) -> Awaitable[None] | None:
    """Release what :func:`startup` acquired.

    Args:
        services: the process's shared services.

    Kind: fire (awaitable allowed). Fires: once per process, after the last request or task, in the
    reverse of :func:`startup`'s order (the app's last), and when start-up fails for the plugins that had
    started. Whatever an implementation raises (``BaseException`` included) is logged with the plugin's
    name and does not stop the other plugins' shutdown; Redis is closed after the last one.
    """


# -- task events (whatever they raise is logged with the plugin name, never propagated) -----------


@hookspec
def task_succeeded(ctx: TaskContext) -> Awaitable[None] | None:
    """A task's handler returned.

    Args:
        ctx: the task's context.

    Kind: fire (awaitable allowed). Fires: in the worker, after the task is marked done.
    """


@hookspec
def task_retried(ctx: TaskContext, error: BaseException) -> Awaitable[None] | None:
    """A task failed and will be retried.

    Args:
        ctx: the task's context.
        error: the exception the handler raised (or a timeout).

    Kind: fire (awaitable allowed). Fires: in the worker, after the retry is scheduled.
    """


@hookspec
def task_archived(ctx: TaskContext, error: BaseException) -> Awaitable[None] | None:
    """A task failed for good and was archived.

    Args:
        ctx: the task's context.
        error: the exception that ended it (``SkipRetry``, retries exhausted, undecodable payload).

    Kind: fire (awaitable allowed). Fires: in the worker, after the task is archived.
    """


# -- policy ---------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def retry_delay_for(ctx: TaskContext, error: BaseException) -> float | None:
    """Choose how long to wait before retrying a failed task.

    Args:
        ctx: the failed task's context (``ctx.retried`` counts earlier retries).
        error: the exception the handler raised.

    Returns:
        Seconds to wait, or ``None`` to leave the choice to the next plugin, then the task type's
        ``retry_delay``, then the default exponential backoff with jitter.

    Kind: first result. Fires: in the worker, for each failure that will be retried.
    """
