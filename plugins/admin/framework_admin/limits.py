"""The dashboard's task limits: a page listing each limit with its use, its waiting tasks and counters, and its API.

A limit's row shows its values (rate and burst, concurrency, keyed or not, the task types that use it), the slots
held now against its cap (a meter; a keyed limit's cap is per key, so it shows its busiest keys instead), the
tasks it put off that have not started yet, and its counters. The page is rendered on the server; it is read again
on each visit (reload it to follow a limit draining).
"""

from __future__ import annotations

from typing import Any

from litestar import Request, get
from litestar.di import NamedDependency
from litestar.response import Template

from framework.inspector import Inspector, LimitInfo
from framework_admin.layout import admin_template

__all__ = ("LIMIT_API_HANDLERS", "LIMIT_PAGE_HANDLERS")

_TAGS = ["admin"]


@get("/limits", include_in_schema=False)
async def limits_page(request: Request[Any, Any, Any], inspector: NamedDependency[Inspector]) -> Template:
    """Every task limit: values, slots in use against the cap, tasks waiting, started/delayed/parked counts."""
    found = await inspector.limits()
    context = {"limits": found, "throttled": sum(lim.waiting for lim in found)}
    return await admin_template(request, "admin/limits.html", context)


@get("/limits", tags=_TAGS)
async def limits_list(inspector: NamedDependency[Inspector]) -> list[LimitInfo]:
    """Every task limit the workers declared, with its current use, waiting tasks and counters."""
    return await inspector.limits()


LIMIT_PAGE_HANDLERS = (limits_page,)
"""The limits page, mounted with the dashboard's pages."""
LIMIT_API_HANDLERS = (limits_list,)
"""The limits endpoint of the JSON API."""
