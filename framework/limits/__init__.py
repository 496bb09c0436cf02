"""Rate and concurrency limits a task type declares, shared by every worker: the model, no I/O.

Owns :class:`Limit` (a rate such as ``"100/s"`` with a burst, a most-at-once count, an optional key computed
from the payload, per-key overrides) and the resolution of a task's limits for one payload
(:func:`resolve`). Imports nothing above the task model; the worker takes and releases what a task needs
(:mod:`framework.worker.limits`), the scripts keep the count (``limit_take.lua``, ``limit_release.lua``).
"""

from framework.limits.rules import Applied, Limit, Rate, applied_limits, parse_rate

__all__ = ("Applied", "Limit", "Rate", "applied_limits", "parse_rate")
