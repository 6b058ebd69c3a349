"""Fixtures of the monitoring tests (other apps: import ``telegram`` the same way)."""

from apps.monitoring.testing import telegram  # noqa: F401
