"""Root conftest: the framework's own pytest plugin provides Redis fixtures; these add the other servers."""

pytest_plugins = [
    "tests.fixtures.s3",
    "tests.fixtures.smtp",
    "tests.fixtures.resend_api",
    "tests.fixtures.cli",
    "tests.fixtures.cluster",
    "tests.fixtures.workers",
    "tests.fixtures.aggregation",
    "tests.fixtures.limits",
    "tests.fixtures.plugins",
]
