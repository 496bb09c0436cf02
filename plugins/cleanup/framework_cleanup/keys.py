"""The cleanup plugin's Redis keys, built with the framework's ``Schema.ext_key`` under the plugin's name.

* HASH ``<ext>:cleanup:last``: sweeper name -> the JSON report of its last run (:func:`results_key`).
* STRING ``<ext>:cleanup:claim:<sweeper>:<sha1(item)>``: one run's short claim on one item
  (:func:`claim_key`; expires).

``<ext>`` is ``framework`` in the ``asynq`` namespace.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from framework_cleanup.config import PLUGIN_NAME

if TYPE_CHECKING:
    from framework import Schema

__all__ = ("claim_key", "results_key")


def results_key(schema: Schema) -> str:
    """HASH ``<ext>:cleanup:last``: sweeper name -> its last report (JSON)."""
    return schema.ext_key(PLUGIN_NAME, "last")


def claim_key(schema: Schema, sweeper: str, item: str) -> str:
    """STRING ``<ext>:cleanup:claim:<sweeper>:<sha1(item)>``: a sweeper run's short claim on one item."""
    digest = hashlib.sha1(item.encode("utf-8"), usedforsecurity=False).hexdigest()
    return schema.ext_key(PLUGIN_NAME, "claim", sweeper, digest)
