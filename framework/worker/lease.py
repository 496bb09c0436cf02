"""The :class:`Lease` on an in-flight task: valid until its expiry, extended by the heartbeat."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from framework.clock import Clock

__all__ = ("Lease",)


class Lease:
    """The worker's right to write a task's outcome.

    Once expired it is never valid again: the recoverer owns the task from then on.

    Args:
        clock: where time comes from.
        expires_at: Unix seconds when the lease ends.
    """

    __slots__ = ("_clock", "expires_at")

    def __init__(self, clock: Clock, expires_at: float) -> None:
        self._clock = clock
        self.expires_at = expires_at

    def is_valid(self) -> bool:
        """True while the lease has not run out."""
        return self._clock.now() < self.expires_at

    def extend(self, until: float) -> bool:
        """Move the expiry to ``until`` if the lease is still valid; returns whether it was extended."""
        if not self.is_valid():
            return False
        self.expires_at = max(self.expires_at, until)
        return True
