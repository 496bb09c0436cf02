"""One-time tokens: issue, verify and consume expiring single-use secrets (password reset, email links).

A token is 43 random URL-safe characters (:func:`secrets.token_urlsafe`, 256 bits). Redis never sees it:
the record is stored under :meth:`Schema.token(purpose, sha256(token)) <framework.protocol.keys.Schema.token>`
with a TTL, so a leaked database dump cannot be turned into working links. Each token has a *purpose*
(``password-reset``, ``verify-email``); a token issued for one purpose is unknown to every other.

The record carries the *subject* (whom the token is for, such as a user id) and free JSON *data*::

    tokens = Tokens.from_services(services)
    token = await tokens.issue("password-reset", str(user.id), ttl=3600, data={"email": user.email})
    # ... mail a link with ``token`` ...
    record = await tokens.consume("password-reset", token_from_link)  # None: unknown, used or expired
    if record is not None:
        reset_password(record.subject)

:meth:`Tokens.consume` is atomic (``GETDEL``): of two requests with the same link, exactly one gets the
record. Redis drops a record when its TTL runs out; the index ZSET :meth:`Schema.token_index
<framework.protocol.keys.Schema.token_index>` (``<purpose>:<sha256>`` -> expiry) lets the ``tokens`` cleanup
sweeper trim the index with :meth:`Tokens.expired` and :meth:`Tokens.discard`. Each issue also drops the
entries of tokens that expired more than :data:`INDEX_GRACE` ago, so an app without that sweeper does not keep
an entry for every token never used.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
from typing import TYPE_CHECKING, Any

import msgspec

from framework.clock import Clock, SystemClock

if TYPE_CHECKING:
    from collections.abc import Mapping

    from redis.asyncio import Redis

    from framework.protocol.keys import Schema
    from framework.services import Services

__all__ = ("INDEX_GRACE", "MAX_TOKEN_CHARS", "MAX_TOKEN_TTL", "IndexEntry", "TokenRecord", "Tokens", "token_digest")

MAX_TOKEN_CHARS = 512
"""Longer strings are refused without asking Redis: no token this module issues is that long."""
MAX_TOKEN_TTL = 100 * 365 * 24 * 3600
"""The longest a token may stay valid, in seconds (a hundred years): Redis refuses an expiry much further off."""

INDEX_GRACE = 3600.0
"""Seconds past its expiry a token's index entry is kept for the cleanup sweeper; an issue then drops it."""

_PURPOSE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_ISSUE_ATTEMPTS = 3


class TokenRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What a token stands for. Written by :meth:`Tokens.issue`; returned by verify and consume.

    Attributes:
        purpose: what the token may be used for (``password-reset``).
        subject: whom it is for, such as a user id; set by the caller.
        data: extra JSON data given at issue (an email address to confirm, a redirect path).
        issued: Unix time it was issued.
        expires: Unix time after which it is no longer accepted.
    """

    purpose: str
    subject: str
    issued: float
    expires: float
    data: dict[str, Any] = msgspec.field(default_factory=dict)


class IndexEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of the token index, as listed by :meth:`Tokens.expired`.

    Attributes:
        purpose: the token's purpose.
        digest: SHA-256 hex of the token (never the token itself).
        expires: Unix time the token expires (expired) at.
        key: the Redis key of its record.
        stored: the member as stored, when it is not UTF-8 (no token of ours writes one, so it names no record;
            the other fields then show it with its bytes escaped); None otherwise.
    """

    purpose: str
    digest: str
    expires: float
    key: str
    stored: bytes | None = None

    @property
    def member(self) -> str:
        """The index member: ``<purpose>:<digest>``."""
        return f"{self.purpose}:{self.digest}"


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(TokenRecord).decode


