"""structlog configuration, done once per process, and :func:`get_logger`."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

__all__ = ("configure_logging", "get_logger")

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_configured = False


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
    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
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
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    _configured = True


def get_logger(name: str = "framework") -> structlog.typing.FilteringBoundLogger:
    """Return a structlog logger bound to ``logger=name``."""
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name).bind(logger=name)
    return logger
