"""Errors of inspector actions that are refused because of the state of a task or queue."""

from __future__ import annotations

from framework.errors import FrameworkError

__all__ = ("InvalidTaskState", "QueueNotEmpty")


class InvalidTaskState(FrameworkError):
    """The action does not apply to a task in that state (an active task, or one already there)."""


class QueueNotEmpty(FrameworkError):
    """A queue still has tasks, so it cannot be removed (without ``force``, or while tasks are active)."""
