"""The email service of one process: config, renderer and backend, built once and kept in the stash.

The ``startup`` hook builds it; :func:`get_email_service` builds it on first use when start-up hooks did
not run (a test, a script), so the ``email:send`` handler works either way.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import jinja2
import structlog

from framework import StashKey
from framework.errors import ConfigError, PluginError, SkipRetry
from framework_email.backends import OutboxBackend
from framework_email.config import EmailConfig, load_config
from framework_email.message import parse_sender
from framework_email.render import EmailRenderer

if TYPE_CHECKING:
    from framework import Services
    from framework.settings import Settings
    from framework_email.backends import BackendFactory, EmailBackend

__all__ = ("BUILTIN_BACKENDS", "EMAIL_SERVICE", "EmailService", "collect_backends", "get_email_service")


def _smtp(config: EmailConfig, settings: Settings) -> EmailBackend:
    from framework_email.backends.smtp import SmtpBackend  # noqa: PLC0415 - aiosmtplib only for this backend

    return SmtpBackend.from_config(config, settings)


def _resend(config: EmailConfig, settings: Settings) -> EmailBackend:
    from framework_email.backends.resend import ResendBackend  # noqa: PLC0415 - resend (120 ms) only for this backend

    return ResendBackend.from_config(config, settings)


BUILTIN_BACKENDS: Mapping[str, BackendFactory] = {"outbox": OutboxBackend.from_config, "smtp": _smtp, "resend": _resend}
"""The backends this plugin ships, by the name ``[plugins.email] backend`` selects them with; each one's library is
imported when it is built, so a worker imports only the one it is configured with."""


@dataclass(frozen=True, slots=True, eq=False)
class EmailService:
    """What the ``email:send`` handler needs. Built by the plugin; kept in ``services.stash``.

    Attributes:
        config: the plugin's settings.
        renderer: renders the templates.
        backend: delivers the messages.
    """

    config: EmailConfig
    renderer: EmailRenderer
    backend: EmailBackend

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        backends: Iterable[Mapping[str, BackendFactory]] = (),
        jinja_env: jinja2.Environment | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> EmailService:
        """Build the service from ``[plugins.email]`` and the environment.

        Args:
            settings: the app's settings.
            backends: backends contributed by plugins (the ``register_email_backends`` results).
            jinja_env: the app's shared Jinja environment, if it has one.
            environ: the environment to read secrets from (default ``os.environ``).

        Raises:
            ConfigError: the section is invalid, the sender (``mail_from`` or ``MAIL_FROM``) is not one
                valid address, a ``template_dirs`` folder does not exist, or the backend is unknown or lacks
                a setting.
            PluginError: two plugins contribute a backend of the same name.
        """
        config = load_config(settings, environ)
        _check_sender(config.mail_from, os.environ if environ is None else environ)
        factories = collect_backends(backends)
        factory = factories.get(config.backend)
        if factory is None:
            raise ConfigError(
                f"setting [plugins.email] backend={config.backend!r} is invalid: "
                f"choose one of {', '.join(sorted(factories))}"
            )
        if config.backend == "outbox" and settings.env == "production":
            structlog.get_logger().warning("email_outbox_in_production", outbox_dir=config.outbox_dir)
        missing = [d for d in config.template_dirs if not Path(d).is_dir()]
        if missing:
            names = ", ".join(map(repr, missing))
            raise ConfigError(f"setting [plugins.email] template_dirs names folders that do not exist: {names}")
        app_dirs = [settings.templates_dir] if settings.templates_dir else []
        renderer = EmailRenderer(
            [*config.template_dirs, *app_dirs],
            env=jinja_env,
            context={"app_name": config.app_name, "app_url": config.app_url},
        )
        return cls(config=config, renderer=renderer, backend=factory(config, settings))

    @classmethod
    def from_services(cls, services: Services) -> EmailService:
        """Build the service for a running process from its settings, plugin manager and Jinja environment.

        Plugins' backends come from the ``register_email_backends`` hook when the process has a plugin
        manager; the renderer uses ``services.jinja`` when the process has a shared environment.
        """
        hook = getattr(getattr(services.plugin_manager, "hook", None), "register_email_backends", None)
        contributions = hook(settings=services.settings) if hook is not None else []
        jinja_env = services.jinja if isinstance(services.jinja, jinja2.Environment) else None
        return cls.from_settings(services.settings, backends=contributions, jinja_env=jinja_env)

    async def aclose(self) -> None:
        """Release the backend's resources, when it has any (its optional ``aclose``)."""
        close = getattr(self.backend, "aclose", None)
        if close is not None:
            result = close()
            if inspect.isawaitable(result):
                await result


EMAIL_SERVICE: StashKey[EmailService] = StashKey("framework_email.service")
"""Where the process's :class:`EmailService` lives in ``services.stash``."""


def get_email_service(services: Services) -> EmailService:
    """Return the process's email service, building and stashing it on first use.

    Args:
        services: the process's shared services.
    """
    service = services.stash.get(EMAIL_SERVICE)
    if service is None:
        service = EmailService.from_services(services)
        services.stash[EMAIL_SERVICE] = service
    return service


def _check_sender(mail_from: str, environ: Mapping[str, str]) -> None:
    """Refuse a configured sender that is not exactly one address, naming where it was set.

    Raises:
        ConfigError: ``mail_from`` (or ``MAIL_FROM``) is set and is not one valid address.
    """
    if not mail_from:
        return
    try:
        parse_sender(mail_from)
    except SkipRetry as exc:
        where = "environment variable MAIL_FROM" if environ.get("MAIL_FROM") else "setting [plugins.email] mail_from"
        raise ConfigError(f"{where}={mail_from!r} is invalid: {exc}; use 'Name <address>' or an address") from None


def collect_backends(contributions: Iterable[Mapping[str, BackendFactory]]) -> dict[str, BackendFactory]:
    """Merge the built-in backends with those plugins contribute.

    Args:
        contributions: one mapping per plugin (the hook's results).

    Raises:
        PluginError: a name is contributed twice, or clashes with a built-in backend.
    """
    merged = dict(BUILTIN_BACKENDS)
    for contribution in contributions:
        for name, factory in contribution.items():
            if name in merged:
                raise PluginError(f"email backend {name!r} is registered twice: backend names must be unique")
            merged[name] = factory
    return merged
