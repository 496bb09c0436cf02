"""redis-py's asyncio client with its ordinary commands on the lean auto-pipelining connection.

A task handler reaches Redis through ``ctx.services.redis``, a redis-py client. redis-py spends tens of
microseconds of Python per command (pool checkout, retry wrapper, packing, one ``send`` each), which caps a
process at about ten thousand commands a second; a handler doing one ``INCR`` is then what limits the worker.
:class:`FastRedis` is a ``redis.asyncio.Redis`` whose :meth:`~FastRedis.execute_command` sends every command
that may share a connection over one :class:`~framework.transport.lean.connection.RespConnection` per event
loop: the commands of concurrent tasks go out in one write and hiredis parses the replies.

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
  a credential provider, a custom connection or pool class
  (:func:`~framework.transport.lean.connection.connection_options`);
* arguments of types other than ``bytes``, ``str``, ``int`` and ``float`` (redis-py encodes or rejects them);
* ``pubsub()``, ``monitor()``: their own objects, on the pool; ``pipeline()`` runs in one write on the shared
  connection unless it watches keys (:mod:`framework.transport.lean.pipeline`).

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
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.client import EMPTY_RESPONSE, NEVER_DECODE
from redis.exceptions import ConnectionError, ResponseError  # noqa: A004
from redis.exceptions import TimeoutError as RedisTimeoutError

from framework.thirdparty import redis_default_protocol
from framework.transport.lean.client import RespClient, connection_options
from framework.transport.lean.pipeline import FastPipeline
from framework.transport.lean.wire import POOL_ONLY, packed, raise_errors

__all__ = ("POOL_ONLY", "FastPipeline", "FastRedis")


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
        options["protocol"] = redis_default_protocol() if protocol is None else int(protocol)
        options["client_name"] = conn_kwargs.get("client_name")
        self.resp_client = RespClient(address, **options)

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        """Run a command and post-process its reply as redis-py does (on the shared connection when it may)."""
        client = self.resp_client
        if client is not None and (data := packed(args)) is not None:
            conn = client.connection()
            seen = conn.error_replies
            try:
                reply = await conn.execute_raw(data)
                if conn.error_replies != seen:  # an error reply: in this reply, or in another one meanwhile
                    reply = raise_errors(reply)
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

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        """A pipeline that runs in one write on the shared connection when it may (see ``pipeline``)."""
        if self.resp_client is None:
            return super().pipeline(transaction, shard_hint)
        return FastPipeline(self.resp_client, self.connection_pool, self.response_callbacks, transaction, shard_hint)

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        """Close the shared connection, then do what redis-py's ``aclose`` does (release, close the pool)."""
        if self.resp_client is not None:
            self.resp_client.close()
        await super().aclose(close_connection_pool)
