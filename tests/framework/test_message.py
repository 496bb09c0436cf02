"""Golden tests for the asynq wire messages (``framework.protocol.message``, ``framework.protocol.proto``).

``tests/data/asynq-golden.json`` is a Redis snapshot written by the real Go asynq v0.26. Header map
entries there are in Go's random order, so messages with headers are compared with the headers as
a map and every other byte exact. The literal vectors below were worked out by hand from the
protobuf encoding rules (and, where a field also occurs in the Go snapshot, checked against it).
"""

from __future__ import annotations

import ast
import json
import re
import tomllib
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2

import framework.protocol.proto
from framework.protocol.message import (
    SchedulerEnqueueEvent,
    SchedulerEntry,
    ServerInfo,
    TaskMessage,
    TaskState,
    WorkerInfo,
    decode_enqueue_event,
    decode_message,
    decode_scheduler_entry,
    decode_server_info,
    decode_worker_info,
    encode_enqueue_event,
    encode_message,
    encode_scheduler_entry,
    encode_server_info,
    encode_worker_info,
    new_message,
)
from framework.protocol.proto import asynq_pb2

GOLDEN = json.loads((Path(__file__).parent.parent / "data" / "asynq-golden.json").read_text(encoding="utf-8"))
GOLDEN_MSGS = {
    key: bytes.fromhex(value["fields_hex"]["msg"])
    for key, value in GOLDEN["keys"].items()
    if value["type"] == "hash" and "msg" in value["fields_hex"]
}


def golden(task_id: str) -> bytes:
    (data,) = (data for key, data in GOLDEN_MSGS.items() if key.endswith(f":t:{task_id}"))
    return data


# --- an independent protobuf wire reader, so that tests do not trust the code under test -------------


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, pos


def wire_fields(data: bytes) -> list[tuple[int, bytes, bytes]]:
    """Top-level fields as (number, whole record incl. tag, payload of a LEN field or b"")."""
    fields, pos = [], 0
    while pos < len(data):
        start = pos
        tag, pos = _varint(data, pos)
        number, wire_type = tag >> 3, tag & 7
        body = b""
        if wire_type == 0:
            _, pos = _varint(data, pos)
        elif wire_type == 2:
            length, pos = _varint(data, pos)
            body, pos = data[pos : pos + length], pos + length
        else:
            pytest.fail(f"unexpected wire type {wire_type}")
        fields.append((number, data[start:pos], body))
    assert pos == len(data)
    return fields


def split_map(data: bytes, number: int) -> tuple[bytes, dict[str, bytes]]:
    """Remove the entries of map field ``number``: (the other bytes, key -> raw value record).

    Each entry must hold exactly a key (field 1) then a value (field 2), as Go writes them.
    """
    rest, entries = b"", {}
    for field, record, body in wire_fields(data):
        if field != number:
            rest += record
            continue
        (key_no, _, key), (value_no, value_record, _) = wire_fields(body)
        assert (key_no, value_no) == (1, 2), body.hex()
        entries[key.decode()] = value_record
    return rest, entries


# --- Go golden snapshot ---------------------------------------------------------------------------------


def test_golden_snapshot_has_the_expected_messages() -> None:
    assert len(GOLDEN_MSGS) == 11
    assert any(split_map(data, 15)[1] for data in GOLDEN_MSGS.values())


@pytest.mark.parametrize("key", sorted(GOLDEN_MSGS))
def test_golden_message_round_trips(key: str) -> None:
    data = GOLDEN_MSGS[key]
    msg = decode_message(data)
    out = encode_message(msg)
    assert split_map(out, 15) == split_map(data, 15)
    if not msg.headers:
        assert out == data
    # decoding reads exactly what the Go side documented
    expected = dict(GOLDEN["keys"][key]["msg_decoded"])
    assert msg.payload.hex() == expected.pop("payload_hex")
    assert dict(msg.headers) == expected.pop("headers")
    assert {name: getattr(msg, name) for name in expected} == expected


