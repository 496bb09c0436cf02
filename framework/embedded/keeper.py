"""Keeping the embedded Valkey up for a long-running command: restart it when it dies, with back-off.

A command that serves (``run``, ``web``, ``worker``, ``scheduler``, the ``--processes`` supervisor)
connects once to the URL of its data directory's server. If that server's process exits (it crashed,
was killed, or it belonged to another command of the same app that has stopped), nothing would start it
again: the command would go on, failing every Redis call. :class:`ValkeyKeeper` watches the server's
process and starts it again on the same socket (or port) and AOF, so the command's connections
reconnect to it; see :meth:`EmbeddedValkey.revive <framework.embedded.server.EmbeddedValkey.revive>`.

The first death is restarted at once (``embedded_valkey_died``, with the server's last log lines, then
``embedded_valkey_restarted``). A server that does not start again (``embedded_valkey_restart_failed``,
with the reason) or keeps dying within :data:`QUICK_DEATH` seconds of its restart
(``embedded_valkey_crash_loop``) is restarted after a back-off that doubles from 1 s to 30 s, so a crash
loop is visible in the log and costs little.

:func:`kept` is what the commands use: ensure the server, keep it up, and stop it at the end if ours.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import TYPE_CHECKING

import structlog

from framework.embedded.errors import EmbeddedValkeyError
from framework.embedded.server import EmbeddedValkey

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

__all__ = ("MAX_BACKOFF", "QUICK_DEATH", "ValkeyKeeper", "kept")

QUICK_DEATH = 10.0
"""A server that dies within this many seconds of its restart counts towards the back-off."""
MAX_BACKOFF = 30.0
"""The longest wait between two restarts of a server that keeps dying or does not start."""

_log = structlog.get_logger(__name__)


class ValkeyKeeper:
    """Restarts one :class:`EmbeddedValkey` whenever its process has exited, with back-off.

    Call :meth:`check` periodically (the supervisor does, from its loop), or :meth:`start` a thread
    that does. The server must have been started (or found) with ``ensure()`` first.

    Args:
        valkey: the server to keep up.
        interval: seconds between two checks of the thread started by :meth:`start`.
    """

    def __init__(self, valkey: EmbeddedValkey, *, interval: float = 0.5) -> None:
        self.valkey = valkey
        self.interval = interval
        self.restarts = 0
        self._failures = 0
        self._restarted_at: float | None = None
        self._next_try = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> None:
        """Restart the server if its process has exited and no back-off is pending; never raises."""
        now = time.monotonic()
        if now < self._next_try:
            return
        quick = self._restarted_at is not None and now - self._restarted_at < QUICK_DEATH
        try:
            restarted = self.valkey.revive()
        except EmbeddedValkeyError as exc:
            self._back_off(now, "embedded_valkey_restart_failed", str(exc))
            return
        if not restarted:
            return
        self.restarts += 1
        self._restarted_at = time.monotonic()
        if quick:  # it died within seconds of the last restart: the next one waits
            self._back_off(now, "embedded_valkey_crash_loop", "the server died within seconds of its restart")
        else:
            self._failures = 0

    def _back_off(self, now: float, event: str, error: str) -> None:
        self._failures += 1
        delay = min(MAX_BACKOFF, 2.0 ** (self._failures - 1))
        self._next_try = now + delay
        _log.error(event, data_dir=str(self.valkey.data_dir), error=error, failures=self._failures, retry_in=delay)

    def start(self) -> None:
        """Run :meth:`check` every ``interval`` seconds in a daemon thread, until :meth:`stop`."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"valkey-keeper:{self.valkey.data_dir}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (if any), waiting for a restart in progress to finish."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.check()


@contextlib.contextmanager
def kept(data_dir: Path) -> Iterator[EmbeddedValkey]:
    """Start (or find) the embedded server of ``data_dir``, keep it up meanwhile, and stop it at the end if ours.

    Args:
        data_dir: the server's data directory (the app's ``data_path / "valkey"``).

    Raises:
        EmbeddedValkeyError: the server could not be started (the message says why).
    """
    valkey = EmbeddedValkey(data_dir)
    valkey.ensure()
    keeper = ValkeyKeeper(valkey)
    keeper.start()
    try:
        yield valkey
    finally:
        keeper.stop()
        valkey.stop()
