"""What the images plugin contributes to the framework: the entry point of ``framework-images``.

- ``register_task_types``: the ``image:process`` task (:mod:`framework_images.tasks`). Its type keeps
  the ``image:`` prefix Go producers (Grit's ``ImagePayload``) enqueue it with, not the plugin's name.
- ``register_routes``: the uploads route (:mod:`framework_images.routes`).
- ``check_config``: decodes ``[plugins.images]`` as start-up does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from framework import hookimpl
from framework_images.config import load_config

# The routes and the task (and the image library behind them) are imported by the hooks that use them:
# every ``framework`` command loads this module.

if TYPE_CHECKING:
    from framework import Settings, TaskDef

__all__ = ("check_config", "register_routes", "register_task_types")


@hookimpl
def check_config(settings: Settings) -> None:
    """Decode ``[plugins.images]`` as start-up does (for ``framework doctor``)."""
    load_config(settings)


@hookimpl
def register_task_types(settings: Settings) -> list[TaskDef[Any]]:
    """Contribute ``image:process``; a bad ``[plugins.images]`` section stops the worker at start-up."""
    load_config(settings)
    from framework_images.tasks import process_image_task  # noqa: PLC0415

    return [process_image_task]


@hookimpl
def register_routes(settings: Settings) -> list[Any]:
    """Contribute the uploads routes at ``[plugins.images] path`` (default ``/uploads``)."""
    from framework_images.routes import upload_router  # noqa: PLC0415

    return [upload_router(load_config(settings))]
