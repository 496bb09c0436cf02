"""The admin plugin: a JSON API, a live dashboard and Prometheus metrics for the job queues.

Entry point: :mod:`framework_admin.hooks`. Routes come from :func:`framework_admin.routes.admin_routes`;
other plugins extend the admin through the hooks in :mod:`framework_admin.hookspecs`.
"""