def test_golden_headers_are_written_sorted_by_key() -> None:
    data = golden("golden-options")
    out = encode_message(decode_message(data))
    assert list(split_map(out, 15)[1]) == ["empty", "trace", "ünï"]
    assert out.endswith(
        bytes.fromhex("7a090a05656d70747912007a0c0a05747261636512036162637a0f0a05c3bc6ec3af120663c3b664c3a9")
    )


def test_new_message_matches_go_client() -> None:
    plain_payload = bytes.fromhex(GOLDEN["keys"]["asynq:{default}:t:golden-plain"]["msg_decoded"]["payload_hex"])
    plain = new_message(
        type="email:send", payload=plain_payload, id="golden-plain", queue="default", retry=25, timeout=1800, deadline=0
    )
    assert encode_message(plain) == golden("golden-plain")
    unique = new_message(
        type="email:send",
        payload=b'{"to":"u@example.com"}',
        id="golden-unique",
        queue="default",
        retry=25,
        timeout=1800,
        deadline=0,
        unique_key="asynq:{default}:unique:email:send:a64cf318e15f3ff4697d9a55ea753855",
    )
    assert encode_message(unique) == golden("golden-unique")
    group = new_message(
        type="notify:batch",
        payload=b'{"n":1}',
        id="golden-group",
        queue="default",
        retry=25,
        timeout=1800,
        deadline=0,
        group_key="g1",
    )
    assert encode_message(group) == golden("golden-group")
    options = new_message(
        type="report:generate",
        payload=b'{"user_id":7,"type":"monthly"}',
        id="golden-options",
        queue="critical",
        retry=5,
        timeout=30,
        deadline=4102444800,
        headers={"trace": "abc", "empty": "", "ünï": "cödé"},
    )
    assert split_map(encode_message(options), 15) == split_map(golden("golden-options"), 15)


def test_empty_payload_is_written_as_no_payload() -> None:
    nopayload = new_message(
        type="nopayload:task", payload=b"", id="golden-nopayload", queue="nopayload", retry=25, timeout=1800, deadline=0
    )
    assert encode_message(nopayload) == golden("golden-nopayload")
    assert 2 not in [field for field, _, _ in wire_fields(golden("golden-nopayload"))]
    # an explicit empty payload (12 00) reads as b"" and is dropped on re-encode, as Go does
    assert decode_message(bytes.fromhex("0a01741200")).payload == b""
    assert encode_message(decode_message(bytes.fromhex("0a01741200"))) == bytes.fromhex("0a0174")


def test_retry_and_complete_transitions_match_go_worker() -> None:
    msg = decode_message(golden("golden-retry"))
    assert (msg.retried, msg.last_failed_at) == (1, 1795323303)
    fresh = new_message(
        type="fail:retry", payload=b'{"x":1}', id="golden-retry", queue="t_retry", retry=3, timeout=1800, deadline=0
    )
    fresh.retried, fresh.error_msg, fresh.last_failed_at = 1, msg.error_msg, 1795323303
    assert encode_message(fresh) == golden("golden-retry")
    done = new_message(
        type="ok:keep",
        payload=b'{"x":3}',
        id="golden-completed",
        queue="t_completed",
        retry=25,
        timeout=1800,
        deadline=0,
        retention=3600,
    )
    done.completed_at = 1795323303
    assert encode_message(done) == golden("golden-completed")


# --- vectors of our own ---------------------------------------------------------------------------------

NEGATIVE_HEX = (
    "0a0174"  # 1 type "t"
    "1a0169"  # 3 id "i"
    "220171"  # 4 queue "q"
    "40ffffffffffffffffff01"  # 8 timeout -1: a 10-byte varint
    "48fbffffffffffffffff01"  # 9 deadline -5: a 10-byte varint
)

