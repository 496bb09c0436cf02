"""The ``smtp`` backend: delivery to an SMTP server with aiosmtplib (plain, STARTTLS or TLS; optional login).

Works with Mailhog-style catchers (``security = "none"``, no credentials: login is skipped). The
``Message-ID`` the handler derives from the task id travels with the message, so a receiving system can
drop a copy that a retry sent after an ambiguous failure (a connection lost after the data was sent).

An SMTP server answers each recipient on its own, so it may take an email for some and refuse it for
others (a greylisting ``450`` for one address, an unknown user ``550`` for another). The backend reports
that as :class:`~framework_email.backends.base.RecipientsRefused` rather than success: the handler retries
the temporary refusals, sending only to the recipients who do not have the email yet.

A TLS handshake that fails on the certificate or the protocol (``security = "tls"`` against a plain port, a
server certificate ``validate_certs`` refuses) fails the same way on every retry, so the task is archived at
once with the settings named; a server that drops the connection mid-handshake, a record damaged on the way
(``bad record mac``) or a server failing on its side (``internal error`` alert) is retried.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any

import aiosmtplib
from aiosmtplib.email import extract_recipients

from framework.errors import ConfigError, FrameworkError, SkipRetry
from framework_email.backends.base import EmailDeliveryError, RecipientsRefused

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from framework.settings import Settings
    from framework_email.backends.base import OutboundEmail
    from framework_email.config import EmailConfig, SmtpConfig

__all__ = ("SmtpBackend", "classify_smtp_error")

_DEFAULT_PORTS = {"none": 25, "starttls": 587, "tls": 465}
_CUT_OFF = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)
"""TLS errors of a connection the server or the network closed mid-handshake: another attempt may pass."""
_PASSING = frozenset(
    {
        "DECRYPTION_FAILED_OR_BAD_RECORD_MAC",  # a record damaged on the way here (a middlebox, a flaky link)
        "SSLV3_ALERT_BAD_RECORD_MAC",  # the server got one of ours damaged
        "TLSV1_ALERT_DECRYPTION_FAILED",
        "TLSV1_ALERT_INTERNAL_ERROR",  # the server failed on its side (out of memory, entropy, a backend)
    }
)
"""Reasons (``SSLError.reason``) a TLS handshake fails for that are not the settings' nor the certificate's:
another attempt may pass."""


class SmtpBackend:
    """Sends each email over one SMTP connection.

    Args:
        config: the server, security mode and optional credentials.
    """

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self.port = config.port or _DEFAULT_PORTS[config.security]

    @classmethod
    def from_config(cls, config: EmailConfig, settings: Settings) -> SmtpBackend:
        """Build the backend from ``[plugins.email.smtp]``.

        Raises:
            ConfigError: no sender is configured.
        """
        if not config.mail_from:
            raise ConfigError("the smtp email backend needs a sender: set MAIL_FROM or [plugins.email] mail_from")
        return cls(config.smtp)

    async def send(self, email: OutboundEmail) -> str:
        """Send ``email``; ``Bcc`` recipients get it without seeing the header.

        The envelope holds every ``To``, ``Cc`` and ``Bcc`` address except ``email.delivered``: on a retry
        after a partial refusal, the recipients who took the email the first time do not get it again.

        Returns:
            The message's ``Message-ID``.

        Raises:
            RecipientsRefused: the server took the email for some recipients and refused the others
                (an SMTP server answers each ``RCPT`` on its own: greylisting, a full or unknown mailbox).
            SkipRetry: the server refused for good (5xx: bad address, bad credentials), lacks a
                feature the configuration needs (STARTTLS, AUTH), or the TLS handshake failed on the
                certificate or the protocol (the message names ``security``, the port and ``validate_certs``).
            EmailDeliveryError: a temporary failure (4xx, connection refused or lost, timeout).
        """
        cfg = self.config
        login = bool(cfg.username)
        message_id = str(email.message["Message-ID"])
        recipients: list[str] | None = None
        if email.delivered:
            recipients = [a for a in extract_recipients(email.message) if a not in email.delivered]
            if not recipients:
                return message_id
        try:
            refused, _ = await aiosmtplib.send(
                email.message,
                recipients=recipients,
                hostname=cfg.host,
                port=self.port,
                username=cfg.username if login else None,
                password=cfg.password if login else None,
                use_tls=cfg.security == "tls",
                start_tls=cfg.security == "starttls",
                validate_certs=cfg.validate_certs,
                timeout=cfg.timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            if not email.delivered:
                raise classify_smtp_error(exc) from exc
            # Every recipient left was refused, but an earlier attempt delivered to the others: the
            # handler's account names both, where "refused every recipient" would mislead.
            raise _refused((), {r.recipient: r for r in exc.recipients}) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            settings = f"security={cfg.security!r}, port={self.port}, validate_certs={cfg.validate_certs!r}"
            raise classify_smtp_error(exc, settings=settings) from exc
        if refused:
            sent = recipients if recipients is not None else extract_recipients(email.message)
            raise _refused([a for a in sent if a not in refused], refused)
        return message_id


def _refused(accepted: Iterable[str], refused: Mapping[str, Any]) -> RecipientsRefused:
    """The partial refusal, sorted into temporary (4xx) and permanent (5xx) by each recipient's reply code."""
    temporary = {a: f"{r.code} {r.message}" for a, r in refused.items() if r.code < 500}
    permanent = {a: f"{r.code} {r.message}" for a, r in refused.items() if r.code >= 500}
    return RecipientsRefused(accepted, temporary=temporary, permanent=permanent)


