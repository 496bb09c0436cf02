"""The email plugin's settings: the ``[plugins.email]`` section, with secrets taken from the environment.

Example ``framework.toml``::

    [plugins.email]
    backend = "smtp"                 # "outbox" (default), "smtp", "resend" or a plugin's backend
    mail_from = "Acme <hello@acme.test>"
    app_name = "Acme"
    rate_limit = "5/3s"              # the provider's rate; default: the backend's ("5/3s" for resend)
    concurrency_limit = 0            # the most emails sent at once; 0 = no cap
    max_attachment_bytes = 26214400  # one email's attachments together (25 MiB); more is refused

    [plugins.email.smtp]
    host = "127.0.0.1"
    port = 1025
    security = "none"                # "none", "starttls" or "tls"

Secrets and the sender come from the environment, which wins over the file when set: ``MAIL_FROM``,
``RESEND_API_KEY``, ``SMTP_USERNAME`` and ``SMTP_PASSWORD``.

The provider's limits become a :class:`framework.Limit` on ``email:send`` (see :func:`provider_limit`), shared
by every worker: the framework's ``[limits.email-provider]`` settings change it further (``burst``, say).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import msgspec

if TYPE_CHECKING:
    from collections.abc import Mapping

    from framework import Limit
    from framework.settings import Settings

__all__ = (
    "DEFAULT_MAX_ATTACHMENT_BYTES",
    "DEFAULT_RATE_LIMITS",
    "PLUGIN_NAME",
    "EmailConfig",
    "ResendConfig",
    "SmtpConfig",
    "load_config",
    "load_email_config",
    "outbox_path",
    "provider_limit",
)

PLUGIN_NAME = "email"
"""The plugin's entry-point name and the name of its settings section: ``[plugins.email]``."""

DEFAULT_RATE_LIMITS: Mapping[str, str] = {"resend": "5/3s"}
"""The rate each backend keeps to when ``rate_limit`` is not set. Other backends have none by default.

Resend documents a default API rate of 2 requests a second per team (across all its keys). The limit
counts task starts, and each request leaves a little after its task starts: up to 0.2 s for the first
email of a worker process, under 0.05 s after that. At exactly 2/s, three requests then fall within one
second now and then, and Resend answers 429. 5 per 3 s (1.67/s) keeps the requests at least 0.6 s apart
at the start, which absorbs that. For a team with a higher limit, set ``rate_limit`` to about 85% of it."""

DEFAULT_MAX_ATTACHMENT_BYTES = 25 * 1024 * 1024
"""The default of ``max_attachment_bytes``: 25 MiB of files in one email, inline and stored together.

Providers cap a whole message, after base64 has made the files about a third larger: Gmail and Yahoo take
25 MB, Outlook.com 20 MB, Resend 40 MB (about 30 MB of files). 25 MiB of files is at or above what common
SMTP providers take, so the cap refuses nothing they would have sent, and under Resend's limit; it bounds
what one email makes the worker hold in memory (the files, then the encoded message)."""

_OFF = frozenset({"", "none", "off"})


class SmtpConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How to reach an SMTP server (``[plugins.email.smtp]``). Set by the user.

    Attributes:
        host: the server's host name or address.
        port: the server's port; none means 25, 587 or 465 for ``none``, ``starttls`` and ``tls``.
        security: ``none`` (plain, as Mailhog-style catchers expect), ``starttls`` (upgrade after
            connecting) or ``tls`` (TLS from the first byte).
        username: login name (or env ``SMTP_USERNAME``); empty means no login.
        password: login password (or env ``SMTP_PASSWORD``).
        timeout: seconds to wait for the server at each step.
        validate_certs: check the server's TLS certificate.
    """

    host: str = "localhost"
    port: int | None = None
    security: Literal["none", "starttls", "tls"] = "none"
    username: str = ""
    password: str = ""
    timeout: float = 30.0
    validate_certs: bool = True

    def __post_init__(self) -> None:
        if self.port is not None and not 0 < self.port < 65536:
            raise ValueError(f"port={self.port!r} is invalid: use a TCP port from 1 to 65535")
        if not 0 < self.timeout < math.inf:
            raise ValueError(f"timeout={self.timeout!r} is invalid: use a number of seconds above 0")


class ResendConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The Resend API (``[plugins.email.resend]``). Set by the user.

    Attributes:
        api_key: the API key (or env ``RESEND_API_KEY``, the usual place for it).
        api_url: another base URL for the API; empty keeps the SDK's (``RESEND_API_URL`` or Resend's).
    """

    api_key: str = ""
    api_url: str = ""

    def __post_init__(self) -> None:
        if self.api_url and not self.api_url.lower().startswith(("http://", "https://")):
            raise ValueError(f"api_url={self.api_url!r} is invalid: use an http:// or https:// URL")


class EmailConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The ``[plugins.email]`` section. Set by the user; read by the plugin.

    Attributes:
        backend: the delivery backend: ``outbox`` (development default: ``.eml`` files in the data
            directory), ``smtp``, ``resend``, or a name a plugin registers.
        mail_from: the sender, ``Name <address>`` or an address (or env ``MAIL_FROM``); needed by
            ``smtp`` and ``resend``. A task's own ``from`` wins over it.
        app_name: your product's name, shown in the templates' header and footer.
        app_url: your product's address, linked from the templates' header.
        template_dirs: more folders searched for ``email/<name>.html|.txt``, before the app's
            ``templates_dir`` setting and the plugin's own templates; relative paths are read from the
            current directory, and each folder must exist. The app's templates folder needs no entry here.
        outbox_dir: folder of the ``outbox`` backend; relative paths are inside the data directory.
        rate_limit: the most emails sent per period, across every worker (``"2/s"``, ``"100/min"``,
            ``"5/10s"``); unset means the backend's default (:data:`DEFAULT_RATE_LIMITS`: ``"5/3s"`` for
            ``resend``, just under its documented 2/s; none for the others), ``""`` or ``"none"`` means no rate limit.
        concurrency_limit: the most emails being sent at once, across every worker (0 = no cap).
        limit_name: the name of the limit on ``email:send``: ``[limits.<name>]`` settings change it, and a
            task type of the app declaring a ``Limit`` of the same name shares it (other calls to the
            same provider account).
        max_attachment_bytes: the most bytes of files one email may carry, its inline and stored
            attachments together (default :data:`DEFAULT_MAX_ATTACHMENT_BYTES`, 25 MiB). A stored object
            over what is left is refused before it is read; an email over the cap is archived at once,
            naming the file, its size and the cap. Raise it for a relay that takes larger messages.
        smtp: the ``smtp`` backend's server.
        resend: the ``resend`` backend's API.
    """

    backend: str = "outbox"
    mail_from: str = ""
    app_name: str = ""
    app_url: str = ""
    template_dirs: list[str] = msgspec.field(default_factory=list)
    outbox_dir: str = "outbox"
    rate_limit: str | None = None
    concurrency_limit: int = 0
    limit_name: str = "email-provider"
    max_attachment_bytes: int = DEFAULT_MAX_ATTACHMENT_BYTES
    smtp: SmtpConfig = msgspec.field(default_factory=SmtpConfig)
    resend: ResendConfig = msgspec.field(default_factory=ResendConfig)

    def __post_init__(self) -> None:
        if self.max_attachment_bytes < 1:
            raise ValueError(
                f"max_attachment_bytes={self.max_attachment_bytes!r} is invalid: use a number of bytes above 0"
            )


def load_config(settings: Settings, environ: Mapping[str, str] | None = None) -> EmailConfig:
    """Read ``[plugins.email]`` from ``settings`` and overlay the environment's secrets.

    Args:
        settings: the app's settings.
        environ: the environment to read (default ``os.environ``).

    Returns:
        The plugin's configuration.

    Raises:
        framework.errors.ConfigError: a value in the section does not fit :class:`EmailConfig`; the
            message names it. The backend's name is checked when the service is built (plugins may add
            backends), see :meth:`~framework_email.service.EmailService.from_settings`.
    """
    env = os.environ if environ is None else environ
    config = settings.plugin_config(PLUGIN_NAME, EmailConfig)
    smtp = msgspec.structs.replace(
        config.smtp,
        username=env.get("SMTP_USERNAME") or config.smtp.username,
        password=env.get("SMTP_PASSWORD") or config.smtp.password,
    )
    resend = msgspec.structs.replace(config.resend, api_key=env.get("RESEND_API_KEY") or config.resend.api_key)
    return msgspec.structs.replace(
        config,
        mail_from=env.get("MAIL_FROM") or config.mail_from,
        smtp=smtp,
        resend=resend,
    )


def provider_limit(config: EmailConfig) -> Limit | None:
    """The limit on ``email:send`` that ``config`` asks for: its rate and concurrency cap, or None for neither.

    Raises:
        framework.errors.ConfigError: ``rate_limit`` is not a rate, ``concurrency_limit`` is below 0 or
            ``limit_name`` is not a limit name; the message names the setting.
    """
    from framework import Limit  # noqa: PLC0415 - only processes that register task types need it
    from framework.errors import ConfigError  # noqa: PLC0415

    text = DEFAULT_RATE_LIMITS.get(config.backend) if config.rate_limit is None else config.rate_limit
    rate = None if text is None or text.strip().lower() in _OFF else text.strip()
    if config.concurrency_limit < 0:
        raise ConfigError(
            f"setting plugins.email.concurrency_limit={config.concurrency_limit!r} is invalid: "
            "must be a whole number >= 0 (0 = no cap)"
        )
    concurrency = config.concurrency_limit or None
    if rate is None and concurrency is None:
        return None
    try:
        checked = Limit(rate=rate) if rate is not None else None
    except ConfigError as exc:
        raise ConfigError(f"setting plugins.email.rate_limit={config.rate_limit!r} is invalid: {exc}") from exc
    try:
        return Limit(rate=checked.rate if checked else None, concurrency=concurrency, name=config.limit_name)
    except ConfigError as exc:
        raise ConfigError(f"setting plugins.email.limit_name={config.limit_name!r} is invalid: {exc}") from exc


load_email_config = load_config
"""The same function under its first name."""


def outbox_path(settings: Settings, config: EmailConfig) -> Path:
    """The ``outbox`` backend's folder: ``config.outbox_dir``, relative paths inside the data directory."""
    return settings.data_path / Path(config.outbox_dir)
