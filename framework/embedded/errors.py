"""The errors of the embedded Valkey server and of the test servers (:mod:`framework.embedded.server`)."""

from __future__ import annotations

from framework.errors import RedisUnavailable

__all__ = ("AddressInUseError", "EmbeddedValkeyError")


class EmbeddedValkeyError(RedisUnavailable):
    """The embedded Valkey server could not be found, started or stopped. The message says why."""


class AddressInUseError(EmbeddedValkeyError):
    """The TCP port chosen for a server was taken before the server could bind it."""
