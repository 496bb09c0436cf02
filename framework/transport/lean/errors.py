"""Error replies of the lean connection, and the redis-py exceptions they stand for.

hiredis hands an error reply over as a :class:`ReplyError` (each connection counts them, so a caller can tell
whether a reply held any); :func:`error_of` turns one into the exception redis-py raises for it
(``NOSCRIPT`` -> ``NoScriptError``, ...), so callers handle them as they would redis-py's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from redis.exceptions import (
    AskError,
    AuthenticationError,
    BusyLoadingError,
    ClusterDownError,
    ConnectionError,  # noqa: A004
    MovedError,
    NoScriptError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ("REDIRECTIONS", "DemotedReply", "ReplyError", "counting_errors", "error_of")

_ERRORS: tuple[tuple[str, type[ResponseError] | type[ConnectionError]], ...] = (
    ("NOSCRIPT", NoScriptError),
    ("READONLY", ReadOnlyError),
    ("LOADING", BusyLoadingError),
    ("NOAUTH", AuthenticationError),
    ("WRONGPASS", AuthenticationError),
)
_CLUSTER_REPLIES: tuple[tuple[str, type[ResponseError]], ...] = (
    ("MOVED ", MovedError),
    ("ASK ", AskError),
    ("TRYAGAIN ", TryAgainError),
    ("CLUSTERDOWN ", ClusterDownError),
)
"""A Cluster's answers, given (as redis-py does) the text after the code: ``MOVED 3999 127.0.0.1:6381``
becomes ``MovedError("3999 127.0.0.1:6381")``, whose ``slot_id`` and ``node_addr`` redis-py parses."""
REDIRECTIONS: tuple[type[ResponseError], ...] = (AskError, TryAgainError, ClusterDownError)
"""A Cluster's refusals of a command, which did not run and may be sent again (``MovedError`` is an ``AskError``)."""


class ReplyError(Exception):
    """An error reply as hiredis hands it over; turned into redis-py's exception by :func:`error_of`."""


class DemotedReply(ReplyError):
    """A ``READONLY`` reply from the server a Sentinel-managed connection took for the primary: it is a replica now.

    :func:`error_of` makes it a ``ConnectionError`` (the connection is failed right after), as redis-py's
    Sentinel-managed connections do.
    """


def counting_errors(count: list[int]) -> Callable[[str], ReplyError]:
    """The ``replyError`` for ``hiredis.Reader``: makes a :class:`ReplyError`, counting them in ``count[0]``."""

    def make(text: str) -> ReplyError:
        count[0] += 1
        return ReplyError(text)

    return make


def error_of(reply: BaseException) -> Exception:
    """The redis-py exception for an error reply (``NOSCRIPT`` -> ``NoScriptError``, ...)."""
    text = str(reply)
    if type(reply) is DemotedReply:
        return ConnectionError(f"the primary is a replica now: {text}")
    for prefix, cls in _ERRORS:
        if text.startswith(prefix):
            return cls(text)
    for prefix, redirection in _CLUSTER_REPLIES:
        if text.startswith(prefix):
            return redirection(text[len(prefix) :])
    return ResponseError(text)