ALL_FIELDS_HEX = (
    "0a0a656d61696c3a73656e64"  # 1 type "email:send"
    "120100"  # 2 payload b"\x00"
    "1a0469642d31"  # 3 id "id-1"
    "220764656661756c74"  # 4 queue "default"
    "28ffffffff07"  # 5 retry 2**31-1
    "30ffffffffffffffffff01"  # 6 retried -1 (int32, still a 10-byte varint)
    "3a04626f6f6d"  # 7 error_msg "boom"
    "40ffffffffffffffff7f"  # 8 timeout 2**63-1
    "4880ae99a40f"  # 9 deadline 4102444800 (as in the Go snapshot)
    "520175"  # 10 unique_key "u"
    "58a7eb89d806"  # 11 last_failed_at 1795323303 (as in the Go snapshot)
    "6080a305"  # 12 retention 86400
    "68a7eb89d806"  # 13 completed_at 1795323303
    "720167"  # 14 group_key "g"
    "7a040a001200"  # 15 headers "" -> ""  (empty key and value are still written)
    "7a090a05656d7074791200"  # 15 headers "empty" -> ""
    "7a0c0a0574726163651203616263"  # 15 headers "trace" -> "abc"
    "7a1c0a08d0bad0bbd18ed1871210d0b7d0bdd0b0d187d0b5d0bdd0b8d0b5"  # 15 headers "ключ" -> "значение"
)

ALL_FIELDS: dict[str, Any] = {
    "type": "email:send",
    "payload": b"\x00",
    "id": "id-1",
    "queue": "default",
    "retry": 2**31 - 1,
    "retried": -1,
    "error_msg": "boom",
    "timeout": 2**63 - 1,
    "deadline": 4102444800,
    "unique_key": "u",
    "last_failed_at": 1795323303,
    "retention": 86400,
    "completed_at": 1795323303,
    "group_key": "g",
}
ALL_HEADERS = {"trace": "abc", "ключ": "значение", "": "", "empty": ""}


def test_negative_numbers_are_ten_byte_varints() -> None:
    msg = new_message(type="t", payload=b"", id="i", queue="q", retry=0, timeout=-1, deadline=-5)
    assert encode_message(msg).hex() == NEGATIVE_HEX
    decoded = decode_message(bytes.fromhex(NEGATIVE_HEX))
    assert (decoded.timeout, decoded.deadline, decoded.retry) == (-1, -5, 0)


def test_every_field_and_headers_vector() -> None:
    msg = TaskMessage(**ALL_FIELDS, headers=ALL_HEADERS)
    assert encode_message(msg).hex() == ALL_FIELDS_HEX
    decoded = decode_message(bytes.fromhex(ALL_FIELDS_HEX))
    assert {name: getattr(decoded, name) for name in ALL_FIELDS} == ALL_FIELDS
    assert dict(decoded.headers) == ALL_HEADERS
    assert encode_message(decoded).hex() == ALL_FIELDS_HEX


def test_header_order_does_not_depend_on_insertion_order() -> None:
    keys = ["b", "", "a", "ab", "\x00", "1", "10", "2", "é", "Z"]
    forward = new_message(type="t", payload=b"", id="i", queue="q", retry=0, timeout=0, deadline=0)
    backward = new_message(type="t", payload=b"", id="i", queue="q", retry=0, timeout=0, deadline=0)
    forward.headers.update(dict.fromkeys(keys, "v"))
    backward.headers.update(dict.fromkeys(reversed(keys), "v"))
    out = encode_message(forward)
    assert out == encode_message(backward)
    assert list(split_map(out, 15)[1]) == sorted(keys, key=str.encode)


def test_long_values_and_many_headers_are_sorted_and_kept() -> None:
    headers = {f"k{i:03d}" * (i % 40 + 1): "v" * (i * 7) for i in range(60)}
    headers["x" * 300] = "y" * 70_000  # multi-byte lengths for the entry, its key and its value
    msg = new_message(
        type="t" * 200, payload=bytes(range(256)) * 600, id="i", queue="q", retry=1, timeout=2, deadline=3
    )
    msg.headers.update(headers)
    out = encode_message(msg)
    rest, entries = split_map(out, 15)
    assert list(entries) == sorted(headers, key=str.encode)
    assert dict(decode_message(out).headers) == headers
    msg.ClearField("headers")
    assert rest == encode_message(msg)


