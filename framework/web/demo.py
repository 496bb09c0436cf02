"""The built-in demo, served when no app is configured: a page that enqueues work and shows it run.

It is an ordinary plugin (hook implementations only), registered as ``demo`` when ``settings.app`` is
unset, so ``framework run`` on a fresh install shows the whole path: a request enqueues ``demo:hello``,
the worker in the same process runs it, and the page follows its progress and
gets the greeting over server-sent events (the patterns of :mod:`framework.web.tasks`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from framework.hookspecs import hookimpl
from framework.task import TaskDef
from framework.web.demo_task import hello_task

if TYPE_CHECKING:
    from framework.settings import Settings

__all__ = ("register_routes", "register_task_types")


@hookimpl
def register_task_types(settings: Settings) -> list[TaskDef[Any]]:
    """The demo task."""
    return [hello_task]


@hookimpl
def register_routes(settings: Settings) -> list[Any]:
    """The demo page and its JSON endpoints."""
    from framework.web.demo_routes import ROUTES  # noqa: PLC0415 - the web stack loads only for the web app

    return list(ROUTES)
