"""A stand-in for a :class:`~framework.broker.broker.RedisBroker` that sees every call made to it.

:class:`BrokerProxy` forwards everything to the broker it wraps; each coroutine method call goes through
:meth:`BrokerProxy.intercept`, which subclasses override (:class:`~framework.testing.faults.FaultyBroker`
fails or delays calls, :func:`~framework.testing.draining.drain` records outcomes). It turns the lean
connection's shortcuts off (``lean`` and ``fast`` are None, ``handoff`` False), so the worker and the client reach Redis
only through the broker's methods: the worker listens through redis-py and registers as no enqueue's
waiter, and the client's prepared fast path stays unused.

Example::

    counts = collections.Counter()

    class Counting(BrokerProxy):
        async def intercept(self, name, call, args, kwargs):
            counts[name] += 1
            return await call(*args, **kwargs)

    worker = Worker(settings, tasks=[send_email], wrap_broker=Counting)
"""

from __future__ import annotations

import functools
import inspect
from typing import TYPE_CHECKING, Any

from framework.broker.broker import RedisBroker

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    _Stand = RedisBroker  # a proxy fits wherever a RedisBroker is expected (Worker, Client, Processor)
else:
    _Stand = object  # at run time it holds one and forwards to it

__all__ = ("BrokerProxy", "innermost")


class BrokerProxy(_Stand):
    """Forwards to ``inner``; every coroutine method call passes through :meth:`intercept`.

    Attributes are read from ``inner`` as they are now (its schema, clock, redis client, the queues it has
    registered), except ``lean`` and ``fast`` (None) and ``handoff`` (False): see the module docstring.

    Args:
        inner: the broker to forward to (a :class:`RedisBroker`, or another proxy).
    """

    def __init__(self, inner: RedisBroker) -> None:
        self.inner = inner
        self.lean = None
        self.fast = None
        self.handoff = False

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.inner, name)
        if name.startswith("_") or not inspect.iscoroutinefunction(value):
            return value

        @functools.wraps(value)  # its signature too, for a proxy around this one
        async def call(*args: Any, **kwargs: Any) -> Any:
            return await self.intercept(name, value, args, kwargs)

        return call

    async def intercept(
        self, name: str, call: Callable[..., Awaitable[Any]], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Run one call of method ``name`` (``call`` is ``inner``'s bound method); this one just forwards it."""
        return await call(*args, **kwargs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"


def innermost(broker: RedisBroker) -> RedisBroker:
    """The real broker under any number of proxies."""
    while isinstance(broker, BrokerProxy):
        broker = broker.inner
    return broker
