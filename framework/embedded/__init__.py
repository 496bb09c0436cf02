"""The embedded Valkey server: a real Redis-compatible server started for development and tests.

* :mod:`~framework.embedded.server`: ``EmbeddedValkey`` (start, share, stop).
* :mod:`~framework.embedded.keeper`: ``ValkeyKeeper`` and ``kept`` (restart it when it dies, for long-running commands).
* :mod:`~framework.embedded.binary`, :mod:`~framework.embedded.launch`, :mod:`~framework.embedded.process`,
  :mod:`~framework.embedded.probe`, :mod:`~framework.embedded.datadir`, :mod:`~framework.embedded.errors`.

May import: the top-level task model only.
"""

from typing import TYPE_CHECKING

if not TYPE_CHECKING:  # the names of framework 0.1's flat ``framework.embedded`` module (see framework._compat)
    from framework._compat import lend_names

    __getattr__ = lend_names(__name__, "framework.embedded.server")
