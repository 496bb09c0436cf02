"""The credentials that open the admin: the tokens from settings, or the generated development token.

``admin_token`` acts, ``admin_readonly_token`` only looks, ``[plugins.admin] metrics_token`` opens
``/metrics`` only. In development without ``admin_token``, a token is generated once and kept in
``<data_dir>/admin-token`` (mode 0600), so it survives restarts. Tokens are kept as SHA-256 digests
for comparison (see :mod:`framework_admin.session`).
"""

from __future__ import annotations

import os
import secrets
from typing import TYPE_CHECKING

from framework import StashKey
from framework_admin.config import load_admin_config
from framework_admin.session import digest, tokens_match

if TYPE_CHECKING:
    from pathlib import Path

    from framework.settings import Settings
    from framework_admin.config import AdminConfig
    from framework_admin.models import Role

__all__ = ("CREDENTIALS", "TOKEN_FILE", "Credentials", "load_credentials")

TOKEN_FILE = "admin-token"
"""File in the data directory holding the generated development token."""


class Credentials:
    """The tokens that open the admin, as loaded at start-up. Built by :func:`load_credentials`.

    Attributes:
        tokens: role -> token, for the roles that have one.
        metrics_token: the token that opens ``/metrics`` only ("" = none).
        generated: whether the admin token was generated for development.
        token_file: where a generated token is kept.
    """

    __slots__ = ("_digests", "_metrics_digest", "generated", "metrics_token", "token_file", "tokens")

    def __init__(
        self,
        tokens: dict[str, str],
        metrics_token: str = "",
        *,
        generated: bool = False,
        token_file: Path | None = None,
    ) -> None:
        self.tokens = {role: token for role, token in tokens.items() if token}
        self.metrics_token = metrics_token
        self.generated = generated
        self.token_file = token_file
        self._digests = {role: digest(token) for role, token in self.tokens.items()}
        self._metrics_digest = digest(metrics_token) if metrics_token else None

    @property
    def enabled(self) -> bool:
        """Whether any credential opens the admin."""
        return bool(self.tokens)

    def role_for(self, token: str) -> Role | None:
        """The role ``token`` grants (``admin`` first), or ``None``."""
        if tokens_match(token, self._digests.get("admin")):
            return "admin"
        if tokens_match(token, self._digests.get("readonly")):
            return "readonly"
        return None

    def opens_metrics(self, token: str) -> bool:
        """Whether ``token`` is the metrics-only token."""
        return tokens_match(token, self._metrics_digest)


def _read_token_file(path: Path) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError:
        return ""
    return token if len(token) >= 16 else ""


def _write_token_file(path: Path, token: str) -> bool:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(token + "\n")
    except OSError:
        return False
    return True


def load_credentials(settings: Settings, config: AdminConfig | None = None, *, generate: bool = False) -> Credentials:
    """Build the credentials from settings; in development, fall back to (or create) the generated token.

    Args:
        settings: the app's settings (``admin_token``, ``admin_readonly_token``, ``env``, ``data_dir``).
        config: the plugin's config (for the metrics token; default: read from ``settings``).
        generate: create ``<data_dir>/admin-token`` when development has no token yet.
    """
    config = config or load_admin_config(settings)
    admin = (settings.admin_token or "").strip()
    readonly = (settings.admin_readonly_token or "").strip()
    generated, token_file = False, None
    if not admin and settings.env == "development":
        token_file = settings.data_path / TOKEN_FILE
        admin = _read_token_file(token_file)
        if not admin and generate:
            admin = secrets.token_urlsafe(24)
            if not _write_token_file(token_file, admin):
                token_file = None
        generated = bool(admin)
    return Credentials(
        {"admin": admin, "readonly": readonly},
        config.metrics_token,
        generated=generated,
        token_file=token_file,
    )


CREDENTIALS: StashKey[Credentials] = StashKey("framework_admin.credentials")
"""Where the ``startup`` hook keeps the process's credentials (``services.stash``)."""
