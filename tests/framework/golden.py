"""Load the Go asynq v0.26 golden Redis snapshot (``tests/data/asynq-golden.json``) into Redis.

The snapshot uses namespace ``asynq``. :func:`load_golden` writes it under a test's own namespace by
rewriting the leading ``asynq:`` of every key name (hash tags stay), and of the ``unique_key`` field of
task records, which holds a key name. Every other value is written byte for byte, so ``msg`` is
exactly what Go wrote (its embedded ``unique_key`` keeps the ``asynq:`` name).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from framework.protocol.message import decode_message

if TYPE_CHECKING:
    from redis.asyncio import Redis

GOLDEN_PATH = Path(__file__).resolve().parent.parent / "data" / "asynq-golden.json"
GOLDEN_NS = "asynq"
GOLDEN_TIME = 1_795_323_303
"""Unix time at which Go wrote the snapshot (the archive and group scores)."""


@cache
def golden() -> dict[str, Any]:
    """The parsed snapshot."""
    data: dict[str, Any] = json.loads(GOLDEN_PATH.read_text(encoding="utf-8"))
    return data


def rename(key: str, namespace: str) -> str:
    """A golden key name under ``namespace``."""
    prefix = GOLDEN_NS + ":"
    return namespace + ":" + key[len(prefix) :] if key.startswith(prefix) else key


def golden_keys(namespace: str = GOLDEN_NS, day: str | None = None) -> dict[str, dict[str, Any]]:
    """Every golden key (renamed into ``namespace``) with its record.

    Args:
        namespace: the namespace to write under.
        day: a ``YYYY-MM-DD`` to put in the daily counters' names instead of the day Go wrote them,
            for checks against the wall clock ("processed today").
    """
    made = ":" + golden()["made"]
    out = {}
    for key, rec in golden()["keys"].items():
        name = rename(key, namespace)
        if day is not None and name.endswith(made):
            name = name[: -len(made)] + ":" + day
        out[name] = rec
    return out


def golden_tasks() -> dict[tuple[str, str], dict[str, Any]]:
    """(queue, task id) -> {"state", "fields" (bytes), "msg" (decoded TaskMessage), "msg_decoded"}."""
    out = {}
    for key, rec in golden()["keys"].items():
        if rec["type"] != "hash" or ":t:" not in key:
            continue
        fields = {f: bytes.fromhex(v) for f, v in rec["fields_hex"].items()}
        msg = decode_message(fields["msg"])
        out[(msg.queue, msg.id)] = {
            "state": fields["state"].decode(),
            "fields": fields,
            "msg": msg,
            "msg_decoded": rec["msg_decoded"],
        }
    return out


def golden_ids(queue: str, collection: str) -> list[str]:
    """Task ids of a golden list or zset (``pending``, ``scheduled``, ``g:g1``...), in Redis order."""
    rec = golden()["keys"].get(f"{GOLDEN_NS}:{{{queue}}}:{collection}")
    if rec is None:
        return []
    return [item[0] if rec["type"] == "zset" else item for item in rec["items"]]


async def load_golden(redis: Redis, namespace: str, day: str | None = None) -> dict[str, dict[str, Any]]:
    """Write the snapshot into Redis under ``namespace``; returns :func:`golden_keys` for it (see there)."""
    keys = golden_keys(namespace, day)
    async with redis.pipeline(transaction=False) as pipe:
        for key, rec in keys.items():
            _write(pipe, key, rec, namespace)
        await pipe.execute()
    return keys


def _write(pipe: Any, key: str, rec: dict[str, Any], namespace: str) -> None:
    kind = rec["type"]
    if kind == "string":
        ttl = int(rec.get("ttl", -1))
        pipe.set(key, bytes.fromhex(rec["hex"]), ex=ttl if ttl > 0 else None)
    elif kind == "hash":
        fields = {f: bytes.fromhex(v) for f, v in rec["fields_hex"].items()}
        if "unique_key" in fields:
            fields["unique_key"] = rename(fields["unique_key"].decode(), namespace).encode()
        pipe.hset(key, mapping=fields)
    elif kind == "list":
        pipe.rpush(key, *rec["items"])
    elif kind == "zset":
        pipe.zadd(key, dict(rec["items"]))
    elif kind == "set":
        pipe.sadd(key, *rec["items"])
    else:
        raise ValueError(f"golden key {key} has an unknown type {kind!r}")
