"""Byte-level help for protobuf output: putting map entries in key order.

Go writes map entries in random order, so any order is valid on the wire; we want one order that
does not depend on the protobuf backend or its version. ``SerializeToString(deterministic=True)``
is not enough: the pure-Python backend sorts keys bytewise, but upb puts a key after every longer
key it is a prefix of (``"ab"`` before ``"a"``). :func:`sort_map_entries` re-sorts the entries of
one map field bytewise (the order of Go's own deterministic mode) without re-encoding anything.
"""

from __future__ import annotations

__all__ = ("sort_map_entries",)

_LEN = 2  # wire type of length-delimited fields (strings, bytes, messages, map entries)
_CONTINUE = 0x80  # high bit of a varint byte: more bytes follow


def _uvarint(data: bytes, pos: int) -> tuple[int, int]:
    """Read the unsigned varint at ``pos``; return it and the position after it."""
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < _CONTINUE:
            return result, pos
        shift += 7


def _length(data: bytes, pos: int) -> tuple[int, int]:
    """Read a length at ``pos`` (usually a single byte); return it and the position after it."""
    if data[pos] < _CONTINUE:
        return data[pos], pos + 1
    return _uvarint(data, pos)


def sort_map_entries(data: bytes, field: int) -> bytes:
    """Return ``data`` with the entries of map field ``field`` sorted bytewise by key.

    ``data`` must be a message serialized by protobuf: known fields in number order (one-byte tags,
    so ``field`` <= 15), each map's entries contiguous and each entry's key written first, then any
    unknown fields. Only the entries move; all other bytes are kept as they are.

    Args:
        data: The serialized message.
        field: The number of a ``map<string, ...>`` field.

    Returns:
        The bytes with that map's entries in key order (``data`` itself when there is nothing to do).
    """
    tag = field << 3 | _LEN
    size = len(data)
    pos = 0
    while pos < size and data[pos] != tag:  # skip the known fields before the map
        key = data[pos]
        if key >> 3 > field:  # past where the map would be: it is empty
            return data
        if key & 7 == 0:
            pos += 1
            while data[pos] & _CONTINUE:
                pos += 1
            pos += 1
        elif key & 7 == _LEN:
            length, pos = _length(data, pos + 1)
            pos += length
        else:  # fixed-size wire types: not used by the asynq messages before a map
            return data
    start = pos
    keyed: list[tuple[bytes, bytes]] = []
    while pos < size and data[pos] == tag:
        length, body = _length(data, pos + 1)
        key_length, key_start = _length(data, body + 1)  # entry field 1 (the key) comes first
        end = body + length
        keyed.append((data[key_start : key_start + key_length], data[pos:end]))
        pos = end
    if len(keyed) < 2:
        return data
    keyed.sort()
    return b"".join((data[:start], *(record for _, record in keyed), data[pos:]))
