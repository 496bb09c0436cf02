"""The ``outbox`` backend (the development default): each email becomes an ``.eml`` file.

Files go to ``<data_dir>/outbox/`` (see ``outbox_dir``), named after the email's key (the task id), so a
retry rewrites the same file instead of adding a second one. Open them with any mail client.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from framework_email.backends.base import safe_token
from framework_email.config import outbox_path

if TYPE_CHECKING:
    from framework.settings import Settings
    from framework_email.backends.base import OutboundEmail
    from framework_email.config import EmailConfig

__all__ = ("OutboxBackend",)


class OutboxBackend:
    """Writes each email as ``<key>.eml`` into a folder instead of sending it.

    Args:
        directory: the folder; it is created on first use.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    @classmethod
    def from_config(cls, config: EmailConfig, settings: Settings) -> OutboxBackend:
        """Build the backend for ``config.outbox_dir``, relative to the data directory.

        Args:
            config: the plugin's config.
            settings: the app's settings (for the data directory).
        """
        return cls(outbox_path(settings, config))

    async def send(self, email: OutboundEmail) -> str:
        """Write ``email`` to ``<directory>/<key>.eml``, replacing an earlier attempt's file.

        Returns:
            The file's path.
        """
        path = self.directory / f"{safe_token(email.key)}.eml"
        await asyncio.to_thread(_write_atomically, path, email.message.as_bytes())
        return str(path)


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so a reader never sees half a file.

    Each write has its own temporary file (``.<key>.<random>.eml.tmp``), so two attempts at one email at
    once (a task run again while its first run still writes) each replace the file with a whole one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.{secrets.token_hex(6)}{path.suffix}.tmp")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