def _tls_handshake_error(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error that ended the handshake, when retrying cannot fix it; None for any other failure.

    aiosmtplib raises the handshake's error itself for STARTTLS, and as the cause of
    ``SMTPConnectError`` for ``tls``. A connection cut mid-handshake (:data:`_CUT_OFF`) and a record damaged
    on the way or a server failing on its side (:data:`_PASSING`) are left to the retry.
    """
    cause = exc.__cause__ if isinstance(exc, aiosmtplib.SMTPConnectError) else exc
    if (
        isinstance(cause, ssl.SSLError)
        and not isinstance(cause, _CUT_OFF)
        and getattr(cause, "reason", None) not in _PASSING
    ):
        return cause
    return None


def classify_smtp_error(exc: BaseException, *, settings: str = "") -> FrameworkError:
    """Turn an SMTP failure into the task outcome it calls for.

    Args:
        exc: what aiosmtplib (or the socket) raised.
        settings: the TLS settings in use (``security=..., port=..., validate_certs=...``), named in the
            message of a failed TLS handshake.

    Returns:
        :class:`~framework.errors.SkipRetry` for permanent refusals (5xx replies, every recipient refused
        for good, a server feature the settings need: AUTH, STARTTLS, SMTPUTF8) and for a TLS handshake
        that failed on the certificate or the protocol, otherwise :class:`EmailDeliveryError` (4xx replies,
        connection and timeout errors, a connection cut mid-handshake).
    """
    tls = _tls_handshake_error(exc)
    if tls is not None:
        used = f" ({settings})" if settings else ""
        return SkipRetry(
            f"SMTP TLS handshake failed: {tls}; the same settings fail the same way on a retry: check "
            f"[plugins.email.smtp] security, port and validate_certs{used} against the server and its certificate"
        )
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        detail = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
        if exc.recipients and all(r.code >= 500 for r in exc.recipients):
            return SkipRetry(f"SMTP server refused every recipient: {detail}")
        return EmailDeliveryError(f"SMTP server refused the recipients for now: {detail}")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        text = f"SMTP server replied {exc.code} {exc.message}"
        if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
            text = f"SMTP login refused: {exc.code} {exc.message}"
        return SkipRetry(text) if 500 <= exc.code < 600 else EmailDeliveryError(text)
    if isinstance(exc, aiosmtplib.SMTPNotSupported) or type(exc) is aiosmtplib.SMTPException:
        # aiosmtplib raises the bare base class for a mismatch between the settings and the server
        # (no AUTH, no STARTTLS): retrying cannot fix that.
        return SkipRetry(f"SMTP server does not support what the configuration asks for: {exc}")
    return EmailDeliveryError(f"SMTP delivery failed: {type(exc).__name__}: {exc}")
