"""Delivery backends: ``outbox`` (development default), ``smtp`` and ``resend``, and the backend contract.

Plugins add backends through the ``register_email_backends`` hook (see :mod:`framework_email.hookspecs`).
"""

from __future__ import annotations

from framework_email.backends.base import (
    BackendFactory,
    EmailBackend,
    EmailDeliveryError,
    OutboundEmail,
    RecipientsRefused,
)
from framework_email.backends.outbox import OutboxBackend
from framework_email.backends.resend import ResendBackend
from framework_email.backends.smtp import SmtpBackend

__all__ = (
    "BackendFactory",
    "EmailBackend",
    "EmailDeliveryError",
    "OutboundEmail",
    "OutboxBackend",
    "RecipientsRefused",
    "ResendBackend",
    "SmtpBackend",
)