def test_new_message_rejects_out_of_range_numbers() -> None:
    with pytest.raises(ValueError):
        new_message(type="t", payload=b"", id="i", queue="q", retry=2**31, timeout=0, deadline=0)
    with pytest.raises(ValueError):
        new_message(type="t", payload=b"", id="i", queue="q", retry=0, timeout=2**63, deadline=0)


# --- unknown fields ---------------------------------------------------------------------------------------

UNKNOWN_HEX = "98060a9a060568656c6c6f"  # field 99: varint 10, then field 99: LEN "hello"


def test_unknown_fields_survive_a_re_encode() -> None:
    original = golden("golden-retry")
    msg = decode_message(original + bytes.fromhex(UNKNOWN_HEX))
    msg.retried = 2
    out = encode_message(msg)
    expected = original.hex().replace("280330013a", "280330023a")
    assert expected != original.hex()
    assert out.hex() == expected + UNKNOWN_HEX


def test_unknown_fields_are_written_after_headers() -> None:
    original = golden("golden-options")
    msg = decode_message(original + bytes.fromhex(UNKNOWN_HEX))
    msg.retried = 1
    before = encode_message(msg)
    assert before.endswith(bytes.fromhex("7a0f0a05c3bc6ec3af120663c3b664c3a9" + UNKNOWN_HEX))
    assert split_map(before[: -len(bytes.fromhex(UNKNOWN_HEX))], 15)[1] == split_map(original, 15)[1]
    # encoding does not change the message: its headers and unknown fields are all still there
    assert encode_message(msg) == before
    assert len(msg.headers) == 3


def test_unknown_fields_read_before_known_ones_move_to_the_end() -> None:
    original = golden("golden-plain")
    msg = decode_message(bytes.fromhex(UNKNOWN_HEX) + original)
    assert encode_message(msg) == original + bytes.fromhex(UNKNOWN_HEX)


# --- invalid input ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\xff\xff\xff", id="truncated-varint"),
        pytest.param(b"\x0a\x05ab", id="truncated-string"),
        pytest.param(b"\x0f", id="bad-wire-type"),
        pytest.param(b"\x00", id="field-zero"),
        pytest.param(b"hello world", id="text"),
        pytest.param(b"\x0a\x02\xff\xfe", id="bad-utf8"),
        pytest.param(b'{"type":"email:send"}', id="json"),
    ],
)
def test_decode_garbage_raises_value_error(data: bytes) -> None:
    with pytest.raises(ValueError, match=r"^invalid asynq\.TaskMessage protobuf \(\d+ bytes, starting [0-9a-f]+\): "):
        decode_message(data)


def test_every_decoder_raises_value_error() -> None:
    for decode, name in [
        (decode_server_info, "ServerInfo"),
        (decode_worker_info, "WorkerInfo"),
        (decode_scheduler_entry, "SchedulerEntry"),
        (decode_enqueue_event, "SchedulerEnqueueEvent"),
    ]:
        with pytest.raises(ValueError, match=rf"invalid asynq\.{name} protobuf"):
            decode(b"\x0a\x05ab")


def test_empty_bytes_are_an_empty_message() -> None:
    assert encode_message(decode_message(b"")) == b""


# --- heartbeat and scheduler messages -----------------------------------------------------------------------

GO_ZERO_TIME_HEX = "088092b8c398feffffff01"  # Timestamp{seconds: -62135596800}: Go's zero time.Time


SERVER_INFO_HEX = (
    "0a0168"  # 1 host "h"
    "102a"  # 2 pid 42
    "1a0173"  # 3 server_id "s"
    "200a"  # 4 concurrency 10
    "2a0c0a08637269746963616c1006"  # 5 queues "critical" -> 6
    "2a0b0a0764656661756c741003"  # 5 queues "default" -> 3
    "2a070a036c6f771000"  # 5 queues "low" -> 0 (a zero value is still written in a map entry)
    "3a06616374697665"  # 7 status "active" (6 strict_priority false: omitted)
    "420808011080cab5ee01"  # 8 start_time {seconds 1, nanos 500000000}
    "4802"  # 9 active_worker_count 2
)


