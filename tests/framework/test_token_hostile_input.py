"""One-time tokens given what no link carries: text a JSON body can hold but no issued token contains is unknown.

Issued tokens are URL-safe Base64 (ASCII). A lone surrogate, which :func:`json.loads` accepts from ``"\\ud800"``,
cannot even be hashed; it, and any other non-ASCII text, must be an unknown token rather than an error.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from framework.web.tokens import Tokens

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from framework.protocol.keys import Schema

BODY = '{"token": "\\ud800\\udfff-\\ud800"}'
"""A request body whose token holds a lone surrogate once decoded by :func:`json.loads`."""


@pytest.mark.parametrize("token", [json.loads(BODY)["token"], "\udcff" * 43, "t\u00f6ken", "\u0000" * 43])
async def test_a_token_no_link_could_carry_is_unknown_not_an_error(redis: Redis, schema: Schema, token: str) -> None:
    tokens = Tokens(redis, schema)
    issued = await tokens.issue("password-reset", "u", ttl=60)
    assert await tokens.verify("password-reset", token) is None
    assert await tokens.consume("password-reset", token) is None
    assert await tokens.revoke("password-reset", token) is False
    assert await tokens.consume("password-reset", issued) is not None  # the real one still works, once
    assert await tokens.consume("password-reset", issued) is None
