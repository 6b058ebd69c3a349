from __future__ import annotations

from celery import shared_task


@shared_task(name="apps.monitoring.tasks.ping")
def ping(value: str = "pong") -> dict:
    """Proves a worker runs tasks (used by tests and by `manage.py` diagnostics)."""
    import os

    return {"value": value, "pid": os.getpid()}
