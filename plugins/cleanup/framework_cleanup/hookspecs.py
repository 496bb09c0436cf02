"""Hooks the cleanup plugin offers to other plugins and apps.

The entry-point module (:mod:`framework_cleanup.hooks`) names this module in ``framework_hookspecs``, so
the framework's plugin manager adds these specs before it registers any plugin. Implement them with the
framework's usual marker::

    from framework import hookimpl
    from framework_cleanup.sweepers import Sweeper, SweepContext, SweepResult

    async def sweep_exports(ctx: SweepContext) -> SweepResult:
        async for info in ctx.services.storage.list("exports/"):
            if info.modified < ctx.cutoff:
                await ctx.remove_object(info)
        return ctx.result

    @hookimpl
    def register_sweepers(settings):
        return [Sweeper("exports", "0 4 * * *", sweep_exports, grace=7 * 86400)]
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from framework.hookspecs import hookspec

if TYPE_CHECKING:
    from framework.settings import Settings
    from framework_cleanup.sweepers import Sweeper

__all__ = ("register_sweepers",)


@hookspec
def register_sweepers(settings: Settings) -> list[Sweeper]:  # type: ignore[empty-body]
    """Contribute sweepers: named, scheduled functions that remove expired things.

    Args:
        settings: the app's settings.

    Returns:
        :class:`~framework_cleanup.sweepers.Sweeper` values. Each gets a cron entry
        ``<name>:cleanup`` that enqueues the ``cleanup:run`` task on the ``low`` queue (one retry).
        ``[plugins.cleanup]`` may override a sweeper's ``schedules``/``grace`` or list it in
        ``disabled``. A sweep must not touch anything younger than ``ctx.cutoff``
        (now minus the grace period), must honour ``ctx.dry_run``, and must be safe to run again
        after being cut off and alongside another run of itself (see
        :meth:`~framework_cleanup.sweepers.SweepContext.remove_object`). A sweeper name used twice
        stops start-up with an error naming both plugins.

    Kind: collect. Fires: when the scheduler is assembled (for the cron entries), on a worker's
    first ``cleanup:run`` task, and for ``framework cleanup run|ls``.
    """
