"""framework-email: the ``email:send`` task, Jinja email templates and delivery backends.

Read :mod:`framework_email.hooks` to see what the plugin contributes, :mod:`framework_email.tasks` for the
task and its enqueue helper, and :mod:`framework_email.hookspecs` for the hook other plugins implement to
add a delivery backend.
"""