def token_digest(token: str) -> str:
    """Return the SHA-256 hex digest under which ``token`` is stored."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _check_purpose(purpose: str) -> str:
    if not isinstance(purpose, str) or not _PURPOSE.match(purpose):
        raise ValueError(f"invalid token purpose {purpose!r}: use 1-64 of A-Z a-z 0-9 '_' '.' '-'")
    return purpose


def _usable(token: object) -> bool:
    """Whether ``token`` could be one this module issued: not empty, not too long, ASCII (as URL-safe Base64 is).

    Anything else is unknown without asking Redis, and without hashing it (a lone surrogate, which a JSON
    body parsed by :func:`json.loads` can hold, cannot be encoded for hashing).
    """
    return isinstance(token, str) and 0 < len(token) <= MAX_TOKEN_CHARS and token.isascii()


class Tokens:
    """Issues, verifies and consumes one-time tokens kept in Redis.

    Args:
        redis: the Redis client.
        schema: the key schema (its namespace decides where records live).
        clock: where time comes from; expiry is checked against it as well as by Redis' TTL.
    """

    __slots__ = ("clock", "redis", "schema")

    def __init__(self, redis: Redis, schema: Schema, *, clock: Clock | None = None) -> None:
        self.redis = redis
        self.schema = schema
        self.clock: Clock = clock or SystemClock()

    @classmethod
    def from_services(cls, services: Services, *, clock: Clock | None = None) -> Tokens:
        """Build the helper on the process's Redis and key schema."""
        return cls(services.redis, services.schema, clock=clock)

    async def issue(self, purpose: str, subject: str, *, ttl: float, data: Mapping[str, Any] | None = None) -> str:
        """Create a token and store its record for ``ttl`` seconds.

        Args:
            purpose: what the token is for; verify and consume must name the same purpose.
            subject: whom it is for (a user id, an email address).
            ttl: seconds the token stays valid; more than 0, at most :data:`MAX_TOKEN_TTL`.
            data: extra JSON-encodable data returned with the record.

        Returns:
            The token, to put in a link. Only its hash is stored; it cannot be recovered later.

        Raises:
            ValueError: the purpose or the TTL is invalid.
            TypeError: ``data`` cannot be encoded as JSON.
        """
        _check_purpose(purpose)
        if not (isinstance(ttl, int | float) and math.isfinite(ttl) and 0 < ttl <= MAX_TOKEN_TTL):
            raise ValueError(f"invalid token ttl {ttl!r}: give a number of seconds > 0, at most {MAX_TOKEN_TTL}")
        now = self.clock.now()
        record = TokenRecord(
            purpose=purpose, subject=str(subject), issued=now, expires=now + ttl, data=dict(data or {})
        )
        try:
            body = _encode(record)
        except (TypeError, msgspec.EncodeError) as exc:
            raise TypeError(f"token data is not JSON-encodable: {exc}") from exc
        millis = max(1, math.ceil(ttl * 1000))
        for _ in range(_ISSUE_ATTEMPTS):
            token = secrets.token_urlsafe(32)
            digest = token_digest(token)
            if await self.redis.set(self.schema.token(purpose, digest), body, px=millis, nx=True):
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.zadd(self.schema.token_index(), {f"{purpose}:{digest}": record.expires})
                    # the entries of tokens long expired: the index must not grow with every token never used
                    # where no cleanup sweeper runs (their records are gone with their TTL)
                    pipe.zremrangebyscore(self.schema.token_index(), "-inf", f"({now - INDEX_GRACE!r}")
                    await pipe.execute()
                return token
        raise RuntimeError("could not store a new token: every random token collided")  # pragma: no cover

    async def verify(self, purpose: str, token: str) -> TokenRecord | None:
        """Return the token's record without using it up, or None if it is unknown, used or expired."""
        _check_purpose(purpose)
        if not _usable(token):
            return None
        raw = await self.redis.get(self.schema.token(purpose, token_digest(token)))
        return self._valid(purpose, raw)

    async def consume(self, purpose: str, token: str) -> TokenRecord | None:
        """Use the token up and return its record; None if it is unknown, already used or expired.

        Atomic: when several callers consume the same token at once, exactly one gets the record.
        """
        _check_purpose(purpose)
        if not _usable(token):
            return None
        digest = token_digest(token)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.getdel(self.schema.token(purpose, digest))
            pipe.zrem(self.schema.token_index(), f"{purpose}:{digest}")
            raw, _ = await pipe.execute()
        return self._valid(purpose, raw)

    async def revoke(self, purpose: str, token: str) -> bool:
        """Invalidate the token; return whether it was still stored."""
        return await self.consume(purpose, token) is not None

    async def expired(self, before: float, *, offset: int = 0, limit: int = 500) -> list[IndexEntry]:
        """List index entries of tokens that expire before ``before``, soonest first.

        Args:
            before: a Unix time; entries expiring strictly earlier are listed.
            offset: entries to skip (for paging when nothing is discarded, as in a dry run).
            limit: at most this many entries.
        """
        rows = await self.redis.zrangebyscore(
            self.schema.token_index(), "-inf", f"({before!r}", start=offset, num=limit, withscores=True
        )
        out = []
        for row in rows:
            member, score = row[0], row[1]
            stored = None
            if isinstance(member, bytes):
                try:
                    text = member.decode()
                except UnicodeDecodeError:  # not one of ours: shown escaped, removed as stored (see discard)
                    text, stored = member.decode("utf-8", "backslashreplace"), member
            else:
                text = str(member)
            purpose, _, digest = text.rpartition(":")
            key = self.schema.token(purpose, digest)
            out.append(IndexEntry(purpose=purpose, digest=digest, expires=float(score), key=key, stored=stored))
        return out

    async def discard(self, entry: IndexEntry) -> int | None:
        """Remove an expired token's index entry and whatever remains of its record.

        Returns:
            The record bytes freed (0 when Redis had already expired it) if this call removed the
            entry, or None if another caller (a consume, a concurrent sweep) removed it first.
        """
        if entry.stored is not None:  # a member that is not UTF-8 names no record of ours: only the entry goes
            return 0 if await self.redis.zrem(self.schema.token_index(), entry.stored) else None
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrem(self.schema.token_index(), entry.member)
            pipe.strlen(entry.key)
            pipe.delete(entry.key)
            removed, size, _ = await pipe.execute()
        return int(size) if removed else None

    def _valid(self, purpose: str, raw: bytes | str | None) -> TokenRecord | None:
        if raw is None:
            return None
        try:
            record = _decode(raw)
        except msgspec.DecodeError:
            return None
        if record.purpose != purpose or record.expires <= self.clock.now():
            return None
        return record
