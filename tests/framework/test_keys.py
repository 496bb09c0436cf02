"""The key schema is the wire contract: a golden table of exact key strings (``framework.protocol.keys``).

Pure tests, no Redis. The asynq names are checked against the spec (asynq-wire.md §1) and against the
key names the real Go asynq v0.26 wrote in ``tests/data/asynq-golden.json``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from framework.protocol.keys import CORE_SEGMENTS, DEFAULT_EXT, DEFAULT_NS, Schema, day_stamp, unique_digest
from framework.protocol.message import decode_message

if TYPE_CHECKING:
    from collections.abc import Callable

GOLDEN = json.loads((Path(__file__).parent.parent / "data" / "asynq-golden.json").read_text(encoding="utf-8"))
GOLDEN_KEYS: dict[str, dict[str, object]] = GOLDEN["keys"]
GOLDEN_TIME = 1_795_323_303  # the Unix time at which Go wrote the snapshot

S = Schema()

# (builder, exact key) for namespace "asynq": the schema contract.
ASYNQ_TABLE: list[tuple[Callable[[], str], str]] = [
    (lambda: S.all_queues, "asynq:queues"),
    (lambda: S.servers, "asynq:servers"),
    (lambda: S.workers, "asynq:workers"),
    (lambda: S.schedulers, "asynq:schedulers"),
    (lambda: S.cancel_channel, "asynq:cancel"),
    (lambda: S.server("host", 42, "sid"), "asynq:servers:{host:42:sid}"),
    (lambda: S.worker_set("host", 42, "sid"), "asynq:workers:{host:42:sid}"),
    (lambda: S.scheduler_entries("host", 42, "uuid"), "asynq:schedulers:{host:42:uuid}"),
    (lambda: S.scheduler_history("entry"), "asynq:scheduler_history:entry"),
    (lambda: S.queue("default").prefix, "asynq:{default}:"),
    (lambda: S.queue("default").task_prefix, "asynq:{default}:t:"),
    (lambda: S.queue("default").task("abc"), "asynq:{default}:t:abc"),
    (lambda: S.queue("default").pending, "asynq:{default}:pending"),
    (lambda: S.queue("default").active, "asynq:{default}:active"),
    (lambda: S.queue("default").lease, "asynq:{default}:lease"),
    (lambda: S.queue("default").scheduled, "asynq:{default}:scheduled"),
    (lambda: S.queue("default").retry, "asynq:{default}:retry"),
    (lambda: S.queue("default").archived, "asynq:{default}:archived"),
    (lambda: S.queue("default").completed, "asynq:{default}:completed"),
    (lambda: S.queue("default").paused, "asynq:{default}:paused"),
    (lambda: S.queue("default").processed, "asynq:{default}:processed"),
    (lambda: S.queue("default").failed, "asynq:{default}:failed"),
    (lambda: S.queue("default").processed_day("2026-11-22"), "asynq:{default}:processed:2026-11-22"),
    (lambda: S.queue("default").failed_day("2026-11-22"), "asynq:{default}:failed:2026-11-22"),
    (lambda: S.queue("default").groups, "asynq:{default}:groups"),
    (lambda: S.queue("default").group("g1"), "asynq:{default}:g:g1"),
    (lambda: S.queue("default").aggregation_set("g1", "set-uuid"), "asynq:{default}:g:g1:set-uuid"),
    (lambda: S.queue("default").aggregation_sets, "asynq:{default}:aggregation_sets"),
    (
        lambda: S.queue("default").unique("email:send", b'{"to":"u@example.com"}'),
        "asynq:{default}:unique:email:send:a64cf318e15f3ff4697d9a55ea753855",
    ),
    (lambda: S.queue("default").unique("nopayload:task", None), "asynq:{default}:unique:nopayload:task:"),
    (lambda: S.queue("default").unique("empty", b""), "asynq:{default}:unique:empty:d41d8cd98f00b204e9800998ecf8427e"),
    (lambda: S.queue("weird:name {x}").pending, "asynq:{weird:name {x}}:pending"),
    (lambda: S.queue("weird:name {x}").task("golden-weird"), "asynq:{weird:name {x}}:t:golden-weird"),
    (lambda: S.queue("ünï cödé").pending, "asynq:{ünï cödé}:pending"),
    # keys of our own, for features asynq lacks: under "framework", hash-tagged by queue
    (lambda: S.wakeup_channel, "framework:wakeup"),
    (lambda: S.cron_entries, "framework:cron:entries"),
    (lambda: S.cron_last, "framework:cron:last"),
    (lambda: S.alive, "framework:alive"),
    (lambda: S.token("admin", "abc"), "framework:token:admin:abc"),
    (lambda: S.queue("default").xprefix, "framework:{default}:"),
    (lambda: S.queue("default").minute_stats("processed", 29_922_055), "framework:{default}:processed:m:29922055"),
    (lambda: S.queue("default").minute_stats("failed", 7), "framework:{default}:failed:m:7"),
    (lambda: S.queue("default").cron_claim("entry", 1_795_323_300), "framework:{default}:cron:entry:1795323300"),
    (lambda: S.queue("default").inflight("sid"), "framework:{default}:inflight:sid"),
    (lambda: S.queue("default").group_prefix(), "asynq:{default}:g:"),
    (S.token_index, "framework:tokens:index"),
    (lambda: S.rate_limit("admin-auth", "::1"), "framework:ratelimit:admin-auth:::1"),
    # plugins' keys, built by the plugins with ext_key: the values data was stored under before they moved
    (lambda: S.ext_key("cleanup", "last"), "framework:cleanup:last"),
    (
        lambda: S.ext_key("cleanup", "claim", "sweeper", hashlib.sha1(b"item", usedforsecurity=False).hexdigest()),
        "framework:cleanup:claim:sweeper:" + hashlib.sha1(b"item", usedforsecurity=False).hexdigest(),
    ),
    (lambda: S.ext_key("admin", "runs"), "framework:admin:runs"),
]


@pytest.mark.parametrize(("build", "expected"), ASYNQ_TABLE, ids=[key for _, key in ASYNQ_TABLE])
def test_asynq_namespace_key(build: Callable[[], str], expected: str) -> None:
    assert build() == expected


def test_defaults() -> None:
    assert (DEFAULT_NS, DEFAULT_EXT) == ("asynq", "framework")
    assert (S.ns, S.ext) == ("asynq", "framework")


def test_other_namespace_keeps_its_own_keys_apart() -> None:
    s = Schema("t1")
    assert s.ext == "t1:fw"
    assert s.all_queues == "t1:queues"
    assert s.queue("q").pending == "t1:{q}:pending"
    assert s.queue("q").minute_stats("processed", 1) == "t1:fw:{q}:processed:m:1"
    assert s.wakeup_channel == "t1:fw:wakeup"
    assert s.queue("q").inflight("sid") == "t1:fw:{q}:inflight:sid"
    # every key of the namespace, ours included, is under "<ns>:" so one SCAN finds them all
    for key in (s.wakeup_channel, s.alive, s.queue("q").cron_claim("e", 1), s.token("p", "d")):
        assert key.startswith("t1:")
    assert Schema("t1", ext="custom").queue("q").xprefix == "custom:{q}:"


def test_plugin_keys_live_under_the_plugins_name() -> None:
    assert Schema("t1").ext_key("reports", "last", "x:y") == "t1:fw:reports:last:x:y"
    assert S.ext_key("reports") == "framework:reports"
    for bad in ("", "a:b", "{q}", "a b", *sorted(CORE_SEGMENTS)):
        with pytest.raises(ValueError, match="invalid plugin name"):
            S.ext_key(bad, "x")


def test_plugins_cannot_take_a_key_the_framework_builds() -> None:
    """Every key of the framework's own under ``<ext>:`` starts with a segment ``ext_key`` refuses."""
    s = Schema()
    qk = s.queue("q")
    ours = [
        s.wakeup_channel,
        s.handoff_channel("sid"),
        s.cron_entries,
        s.cron_last,
        s.alive,
        s.death("sid"),
        s.token("p", "d"),
        s.token_index(),
        s.rate_limit("n", "c"),
        *s.limit("n", "k").script_keys(),
        s.limits_index(),
        s.queue_set_claim("pending-check", ["q"]),
        s.queue_set_claim("forward-pass", ["q"]),
    ]
    ext_keys = [k for k in ours if k.startswith(s.ext + ":")]
    assert len(ext_keys) == len(ours)
    assert {k.split(":")[1] for k in ext_keys} <= CORE_SEGMENTS
    assert qk.xprefix.split(":")[1].startswith("{")  # per-queue keys are hash-tagged: no plugin name has braces
    public = {name for name in vars(s) if not name.startswith("_")} | {
        name for name, value in vars(Schema).items() if callable(value) and not name.startswith("_")
    }
    known = {
        "ns", "ext", "all_queues", "servers", "workers", "schedulers", "cancel_channel", "wakeup_channel",
        "handoff_prefix", "cron_entries", "cron_last", "alive", "queue", "server", "worker_set",
        "scheduler_entries", "scheduler_history", "death", "handoff_channel", "token", "token_index",
        "rate_limit", "ext_key", "limit", "limits_index", "queue_set_claim",
    }  # fmt: skip
    assert public == known, f"a key was added to or removed from the schema: list it in ours above: {public ^ known}"


