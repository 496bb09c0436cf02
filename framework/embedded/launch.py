"""Launching and stopping ``valkey-server`` processes, and picking a free loopback port for one.

:func:`launch` starts a server in a directory and waits until it answers (and has loaded its AOF). The
server gets ``PR_SET_PDEATHSIG=SIGTERM``, so it stops when the process that started it dies, even by
SIGKILL; it runs in its own session, so a Ctrl-C in the terminal does not reach it.

PDEATHSIG is Linux-only. Elsewhere the server outlives a killed owner, and the next ``ensure()``
reuses it through the pid file and socket.

:func:`spawn` is the starting half alone, for servers whose readiness the caller checks itself (the
test fixtures' cluster nodes and sentinels).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING

from framework.embedded.errors import AddressInUseError, EmbeddedValkeyError
from framework.embedded.probe import pid_alive, server_state

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

__all__ = (
    "LOOPBACK",
    "PORT_ATTEMPTS",
    "free_port",
    "launch",
    "log_tail",
    "spawn",
    "stop_process",
    "terminate_pid",
)

LOOPBACK = "127.0.0.1"
PORT_ATTEMPTS = 5
"""Free ports tried before giving up, when another process takes the chosen one first."""
_PR_SET_PDEATHSIG = 1
_POLL = 0.02
_LOG_TAIL_LINES = 20


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free at the time of the call.

    Another process may take it before it is bound, so callers that bind it must retry on failure.

    Returns:
        The port number.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def launch(
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
        *("--bind", LOOPBACK, "--protected-mode", "yes", "--databases", "16", "--save", ""),
        *aof,
        *("--dir", str(directory), "--logfile", str(log_file), "--daemonize", "no"),
    ]
    try:
        proc = spawn(args, directory, log_file)
    except OSError as exc:
        raise EmbeddedValkeyError(f"cannot run {binary} in {directory}: {exc.strerror or exc}") from exc
    _wait_ready(proc, url, log_file, offset, timeout)
    return proc


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log_file: Path, offset: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (state := server_state(url, 0.5)) is None or state.pid != proc.pid or state.loading:
        code = proc.poll()
        if code is None and time.monotonic() < deadline:
            time.sleep(_POLL)
            continue
        if code is None:
            stop_process(proc, 1.0)
        tail = _log_tail(log_file, offset, _LOG_TAIL_LINES)
        if "already in use" in tail:
            raise AddressInUseError(f"{url}: address already in use")
        what = f"exited with code {code}" if code is not None else f"did not answer PING within {timeout:g}s"
        raise EmbeddedValkeyError(f"valkey-server for {url} {what}; last lines of {log_file}:\n{tail}")


def spawn(args: list[str], cwd: Path, log_file: Path) -> subprocess.Popen[bytes]:
    """Start ``args`` in ``cwd`` as a server that stops when this process dies, without waiting for it to answer.

    The child gets ``PR_SET_PDEATHSIG=SIGTERM`` and its own session, and its stdout and stderr are
    appended to ``log_file``. It is forked from a dedicated thread that then waits for (and reaps) it:
    PR_SET_PDEATHSIG fires when the *thread* that forked the child ends, not the process, so forking
    from a short-lived thread (``asyncio.to_thread``, a pool) would kill the server when that thread
    ends. The forking thread here lives as long as the server, or until this process exits.

    :func:`launch` uses it for a plain server; the test fixtures use it for cluster nodes and sentinels,
    which they configure and wait for themselves.

    Args:
        args: the command line, the executable first.
        cwd: the child's working directory.
        log_file: where its output goes (opened for appending).

    Returns:
        The child process.
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


def stop_process(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Stop our child ``proc``: SIGTERM, then SIGKILL after ``timeout`` seconds; no-op if it has exited."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def terminate_pid(pid: int, timeout: float) -> None:
    """Stop a process that is not our child: SIGTERM, then SIGKILL after ``timeout`` seconds."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return
            time.sleep(_POLL)
    raise EmbeddedValkeyError(f"process {pid} did not exit after SIGKILL")


def log_tail(log_file: Path, lines: int) -> str:
    """The last ``lines`` lines of a server's log file (what it said before it exited), for error messages."""
    try:
        size = log_file.stat().st_size
    except OSError:
        return "(no log)"
    return _log_tail(log_file, max(0, size - 8192), lines)


def _log_tail(log_file: Path, offset: int, lines: int) -> str:
    try:
        with log_file.open("rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"
