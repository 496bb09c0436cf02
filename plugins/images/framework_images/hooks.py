"""Everything the images plugin contributes to the framework: the entry point of ``framework-images``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from framework.hookspecs import hookimpl
from framework_images.config import load_config
from framework_images.routes import upload_router
from framework_images.tasks import process_image_task

if TYPE_CHECKING:
    from framework.settings import Settings
    from framework.task import TaskDef

__all__ = ("register_routes", "register_task_types")


@hookimpl
def register_task_types(settings: Settings) -> list[TaskDef[Any]]:
    """Contribute ``image:process``; a bad ``[plugins.images]`` section stops the worker at start-up."""
    load_config(settings)
    return [process_image_task]


@hookimpl
def register_routes(settings: Settings) -> list[Any]:
    """Contribute the uploads routes at ``[plugins.images] path`` (default ``/uploads``)."""
    return [upload_router(load_config(settings))]
