"""redis-py's asyncio client with its ordinary commands on the auto-pipelining connection of :mod:`framework.resp`.

A task handler reaches Redis through ``ctx.services.redis``, a redis-py client. redis-py spends tens of
microseconds of Python per command (pool checkout, retry wrapper, packing, one ``send`` each), which caps a
process at about ten thousand commands a second; a handler doing one ``INCR`` is then what limits the worker.
:class:`FastRedis` is a ``redis.asyncio.Redis`` whose :meth:`~FastRedis.execute_command` sends every command
that may share a connection over one :class:`~framework.resp.RespConnection` per event loop: the commands of
concurrent tasks go out in one write and hiredis parses the replies.

The results are redis-py's: the connection speaks the protocol redis-py would (RESP3 unless ``protocol=2``
is given), hiredis parses the replies as redis-py's hiredis parser does, and they then go through redis-py's
post-processing (``response_callbacks``, ``EMPTY_RESPONSE``...). Error replies raise redis-py's exceptions
with redis-py's messages. (The broker's hot paths keep their own RESP2 connection, whose raw replies they
read: the two cannot share one.)

Kept on redis-py's pool, unchanged:

* commands that block their connection (``BLPOP``, ``XREAD ... BLOCK``, ``WAIT``...) or change its state
  (``SELECT``, ``AUTH``, ``CLIENT ...``, ``MULTI``/``EXEC``, ``WATCH``, ``SUBSCRIBE``...): see
  :data:`POOL_ONLY`;
* every command of a client that does not qualify: ``decode_responses=True``, an encoding other than UTF-8,
  ``single_connection_client=True`` (as :meth:`~redis.asyncio.Redis.client` makes), TLS, a socket timeout,
  a credential provider, a custom connection or pool class (:func:`~framework.resp.connection_options`);
* arguments of types other than ``bytes``, ``str``, ``int`` and ``float`` (redis-py encodes or rejects them);
* ``pipeline()``, ``pubsub()``, ``monitor()``: their own objects, on the pool.

Connection failures: when the shared connection breaks (the server restarted, the connection was killed),
every command in flight on it fails at once, and the next command reopens it. A command that failed so is
retried once through redis-py's pool (which applies its own retry policy), as redis-py's retry would retry
it; as with redis-py's retry, the command then runs twice if the first attempt had reached the server.

The shared connection is closed by :meth:`FastRedis.aclose` (or when garbage collected after its event loop
is closed). redis-py's client-side metrics (``record_operation_duration``...) are not recorded for the
commands it carries.
"""

from __future__ import annotations

import codecs
import inspect
from typing import Any, cast

import hiredis
from redis._parsers import BaseParser
from redis.asyncio import Redis
from redis.client import EMPTY_RESPONSE, NEVER_DECODE
from redis.exceptions import ConnectionError, ResponseError  # noqa: A004
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.utils import DEFAULT_RESP_VERSION

from framework.resp import ReplyError, RespClient, connection_options

__all__ = ("POOL_ONLY", "FastRedis")

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
_parse_error = BaseParser.parse_error
_pack = hiredis.pack_command


class FastRedis(Redis):
    """A ``redis.asyncio.Redis`` whose ordinary commands share one auto-pipelining connection.

    Takes redis-py's arguments (``FastRedis.from_url(...)``, ``FastRedis(connection_pool=...)``...).

    Attributes:
        resp_client: the shared connection's client, or None when this client keeps to redis-py.
    """

    resp_client: RespClient | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.resp_client = None
        found = connection_options(self)
        if found is None or self.single_connection_client:
            return
        address, options, protocol = found
        conn_kwargs = self.connection_pool.connection_kwargs
        if conn_kwargs.get("decode_responses") or codecs.lookup(conn_kwargs.get("encoding") or "utf-8").name != "utf-8":
            return
        # the protocol redis-py speaks: the replies are then what its parser gets, its callbacks apply as they are
        options["protocol"] = DEFAULT_RESP_VERSION if protocol is None else int(protocol)
        options["client_name"] = conn_kwargs.get("client_name")
        self.resp_client = RespClient(address, **options)

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        """Run a command and post-process its reply as redis-py does (on the shared connection when it may)."""
        client = self.resp_client
        if client is not None and (data := _packed(args)) is not None:
            conn = client.connection()
            seen = conn.error_replies
            try:
                reply = await conn.execute_raw(data)
                if conn.error_replies != seen:  # an error reply: in this reply, or in another one meanwhile
                    reply = _raise_errors(reply)
            except ResponseError:
                if EMPTY_RESPONSE in options:
                    return options[EMPTY_RESPONSE]
                raise
            except (ConnectionError, RedisTimeoutError, OSError):
                pass  # retried once on the pool, as redis-py's retry would
            else:
                if options:
                    options.pop(EMPTY_RESPONSE, None)
                    options.pop(NEVER_DECODE, None)
                    options.pop("keys", None)  # for redis-py's client-side cache
                command_name = args[0]
                if command_name in self.response_callbacks:
                    retval = self.response_callbacks[command_name](reply, **options)
                    return await retval if inspect.isawaitable(retval) else retval
                return reply
        return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        """Close the shared connection, then do what redis-py's ``aclose`` does (release, close the pool)."""
        if self.resp_client is not None:
            self.resp_client.close()
        await super().aclose(close_connection_pool)


def _packed(args: tuple[Any, ...]) -> bytes | None:
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


def _redis_error(text: str) -> Exception:
    """The exception redis-py makes of an error reply (its class by the error code, the code cut off)."""
    return cast("Exception", _parse_error(text))  # type: ignore[no-untyped-call]


def _raise_errors(reply: Any) -> Any:
    """Raise a top-level error reply as redis-py does; else ``reply`` with nested errors as exceptions."""
    if type(reply) is ReplyError:
        raise _redis_error(str(reply)) from None
    reply = _with_errors(reply)
    if type(reply) is list and reply and isinstance(reply[0], ConnectionError):  # as redis-py's hiredis parser does
        raise reply[0]
    return reply


def _with_errors(reply: Any) -> Any:
    """``reply`` with the error replies nested in it (arrays, RESP3 maps) as redis-py's exceptions."""
    kind = type(reply)
    if kind is ReplyError:
        return _redis_error(str(reply))
    if kind is list:
        return [_with_errors(item) for item in reply]
    if kind is dict:
        return {key: _with_errors(value) for key, value in reply.items()}
    return reply
