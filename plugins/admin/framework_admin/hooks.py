"""What the admin plugin contributes to the framework: the entry point's target.

- ``register_routes``: the dashboard (``/admin``), the JSON API (``/api/admin``) and ``/metrics``
  (:func:`framework_admin.routes.admin_routes`), unless ``[plugins.admin] mount = false``.
- ``register_schema_guards``: the OpenAPI schema (``/schema``) answers only to the admin's credentials
  (:func:`framework_admin.auth.admin_guard`), unless ``protect_schema = false``.
- ``register_middleware``: records each task run's outcome and duration for "recent runs"
  (:mod:`framework_admin.runs`), unless ``record_runs = false``; ``task_retried`` and
  ``task_archived`` record the runs the worker ended (timeouts, cancellations).
- ``prepare_jinja2_environment``: the ``admin_*`` filters the templates use.
- ``startup``: in web processes, loads the credentials; in development without ``admin_token`` it
  generates one, logs it (event ``admin_token``) and keeps it in ``<data_dir>/admin-token``. In
  production without any credential it logs ``admin_disabled``.

Templates live in ``templates/admin/`` and the script and styles in ``static/admin/`` (served at
``/static/admin/admin/``). ``framework_hookspecs`` adds :mod:`framework_admin.hookspecs`:
``admin_menu_items``, ``register_admin_panels`` and ``admin_actor_from_request``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from framework import hookimpl
from framework_admin import hookspecs
from framework_admin.config import load_config

# The routes, the guard, the run recorder and the credentials are imported by the hooks that use them:
# every ``framework`` command loads this module, and most never serve a page nor run a task.

if TYPE_CHECKING:
    import jinja2

    from framework import Middleware, Services, Settings, TaskContext

__all__ = (
    "check_config",
    "framework_hookspecs",
    "prepare_jinja2_environment",
    "register_middleware",
    "register_routes",
    "register_schema_guards",
    "startup",
    "task_archived",
    "task_retried",
)

framework_hookspecs = hookspecs
"""The hooks this plugin offers other plugins; the plugin manager adds them before registering plugins."""

_WEB_ROLES = frozenset({"web", "run"})


@hookimpl
def check_config(settings: Settings) -> None:
    """Decode ``[plugins.admin]`` as start-up does (for ``framework doctor``)."""
    load_config(settings)


@hookimpl
def register_routes(settings: Settings) -> list[Any]:
    """The dashboard, the JSON API and the metrics endpoint, where ``[plugins.admin]`` says."""
    config = load_config(settings)
    if not config.mount:
        return []
    from framework_admin.routes import admin_routes  # noqa: PLC0415

    return admin_routes(config.path, config.api_path, settings=settings, config=config)


@hookimpl
def register_schema_guards(settings: Settings) -> list[Any]:
    """The admin's guard in front of the OpenAPI schema, which lists the admin's API (``protect_schema``)."""
    if not load_config(settings).protect_schema:
        return []
    from framework_admin.auth import admin_guard  # noqa: PLC0415

    return [admin_guard]


@hookimpl
def register_middleware(settings: Settings) -> list[Middleware]:
    """Record each run's outcome and duration for the dashboard's "recent runs"."""
    if not load_config(settings).record_runs:
        return []
    from framework_admin.runs import record_runs_middleware  # noqa: PLC0415

    return [record_runs_middleware]


@hookimpl
async def task_retried(ctx: TaskContext, error: BaseException) -> None:
    """Record a run the worker failed (a timeout, a cancellation) for "recent runs".

    See :func:`framework_admin.runs.record_failed_run`.
    """
    from framework_admin.runs import record_failed_run  # noqa: PLC0415

    await record_failed_run(ctx, error)


@hookimpl
async def task_archived(ctx: TaskContext, error: BaseException) -> None:
    """As :func:`task_retried`, for a run whose failure archived its task."""
    from framework_admin.runs import record_failed_run  # noqa: PLC0415

    await record_failed_run(ctx, error)


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else ""


def _unix(value: float) -> datetime:
    return datetime.fromtimestamp(float(value), UTC)


def _iso(value: datetime | None) -> str:
    return value.isoformat() if value is not None else ""


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _quote(value: Any) -> str:
    return quote(str(value), safe="")


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def _bytes(size: int | None) -> str:
    value = float(size or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"  # pragma: no cover


@hookimpl
def prepare_jinja2_environment(env: jinja2.Environment, settings: Settings) -> None:
    """Add the filters the admin's templates use.

    ``admin_when``, ``admin_iso``, ``admin_duration``, ``admin_json``, ``admin_bytes``, ``admin_unix``
    (seconds to a time) and ``admin_q`` (quote a path segment).
    """
    env.filters.update(
        admin_when=_when,
        admin_iso=_iso,
        admin_duration=_duration,
        admin_json=_pretty,
        admin_bytes=_bytes,
        admin_q=_quote,
        admin_unix=_unix,
    )


@hookimpl
def startup(services: Services) -> None:
    """Load the admin's credentials in web processes; generate and log a development token if there is none."""
    if services.role not in _WEB_ROLES:
        return
    from framework.logging import get_logger  # noqa: PLC0415
    from framework_admin.credentials import CREDENTIALS, load_credentials  # noqa: PLC0415

    log = get_logger("framework_admin")
    creds = load_credentials(services.settings, generate=True)
    services.stash[CREDENTIALS] = creds
    config = load_config(services.settings)
    if creds.generated:
        log.warning(
            "admin_token",
            token=creds.tokens["admin"],
            file=str(creds.token_file) if creds.token_file else "",
            dashboard=config.path,
            note="development token; set admin_token for a fixed one",
        )
    elif not creds.enabled:
        log.warning(
            "admin_disabled",
            reason="no admin credential in production",
            enable="set admin_token (FRAMEWORK_ADMIN_TOKEN) or admin_readonly_token",
        )
