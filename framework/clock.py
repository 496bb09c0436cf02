"""Time, read through one seam so tests can control it."""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ("Clock", "SimulatedClock", "SystemClock")


class Clock(Protocol):
    """Where components read the time."""

    def now(self) -> float:
        """Return the current Unix time in seconds."""
        ...


class SystemClock:
    """The real wall clock."""

    __slots__ = ()

    def now(self) -> float:
        """Return ``time.time()``."""
        return time.time()


class SimulatedClock:
    """A clock that moves only when told to (tests).

    Args:
        start: the initial Unix time.
    """

    __slots__ = ("_now",)

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start

    def now(self) -> float:
        """Return the simulated time."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self._now += seconds

    def set(self, t: float) -> None:
        """Jump to Unix time ``t``."""
        self._now = t
