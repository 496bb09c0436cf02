"""The web side: the Litestar app and what it serves.

* :mod:`~framework.web.app`: ``create_app`` and the bridge that gathers plugins' routes and templates.
* :mod:`~framework.web.demo` (hooks), :mod:`~framework.web.demo_task`, :mod:`~framework.web.demo_routes`: the
  built-in demo app, loaded when no app is configured.
* :mod:`~framework.web.tasks`: routes that run a task for a request (wait for its result, or stream its
  progress as server-sent events).
* :mod:`~framework.web.storage_routes`, :mod:`~framework.web.favicon`, :mod:`~framework.web.ratelimit`,
  :mod:`~framework.web.tokens`: parts apps and plugins use; ``templates/``: the framework's own templates.

May import: everything below it except the worker and scheduler.
"""
