"""A lean Pub/Sub subscriber: the worker's wake-up, cancel and handoff channels on one plain socket.

redis-py's ``PubSub.listen()`` costs a task switch and tens of microseconds of Python per message; on the
path from an enqueue to the handler of an idle worker that is a large share. :class:`Subscriber` is a
:class:`~framework.transport.lean.connection.RespConnection` in subscribe mode: each message is parsed by hiredis in the
socket's read callback and handed to ``on_message(channel, data)`` there and then, synchronously.

Used for what :func:`~framework.transport.lean.paths.fast_path_for` accepts (a single server over TCP or a Unix
socket, or a Sentinel-managed primary, whose subscriber is closed when the primary moves, so that its owner
subscribes again on the new one); Cluster keeps redis-py's Pub/Sub.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import hiredis

from framework.transport.lean.client import RespClient
from framework.transport.lean.connection import RespConnection
from framework.transport.lean.pipe import NOT_ENOUGH_DATA

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ("Subscriber",)


class Subscriber(RespConnection):
    """One subscribed connection; see the module docstring.

    Args:
        client: the :class:`~framework.transport.lean.connection.RespClient` whose server and credentials to use.
        on_message: called with ``(channel, data)`` (bytes) for every message, from the read callback.
    """

    def __init__(self, client: RespClient, on_message: Callable[[bytes, bytes], None]) -> None:
        super().__init__(client.address, **client.options)
        self._on_message = on_message
        self._subscribing = False
        self._expected = 0
        self._confirmed: asyncio.Future[None] | None = None
        self._lost: asyncio.Future[Exception] | None = None

    async def subscribe(self, channels: Sequence[str | bytes]) -> None:
        """Connect and subscribe to ``channels``; returns once the server confirmed every one."""
        await self.open()
        loop = asyncio.get_running_loop()
        self._lost = loop.create_future()
        self._confirmed = loop.create_future()
        self._expected = len(channels)
        self._subscribing = True
        self._write(hiredis.pack_command(("SUBSCRIBE", *channels)))  # type: ignore[arg-type]
        await asyncio.shield(self._confirmed)

    async def wait_closed(self) -> Exception:
        """Wait until the connection is lost or closed; returns why."""
        assert self._lost is not None, "subscribe() first"
        return await asyncio.shield(self._lost)

    def _dispatch(self) -> None:
        if not self._subscribing:
            super()._dispatch()  # the handshake's replies
            return
        reader = self._reader
        reply: Any = reader.gets()
        while reply is not NOT_ENOUGH_DATA:
            self._deliver(reply)
            reply = reader.gets()

    def _deliver(self, reply: Any) -> None:
        if not isinstance(reply, list) or len(reply) < 3:
            return
        kind = reply[0]
        if kind == b"message":
            self._on_message(reply[1], reply[2])
        elif kind == b"subscribe":
            self._expected -= 1
            if self._expected <= 0 and self._confirmed is not None and not self._confirmed.done():
                self._confirmed.set_result(None)

    def _fail(self, exc: Exception) -> None:
        super()._fail(exc)
        self._subscribing = False
        confirmed, lost = self._confirmed, self._lost
        if confirmed is not None and not confirmed.done():
            confirmed.set_exception(exc)
            confirmed.exception()
        if lost is not None and not lost.done():
            lost.set_result(exc)
