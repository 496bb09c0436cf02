"""The hooks the admin offers other plugins: menu entries, data for its panels and pluggable authentication.

The admin's entry-point module exposes this module as ``framework_hookspecs``, so the plugin manager
adds these specs before it registers any plugin. Because they only exist while the admin is
installed, implement them with ``@hookimpl(optionalhook=True)``; your plugin then still loads in an
app without the admin.

A plugin's own admin *pages* come through the core ``register_routes`` hook, wrapped by
:func:`framework_admin.routes.admin_pages`, which mounts them under the admin's path behind the
admin's guards (one way to add routes, and it needs nothing but the settings)::

    from framework import hookimpl
    from framework_admin.models import MenuItem

    @hookimpl(optionalhook=True)
    def admin_menu_items(settings):
        return [MenuItem(label="Reports", href="reports")]

    @hookimpl
    def register_routes(settings):
        from framework_admin.routes import admin_pages

        return [admin_pages(settings, [reports_page])]   # @get("/reports") serves /admin/reports

A plugin that only offers data to the admin's panels (``register_admin_panels``) returns plain values
and never imports the admin: the email and cleanup plugins do so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from framework.hookspecs import hookspec

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from litestar.connection import ASGIConnection

    from framework.settings import Settings
    from framework_admin.models import Actor, MenuItem

__all__ = ("admin_actor_from_request", "admin_menu_items", "register_admin_panels")


@hookspec
def admin_menu_items(settings: Settings) -> list[MenuItem]:  # type: ignore[empty-body]
    """Add entries to the admin's navigation.

    Args:
        settings: the app's settings.

    Returns:
        :class:`~framework_admin.models.MenuItem` values. ``href`` is relative to the admin's path
        (``"reports"`` links to ``/admin/reports``) unless it starts with ``/`` or ``http``; entries
        are sorted by ``order`` (built-ins use 10 to 90), then label.

    Kind: collect. Fires: once per web process, when the admin first renders a page.
    """


@hookspec
def register_admin_panels(settings: Settings) -> dict[str, Any]:  # type: ignore[empty-body]
    """Offer data to the admin's panels, by panel name; the admin shows a panel only when it is offered.

    The admin renders each panel itself; a plugin hands over plain values, so it needs no import of the
    admin (mark the implementation ``@hookimpl(optionalhook=True)``). The panels:

    - ``"outbox"``: a folder (:class:`~pathlib.Path`) of ``.eml`` files, listed newest first and
      previewed (text as text, HTML in a sandboxed frame). The email plugin offers its ``outbox``
      backend's folder.
    - ``"cleanup"``: ``async def last_reports(services) -> list[dict]``, the last report of each
      sweeper (``sweeper``, ``time``, ``duration``, ``dry_run``, ``removed``, ``bytes``, ``items``,
      ``errors``, ``failed``). The cleanup plugin offers it.

    Args:
        settings: the app's settings.

    Returns:
        Panel name -> what that panel reads; names the admin does not know are ignored. When two plugins
        offer the same panel, the one pluggy calls first (the most recently loaded: the app) wins.

    Kind: collect. Fires: once per web process, when the admin first needs its panels.
    """


@hookspec(firstresult=True)
def admin_actor_from_request(request: ASGIConnection[Any, Any, Any, Any]) -> Actor | Awaitable[Actor | None] | None:
    """Recognise who is calling the admin with the app's own authentication.

    Args:
        request: the incoming connection (headers, cookies, session, app state).

    Returns:
        An :class:`~framework_admin.models.Actor` (``role="readonly"`` to let them look only), ``None``
        to leave the decision to the next plugin and then to the admin's own tokens and login. May
        return an awaitable resolving to either.

    Kind: first result. Fires: on every admin request, before the admin's own token and session checks.
    """
