"""The event loop the framework's own processes run on: uvloop where it is installed, else asyncio's.

``framework worker``, ``scheduler`` and the supervisor's children run through :func:`run`; ``framework
run``/``web`` serve through uvicorn, which makes the same choice. uvloop cuts the worker's own cost per
task by about a quarter and a client's round trip by about a fifth; the setting ``event_loop``
(``FRAMEWORK_EVENT_LOOP``) chooses: ``auto`` (uvloop when importable), ``uvloop`` (required) or ``asyncio``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, TypeVar

from framework.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

__all__ = ("loop_factory", "run")

T = TypeVar("T")


def loop_factory(choice: str = "auto") -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The loop factory for ``choice``; None means asyncio's default loop.

    Raises:
        ConfigError: ``uvloop`` was asked for and is not installed.
    """
    if choice == "asyncio":
        return None
    try:
        import uvloop  # noqa: PLC0415 - optional; imported only when a loop is made
    except ImportError as exc:
        if choice == "uvloop":
            raise ConfigError("setting event_loop='uvloop' needs the uvloop package: pip install uvloop") from exc
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(coro: Coroutine[Any, Any, T], choice: str = "auto") -> T:
    """``asyncio.run(coro)`` on the loop ``choice`` names (see :func:`loop_factory`)."""
    with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
        return runner.run(coro)
