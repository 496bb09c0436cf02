"""The admin plugin's settings: the ``[plugins.admin]`` section, with the metrics token from the environment.

The credentials themselves are core settings (``admin_token`` and ``admin_readonly_token``, or
``FRAMEWORK_ADMIN_TOKEN`` / ``FRAMEWORK_ADMIN_READONLY_TOKEN``), because the CLI and the banner use
them too. Example ``framework.toml``::

    admin_token = "a long random secret"

    [plugins.admin]
    path = "/admin"            # where the dashboard lives
    api_path = "/api/admin"    # where the JSON API lives
    metrics_path = "/metrics"  # "" turns the Prometheus endpoint off
    refresh_seconds = 3        # how often an open dashboard fetches fresh numbers
    protect_schema = true      # /schema needs an admin credential too
    failed_auth_limit = 10     # failed sign-ins / bad bearer tokens per address ...
    failed_auth_window = 300   # ... in this many seconds, then 429
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from collections.abc import Mapping

    from framework.settings import Settings

__all__ = ("MOUNT_OPT", "PLUGIN_NAME", "AdminConfig", "Mount", "load_admin_config", "load_config")

PLUGIN_NAME = "admin"
"""The plugin's entry-point name: its settings section ``[plugins.admin]`` and its Redis keys' prefix."""


class AdminConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The ``[plugins.admin]`` section. Set by the user; read by the plugin.

    Attributes:
        mount: mount the admin routes automatically. Set it to false to mount
            :func:`~framework_admin.routes.admin_routes` yourself, for example with your own guards.
        path: URL prefix of the dashboard.
        api_path: URL prefix of the JSON API.
        metrics_path: URL of the Prometheus endpoint; empty turns it off.
        metrics_token: a token that opens the metrics endpoint only (or env ``FRAMEWORK_ADMIN_METRICS_TOKEN``),
            for a Prometheus server that should not hold an admin token.
        refresh_seconds: how often an open dashboard fetches fresh numbers (0 = never).
        chart_hours: hours of per-minute throughput the dashboard chart shows (1 to 24).
        session_hours: how long a dashboard login lasts.
        record_runs: record each task run's duration and outcome (a short, capped list in Redis written
            by the workers at most once a second) for the dashboard's "recent runs".
        secure_cookies: mark cookies ``Secure``; unset (the default) does it when the request came over HTTPS.
        protect_schema: put the app's OpenAPI schema (``/schema`` and the pages under it), which lists
            the admin's API, behind the admin's guard; false serves it to anyone.
        failed_auth_limit: failed sign-ins and bad bearer tokens one client address may send within
            ``failed_auth_window`` seconds before its attempts get 429 (0 = no limit).
        failed_auth_window: the window of ``failed_auth_limit``, in seconds.
    """

    mount: bool = True
    path: str = "/admin"
    api_path: str = "/api/admin"
    metrics_path: str = "/metrics"
    metrics_token: str = ""
    refresh_seconds: float = 3.0
    chart_hours: int = 1
    session_hours: float = 12.0
    record_runs: bool = True
    secure_cookies: bool | None = None
    protect_schema: bool = True
    failed_auth_limit: int = 10
    failed_auth_window: float = 300.0

    def __post_init__(self) -> None:
        from framework.errors import ConfigError  # noqa: PLC0415 - keep the module import-light

        for name in ("path", "api_path"):
            value = getattr(self, name)
            if not value.startswith("/") or value == "/" or value.endswith("/"):
                raise ConfigError(f"setting plugins.admin.{name}={value!r} is invalid: use a path like '/admin'")
        if self.metrics_path and not self.metrics_path.startswith("/"):
            raise ConfigError(f"setting plugins.admin.metrics_path={self.metrics_path!r} is invalid: start it with '/'")
        if not 1 <= self.chart_hours <= 24:
            raise ConfigError(f"setting plugins.admin.chart_hours={self.chart_hours!r} is invalid: use 1 to 24")
        for name in ("refresh_seconds", "session_hours", "failed_auth_window"):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise ConfigError(f"setting plugins.admin.{name}={value!r} is invalid: it must be a finite number")
        if self.refresh_seconds < 0 or self.session_hours <= 0:
            raise ConfigError("settings plugins.admin.refresh_seconds and session_hours must be positive")
        if self.failed_auth_limit < 0 or self.failed_auth_window <= 0:
            raise ConfigError(
                "settings plugins.admin.failed_auth_limit must be >= 0 and failed_auth_window > 0 (seconds)"
            )


def load_config(settings: Settings, environ: Mapping[str, str] | None = None) -> AdminConfig:
    """Read ``[plugins.admin]`` from ``settings`` and overlay the metrics token from the environment.

    Args:
        settings: the app's settings.
        environ: the environment to read (default ``os.environ``).

    Raises:
        framework.errors.ConfigError: a value in the section is not allowed; the message names it.
    """
    env = os.environ if environ is None else environ
    config = settings.plugin_config(PLUGIN_NAME, AdminConfig)
    token = env.get("FRAMEWORK_ADMIN_METRICS_TOKEN")
    if token:
        config = msgspec.structs.replace(config, metrics_token=token)
    return config


load_admin_config = load_config
"""The same function under its first name."""


MOUNT_OPT = "framework_admin"
"""Key of the :class:`Mount` in the admin routes' ``opt``."""


class Mount(msgspec.Struct, frozen=True, kw_only=True):
    """Where one mount of the admin lives and how it behaves; carried in its routes' ``opt``.

    Attributes:
        path: the dashboard's URL prefix.
        api_path: the JSON API's URL prefix.
        config: the plugin's settings.
    """

    path: str
    api_path: str
    config: AdminConfig