def test_queue_keys_are_cached_per_queue() -> None:
    s = Schema("t2")
    assert s.queue("a") is s.queue("a")
    assert s.queue("a") is not s.queue("b")


@pytest.mark.parametrize("queue", ["default", "weird:name {x}", "a}b", "{x}"])
def test_every_per_queue_key_has_the_same_cluster_slot(queue: str) -> None:
    """Redis Cluster hashes the text between the first ``{`` and the next ``}``: it must be the same for all."""
    qk = S.queue(queue)
    keys = [
        qk.task("id"),
        qk.pending,
        qk.active,
        qk.lease,
        qk.scheduled,
        qk.retry,
        qk.archived,
        qk.completed,
        qk.paused,
        qk.processed,
        qk.failed,
        qk.processed_day("2026-01-01"),
        qk.groups,
        qk.group("g"),
        qk.aggregation_set("g", "s"),
        qk.aggregation_sets,
        qk.unique("t", b"p"),
        qk.minute_stats("failed", 1),
        qk.cron_claim("e", 1),
        qk.inflight("sid"),
    ]
    tags = {_hash_tag(key) for key in keys}
    assert len(tags) == 1, tags


def _hash_tag(key: str) -> str:
    start = key.index("{")
    end = key.index("}", start + 1)
    return key[start + 1 : end]


