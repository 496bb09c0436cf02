"""The email plugin's settings: the ``[plugins.email]`` section, with secrets taken from the environment.

Example ``framework.toml``::

    [plugins.email]
    backend = "smtp"                 # "outbox" (default), "smtp", "resend" or a plugin's backend
    mail_from = "Acme <hello@acme.test>"
    app_name = "Acme"

    [plugins.email.smtp]
    host = "127.0.0.1"
    port = 1025
    security = "none"                # "none", "starttls" or "tls"

Secrets and the sender come from the environment, which wins over the file when set: ``MAIL_FROM``,
``RESEND_API_KEY``, ``SMTP_USERNAME`` and ``SMTP_PASSWORD``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import msgspec

if TYPE_CHECKING:
    from collections.abc import Mapping

    from framework.settings import Settings

__all__ = (
    "PLUGIN_NAME",
    "EmailConfig",
    "ResendConfig",
    "SmtpConfig",
    "load_config",
    "load_email_config",
    "outbox_path",
)

PLUGIN_NAME = "email"
"""The plugin's entry-point name and the name of its settings section: ``[plugins.email]``."""


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


class ResendConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The Resend API (``[plugins.email.resend]``). Set by the user.

    Attributes:
        api_key: the API key (or env ``RESEND_API_KEY``, the usual place for it).
        api_url: another base URL for the API; empty keeps the SDK's (``RESEND_API_URL`` or Resend's).
    """

    api_key: str = ""
    api_url: str = ""


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
            current directory. The app's templates folder needs no entry here.
        outbox_dir: folder of the ``outbox`` backend; relative paths are inside the data directory.
        smtp: the ``smtp`` backend's server.
        resend: the ``resend`` backend's API.
    """

    backend: str = "outbox"
    mail_from: str = ""
    app_name: str = ""
    app_url: str = ""
    template_dirs: list[str] = msgspec.field(default_factory=list)
    outbox_dir: str = "outbox"
    smtp: SmtpConfig = msgspec.field(default_factory=SmtpConfig)
    resend: ResendConfig = msgspec.field(default_factory=ResendConfig)


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


load_email_config = load_config
"""The same function under its first name."""


def outbox_path(settings: Settings, config: EmailConfig) -> Path:
    """The ``outbox`` backend's folder: ``config.outbox_dir``, relative paths inside the data directory."""
    return settings.data_path / Path(config.outbox_dir)
