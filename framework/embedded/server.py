"""The embedded Valkey server: the Redis the framework runs itself when no ``REDIS_URL`` is set.

:class:`EmbeddedValkey` manages one ``valkey-server`` per application data directory. Everything it
needs lives in that directory: the socket (or recorded port), the pid file, the lock, the log and the
AOF, so queued dev tasks survive restarts (:mod:`framework.embedded.datadir` lists the files).

Ownership and lifetime:

- The first process to call :meth:`EmbeddedValkey.ensure` starts the server and *owns* it. Another
  process of the same app (a separate ``framework worker``) finds it, checks that it answers and that
  ``CONFIG GET dir`` is this data directory, and reuses it without owning it.
- The server lives exactly as long as its owner. It is started with ``PR_SET_PDEATHSIG=SIGTERM``,
  so it stops even when the owner is killed with SIGKILL; Valkey fsyncs the AOF on that SIGTERM. It
  runs in its own session, so a Ctrl-C in the terminal reaches the app but not the server, and the
  app can still requeue work during its graceful shutdown. A clean exit of the owner stops it too.
- Reusers do not keep the server alive: a cross-process reference count could not survive a SIGKILL
  of the owner anyway. When the owner exits, a reuser's connections fail until :meth:`~EmbeddedValkey.ensure`
  (cheap, a PING, while the server is up) or :meth:`~EmbeddedValkey.revive` is called again. The first
  caller after the owner's death restarts the server on the same AOF and becomes the new owner.
- A long-running command keeps the server up (:class:`~framework.embedded.keeper.ValkeyKeeper`): when
  the server's process exits (it crashed, or its owner, another command, stopped), it is started again
  on the same socket (or port) and AOF, so connections made to the old one reconnect.
- Crash leftovers are cleaned up under the lock. A pid file whose process is gone, or a socket or
  recorded port that does not answer for this directory, is stale and removed. A server of this
  directory that is alive but does not answer is terminated before a new one is started, so two
  servers never share one AOF.

Its parts: the binary (:mod:`framework.embedded.binary`), launching and stopping (:mod:`framework.embedded.launch`),
probing (:mod:`framework.embedded.probe`), the data directory (:mod:`framework.embedded.datadir`) and the test
servers (:mod:`framework.embedded.process`). Their public names are importable from here too.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import subprocess
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Self

import structlog

from framework.embedded.binary import find_server_binary
from framework.embedded.datadir import ValkeyDataDir, flocked, read_int, write_atomic
from framework.embedded.errors import AddressInUseError, EmbeddedValkeyError
from framework.embedded.launch import LOOPBACK, PORT_ATTEMPTS, free_port, launch, log_tail, stop_process
from framework.embedded.probe import pid_alive, ping

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ("EmbeddedValkey",)

_log = structlog.get_logger(__name__)


class EmbeddedValkey:
    """The Valkey server of one data directory: started by the first process, reused by the others.

    See the module docstring for the ownership rules and the restart semantics, and
    :mod:`framework.embedded.datadir` for the files. The methods block (up to the start timeout); call
    them through ``asyncio.to_thread`` from async code. Instances are thread-safe.

    Args:
        data_dir: the application's data directory; created (mode 700) if missing.
        start_timeout: seconds to wait for a started server to answer PING.
        stop_timeout: seconds to wait for a server to exit on SIGTERM before it is killed.
        lock_timeout: seconds to wait for another process that holds ``valkey.lock``.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        start_timeout: float = 10.0,
        stop_timeout: float = 10.0,
        lock_timeout: float = 30.0,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._lock_timeout = lock_timeout
        self._mutex = threading.RLock()
        self._url: str | None = None
        self._pid: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._owner_pid: int | None = None
        self._port: int | None = None

        self._files = ValkeyDataDir(self.data_dir)

    @property
    def socket_path(self) -> Path:
        """The unix socket the server listens on, unless the path is too long (then it uses TCP)."""
        return self._files.socket_path

    @property
    def pid_file(self) -> Path:
        """The file holding the server's pid."""
        return self._files.pid_file

    @property
    def port_file(self) -> Path:
        """The file recording the loopback port, used only when the socket path is too long."""
        return self._files.port_file

    @property
    def lock_file(self) -> Path:
        """The ``flock`` file serializing start, discovery and stop across processes."""
        return self._files.lock_file

    @property
    def log_file(self) -> Path:
        """The server's log file."""
        return self._files.log_file

    @property
    def url(self) -> str:
        """The redis URL of the server (``unix://...`` or ``redis://127.0.0.1:PORT``).

        Raises:
            EmbeddedValkeyError: :meth:`ensure` has not been called yet.
        """
        if self._url is None:
            raise EmbeddedValkeyError(f"embedded Valkey for {self.data_dir} is not running: call ensure() first")
        return self._url

    @property
    def pid(self) -> int | None:
        """The server's pid, or None before :meth:`ensure`."""
        return self._pid

    @property
    def owned(self) -> bool:
        """Whether this process started the server (and so stops it on :meth:`stop` and at exit)."""
        proc = self._proc
        return proc is not None and self._owner_pid == os.getpid() and proc.poll() is None

    def ensure(self) -> str:
        """Return the server's URL, starting the server if none is running for this data directory.

        Cheap when the server is up (one PING), so reconnect logic may call it after every connection
        failure: if the owner has exited meanwhile, this call restarts the server on the same AOF and
        this process becomes the owner.

        Returns:
            The redis URL.

        Raises:
            EmbeddedValkeyError: no binary, the server did not start in time, or the lock timed out.
        """
        with self._mutex:
            if self._owner_pid is not None and self._owner_pid != os.getpid():
                self._disown()  # forked from the owner: the server is the parent's, not ours
            if self._url is not None and self._alive():
                return self._url
            try:
                self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
                with flocked(self.lock_file, self._lock_timeout):
                    found = self._files.discover(self._start_timeout)
                    if found is None:
                        self._files.clear_stale(self._stop_timeout)
                        found = self._start()
                    elif self._proc is not None and self._proc.pid != found[1]:
                        self._disown()
                    self._url, self._pid = found
                    self._port = _port_of(self._url)
            except OSError as exc:
                raise EmbeddedValkeyError(
                    f"embedded Valkey cannot use its data directory {self.data_dir}: {_why(exc, self.data_dir)}; "
                    "make it a writable directory, set data_dir (FRAMEWORK_DATA_DIR) to one, "
                    "or set REDIS_URL to an external Redis"
                ) from exc
            return self._url

    def revive(self) -> bool:
        """Start the server again if its process has exited since :meth:`ensure`; a no-op while it runs.

        Unlike :meth:`ensure`, this looks at the server's process, not at whether it answers: a server
        that is alive but slow (a long command, an AOF rewrite) is left alone. Another process may have
        restarted the server meanwhile; then this one reuses it.

        Returns:
            Whether the server had exited (and was started again, or found started by another process).

        Raises:
            EmbeddedValkeyError: the server did not start again (the message says why).
        """
        with self._mutex:
            if self._url is None or self._pid is None or self._server_running():
                return False
            proc, pid = self._proc, self._pid
            status = proc.poll() if proc is not None else None
            _log.warning(
                "embedded_valkey_died",
                pid=pid,
                status=status,
                data_dir=str(self.data_dir),
                log=log_tail(self.log_file, 5) if proc is not None else None,
            )
            url = self.ensure()
            _log.info("embedded_valkey_restarted", url=url, pid=self._pid, owned=self.owned)
            return True

    def stop(self) -> None:
        """Stop the server if this process owns it; otherwise only forget it (a reuser never stops it)."""
        with self._mutex:
            proc = self._proc
            if proc is not None and self._owner_pid == os.getpid():
                lock = (
                    flocked(self.lock_file, self._lock_timeout) if self.data_dir.is_dir() else contextlib.nullcontext()
                )
                with lock:
                    stop_process(proc, self._stop_timeout)
                    if read_int(self.pid_file) == proc.pid:
                        for path in (self.pid_file, self.port_file, self.socket_path):
                            path.unlink(missing_ok=True)
                _log.info("embedded_valkey_stopped", pid=proc.pid, data_dir=str(self.data_dir))
            self._disown()
            self._url = None
            self._pid = None

    def __enter__(self) -> Self:
        self.ensure()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _alive(self) -> bool:
        if self._url is None or self._pid is None:
            return False
        return self._server_running() and ping(self._url)

    def _server_running(self) -> bool:
        """Whether the server's process runs (ours: not exited; another's: its pid is alive)."""
        if self._proc is not None and self._proc.pid == self._pid:
            return self._proc.poll() is None
        return self._pid is not None and pid_alive(self._pid)

    def _start(self) -> tuple[str, int]:
        binary = find_server_binary()
        if self._files.socket_fits():
            url = f"unix://{self.socket_path}"
            listen = ["--port", "0", "--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
            proc = launch(binary, self.data_dir, listen, url, appendfsync="everysec", timeout=self._start_timeout)
        else:
            url, proc = self._start_tcp(binary)
        self._disown()
        self._proc = proc
        self._owner_pid = os.getpid()
        atexit.register(self._stop_at_exit)
        write_atomic(self.pid_file, f"{proc.pid}\n")
        _log.info("embedded_valkey_started", url=url, pid=proc.pid, data_dir=str(self.data_dir))
        return url, proc.pid

    def _start_tcp(self, binary: Path) -> tuple[str, subprocess.Popen[bytes]]:
        """Start on the port this instance last used, if any (clients of the old server reconnect), else a free one."""
        previous = [self._port] if self._port is not None else []
        for port in itertools.chain(previous, (free_port() for _ in range(PORT_ATTEMPTS))):
            url = f"redis://{LOOPBACK}:{port}"
            try:
                listen = ["--port", str(port)]
                proc = launch(binary, self.data_dir, listen, url, appendfsync="everysec", timeout=self._start_timeout)
            except AddressInUseError:
                continue
            write_atomic(self.port_file, f"{port}\n")
            return url, proc
        raise EmbeddedValkeyError(f"no free loopback port could be bound after {PORT_ATTEMPTS} attempts")

    def _disown(self) -> None:
        if self._proc is not None:
            atexit.unregister(self._stop_at_exit)
        self._proc = None
        self._owner_pid = None

    def _stop_at_exit(self) -> None:
        if self._owner_pid == os.getpid():
            self.stop()


def _port_of(url: str) -> int | None:
    """The TCP port of a ``redis://host:port`` URL; None for a unix socket."""
    if not url.startswith("redis://"):
        return None
    return int(url.rpartition(":")[2])


def _why(exc: OSError, data_dir: Path) -> str:
    """What is wrong with ``data_dir``, from the error of creating or using it."""
    if data_dir.exists() and not data_dir.is_dir():
        return "it exists and is not a directory"
    reason = exc.strerror or str(exc)
    return f"{reason} ({exc.filename})" if exc.filename and str(exc.filename) != str(data_dir) else reason
