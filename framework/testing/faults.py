"""Redis faults on demand: a broker that fails or delays chosen calls, then lets them through again.

A :class:`Faults` plan says which broker methods misbehave and how; :meth:`Faults.wrap` puts a
:class:`FaultyBroker` around a real :class:`~framework.broker.broker.RedisBroker`. Hand ``faults.wrap`` to a
worker or client (their ``wrap_broker`` argument) and every broker they build follows the plan:

* :meth:`Faults.fail`: the next ``times`` calls raise (redis-py's ``ConnectionError`` unless told otherwise,
  ``TimeoutError`` for a slow server), then calls pass through again; ``times=None`` fails until
  :meth:`Faults.clear`;
* :meth:`Faults.delay`: calls wait before they run (a slow server);
* :attr:`Faults.calls` and :attr:`Faults.injected` count what was called and what was done to it.

Method names are the broker's: ``enqueue`` (any client enqueue: pending, scheduled, unique, grouped),
``enqueue_many``, ``dequeue``, ``done``, ``mark_complete``, ``retry``, ``archive``, ``requeue``, ``forward``,
``recover``, ``write_result``, ... (an unknown name is refused, and the message lists them). The worker's
heartbeat thread writes leases and liveness on a blocking connection of its own, which no plan reaches.

Example::

    async def test_a_lost_ack_is_written_again(settings, client, faults):  # the pytest plugin's fixtures
        info = await client.enqueue(send_email, SendEmail(to="ada@example.com"))
        faults.fail("done", times=3)  # redis-py's ConnectionError, three times
        result = await drain(Worker(settings, tasks=[send_email], wrap_broker=faults.wrap))
        assert result.succeeded == [info.id]  # the worker wrote the ack again until Redis answered
        assert faults.injected["done"] == 3

    async def test_enqueue_reports_redis_down(redis, schema, faults):
        client = Client(redis, schema=schema, wrap_broker=faults.wrap)
        faults.fail("enqueue", times=None, error=TimeoutError)
        with pytest.raises(RedisUnavailable):
            await client.enqueue(send_email, SendEmail(to="ada@example.com"))
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from collections import Counter
from typing import TYPE_CHECKING, Any

from redis.exceptions import ConnectionError  # noqa: A004 - redis-py's, which the framework handles

from framework.broker.broker import Broker, RedisBroker
from framework.broker.enqueue import EnqueueSide
from framework.broker.maintenance import Maintenance
from framework.broker.transitions import WorkerTransitions
from framework.testing.proxy import BrokerProxy

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

__all__ = ("Faults", "FaultyBroker", "InjectedFault")

_ENQUEUE = "enqueue"


class InjectedFault(Exception):
    """Mixed into every error a :class:`Faults` plan raises, so a test can tell injected faults from real ones."""


@dataclasses.dataclass
class _Rule:
    error: type[BaseException] | BaseException | None
    delay: float
    times: int | None
    after: int


def _methods() -> list[str]:
    """The broker's public coroutine methods, the names a plan accepts.

    The broker answers for the methods of its parts (and may hold them as descriptors), so a name counts when
    the broker has it and it is a coroutine function of the broker, its :class:`Broker` protocol or a part.
    """
    coroutines = {
        name
        for cls in (RedisBroker, Broker, EnqueueSide, WorkerTransitions, Maintenance)
        for name, _ in inspect.getmembers(cls, inspect.iscoroutinefunction)
    }
    return sorted(name for name in coroutines if not name.startswith("_") and hasattr(RedisBroker, name))


class Faults:
    """Which broker calls fail or are slow; shared by every :class:`FaultyBroker` it wraps.

    Attributes:
        calls: calls seen per method name, including those that failed.
        injected: faults applied per method name (failures and delays).
    """

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()
        self._rules: dict[str, _Rule] = {}

    def wrap(self, broker: RedisBroker) -> RedisBroker:
        """``broker`` behind a :class:`FaultyBroker` following this plan (pass as ``wrap_broker=faults.wrap``)."""
        return FaultyBroker(broker, self)

    def fail(
        self,
        method: str,
        *,
        times: int | None = 1,
        error: type[BaseException] | BaseException = ConnectionError,
        after: int = 0,
        delay: float = 0.0,
    ) -> None:
        """Make calls of ``method`` raise ``error``, replacing any earlier rule for it.

        Args:
            method: the broker method, for example ``"dequeue"`` or ``"enqueue"``.
            times: how many calls fail, after which calls pass through again; None: every call, until
                :meth:`clear`.
            error: the exception raised: a class (made with a message naming the method, and
                :class:`InjectedFault` mixed in) or an instance (raised as it is). Use redis-py's
                ``ConnectionError`` or ``TimeoutError`` for what the framework meets when Redis is down or slow.
            after: calls let through before the first failure.
            delay: seconds each failing call waits before it raises (a timeout that takes its time).

        Raises:
            ValueError: ``method`` is not a broker method, or ``times``, ``after`` or ``delay`` is negative.
        """
        self._set(method, _Rule(error, delay, times, after))

    def delay(self, method: str, seconds: float, *, times: int | None = None, after: int = 0) -> None:
        """Make calls of ``method`` wait ``seconds`` before they run, replacing any earlier rule for it.

        Args:
            method: the broker method.
            seconds: how long each call waits.
            times: how many calls are delayed; None: every call, until :meth:`clear`.
            after: calls let through at full speed first.

        Raises:
            ValueError: ``method`` is not a broker method, or a number is negative.
        """
        self._set(method, _Rule(None, seconds, times, after))

    def clear(self, method: str | None = None) -> None:
        """Let calls of ``method`` (default: every method) through again; the counters are kept.

        Raises:
            ValueError: ``method`` is not a broker method (a misspelt name would leave its fault in place).
        """
        if method is None:
            self._rules.clear()
        else:
            _check_method(method)
            self._rules.pop(method, None)

    def _set(self, method: str, rule: _Rule) -> None:
        _check_method(method)
        if (rule.times is not None and rule.times < 1) or rule.after < 0 or rule.delay < 0:
            raise ValueError(
                f"times={rule.times!r}, after={rule.after!r}, delay={rule.delay!r}: times is at least 1 (or None), "
                "after and delay are not negative"
            )
        self._rules[method] = rule

    async def apply(self, method: str) -> None:
        """Count one call of ``method`` and apply its rule: wait, raise, or nothing."""
        self.calls[method] += 1
        rule = self._rules.get(method)
        if rule is None:
            return
        if rule.after:
            rule.after -= 1
            return
        if rule.times is not None:
            rule.times -= 1
            if rule.times == 0:
                del self._rules[method]
        self.injected[method] += 1
        if rule.delay:
            await asyncio.sleep(rule.delay)
        if rule.error is not None:
            raise _error(rule.error, method, self.injected[method])


def _check_method(method: str) -> None:
    """Refuse a name that is not a broker method, listing those that are."""
    known = _methods()
    if method not in known:
        raise ValueError(f"{method!r} is not a broker method; use one of: {', '.join(known)}")


_KINDS: dict[type[BaseException], type[BaseException]] = {}


def _error(error: type[BaseException] | BaseException, method: str, n: int) -> BaseException:
    """The exception to raise for the ``n``-th fault of ``method``."""
    if isinstance(error, BaseException):
        return error
    kind = _KINDS.get(error)
    if kind is None:
        try:
            kind = type(error.__name__, (error, InjectedFault), {"__module__": error.__module__})
        except TypeError:  # a built-in whose layout cannot be combined: raised without the marker
            kind = error
        _KINDS[error] = kind
    return kind(f"injected fault #{n} in broker.{method}()")


class FaultyBroker(BrokerProxy):
    """A broker that follows a :class:`Faults` plan, passing every call on to ``inner`` once its rule allows.

    Client enqueues count as ``enqueue`` calls however the client runs them: through :meth:`enqueue`, or by
    running the script :meth:`prepare_enqueue` chose on :attr:`hot` (this broker marks the script, and its
    ``hot`` applies the plan to marked scripts). ``enqueue_many`` is a method of its own.

    Args:
        inner: the real broker.
        faults: the plan (default: a new, empty one, at :attr:`faults`).
    """

    def __init__(self, inner: RedisBroker, faults: Faults | None = None) -> None:
        super().__init__(inner)
        self.faults = faults if faults is not None else Faults()

    async def intercept(
        self, name: str, call: Callable[..., Awaitable[Any]], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Apply the plan's rule for ``name``, then make the call."""
        await self.faults.apply(name)
        if name == "enqueue_many" and args:
            args = (_unmarked(args[0]), *args[1:])
        return await call(*args, **kwargs)

    def prepare_enqueue(self, *args: Any, **kwargs: Any) -> Any:
        """``inner``'s choice of script, keys and args, the script marked so running it counts as ``enqueue``."""
        script, keys, argv = self.inner.prepare_enqueue(*args, **kwargs)
        return _MarkedScript(script), keys, argv

    def __getattr__(self, name: str) -> Any:
        if name == "hot":  # what the client runs a prepared enqueue on
            return _MarkedRunner(self.inner.hot, self.faults)
        return super().__getattr__(name)


class _MarkedScript:
    """A script from :meth:`FaultyBroker.prepare_enqueue`: running it on the broker's ``hot`` is an ``enqueue``."""

    def __init__(self, script: Any) -> None:
        self.script = script

    def __getattr__(self, name: str) -> Any:  # sha, source, name: what runners read
        return getattr(self.script, name)


class _MarkedRunner:
    """The broker's hot-path runner, applying the plan when it is asked to run a marked script."""

    def __init__(self, inner: Any, faults: Faults) -> None:
        self.inner = inner
        self.faults = faults

    async def evalsha(self, script: Any, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        if isinstance(script, _MarkedScript):
            await self.faults.apply(_ENQUEUE)
            script = script.script
        return await self.inner.evalsha(script, keys, args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _unmarked(calls: Sequence[tuple[Any, Any, Any]]) -> list[tuple[Any, Any, Any]]:
    """Prepared calls with their scripts unmarked (``enqueue_many`` is counted as itself, not per task)."""
    return [(s.script if isinstance(s, _MarkedScript) else s, k, a) for s, k, a in calls]
