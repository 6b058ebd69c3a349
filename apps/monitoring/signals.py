"""Celery signal handlers of the monitoring app (connected from MonitoringConfig.ready)."""

from __future__ import annotations

from celery import signals

from . import watchdog, worker_metrics  # noqa: F401 - worker_metrics connects its handlers


@signals.worker_ready.connect
def _tell_systemd_ready(sender=None, **_kwargs) -> None:
    # A no-op unless the worker runs under systemd with Type=notify.
    if watchdog.notify_ready("celery worker ready"):
        watchdog.start_idle_keepalive()


@signals.worker_shutting_down.connect
def _tell_systemd_stopping(**_kwargs) -> None:
    watchdog.notify_stopping()