def test_server_info_vector() -> None:
    kwargs: dict[str, Any] = {
        "host": "h",
        "pid": 42,
        "server_id": "s",
        "concurrency": 10,
        "queues": {"low": 0, "default": 3, "critical": 6},
        "strict_priority": False,
        "status": "active",
        "active_worker_count": 2,
    }
    assert encode_server_info(**kwargs, start_time=1.5).hex() == SERVER_INFO_HEX
    start = datetime(1970, 1, 1, 0, 0, 1, 500000, tzinfo=UTC)
    assert encode_server_info(**kwargs, start_time=start).hex() == SERVER_INFO_HEX
    assert decode_server_info(bytes.fromhex(SERVER_INFO_HEX)) == ServerInfo(**kwargs, start_time=start)


def test_server_queues_are_sorted_by_name() -> None:
    names = ["default", "d", "default-low", "", "critical", "é"]
    data = encode_server_info(
        host="h",
        pid=1,
        server_id="s",
        concurrency=1,
        queues={name: len(name) for name in names},
        strict_priority=False,
        status="active",
        start_time=None,
        active_worker_count=0,
    )
    rest, entries = split_map(data, 5)
    assert list(entries) == sorted(names, key=str.encode)
    assert rest.hex() == "0a016810011a017320013a06616374697665420b" + GO_ZERO_TIME_HEX
    assert decode_server_info(data).queues == {name: len(name) for name in names}


def test_strict_priority_is_written() -> None:
    info = decode_server_info(
        encode_server_info(
            host="h",
            pid=1,
            server_id="s",
            concurrency=1,
            queues={},
            strict_priority=True,
            status="stopped",
            start_time=None,
            active_worker_count=0,
        )
    )
    assert (info.strict_priority, info.status, info.start_time, info.queues) == (True, "stopped", None, {})


def test_worker_info_vector() -> None:
    data = encode_worker_info(
        host="h",
        pid=7,
        server_id="s",
        task_id="t",
        task_type="x:y",
        task_payload=b"\x01",
        queue="q",
        start_time=datetime(2026, 11, 22, 4, 55, 3, tzinfo=UTC),
        deadline=None,
    )
    assert data.hex() == (
        "0a0168"  # 1 host
        "1007"  # 2 pid
        "1a0173"  # 3 server_id
        "220174"  # 4 task_id
        "2a03783a79"  # 5 task_type
        "320101"  # 6 task_payload
        "3a0171"  # 7 queue
        "420608a7eb89d806"  # 8 start_time 1795323303 (no nanos)
        "4a0b" + GO_ZERO_TIME_HEX  # 9 deadline: Go's zero time
    )
    assert decode_worker_info(data) == WorkerInfo(
        host="h",
        pid=7,
        server_id="s",
        task_id="t",
        task_type="x:y",
        task_payload=b"\x01",
        queue="q",
        start_time=datetime(2026, 11, 22, 4, 55, 3, tzinfo=UTC),
        deadline=None,
    )


def test_scheduler_entry_vector() -> None:
    data = encode_scheduler_entry(
        id="e",
        spec="@every 30s",
        task_type="t",
        task_payload=b"",
        enqueue_options=['Queue("x")', "MaxRetry(5)"],
        next_enqueue_time=1795323303,
        prev_enqueue_time=None,
    )
    assert data.hex() == (
        "0a0165"  # 1 id
        "120a40657665727920333073"  # 2 spec "@every 30s"
        "1a0174"  # 3 task_type (4 task_payload b"": omitted)
        "2a0a51756575652822782229"  # 5 'Queue("x")'
        "2a0b4d61785265747279283529"  # 5 "MaxRetry(5)"
        "320608a7eb89d806"  # 6 next_enqueue_time
        "3a0b" + GO_ZERO_TIME_HEX  # 7 prev_enqueue_time: never
    )
    assert decode_scheduler_entry(data) == SchedulerEntry(
        id="e",
        spec="@every 30s",
        task_type="t",
        task_payload=b"",
        enqueue_options=('Queue("x")', "MaxRetry(5)"),
        next_enqueue_time=datetime.fromtimestamp(1795323303, UTC),
        prev_enqueue_time=None,
    )


