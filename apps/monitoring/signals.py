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


@signals.worker_process_init.connect
def _memory_diagnosis(**_kwargs) -> None:
    """``TRADEBAAS_TRACEMALLOC_DUMP=/path``: on SIGUSR2 a worker child writes the allocations that
    grew since its first dump (tracemalloc; start the worker with PYTHONTRACEMALLOC=10)."""
    import os

    path = os.environ.get("TRADEBAAS_TRACEMALLOC_DUMP")
    if not path:
        return
    import signal
    import tracemalloc

    first: list = []

    def dump(_signum, _frame) -> None:
        snapshot = tracemalloc.take_snapshot()
        if not first:
            first.append(snapshot)
            return
        with open(f"{path}.{os.getpid()}", "w") as out:
            for stat in snapshot.compare_to(first[0], "traceback")[:15]:
                out.write(f"{stat.size_diff / 1024:.0f} KB in {stat.count_diff} blocks\n")
                out.writelines(f"    {line}\n" for line in stat.traceback.format()[-8:])

    signal.signal(signal.SIGUSR2, dump)
