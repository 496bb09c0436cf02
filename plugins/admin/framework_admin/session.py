"""Signed admin sessions and CSRF tokens: HMAC-SHA256 over keys derived from the admin tokens. Pure; no I/O.

A session cookie is ``v1.<payload>.<signature>``: the payload is base64url JSON (role, name, expiry, a
random nonce) and the signature is HMAC-SHA256 of it under a key derived from the token of the
session's role. So a session only verifies while that token is unchanged (changing a token signs
everyone out), and someone holding the read-only token cannot forge an admin session.

Tokens are compared as SHA-256 digests with :func:`hmac.compare_digest`, so the comparison takes the
same time whatever the input and leaks nothing about the token's length.

Why not Litestar's session middleware (``litestar.middleware.session``, Litestar 2.25): its cookie
backend encrypts under one fixed secret (and needs ``cryptography``), so it could neither sign each
role with a key derived from that role's token (changing one token signs out that role only; the
read-only token cannot mint an admin session) nor be keyed by a token generated at start-up, and it
re-issues the cookie with a later expiry on every response, where ours ends ``session_hours`` after
sign-in. Its server-side backend adds a store read per request. Either one keeps the session in the
single ``scope["session"]`` slot, which the app's own session middleware may already use, and only
runs where it is mounted, while the admin's session also opens ``/schema`` and ``/metrics``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from framework_admin.models import Role

__all__ = (
    "SessionData",
    "digest",
    "new_csrf_token",
    "same_token",
    "sign_session",
    "tokens_match",
    "verify_session",
)

_VERSION = "v1"
_KEY_LABEL = b"framework-admin/session/v1\x00"
_MAX_COOKIE = 4096


def digest(token: str) -> bytes:
    """The SHA-256 digest of a token, the only form in which tokens are compared."""
    return hashlib.sha256(token.encode("utf-8")).digest()


def tokens_match(given: str, expected_digest: bytes | None) -> bool:
    """Whether ``given`` is the token whose digest is ``expected_digest`` (constant time)."""
    if expected_digest is None or not given:
        return False
    return hmac.compare_digest(digest(given), expected_digest)


def same_token(a: str, b: str) -> bool:
    """Compare two CSRF tokens in constant time; empty tokens never match."""
    if not a or not b:
        return False
    return hmac.compare_digest(digest(a), digest(b))


def new_csrf_token() -> str:
    """A fresh random CSRF token (the double-submit cookie's value)."""
    return secrets.token_urlsafe(32)


def _key(role: str, token: str) -> bytes:
    return hashlib.sha256(_KEY_LABEL + role.encode() + b"\x00" + token.encode("utf-8")).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionData:
    """What a verified session cookie says.

    Attributes:
        role: ``admin`` or ``readonly``.
        name: the name given at login (for the audit log).
        expires: Unix time after which the session is refused.
    """

    __slots__ = ("expires", "name", "role")

    def __init__(self, role: Role, name: str, expires: float) -> None:
        self.role: Role = role
        self.name = name
        self.expires = expires


def sign_session(role: Role, name: str, token: str, expires: float) -> str:
    """Build a session cookie value for ``role``, signed with a key derived from that role's ``token``.

    Args:
        role: ``admin`` or ``readonly``.
        name: who signed in (kept for the audit log).
        token: the current token of ``role``.
        expires: Unix time at which the session ends.
    """
    body = {"r": role, "n": name, "e": int(expires), "i": secrets.token_urlsafe(12)}
    payload = _b64(json.dumps(body, separators=(",", ":")).encode())
    signature = _b64(hmac.new(_key(role, token), payload.encode(), hashlib.sha256).digest())
    return f"{_VERSION}.{payload}.{signature}"


def verify_session(value: str, tokens: dict[str, str], now: float) -> SessionData | None:
    """Check a session cookie.

    Args:
        value: the cookie's value.
        tokens: role -> that role's current token (roles without a token are absent).
        now: the current Unix time.

    Returns:
        The session, or ``None`` when the value is malformed, forged, signed with an old token or expired.
    """
    if not value or len(value) > _MAX_COOKIE or value.count(".") != 2:
        return None
    version, payload, signature = value.split(".")
    if version != _VERSION:
        return None
    try:
        body = json.loads(_unb64(payload))
        role, name, expires = body["r"], body["n"], float(body["e"])
    except (ValueError, KeyError, TypeError):
        return None
    token = tokens.get(role) if isinstance(role, str) else None
    if token is None or not isinstance(name, str):
        return None
    expected = _b64(hmac.new(_key(role, token), payload.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(expected.encode(), signature.encode()) or expires <= now:
        return None
    return SessionData(role, name, expires)
