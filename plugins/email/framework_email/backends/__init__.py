"""Delivery backends: ``outbox`` (development default), ``smtp`` and ``resend``, and the backend contract.

Plugins add backends through the ``register_email_backends`` hook (see :mod:`framework_email.hookspecs`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from framework_email.backends.base import (
    BackendFactory,
    EmailBackend,
    EmailDeliveryError,
    OutboundEmail,
    RecipientsRefused,
)
from framework_email.backends.outbox import OutboxBackend

if TYPE_CHECKING:
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

_LAZY = {"ResendBackend": "framework_email.backends.resend", "SmtpBackend": "framework_email.backends.smtp"}
"""Backends whose libraries load when they are first named: ``resend`` (with requests and httpx) was 120 ms of
the start-up of every worker, most of which deliver through another backend."""


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
