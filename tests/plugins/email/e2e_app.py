"""An app for the end-to-end email test: a sign-up route that sends the welcome email as a job."""

from __future__ import annotations

from typing import Any

import msgspec
from framework_email.tasks import send_email
from litestar import post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from framework.client.client import Client
from framework.hookspecs import hookimpl


class Signup(msgspec.Struct, frozen=True):
    email: str
    name: str


@post("/signup", status_code=202)
async def signup(data: JSONBody[Signup], client: NamedDependency[Client]) -> dict[str, Any]:
    info = await send_email(client, data.email, "Welcome aboard", "welcome", {"name": data.name})
    return {"task": info.id}


@hookimpl
def register_routes(settings: Any) -> list[Any]:
    return [signup]
