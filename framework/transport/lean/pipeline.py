"""Pipelines and transactions of ``FastRedis`` in one write on its shared connection.

redis-py runs ``pipeline().execute()`` on a connection checked out of its pool: with a hundred tasks each
running a small pipeline, that is a hundred connections, a hundred writes and a hundred reads, and the
pool's bookkeeping for each. :class:`FastPipeline` writes the whole stack to the shared auto-pipelining
connection instead (wrapped in ``MULTI``/``EXEC`` for a transaction: written together, nothing else on that
connection comes between them, so the transaction is the server's as usual) and handles the replies as
redis-py's ``Pipeline`` does: the same response callbacks, the same exceptions and annotations, the same
``raise_on_error`` behaviour, ``ExecAbortError`` for a transaction the server refused.

Kept on redis-py's path, unchanged: a pipeline that ``WATCH``es (its commands then run one by one on the
pool connection it holds), one with ``Script`` objects, one holding a pool connection already, a
transaction with a command whose options carry redis-py's empty-response marker, and any stack with a
command :mod:`framework.transport.lean.fastredis` keeps to the pool (blocking, connection state, argument types). A
pipeline whose shared connection breaks is sent once more through the pool, as redis-py's retry would.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, cast

from redis.asyncio.client import Pipeline
from redis.client import EMPTY_RESPONSE, NEVER_DECODE
from redis.exceptions import ConnectionError, ExecAbortError, ResponseError, WatchError  # noqa: A004
from redis.exceptions import TimeoutError as RedisTimeoutError

from framework.transport.lean.errors import ReplyError
from framework.transport.lean.wire import packed, raise_errors, redis_error, with_errors

if TYPE_CHECKING:
    from framework.transport.lean.client import RespClient

__all__ = ("FastPipeline",)

_MULTI = b"*1\r\n$5\r\nMULTI\r\n"
_EXEC = b"*1\r\n$4\r\nEXEC\r\n"


class FastPipeline(Pipeline):
    """A redis-py ``Pipeline`` whose ``execute`` uses the shared connection when it may; see the module docstring.

    Args:
        resp_client: the shared connection's client of the
            :class:`~framework.transport.lean.fastredis.FastRedis` it came from.
        *args: redis-py's ``Pipeline`` arguments (pool, response callbacks, transaction, shard hint).
    """

    def __init__(self, resp_client: RespClient, *args: Any) -> None:
        super().__init__(*args)
        self._resp = resp_client

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        """Execute the stacked commands (in one write on the shared connection when it may)."""
        stack = self.command_stack
        transaction = self.is_transaction or self.explicit_transaction
        data = None
        if stack and not self.watching and not self.scripts and self.connection is None:
            data = _packed_stack(stack, transaction)
        if data is None:
            return await super().execute(raise_on_error)
        conn = self._resp.connection()
        try:
            replies = await conn.execute_many_raw(data, len(stack) + 2 if transaction else len(stack))
        except (ConnectionError, RedisTimeoutError, OSError):
            return await super().execute(raise_on_error)  # once more through the pool
        try:
            if transaction:
                return await self._transaction_result(replies, raise_on_error)
            return await self._pipeline_result(replies, raise_on_error)
        finally:
            await self.reset()  # type: ignore[no-untyped-call]

    async def _pipeline_result(self, replies: list[Any], raise_on_error: bool) -> list[Any]:
        response: list[Any] = []
        for (args, stacked), reply in zip(self.command_stack, replies, strict=True):
            options = cast("dict[str, Any]", stacked)  # redis-py's own dict of the call's options
            try:
                value = raise_errors(reply)
            except ResponseError as exc:
                response.append(options.get(EMPTY_RESPONSE, exc))
                continue
            options.pop(EMPTY_RESPONSE, None)
            options.pop(NEVER_DECODE, None)
            options.pop("keys", None)
            response.append(await self._callback(args[0], value, options))
        if raise_on_error:
            self.raise_first_error(self.command_stack, response)
        return response

    async def _transaction_result(self, replies: list[Any], raise_on_error: bool) -> list[Any]:
        commands = self.command_stack
        errors: list[tuple[int, Exception]] = []
        if type(replies[0]) is ReplyError:
            errors.append((0, redis_error(str(replies[0]))))
        for i, (command, queued) in enumerate(zip(commands, replies[1:-1], strict=True)):
            if type(queued) is ReplyError:
                err = redis_error(str(queued))
                self.annotate_exception(err, i + 1, command[0])
                errors.append((i, err))
        done = replies[-1]
        if type(done) is ReplyError:
            err = redis_error(str(done))
            if isinstance(err, ExecAbortError) and errors:
                raise errors[0][1] from err
            raise err
        self.watching = False
        if done is None:
            raise WatchError("Watched variable changed.")
        response: list[Any] = with_errors(done)
        for i, e in errors:
            response.insert(i, e)
        if len(response) != len(commands):
            raise ResponseError("Wrong number of response items from pipeline execution")
        if raise_on_error:
            self.raise_first_error(commands, response)
        data = []
        for r, (args, stacked) in zip(response, commands, strict=True):
            if isinstance(r, Exception):
                data.append(r)
            else:
                options = cast("dict[str, Any]", stacked)
                options.pop("keys", None)
                data.append(await self._callback(args[0], r, options))
        return data

    async def _callback(self, name: Any, value: Any, options: dict[str, Any]) -> Any:
        callback = self.response_callbacks.get(name)
        if callback is None:
            return value
        result = callback(value, **options)
        return await result if inspect.isawaitable(result) else result


def _packed_stack(stack: list[Any], transaction: bool) -> bytes | None:
    """The stack packed for the shared connection (inside MULTI/EXEC for a transaction), or None for the pool."""
    parts = [_MULTI] if transaction else []
    for args, options in stack:
        if transaction and EMPTY_RESPONSE in options:
            return None
        data = packed(args)
        if data is None:
            return None
        parts.append(data)
    if transaction:
        parts.append(_EXEC)
    return b"".join(parts)