def test_enqueue_event_vectors() -> None:
    data = encode_enqueue_event("t1", 1795323303.25)
    assert data.hex() == "0a027431120b08a7eb89d8061080e59a77"  # nanos 250000000
    assert decode_enqueue_event(data) == SchedulerEnqueueEvent(
        task_id="t1", enqueue_time=datetime(2026, 11, 22, 4, 55, 3, 250000, tzinfo=UTC)
    )
    # the Unix epoch is an empty (but present) Timestamp; Go's zero time is None
    assert encode_enqueue_event("a", 0).hex() == "0a01611200"
    assert decode_enqueue_event(bytes.fromhex("0a01611200")).enqueue_time == datetime(1970, 1, 1, tzinfo=UTC)
    assert encode_enqueue_event("a", datetime(1, 1, 1, tzinfo=UTC)).hex() == "0a0161120b" + GO_ZERO_TIME_HEX
    assert decode_enqueue_event(bytes.fromhex("0a0161120b" + GO_ZERO_TIME_HEX)).enqueue_time is None
    # an absent Timestamp also reads as None
    assert decode_enqueue_event(bytes.fromhex("0a0161")).enqueue_time is None


def test_times_before_1970_and_other_zones() -> None:
    event = decode_enqueue_event(encode_enqueue_event("a", -1.25))
    assert event.enqueue_time == datetime(1969, 12, 31, 23, 59, 58, 750000, tzinfo=UTC)
    paris = datetime(2026, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=1)))
    assert encode_enqueue_event("a", paris) == encode_enqueue_event("a", datetime(2026, 1, 1, tzinfo=UTC))
    # a fraction that rounds up to a whole second carries into seconds
    assert encode_enqueue_event("a", 0.9999999999) == encode_enqueue_event("a", 1)


@pytest.mark.parametrize("bad", [datetime(2026, 1, 1), float("nan"), float("inf")])
def test_invalid_times_raise_value_error(bad: datetime | float) -> None:
    with pytest.raises(ValueError, match=r"naive datetime|not a finite number"):
        encode_enqueue_event("a", bad)


def test_out_of_range_timestamp_raises_value_error() -> None:
    far = encode_enqueue_event("a", 1e12)  # year 33658
    with pytest.raises(ValueError, match="outside years 1-9999"):
        decode_enqueue_event(far)


# --- the schema ---------------------------------------------------------------------------------------------


def test_task_state_values() -> None:
    assert [state.value for state in TaskState] == [
        "pending",
        "active",
        "scheduled",
        "retry",
        "archived",
        "completed",
        "aggregating",
    ]
    assert TaskState("retry") is TaskState.RETRY
    assert f"{TaskState.PENDING}" == "pending"


def _parse_proto(text: str) -> dict[str, tuple[tuple[str, int, str], ...]]:
    text = re.sub(r"//[^\n]*", "", text)
    messages = {}
    for name, body in re.findall(r"message\s+(\w+)\s*\{([^}]*)\}", text):
        fields = re.findall(r"([\w.<>, ]+?)\s+(\w+)\s*=\s*(\d+)\s*;", body)
        messages[name] = tuple((field, int(number), " ".join(kind.split())) for kind, field, number in fields)
    return messages


_SCALAR_NAMES = {
    descriptor_pb2.FieldDescriptorProto.TYPE_STRING: "string",
    descriptor_pb2.FieldDescriptorProto.TYPE_BYTES: "bytes",
    descriptor_pb2.FieldDescriptorProto.TYPE_INT32: "int32",
    descriptor_pb2.FieldDescriptorProto.TYPE_INT64: "int64",
    descriptor_pb2.FieldDescriptorProto.TYPE_BOOL: "bool",
}


