"""What the images plugin contributes to the framework: the entry point of ``framework-images``.

- ``register_task_types``: the ``image:process`` task (:mod:`framework_images.tasks`). Its type keeps
  the ``image:`` prefix Go producers (Grit's ``ImagePayload``) enqueue it with, not the plugin's name.
- ``register_routes``: the uploads route (:mod:`framework_images.routes`).
- ``check_config``: decodes ``[plugins.images]`` as start-up does.
- ``task_archived``: an archived ``image:process`` task whose upload record still says ``processing``
  marks it ``failed`` with the task's error (:mod:`framework_images.archived`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from framework import hookimpl
from framework_images.config import load_config

# The routes and the task (and the image library behind them) are imported by the hooks that use them:
# every ``framework`` command loads this module.

if TYPE_CHECKING:
    from framework import Settings, TaskContext, TaskDef

__all__ = ("check_config", "register_routes", "register_task_types", "task_archived")

_PROCESS_IMAGE = "image:process"  # framework_images.tasks.PROCESS_IMAGE, without importing the image library


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


@hookimpl
async def task_archived(ctx: TaskContext, error: BaseException) -> None:
    """Mark the upload of an archived ``image:process`` task ``failed``, unless its record already says how it ended."""
    if ctx.type != _PROCESS_IMAGE:
        return
    from framework_images.archived import record_archived  # noqa: PLC0415

    await record_archived(ctx, error)
