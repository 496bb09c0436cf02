"""Helpers for testing apps and plugins against a real Redis.

* :mod:`~framework.testing.pytest_plugin`: the ``pytest11`` plugin (``--framework-redis``, fixtures).

May import: anything; nothing in the framework imports it.
"""
