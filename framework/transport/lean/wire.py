"""Which redis-py commands :mod:`framework.transport.lean.fastredis` sends on its shared connection, and how.

Packing (as redis-py encodes them), and redis-py's exceptions for the error replies that come back.
"""

from __future__ import annotations

from typing import Any

import hiredis
from redis.exceptions import ConnectionError  # noqa: A004

from framework.thirdparty import parse_redis_error
from framework.transport.lean.errors import ReplyError

__all__ = ("POOL_ONLY", "packed", "raise_errors", "redis_error", "with_errors")

POOL_ONLY: frozenset[str] = frozenset(
    {
        # blocking: would stall every command queued behind them
        "BLPOP",
        "BRPOP",
        "BLMOVE",
        "BRPOPLPUSH",
        "BLMPOP",
        "BZPOPMIN",
        "BZPOPMAX",
        "BZMPOP",
        "WAIT",
        "WAITAOF",
        # connection state: would change (or read) the state of a connection others share
        "SELECT",
        "AUTH",
        "HELLO",
        "CLIENT",
        "RESET",
        "QUIT",
        "MULTI",
        "EXEC",
        "DISCARD",
        "WATCH",
        "UNWATCH",
        "SUBSCRIBE",
        "PSUBSCRIBE",
        "SSUBSCRIBE",
        "UNSUBSCRIBE",
        "PUNSUBSCRIBE",
        "SUNSUBSCRIBE",
        "MONITOR",
        "READONLY",
        "READWRITE",
        "ASKING",
        "HIMPORT",  # redis-py prepares its field sets per connection
        # replication streams and the end of the server
        "SYNC",
        "PSYNC",
        "REPLCONF",
        "SHUTDOWN",
    }
)
"""Commands always sent through redis-py's pool (upper-case first word of the command)."""

_POOL_ONLY_SUBCOMMANDS: dict[str, frozenset[str]] = {
    # must not queue behind the busy script they are meant to stop
    "SCRIPT": frozenset({"KILL"}),
    "FUNCTION": frozenset({"KILL"}),
}
_BLOCK_OPTION = frozenset({"XREAD", "XREADGROUP"})  # blocking only with BLOCK
_PACKABLE = frozenset({bytes, str, int, float})  # encoded by hiredis exactly as redis-py encodes them
_pack = hiredis.pack_command


def packed(args: tuple[Any, ...]) -> bytes | None:
    """The command packed for the shared connection, or None to send it through the pool."""
    wire = _wire(args)
    if wire is None:
        return None
    try:
        data: bytes = _pack(wire)
    except (TypeError, ValueError):  # e.g. a str that UTF-8 cannot encode: the pool raises redis-py's error
        return None
    return data


def _wire(args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """The command's arguments as sent (a multi-word name split, as redis-py does), or None for the pool."""
    name: Any = args[0] if args else None
    kind = type(name)
    if kind is str and name.isalpha():
        word, wire = name.upper(), args
    elif (kind is str or kind is bytes) and (
        head := name.encode().split() if kind is str else name.split() if b" " in name else [name]
    ):
        word, wire = head[0].decode("latin-1").upper(), (*head, *args[1:])
    else:
        return None
    if _pool_only(word, wire):
        return None
    for arg in wire:
        if type(arg) not in _PACKABLE:
            return None
    return wire


def _pool_only(word: str, wire: tuple[Any, ...]) -> bool:
    if word in POOL_ONLY:
        return True
    subcommands = _POOL_ONLY_SUBCOMMANDS.get(word)
    if subcommands is not None:
        return len(wire) > 1 and _upper(wire[1]) in subcommands
    return word in _BLOCK_OPTION and any(_upper(arg) == "BLOCK" for arg in wire)


def _upper(arg: Any) -> str | None:
    if type(arg) is str:
        return arg.upper()
    if type(arg) is bytes:
        return arg.decode("latin-1").upper()
    return None


def redis_error(text: str) -> Exception:
    """The exception redis-py makes of an error reply (its class by the error code, the code cut off)."""
    return parse_redis_error(text)


def raise_errors(reply: Any) -> Any:
    """Raise a top-level error reply as redis-py does; else ``reply`` with nested errors as exceptions."""
    if type(reply) is ReplyError:
        raise redis_error(str(reply)) from None
    reply = with_errors(reply)
    if type(reply) is list and reply and isinstance(reply[0], ConnectionError):  # as redis-py's hiredis parser does
        raise reply[0]
    return reply


def with_errors(reply: Any) -> Any:
    """``reply`` with the error replies nested in it (arrays, RESP3 maps) as redis-py's exceptions."""
    kind = type(reply)
    if kind is ReplyError:
        return redis_error(str(reply))
    if kind is list:
        return [with_errors(item) for item in reply]
    if kind is dict:
        return {key: with_errors(value) for key, value in reply.items()}
    return reply
