"""The app's icon at ``/favicon.ico``, so browsers asking for it get an icon rather than a 404.

A small SVG (served as ``image/svg+xml``, which browsers accept at that address). An app that routes
``/favicon.ico`` itself keeps its own: :func:`favicon_route` is added only when no handler has that path.
"""

from __future__ import annotations

from typing import Any

from litestar import HttpMethod, Response, route

__all__ = ("FAVICON_SVG", "favicon_route", "serves_path")

FAVICON_SVG = (
    b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">'
    b'<rect width="32" height="32" rx="7" fill="#1e40af"/>'
    b'<rect x="7" y="8" width="18" height="4" rx="2" fill="#fff"/>'
    b'<rect x="7" y="14" width="13" height="4" rx="2" fill="#bfdbfe"/>'
    b'<rect x="7" y="20" width="8" height="4" rx="2" fill="#93c5fd"/>'
    b"</svg>\n"
)
"""Three bars of a queue, shortest last, on the dashboard's blue."""

PATH = "/favicon.ico"


@route(PATH, http_method=[HttpMethod.GET, HttpMethod.HEAD], include_in_schema=False, sync_to_thread=False)
def favicon_route() -> Response[bytes]:
    """The icon, cached for a day."""
    return Response(FAVICON_SVG, media_type="image/svg+xml", headers={"Cache-Control": "public, max-age=86400"})


def serves_path(handlers: list[Any], path: str = PATH) -> bool:
    """Whether one of ``handlers`` (route handlers, routers, controllers) already answers at ``path``."""
    for handler in handlers:
        paths = getattr(handler, "paths", None)
        if paths is not None and path in paths:
            return True
        routes = getattr(handler, "routes", None)
        if routes is not None and any(r.path == path for r in routes):
            return True
    return False