def _spell(message: descriptor_pb2.DescriptorProto, field: descriptor_pb2.FieldDescriptorProto) -> str:
    """A field's type as ``asynq.proto`` spells it, read from a compiled descriptor."""
    if field.type == field.TYPE_MESSAGE:
        entries = {f".asynq.{message.name}.{nested.name}": nested for nested in message.nested_type}
        entry = entries.get(field.type_name)
        if entry is not None and entry.options.map_entry:
            key, value = (_spell(entry, f) for f in entry.field)
            return f"map<{key}, {value}>"
        return field.type_name.removeprefix(".")
    kind = _SCALAR_NAMES[field.type]
    return f"repeated {kind}" if field.label == field.LABEL_REPEATED else kind


def _generated_schema() -> tuple[descriptor_pb2.FileDescriptorProto, dict[str, tuple[tuple[str, int, str], ...]]]:
    """The file descriptor serialized into the checked-in ``asynq_pb2.py``, and its messages as in ``_parse_proto``."""
    file = descriptor_pb2.FileDescriptorProto.FromString(asynq_pb2.DESCRIPTOR.serialized_pb)
    schema = {
        message.name: tuple((field.name, field.number, _spell(message, field)) for field in message.field)
        for message in file.message_type
    }
    return file, schema


def test_generated_code_matches_the_proto_file() -> None:
    proto = (Path(framework.protocol.proto.__file__).parent / "asynq.proto").read_text(encoding="utf-8")
    assert 'syntax = "proto3";' in proto
    assert "package asynq;" in proto
    assert 'import "google/protobuf/timestamp.proto";' in proto
    file, schema = _generated_schema()
    assert (file.name, file.package, file.syntax, list(file.dependency)) == (
        "framework/protocol/proto/asynq.proto",
        "asynq",
        "proto3",
        ["google/protobuf/timestamp.proto"],
    )
    parsed = _parse_proto(proto)
    assert list(parsed) == ["TaskMessage", "ServerInfo", "WorkerInfo", "SchedulerEntry", "SchedulerEnqueueEvent"]
    assert schema == parsed
    # no field has explicit presence (a oneof, or proto3 "optional"): zero values stay unwritten, as in Go
    assert not [field.name for message in file.message_type for field in message.field if field.HasField("oneof_index")]
    assert TaskMessage.DESCRIPTOR.full_name == "asynq.TaskMessage"
    assert TaskMessage.DESCRIPTOR.file is asynq_pb2.DESCRIPTOR
    assert [field.number for field in TaskMessage.DESCRIPTOR.fields] == list(range(1, 16))


def test_generated_types_match_the_generated_code() -> None:
    # mypy trusts asynq_pb2.pyi: each class there declares the fields of the message it stands for
    stub = ast.parse(Path(asynq_pb2.__file__).with_suffix(".pyi").read_text(encoding="utf-8"))
    slots = {}
    for node in stub.body:
        if isinstance(node, ast.ClassDef):
            (value,) = (
                s.value for s in node.body if isinstance(s, ast.Assign) and ast.unparse(s.targets[0]) == "__slots__"
            )
            slots[node.name] = ast.literal_eval(value)
    _, schema = _generated_schema()
    assert slots == {name: tuple(field for field, _, _ in fields) for name, fields in schema.items()}


def test_generated_code_loads_on_the_protobuf_floor() -> None:
    # generated code refuses a protobuf runtime older than the protoc that wrote it (pinned in scripts/protoc)
    generated = Path(asynq_pb2.__file__).read_text(encoding="utf-8")
    (gencode,) = re.findall(r"^# Protobuf Python Version: ([\d.]+)$", generated, flags=re.MULTILINE)
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text(encoding="utf-8"))
    (floor,) = (dep.removeprefix("protobuf>=") for dep in pyproject["project"]["dependencies"] if "protobuf" in dep)
    assert tuple(map(int, gencode.split("."))) <= tuple(map(int, floor.split(".")))
