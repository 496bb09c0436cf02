"""The values other plugins and apps hand to the admin: who is asking (:class:`Actor`) and menu entries.

Returned by ``admin_actor_from_request`` and ``admin_menu_items`` implementations (see
:mod:`framework_admin.hookspecs`). The API's JSON shapes are in :mod:`framework_admin.schemas`.
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = ("Actor", "MenuItem", "Role")

Role = Literal["admin", "readonly"]
"""``admin`` may act on tasks and queues; ``readonly`` may only look."""


class Actor(msgspec.Struct, frozen=True, kw_only=True):
    """Who is using the admin. Built by the admin's guard or by an ``admin_actor_from_request`` hook.

    Attributes:
        name: a name for the audit log (a user name, ``token``, ``readonly-token``).
        role: ``admin`` (may act) or ``readonly`` (may only look).
        via: how they were recognised: ``bearer``, ``session``, ``hook`` or ``guard``. Requests
            authenticated by a bearer token are exempt from the CSRF check; all others are not.
    """

    name: str
    role: Role = "admin"
    via: str = "hook"

    @property
    def can_act(self) -> bool:
        """Whether this actor may change tasks and queues."""
        return self.role == "admin"


class MenuItem(msgspec.Struct, frozen=True, kw_only=True):
    """An entry of the admin's navigation. Returned by ``admin_menu_items`` implementations.

    Attributes:
        label: the text of the link.
        href: where it points: relative to the admin's path (``reports`` is ``/admin/reports``) or
            absolute when it starts with ``/`` or ``http``.
        order: position; built-in entries use 10 to 90, so 100 and above come after them.
        description: a tooltip.
    """

    label: str
    href: str
    order: int = 100
    description: str = ""
