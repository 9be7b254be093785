"""The real-server fixtures of tests/integration/test_multiworker.py."""

from tests.integration.test_multiworker import database, servers  # noqa: F401 - fixtures by name
