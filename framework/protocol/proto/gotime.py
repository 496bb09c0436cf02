"""Conversions between Python times and ``google.protobuf.Timestamp`` as Go's asynq writes them.

Go always writes a Timestamp sub-message, and writes its zero ``time.Time`` (0001-01-01 00:00 UTC)
as ``seconds = -62135596800``. Python's ``None`` stands for that zero time in both directions, so
Go tools display our "never" the way they display their own.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp

__all__ = ("GO_ZERO_TIME_SECONDS", "from_timestamp", "to_timestamp")

GO_ZERO_TIME_SECONDS = -62_135_596_800
"""``seconds`` of Go's zero ``time.Time`` (0001-01-01T00:00:00Z) in a Timestamp."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NANOS_PER_SECOND = 1_000_000_000


def to_timestamp(value: datetime | float | None) -> Timestamp:
    """Convert a time to a Timestamp.

    Args:
        value: An aware ``datetime``, Unix seconds as a number, or ``None`` for Go's zero time.

    Returns:
        The Timestamp, with ``nanos`` in ``[0, 1e9)`` as the protobuf spec requires.

    Raises:
        ValueError: If ``value`` is a naive datetime, or a number that is not finite.
    """
    if value is None:
        return Timestamp(seconds=GO_ZERO_TIME_SECONDS)
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            msg = f"naive datetime {value!r}: pass an aware datetime (e.g. tzinfo=UTC)"
            raise ValueError(msg)
        delta = value - _EPOCH
        return Timestamp(seconds=delta.days * 86_400 + delta.seconds, nanos=delta.microseconds * 1000)
    if not math.isfinite(value):
        msg = f"time {value!r} is not a finite number of Unix seconds"
        raise ValueError(msg)
    seconds = math.floor(value)
    nanos = round((value - seconds) * _NANOS_PER_SECOND)
    if nanos >= _NANOS_PER_SECOND:
        seconds, nanos = seconds + 1, nanos - _NANOS_PER_SECOND
    return Timestamp(seconds=seconds, nanos=nanos)


def from_timestamp(timestamp: Timestamp) -> datetime | None:
    """Convert a Timestamp to an aware UTC datetime.

    Args:
        timestamp: The Timestamp (an unset sub-message reads as all zeros, i.e. the Unix epoch).

    Returns:
        The time, truncated to microseconds, or ``None`` for Go's zero time.

    Raises:
        ValueError: If the time is outside what ``datetime`` can hold (years 1 to 9999).
    """
    if timestamp.seconds == GO_ZERO_TIME_SECONDS and timestamp.nanos == 0:
        return None
    try:
        return _EPOCH + timedelta(seconds=timestamp.seconds, microseconds=timestamp.nanos // 1000)
    except OverflowError as exc:
        msg = f"timestamp seconds={timestamp.seconds} nanos={timestamp.nanos} is outside years 1-9999"
        raise ValueError(msg) from exc
