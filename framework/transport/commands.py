"""How the broker's commands reach Redis: one interface, whichever client carries them.

:class:`Commands` is what the broker calls: a Lua script by its SHA1 (``EVALSHA``; when the server answers
NOSCRIPT, a restarted or failed-over server, the script is loaded and the call sent again, which is safe
because a NOSCRIPT call did not run), many script calls in one round trip, and many plain commands in one
round trip. Two classes implement it:

* :class:`~framework.transport.lean.client.RespClient`, the lean auto-pipelining connection (a single server
  over TCP, TLS or a Unix socket, or a Sentinel-managed primary; RESP2), and
  :class:`~framework.transport.lean.cluster.ClusterRespClient`, one such connection per Cluster primary,
  each command routed by its key's slot;
* :class:`RedisCommands`, on a redis-py asyncio client (anything else: RESP3, credential providers, ...).

The caller picks one when it is built (the broker: the lean connection when
:func:`~framework.transport.lean.paths.fast_path_for` finds one, else redis-py) and then just calls it: nothing
downstream asks which client it has. Script replies are raw (bytes, ints, lists).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from redis.exceptions import NoScriptError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from redis.asyncio import Redis
    from redis.asyncio.client import Pipeline

__all__ = ("Arg", "Commands", "Key", "RedisCommands", "Script", "ScriptCall", "rerun_missing", "run_script")

Key: TypeAlias = str | bytes
Arg: TypeAlias = str | bytes | int | float


class Script(Protocol):
    """A Lua script as the server caches it: its SHA1, and its source for ``SCRIPT LOAD``."""

    @property
    def sha(self) -> str:
        """The hex SHA1 of :attr:`source`."""

    @property
    def source(self) -> str:
        """The full source."""


ScriptCall: TypeAlias = "tuple[Script, Sequence[Key], Sequence[Arg]]"
"""One script call: the script, its keys, its args."""


class Commands(Protocol):
    """The calls the broker makes, on whichever client carries them; see the module docstring."""

    async def evalsha(self, script: Script, keys: Sequence[Key], args: Sequence[Arg]) -> Any:
        """Run ``script`` (EVALSHA, loading it once on NOSCRIPT); an error reply raises redis-py's exception."""

    async def evalsha_many(self, calls: Sequence[ScriptCall]) -> list[Any]:
        """Run many script calls in one round trip (not a transaction).

        Calls answered NOSCRIPT did not run: their scripts are loaded and only those calls sent again. Other
        error replies come back in place, as redis-py exception instances, for the caller to raise or inspect.
        """

    async def execute_many(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Run plain commands in one round trip; error replies come back in place as exception instances."""

    def close(self) -> None:
        """Close what this object opened itself (a redis-py client is its owner's to close)."""


async def run_script(redis: Redis, script: Script, keys: Sequence[Key], args: Sequence[Arg]) -> Any:
    """Run ``script`` on a redis-py client (EVALSHA, loading it once on NOSCRIPT)."""
    try:
        return await redis.evalsha(script.sha, len(keys), *keys, *args)
    except NoScriptError:
        await redis.script_load(script.source)
        return await redis.evalsha(script.sha, len(keys), *keys, *args)


async def rerun_missing(results: list[Any], again: Callable[[list[int]], Awaitable[list[Any]]]) -> list[Any]:
    """``results`` of a batch of script calls, with the calls answered NOSCRIPT run again by ``again``.

    ``again`` gets the indexes of those calls (which did not run) and returns their new replies, in that
    order, once it has loaded their scripts; every :meth:`Commands.evalsha_many` ends with this.
    """
    missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
    if missing:
        for i, r in zip(missing, await again(missing), strict=True):
            results[i] = r
    return results


def _queue_script(pipe: Pipeline, script: Script, keys: Sequence[Key], args: Sequence[Arg]) -> None:
    """Add an EVALSHA to a redis-py pipeline.

    Sent as a raw command: redis-py's Cluster pipeline blocks its ``evalsha`` method, yet routes a raw
    EVALSHA by its first key like any other command.
    """
    pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)


class RedisCommands:
    """:class:`Commands` on a redis-py asyncio client: a single server, a Cluster or a Sentinel-managed primary.

    Args:
        redis: the client (its owner closes it).
    """

    __slots__ = ("redis",)

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def evalsha(self, script: Script, keys: Sequence[Key], args: Sequence[Arg]) -> Any:
        """See :meth:`Commands.evalsha`."""
        return await run_script(self.redis, script, keys, args)

    async def evalsha_many(self, calls: Sequence[ScriptCall]) -> list[Any]:
        """See :meth:`Commands.evalsha_many`."""
        redis = self.redis
        async with redis.pipeline(transaction=False) as pipe:
            for script, keys, args in calls:
                _queue_script(pipe, script, keys, args)
            results: list[Any] = await pipe.execute(raise_on_error=False)

        async def again(missing: list[int]) -> list[Any]:
            for script in {calls[i][0].sha: calls[i][0] for i in missing}.values():
                await redis.script_load(script.source)
            async with redis.pipeline(transaction=False) as pipe:
                for i in missing:
                    script, keys, args = calls[i]
                    _queue_script(pipe, script, keys, args)
                replies: list[Any] = await pipe.execute(raise_on_error=False)
            return replies

        return await rerun_missing(results, again)

    async def execute_many(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """See :meth:`Commands.execute_many`."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for command in commands:
                pipe.execute_command(*command)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies

    def close(self) -> None:
        """Nothing to close: the redis-py client is its owner's."""
