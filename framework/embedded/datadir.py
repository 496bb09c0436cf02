"""The data directory of an embedded Valkey: its files, the lock over them, and finding the server they name.

Everything the server of :mod:`framework.embedded.server` needs lives in that directory:

- ``valkey.sock``: the unix socket (mode 700) the server listens on. It has no TCP listener then.
- ``valkey.port``: only when the socket path would exceed the kernel's ``sun_path`` limit (107 bytes
  on Linux). The server then listens on a free port on 127.0.0.1, recorded here for other processes.
- ``valkey.pid``: the server's pid, written by the process that started it.
- ``valkey.lock``: an ``flock`` that serializes discovery, start and stop across processes.
- ``valkey.log`` and ``appendonlydir/``: the log and the AOF (``appendfsync everysec``, no RDB
  snapshots), so queued dev tasks survive restarts.

:meth:`ValkeyDataDir.discover` checks that the server the files point to answers for this directory, and
:meth:`ValkeyDataDir.clear_stale` removes what a crashed one left behind; the embedded server calls both
while it holds ``valkey.lock`` (:func:`flocked`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from framework.embedded.errors import EmbeddedValkeyError
from framework.embedded.launch import LOOPBACK, terminate_pid
from framework.embedded.probe import is_server_of, pid_alive, serving_pid

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ("ValkeyDataDir", "flocked", "read_int", "write_atomic")

_log = structlog.get_logger(__name__)

_MAX_UNIX_PATH = 107 if sys.platform.startswith("linux") else 103


class ValkeyDataDir:
    """The files of one embedded Valkey's data directory, and the server they point to.

    Args:
        path: the data directory (resolved).
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def socket_path(self) -> Path:
        """The unix socket the server listens on, unless the path is too long (then it uses TCP)."""
        return self.path / "valkey.sock"

    @property
    def pid_file(self) -> Path:
        """The file holding the server's pid."""
        return self.path / "valkey.pid"

    @property
    def port_file(self) -> Path:
        """The file recording the loopback port, used only when the socket path is too long."""
        return self.path / "valkey.port"

    @property
    def lock_file(self) -> Path:
        """The ``flock`` file serializing start, discovery and stop across processes."""
        return self.path / "valkey.lock"

    @property
    def log_file(self) -> Path:
        """The server's log file."""
        return self.path / "valkey.log"

    def socket_fits(self) -> bool:
        """Whether the socket path is within the kernel's ``sun_path`` limit (else the server listens on TCP)."""
        return len(os.fsencode(self.socket_path)) <= _MAX_UNIX_PATH

    def expected_url(self) -> str | None:
        """The URL the files point to (the socket, or the recorded port); None if there is neither."""
        if self.socket_fits():
            return f"unix://{self.socket_path}" if self.socket_path.exists() else None
        port = read_int(self.port_file)
        return f"redis://{LOOPBACK}:{port}" if port else None

    def discover(self, loading_timeout: float) -> tuple[str, int] | None:
        """The URL and pid of the server of this directory if one answers there; its pid is recorded.

        Args:
            loading_timeout: seconds to wait for a server that is still loading its AOF.
        """
        url = self.expected_url()
        if url is None:
            return None
        pid = serving_pid(url, self.path, loading_timeout)
        if pid is None:
            return None
        if read_int(self.pid_file) != pid:
            write_atomic(self.pid_file, f"{pid}\n")
        _log.debug("embedded_valkey_reused", url=url, pid=pid)
        return url, pid

    def clear_stale(self, stop_timeout: float) -> None:
        """Remove the pid file, port file and socket once no server answers for them, first stopping a hung one.

        Args:
            stop_timeout: seconds to wait for a hung server of this directory to exit on SIGTERM.
        """
        pid = read_int(self.pid_file)
        if pid is not None and pid != os.getpid() and pid_alive(pid) and is_server_of(pid, self.path):
            # A server of this directory that does not answer (hung, or its socket was deleted).
            _log.warning("embedded_valkey_unresponsive", pid=pid, data_dir=str(self.path))
            terminate_pid(pid, stop_timeout)
        stale = [path for path in (self.pid_file, self.port_file, self.socket_path) if path.exists()]
        for path in stale:
            path.unlink(missing_ok=True)
        if stale:
            _log.info("embedded_valkey_stale_removed", files=[path.name for path in stale])


@contextlib.contextmanager
def flocked(path: Path, timeout: float) -> Iterator[None]:
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
                        f"timed out after {timeout:g}s waiting for {path}: {_holder(fd)} holds it "
                        "(it is starting or stopping the server, or hangs; stop it, or use another data_dir)"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


def read_int(path: Path) -> int | None:
    """The integer at the start of ``path``; None if the file is missing or holds none."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, so no reader sees it half-written."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _holder(fd: int) -> str:
    """Which process holds the ``flock`` on the file open at ``fd``, as best Linux's ``/proc/locks`` tells."""
    st = os.fstat(fd)
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return "another process"
    for line in lines:
        fields = line.split()
        if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == inode and fields[4].isdigit():
            pid = int(fields[4])
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                command = ""
            return f"process {pid}" + (f" ({command.strip()})" if command.strip() else "")
    return "another process"
