"""Probing servers and processes: whether a pid is a live Valkey of a data directory, and who answers at a URL.

A server that answers is not yet ready while it loads its AOF; :func:`serving_pid` waits for that, and
:func:`server_state` reports it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import NamedTuple

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = ("ServerState", "is_server_of", "pid_alive", "ping", "server_state", "serving_pid")


def pid_alive(pid: int) -> bool:
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


def is_server_of(pid: int, data_dir: Path) -> bool:
    """Whether ``pid`` is a Valkey/Redis server running in ``data_dir`` (Linux; False where unknown)."""
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return False
    return ("valkey" in comm or "redis" in comm) and os.path.realpath(cwd) == str(data_dir)


def _client(url: str, timeout: float) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )


def ping(url: str, timeout: float = 1.0) -> bool:
    """Whether the server at ``url`` answers PING within ``timeout`` seconds."""
    try:
        with _client(url, timeout) as client:
            return bool(client.ping())
    except (redis.RedisError, OSError):
        return False


class ServerState(NamedTuple):
    """What a server at some URL says about itself."""

    pid: int | None
    loading: bool
    dir: str


def server_state(url: str, timeout: float = 1.0) -> ServerState | None:
    """Ask the server at ``url`` who it is; None if nothing answers there.

    INFO and CONFIG are served while the AOF loads, so answering is not the same as ready.
    """
    try:
        with _client(url, timeout) as client:
            info = client.info("server", "persistence")
            served = str(client.config_get("dir").get("dir", ""))
    except redis.BusyLoadingError:
        return ServerState(None, loading=True, dir="")
    except (redis.RedisError, OSError):
        return None
    return ServerState(int(info["process_id"]), loading=bool(info["loading"]), dir=served)


def serving_pid(url: str, data_dir: Path, loading_timeout: float) -> int | None:
    """The pid of the server at ``url`` if it serves ``data_dir``, once it has loaded its AOF."""
    deadline = time.monotonic() + loading_timeout
    while True:
        state = server_state(url, 2.0)
        if state is None or not (state.loading or os.path.realpath(state.dir) == str(data_dir)):
            return None
        if not state.loading:
            return state.pid
        if time.monotonic() > deadline:
            return None
        time.sleep(0.05)
