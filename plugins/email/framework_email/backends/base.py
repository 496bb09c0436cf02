"""What every delivery backend implements, what it is given, and how it reports failures.

A backend's ``send`` either returns (the email was accepted) or raises one of:

- :class:`~framework.errors.SkipRetry` for a permanent failure (invalid address, rejected content, bad
  credentials): the task is archived at once with the provider's message;
- :class:`~framework.errors.RetryAfter` when the provider says when to come back (a rate limit's
  ``Retry-After``);
- :class:`EmailDeliveryError` for a temporary failure (5xx, connection refused, timeout): the task is
  retried with the worker's backoff;
- :class:`RecipientsRefused` when the provider took the email for some recipients and refused the others
  (an SMTP server answers each recipient on its own). The handler records who has the email, so that a
  retry sends it only to the rest, then retries if a refusal is temporary and archives the task if every
  one is permanent.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeAlias

from framework.errors import FrameworkError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from email.message import EmailMessage

    from framework.settings import Settings
    from framework_email.config import EmailConfig

__all__ = (
    "BackendFactory",
    "EmailBackend",
    "EmailDeliveryError",
    "OutboundEmail",
    "RecipientsRefused",
    "safe_token",
)

_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class EmailDeliveryError(FrameworkError):
    """A temporary delivery failure (server error, connection refused, timeout): retried with backoff."""


class RecipientsRefused(FrameworkError):
    """The provider accepted the email for some recipients and refused it for others. Raised by backends.

    Not a task outcome by itself: the handler records :attr:`accepted` for the task, then turns this into
    :class:`EmailDeliveryError` (a refusal is temporary: retry, sending only to the recipients who do not
    have the email yet) or :class:`~framework.errors.SkipRetry` (every refusal is permanent).

    Args:
        accepted: the envelope addresses that took the email in this attempt.
        temporary: address -> the provider's reply, for refusals that may pass later (SMTP 4xx, greylisting).
        permanent: address -> the provider's reply, for refusals that will not (SMTP 5xx, unknown user).
    """

    def __init__(
        self,
        accepted: Iterable[str],
        *,
        temporary: Mapping[str, str] | None = None,
        permanent: Mapping[str, str] | None = None,
    ) -> None:
        self.accepted = tuple(accepted)
        self.temporary = dict(temporary or {})
        self.permanent = dict(permanent or {})
        refused = "; ".join(f"{a}: {r}" for a, r in (*self.temporary.items(), *self.permanent.items()))
        super().__init__(f"recipients refused: {refused}; accepted by {', '.join(self.accepted) or 'none'}")


@dataclass(frozen=True, slots=True)
class OutboundEmail:
    """One email, ready to deliver. Built by the ``email:send`` handler; read by backends.

    Attributes:
        message: the complete MIME message: ``From``, ``To``, ``Cc``, ``Bcc``, ``Reply-To``,
            ``Subject``, a deterministic ``Message-ID``, a text and/or HTML body, attachments.
        key: a key unique to this email and the same on every attempt (the task id). Backends use it
            so that a retry never delivers the email twice (Resend's idempotency key, the outbox's
            file name).
        tags: name/value pairs for the provider's analytics (Resend tags); others may ignore them.
        delivered: envelope addresses an earlier attempt of the same task already delivered to (it ended
            in :class:`RecipientsRefused`). A backend that raises :class:`RecipientsRefused` must leave
            these out of the envelope, so that a retry does not send the email to them again; others
            never see it set.
    """

    message: EmailMessage
    key: str
    tags: Mapping[str, str] = field(default_factory=dict)
    delivered: frozenset[str] = frozenset()


class EmailBackend(Protocol):
    """A way to deliver email. Built-in: ``outbox``, ``smtp``, ``resend``; plugins add more.

    A backend may also define ``async def aclose(self) -> None``; it is awaited at shutdown.
    """

    async def send(self, email: OutboundEmail) -> str:
        """Deliver ``email``.

        Args:
            email: the message and its idempotency key.

        Returns:
            The provider's id for the message (a Resend id, the SMTP ``Message-ID``, a file path).

        Raises:
            framework.errors.SkipRetry: a permanent failure; the message says why.
            framework.errors.RetryAfter: a temporary failure with a known wait.
            EmailDeliveryError: any other temporary failure.
        """
        ...


BackendFactory: TypeAlias = "Callable[[EmailConfig, Settings], EmailBackend]"
"""Builds a backend from the plugin's config and the app's settings; may raise ``ConfigError``."""


def safe_token(key: str) -> str:
    """Turn ``key`` into a token safe for file names and ``Message-ID`` local parts.

    Args:
        key: any string, typically a task id.

    Returns:
        ``key`` itself when it is short and made of letters, digits, ``.``, ``_`` and ``-``; otherwise
        the first 32 hex digits of its SHA-256.
    """
    if _SAFE.fullmatch(key):
        return key
    return hashlib.sha256(key.encode()).hexdigest()[:32]
