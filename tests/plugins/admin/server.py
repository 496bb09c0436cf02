"""The app served for real by uvicorn on a free port, in a background thread with its own event loop.

Browser tests are synchronous (Playwright's sync API must not run inside an asyncio loop), so the
server lives in another thread; :meth:`LiveServer.call` runs a coroutine on the server's loop, with
the app's services, to enqueue tasks or read state.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn

from framework.embedded.launch import free_port

__all__ = ("LiveServer",)


class LiveServer:
    """Serve ``app`` on 127.0.0.1 and a free port until :meth:`stop`."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._serve, name=f"live-server-{self.port}", daemon=True)

    def _serve(self) -> None:
        self.loop = asyncio.new_event_loop()
        try:
            self.loop.run_until_complete(self.server.serve())
        finally:
            self.loop.close()

    def start(self, timeout: float = 20.0) -> LiveServer:
        """Start serving; return once the server accepts connections."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the live server did not start")
            time.sleep(0.02)
        return self

    def call(self, work: Callable[[Any], Awaitable[Any]], timeout: float = 10.0) -> Any:
        """Run ``work(services)`` on the server's loop and return its result."""
        assert self.loop is not None
        services = self.app.state.framework_services
        return asyncio.run_coroutine_threadsafe(work(services), self.loop).result(timeout)

    def stop(self) -> None:
        """Shut down (lifespan shutdown included) and wait for the thread."""
        self.server.should_exit = True
        self._thread.join(timeout=30)