# --- against the Go snapshot ------------------------------------------------------------------------


def _golden_key_builders() -> dict[str, str]:
    """Every key in the Go snapshot, rebuilt with the schema."""
    day = day_stamp(GOLDEN_TIME)
    built: dict[str, str] = {S.all_queues: S.all_queues}
    for key, rec in GOLDEN_KEYS.items():
        if rec["type"] == "hash":
            msg = decode_message(bytes.fromhex(rec["fields_hex"]["msg"]))  # type: ignore[index]
            built[key] = S.queue(msg.queue).task(msg.id)
            if msg.unique_key:
                built[msg.unique_key] = S.queue(msg.queue).unique(msg.type, msg.payload)
    for queue in GOLDEN_KEYS["asynq:queues"]["items"]:  # type: ignore[attr-defined]
        qk = S.queue(queue)
        for name in (
            qk.pending,
            qk.scheduled,
            qk.retry,
            qk.archived,
            qk.completed,
            qk.groups,
            qk.group("g1"),
            qk.processed,
            qk.failed,
            qk.processed_day(day),
            qk.failed_day(day),
        ):
            built[name] = name
    return built


def test_every_key_go_wrote_is_one_the_schema_builds() -> None:
    built = _golden_key_builders()
    for key in GOLDEN_KEYS:
        assert built.get(key) == key, f"the schema does not build Go's key {key!r}"


def test_golden_odd_queue_name_and_daily_counters() -> None:
    assert "asynq:{weird:name {x}}:pending" in GOLDEN_KEYS
    assert S.queue("weird:name {x}").pending == "asynq:{weird:name {x}}:pending"
    assert day_stamp(GOLDEN_TIME) == "2026-11-22"
    assert S.queue("t_retry").processed_day(day_stamp(GOLDEN_TIME)) in GOLDEN_KEYS
    assert S.queue("t_retry").failed_day(day_stamp(GOLDEN_TIME)) in GOLDEN_KEYS


def test_unique_key_is_md5_of_the_golden_payload() -> None:
    rec = GOLDEN_KEYS["asynq:{default}:t:golden-unique"]
    msg = decode_message(bytes.fromhex(rec["fields_hex"]["msg"]))  # type: ignore[index]
    digest = hashlib.md5(msg.payload, usedforsecurity=False).hexdigest()
    expected = f"asynq:{{default}}:unique:email:send:{digest}"
    assert expected in GOLDEN_KEYS  # the lock Go took
    assert GOLDEN_KEYS[expected]["type"] == "string"
    assert bytes.fromhex(GOLDEN_KEYS[expected]["hex"]) == b"golden-unique"  # type: ignore[arg-type]
    assert msg.unique_key == expected  # and the name Go stored in the message
    assert bytes.fromhex(rec["fields_hex"]["unique_key"]).decode() == expected  # type: ignore[index]
    assert S.queue("default").unique(msg.type, msg.payload) == expected


def test_unique_digest() -> None:
    assert unique_digest(None) == ""
    assert unique_digest(b"") == "d41d8cd98f00b204e9800998ecf8427e"
    assert unique_digest(b"\x00\xff") == hashlib.md5(b"\x00\xff", usedforsecurity=False).hexdigest()


def test_no_payload_unique_key_ends_in_colon() -> None:
    key = S.queue("nopayload").unique("nopayload:task", None)
    assert key == "asynq:{nopayload}:unique:nopayload:task:"
    assert key.endswith(":")


@pytest.mark.parametrize(
    ("unix", "day"),
    [
        (0, "1970-01-01"),
        (86_399, "1970-01-01"),
        (86_400, "1970-01-02"),
        (GOLDEN_TIME, "2026-11-22"),
        (1_798_761_599, "2026-12-31"),  # last second of the year, UTC whatever the local zone
        (1_798_761_600, "2027-01-01"),
    ],
)
def test_day_stamp_is_utc(unix: int, day: str) -> None:
    assert day_stamp(unix) == day
