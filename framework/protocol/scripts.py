"""The Lua scripts, one per state transition, loaded from ``framework/protocol/lua/*.lua``.

Each script is run with EVALSHA; when Redis answers NOSCRIPT (a restarted or failed-over server) the
script is loaded and the call repeated, which is safe because a NOSCRIPT call did not run. The shared
prelude ``_lib.lua`` is prepended to every script. A missing file fails at import.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import TYPE_CHECKING, Any

from redis.exceptions import NoScriptError

from framework.transport.lean.client import RespClient

if TYPE_CHECKING:
    from collections.abc import Sequence

    from redis.asyncio import Redis
    from redis.asyncio.client import Pipeline

__all__ = ("SCRIPTS", "LuaScript", "run_pipeline")

_NAMES = (
    "add_to_group",
    "add_to_group_unique",
    "aggregation_check",
    "archive",
    "archive_all",
    "archive_task",
    "cron_enqueue",
    "defer",
    "delete_aggregation_set",
    "delete_all",
    "delete_expired_completed",
    "delete_task",
    "dequeue",
    "done",
    "enqueue",
    "enqueue_many",
    "enqueue_unique",
    "forward",
    "list_lease_expired",
    "mark_complete",
    "read_aggregation_set",
    "recover",
    "reclaim_stale_aggregation_sets",
    "remove_queue",
    "repair_orphans",
    "requeue",
    "retry",
    "run_all",
    "run_task",
    "schedule",
    "schedule_unique",
)

_Key = str | bytes
_Arg = str | bytes | int | float


class LuaScript:
    """One Lua script: its name, source and SHA1.

    Args:
        name: the file name without ``.lua``.
        source: the full source, prelude included.
    """

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    async def __call__(self, client: Redis | RespClient, keys: Sequence[_Key], args: Sequence[_Arg]) -> Any:
        """Run the script on ``client`` (EVALSHA, loading it once on NOSCRIPT).

        ``client`` is a redis-py client or, on the hot paths, a
        :class:`~framework.transport.lean.connection.RespClient`.
        """
        if isinstance(client, RespClient):
            conn = client.connection()
            try:
                return await conn.execute("EVALSHA", self.sha, len(keys), *keys, *args)
            except NoScriptError:
                await conn.execute("SCRIPT", "LOAD", self.source)
                return await conn.execute("EVALSHA", self.sha, len(keys), *keys, *args)
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await client.script_load(self.source)
            return await client.evalsha(self.sha, len(keys), *keys, *args)

    def queue(self, pipe: Pipeline, keys: Sequence[_Key], args: Sequence[_Arg]) -> None:
        """Add an EVALSHA of this script to a pipeline; run it with :func:`run_pipeline`.

        Sent as a raw command: redis-py's Cluster pipeline blocks its ``evalsha`` method, yet routes a raw
        EVALSHA by its first key like any other command.
        """
        pipe.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)


async def run_pipeline(
    client: Redis | RespClient, calls: Sequence[tuple[LuaScript, Sequence[_Key], Sequence[_Arg]]]
) -> list[Any]:
    """Run many script calls in one round trip (non-transactional pipeline).

    Calls answered NOSCRIPT did not run; their scripts are loaded and only those calls are sent again.
    Other errors are returned in place, as exceptions, for the caller to raise or inspect.
    """
    if isinstance(client, RespClient):
        return await _run_pipeline_fast(client, calls)
    async with client.pipeline(transaction=False) as pipe:
        for script, keys, args in calls:
            script.queue(pipe, keys, args)
        results: list[Any] = await pipe.execute(raise_on_error=False)
    missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
    if missing:
        for script in {calls[i][0].sha: calls[i][0] for i in missing}.values():
            await client.script_load(script.source)
        async with client.pipeline(transaction=False) as pipe:
            for i in missing:
                script, keys, args = calls[i]
                script.queue(pipe, keys, args)
            again = await pipe.execute(raise_on_error=False)
        for i, r in zip(missing, again, strict=True):
            results[i] = r
    return results


async def _run_pipeline_fast(
    client: RespClient, calls: Sequence[tuple[LuaScript, Sequence[_Key], Sequence[_Arg]]]
) -> list[Any]:
    conn = client.connection()
    # scripts this connection has not loaded yet are loaded ahead of the batch, in the same write, so a
    # batch is never split (and reordered) by a NOSCRIPT answer
    load = {s.sha: s for s, _, _ in calls if s.sha not in conn.scripts}
    commands: list[tuple[Any, ...]] = [("SCRIPT", "LOAD", s.source) for s in load.values()]
    commands += [("EVALSHA", s.sha, len(k), *k, *a) for s, k, a in calls]
    results = (await conn.execute_many(commands))[len(load) :]
    conn.scripts.update(load)
    missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
    if missing:
        for script in {calls[i][0].sha: calls[i][0] for i in missing}.values():
            await conn.execute("SCRIPT", "LOAD", script.source)
        again = await conn.execute_many(
            [("EVALSHA", calls[i][0].sha, len(calls[i][1]), *calls[i][1], *calls[i][2]) for i in missing]
        )
        for i, r in zip(missing, again, strict=True):
            results[i] = r
    return results


def _load() -> dict[str, LuaScript]:
    folder = resources.files("framework.protocol") / "lua"
    prelude = (folder / "_lib.lua").read_text(encoding="utf-8")
    return {
        name: LuaScript(name, prelude + "\n" + (folder / f"{name}.lua").read_text(encoding="utf-8")) for name in _NAMES
    }


SCRIPTS: dict[str, LuaScript] = _load()
"""Every script by name."""
