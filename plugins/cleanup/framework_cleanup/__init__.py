"""framework-cleanup: scheduled sweepers for expired tokens, stale uploads, old outbox files and stale workflows.

Plugins and apps contribute sweepers through the ``register_sweepers`` hook
(:mod:`framework_cleanup.hookspecs`); each runs as a ``cleanup:run`` task on its own cron entry. The
entry point is :mod:`framework_cleanup.hooks`.
"""
