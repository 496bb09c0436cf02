"""Hooks the email plugin offers to other plugins.

The entry-point module (:mod:`framework_email.hooks`) names this module in ``framework_hookspecs``, so
the framework's plugin manager adds these specs before it registers any plugin.
Implement them with the framework's usual marker::

    from framework import hookimpl

    @hookimpl
    def register_email_backends(settings):
        return {"postmark": PostmarkBackend.from_config}

then choose the backend in settings: ``[plugins.email] backend = "postmark"``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from framework.hookspecs import hookspec

if TYPE_CHECKING:
    from framework.settings import Settings
    from framework_email.backends.base import BackendFactory

__all__ = ("register_email_backends",)


@hookspec
def register_email_backends(settings: Settings) -> dict[str, BackendFactory]:  # type: ignore[empty-body]
    """Contribute email delivery backends, by name.

    Args:
        settings: the app's settings.

    Returns:
        A mapping of backend name to factory. A factory is called as ``factory(config, settings)``
        with the plugin's :class:`~framework_email.config.EmailConfig` and the app's settings, and
        returns an object with ``async def send(self, email: OutboundEmail) -> str`` (see
        :class:`~framework_email.backends.base.EmailBackend`; an optional ``async def aclose()`` is
        awaited at shutdown). ``send`` raises ``SkipRetry`` for permanent failures, ``RetryAfter`` when
        the provider says when to retry and ``EmailDeliveryError`` for other temporary failures. A
        factory may raise ``ConfigError`` for missing settings. Names must not clash with the built-in
        ``outbox``, ``smtp`` and ``resend`` or with another plugin's: a clash stops start-up with an
        error naming the backend.

    Kind: collect. Fires: once per process, when the email plugin builds its backend (at start-up,
    or on the first ``email:send`` task when start-up hooks did not run). Only the configured
    backend's factory is called.
    """
