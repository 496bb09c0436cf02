"""The ``resend`` backend: delivery through Resend's official SDK (``resend.Emails.send_async``).

Every request carries the ``Idempotency-Key`` ``email-send/<task id>`` (the id hashed when it is long or
unusual), so a retry after a lost response does not send the email again: Resend answers with the first
request's result.

The SDK keeps its API key and base URL in module globals (``resend.api_key``, ``resend.api_url``); this
backend sets them from its configuration before each call.
"""

from __future__ import annotations

import base64
import time
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, cast

import resend
import resend.exceptions

from framework.errors import ConfigError, FrameworkError, RetryAfter, SkipRetry
from framework_email.backends.base import EmailDeliveryError, safe_token

if TYPE_CHECKING:
    from collections.abc import Mapping
    from email.message import EmailMessage

    from framework.settings import Settings
    from framework_email.backends.base import OutboundEmail
    from framework_email.config import EmailConfig

__all__ = ("ResendBackend", "classify_resend_error", "resend_params", "retry_after_seconds")

_TRANSIENT_STATUSES = frozenset({408, 409, 429})
"""4xx statuses worth retrying: timeout, a concurrent request with the same idempotency key, rate limit."""


class ResendBackend:
    """Sends each email with one Resend API call.

    Args:
        api_key: the API key.
        api_url: another base URL for the API (a local fake in tests); empty keeps the SDK's.
    """

    def __init__(self, api_key: str, api_url: str = "") -> None:
        self.api_key = api_key
        self.api_url = api_url

    @classmethod
    def from_config(cls, config: EmailConfig, settings: Settings) -> ResendBackend:
        """Build the backend from ``[plugins.email.resend]`` and ``RESEND_API_KEY``.

        Raises:
            ConfigError: the API key or the sender is missing.
        """
        if not config.resend.api_key:
            raise ConfigError("the resend email backend needs an API key: set RESEND_API_KEY")
        if not config.mail_from:
            raise ConfigError("the resend email backend needs a sender: set MAIL_FROM or [plugins.email] mail_from")
        return cls(config.resend.api_key, config.resend.api_url)

    async def send(self, email: OutboundEmail) -> str:
        """Send ``email`` through the Resend API.

        Returns:
            Resend's id for the email.

        Raises:
            SkipRetry: Resend rejected the email or the key (4xx); the message is Resend's.
            RetryAfter: rate limited, with the wait Resend asked for.
            EmailDeliveryError: a server error (5xx), the API could not be reached, or it answered without
                an email id.
        """
        resend.api_key = self.api_key
        if self.api_url:
            resend.api_url = self.api_url
        params = cast("resend.Emails.SendParams", resend_params(email))
        options: resend.Emails.SendOptions = {"idempotency_key": f"email-send/{safe_token(email.key)}"}
        try:
            response = await resend.Emails.send_async(params, options)
        except resend.exceptions.ResendError as exc:
            raise classify_resend_error(exc) from exc
        email_id = response.get("id") if isinstance(response, dict) else None
        if not isinstance(email_id, str) or not email_id:
            # A success status without Resend's answer (a proxy's reply, a truncated body): whether the email
            # went is unknown, and the retry's idempotency key makes Resend send it at most once.
            raise EmailDeliveryError(f"Resend API answered without an email id: {str(response)[:200]!r}")
        return email_id


def resend_params(email: OutboundEmail) -> dict[str, Any]:
    """Translate a MIME message into the body of Resend's ``POST /emails``.

    Args:
        email: the message to send, with its tags.

    Returns:
        ``from``, ``to``, ``subject``, ``html`` and/or ``text``, and when present ``cc``, ``bcc``,
        ``reply_to``, ``attachments`` (base64 content) and ``tags``.
    """
    msg = email.message
    params: dict[str, Any] = {"from": str(msg["From"]), "to": _addresses(msg, "To"), "subject": str(msg["Subject"])}
    for header, key in (("Cc", "cc"), ("Bcc", "bcc"), ("Reply-To", "reply_to")):
        if msg[header] is not None:
            params[key] = _addresses(msg, header)
    for subtype in ("html", "plain"):
        body = msg.get_body(preferencelist=(subtype,))
        if body is not None and body.get_content_subtype() == subtype:
            params["html" if subtype == "html" else "text"] = body.get_content()
    attachments = [
        {
            "filename": part.get_filename() or "attachment",
            "content": base64.b64encode(cast("bytes", part.get_payload(decode=True))).decode("ascii"),
            "content_type": part.get_content_type(),
        }
        for part in msg.iter_attachments()
    ]
    if attachments:
        params["attachments"] = attachments
    if email.tags:
        params["tags"] = [{"name": name, "value": value} for name, value in email.tags.items()]
    return params


def _addresses(msg: EmailMessage, header: str) -> list[str]:
    """The addresses of an address header, each as ``Name <address>`` or ``address``."""
    return [str(address) for address in msg[header].addresses]


def classify_resend_error(exc: resend.exceptions.ResendError) -> FrameworkError:
    """Turn a Resend SDK error into the task outcome it calls for.

    Args:
        exc: what the SDK raised; ``code`` is the HTTP status, ``error_type`` the error's name.

    Returns:
        :class:`~framework.errors.RetryAfter` for a rate limit with a ``Retry-After``,
        :class:`EmailDeliveryError` for other rate limits, 5xx, 408, 409 (a concurrent request with the
        same idempotency key) and failures to reach the API, and :class:`~framework.errors.SkipRetry`
        (with Resend's message) for every other 4xx: validation, invalid address, bad or missing key.
    """
    try:
        status = int(exc.code)
    except (TypeError, ValueError):
        status = 500
    text = f"Resend API error {exc.code} {exc.error_type}: {exc.message}"
    if exc.error_type == "HttpClientError":
        return EmailDeliveryError(f"Resend API unreachable: {exc.message}")
    if status == 429 or isinstance(exc, resend.exceptions.RateLimitError):
        delay = retry_after_seconds(exc.headers)
        return RetryAfter(delay, text) if delay is not None else EmailDeliveryError(text)
    if 400 <= status < 500 and status not in _TRANSIENT_STATUSES:
        return SkipRetry(text)
    if status == 409 and exc.error_type == "invalid_idempotent_request":
        return SkipRetry(text)
    return EmailDeliveryError(text)


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Read how long to wait from ``Retry-After`` (seconds or an HTTP date) or ``ratelimit-reset``.

    Args:
        headers: the response headers (any case).
        now: the current Unix time, for HTTP dates (default: the clock).

    Returns:
        Seconds to wait (never negative), or ``None`` when the headers do not say.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    for name in ("retry-after", "ratelimit-reset"):
        value = lowered.get(name, "").strip()
        if not value:
            continue
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            continue
        return max(0.0, when.timestamp() - (time.time() if now is None else now))
    return None
