"""The plugin system: loading plugins through pluggy and calling their hooks.

* :mod:`~framework.plugins.manager`: the plugin manager (entry points, allow/block lists, tracing,
  introspection).
* :mod:`~framework.plugins.calls`: calling a hook once per plugin, through the manager, to know who gave what.
* :mod:`~framework.plugins.events`: calling hooks that may return awaitables, errors logged not raised.
* :mod:`~framework.plugins.templates`: the one Jinja environment over the app's and plugins' templates.

May import: the top-level task model only (the hook specifications live in :mod:`framework.hookspecs`).
"""

from typing import TYPE_CHECKING

if not TYPE_CHECKING:  # the names of framework 0.1's flat ``framework.plugins`` module (see framework._compat)
    from framework._compat import lend_names

    __getattr__ = lend_names(__name__, "framework.plugins.manager")
