"""The Lua scripts, one per state transition, loaded from ``framework/protocol/lua/*.lua``.

Each script is run with EVALSHA; when Redis answers NOSCRIPT (a restarted or failed-over server) the
script is loaded and the call repeated, which is safe because a NOSCRIPT call did not run. The shared
prelude ``_lib.lua`` is prepended to every script, and ``_workflow.lua`` to the ``wf_*`` scripts, ``_limits.lua``
to the ``limit_*`` ones (so no other script carries helpers it does not use). A missing file fails at import.

The broker runs them through its :class:`~framework.transport.commands.Commands` (the lean connection or
redis-py, chosen once); calling a :class:`LuaScript` runs it on a redis-py client (admin operations, tests).
"""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import TYPE_CHECKING, Any

from framework.transport.commands import run_script

if TYPE_CHECKING:
    from collections.abc import Sequence

    from redis.asyncio import Redis

    from framework.transport.commands import Arg, Key

__all__ = ("SCRIPTS", "LuaScript")

_NAMES = (
    "add_to_group",
    "add_to_group_unique",
    "aggregation_check",
    "aggregation_failed",
    "archive",
    "archive_all",
    "archive_task",
    "cancel",
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
    "limit_prune_keys",
    "limit_release",
    "limit_take",
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
    "wf_check",
    "wf_inputs",
    "wf_start",
)

_COMPOSED = {
    "wf_done": ("wf_step", "done"),
    "wf_complete": ("wf_step", "mark_complete"),
    "wf_archive": ("wf_step", "archive"),
    "wf_cancel": ("wf_cancel", "cancel"),
    "wf_retry": ("wf_retry", "run_task"),
}
"""Workflow scripts built around a transition: name -> (outer script, transition). The transition's body runs
unchanged as ``local function transition(KEYS, ARGV)`` (its own keys and arguments), so a workflow step is
finished by exactly the code that finishes any task, and the workflow advanced in the same script."""


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

    async def __call__(self, client: Redis, keys: Sequence[Key], args: Sequence[Arg]) -> Any:
        """Run the script on a redis-py client (EVALSHA, loading it once on NOSCRIPT)."""
        return await run_script(client, self, keys, args)


def _load() -> dict[str, LuaScript]:
    folder = resources.files("framework.protocol") / "lua"

    def read(name: str) -> str:
        return (folder / f"{name}.lua").read_text(encoding="utf-8")

    prelude = read("_lib")
    workflow = prelude + "\n" + read("_workflow")
    limits = prelude + "\n" + read("_limits")

    def head(name: str) -> str:
        return workflow if name.startswith("wf_") else limits if name.startswith("limit_") else prelude

    scripts = {name: LuaScript(name, head(name) + "\n" + read(name)) for name in _NAMES}
    for name, (outer, inner) in _COMPOSED.items():
        transition = f"local function transition(KEYS, ARGV)\n{read(inner)}\nend\n"
        scripts[name] = LuaScript(name, workflow + "\n" + transition + read(outer))
    return scripts


SCRIPTS: dict[str, LuaScript] = _load()
"""Every script by name."""
