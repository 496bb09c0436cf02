"""structlog configuration, done once per process, and :func:`get_logger`.

Log lines always go to standard error: standard output belongs to what a command prints (a table, or
the JSON of ``--json``), so ``framework tasks stats --json | jq`` sees nothing but JSON.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import structlog

__all__ = ("StderrLogger", "configure_default_logging", "configure_logging", "flush_streams", "get_logger")

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_configured = False


class StderrLogger:
    """A structlog logger that writes each line to the *current* ``sys.stderr``.

    The stream is looked up at every line rather than once at configuration, so a later redirection
    of ``sys.stderr`` (pytest's capture, click's test runner) is followed and a replaced stream that
    was closed is never written to. One ``write`` per line, under a lock: threads never interleave.
    """

    _lock = threading.Lock()

    def msg(self, message: str) -> None:
        """Write ``message`` and a newline to standard error."""
        stream = sys.stderr
        if stream is None:  # no console at all (pythonw)
            return
        with self._lock:
            stream.write(message + "\n")
            stream.flush()

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg

    @classmethod
    def _after_fork(cls) -> None:
        cls._lock = threading.Lock()  # a thread of the parent may have held it at the fork


os.register_at_fork(after_in_child=StderrLogger._after_fork)
_STDERR_LOGGER = StderrLogger()


def _stderr_logger_factory(*_args: Any) -> StderrLogger:
    return _STDERR_LOGGER


def _load_structlog() -> None:
    """Import structlog (unless it is already) without letting it import rich.

    ``structlog.dev`` imports rich, when installed, for pretty tracebacks (``rich.traceback``, ``rich.pretty``
    and attrs: about 40 ms of every command's start-up). The renderer configured here prints plain ones, so
    rich is hidden while structlog loads; it stays importable for everything else (the command tables). A
    structlog an application imported first is left as it is.
    """
    if "structlog" in sys.modules:
        return
    rich = sys.modules.get("rich")
    sys.modules["rich"] = None  # type: ignore[assignment] # `import rich` fails, which structlog expects
    try:
        import structlog  # noqa: F401, PLC0415
    finally:
        if rich is None:
            del sys.modules["rich"]
        else:
            sys.modules["rich"] = rich


def configure_logging(level: str = "info", fmt: str = "console", *, force: bool = False) -> None:
    """Configure structlog once (later calls are ignored unless ``force``).

    Args:
        level: ``debug``, ``info``, ``warning`` or ``error``.
        fmt: ``console`` (readable) or ``json`` (one JSON object per line).
        force: configure again even if already done.
    """
    global _configured  # noqa: PLW0603 - configuration is process-wide by nature
    if _configured and not force:
        return
    _load_structlog()
    import structlog  # noqa: PLC0415 - a command that only prints help never imports it (a fifth of its start-up)

    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=_stderr_logger_factory,
        cache_logger_on_first_use=True,
    )
    _configured = True


def configure_default_logging(level: str = "info", fmt: str = "console") -> None:
    """Configure logging unless it already is, by the framework or by the application itself.

    A plain script that builds a :class:`~framework.Client` or :class:`~framework.Worker` never calls
    :func:`configure_logging`, and structlog's own default prints every level, debug included, to
    standard output. The client and the worker call this first, so such a script logs at the
    settings' ``log_level`` (``info`` unless changed) to standard error, as the commands do; an
    application that configured structlog itself keeps its configuration.
    """
    _load_structlog()
    import structlog  # noqa: PLC0415

    if _configured or structlog.is_configured():
        return
    configure_logging(level, fmt)


class _LazyLogger:
    """A logger built at its first use: modules may take one at import time without importing structlog.

    Built then, it also follows the configuration made after the import (``framework`` configures logging
    when a command starts, after the plugins' modules were imported). Each method is looked up once.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._logger: Any = None

    def __getattr__(self, attr: str) -> Any:
        logger = self._logger
        if logger is None:
            import structlog  # noqa: PLC0415

            logger = self._logger = structlog.get_logger(self._name).bind(logger=self._name)
        value = getattr(logger, attr)
        if callable(value) and attr not in {"bind", "new", "unbind", "try_unbind"}:
            self.__dict__[attr] = value  # the next call finds it directly
        return value


def get_logger(name: str = "framework") -> structlog.typing.FilteringBoundLogger:
    """Return a structlog logger bound to ``logger=name`` (built at its first use)."""
    return cast("structlog.typing.FilteringBoundLogger", _LazyLogger(name))


def flush_streams() -> None:
    """Write out what ``sys.stdout`` and ``sys.stderr`` hold in their buffers, whatever state they are in.

    Before ``os._exit`` (which skips it) and before a fork (so nothing buffered is written twice).
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):  # closed, or no console at all
            stream.flush()
