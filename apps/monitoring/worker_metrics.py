"""Worker metrics: prometheus_client multiprocess mode, served by the worker's main process.

Active when both ``PROMETHEUS_MULTIPROC_DIR`` (must be in the environment before Python starts:
systemd ``Environment=``) and ``TRADEBAAS_METRICS_PORT`` are set. The directory should be empty at
start (systemd ``RuntimeDirectory=`` is; the install script also wipes it in ``ExecStartPre``).
"""

from __future__ import annotations

import logging
import os

from celery import signals

from . import metrics

log = logging.getLogger(__name__)
_server_started = False


def enabled() -> bool:
    return bool(
        os.environ.get("PROMETHEUS_MULTIPROC_DIR") and os.environ.get("TRADEBAAS_METRICS_PORT")
    )


def start_exporter() -> int | None:
    """Serve the aggregated metrics of this worker's processes (main process, once)."""
    global _server_started
    if _server_started or not enabled():
        return None
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    port = int(os.environ["TRADEBAAS_METRICS_PORT"])
    address = os.environ.get("TRADEBAAS_METRICS_BIND", "127.0.0.1")
    start_http_server(port, addr=address, registry=registry)
    _server_started = True
    log.info("worker metrics at http://%s:%d/metrics", address, port)
    return port


@signals.worker_ready.connect
def _on_worker_ready(**_kwargs) -> None:
    try:
        start_exporter()
    except Exception:  # metrics must never stop a worker
        log.warning("worker metrics exporter not started", exc_info=True)


@signals.worker_process_shutdown.connect
def _on_child_exit(pid=None, **_kwargs) -> None:
    if enabled():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid or os.getpid())


@signals.task_postrun.connect
def _count_task(task=None, state=None, **_kwargs) -> None:
    name = getattr(task, "name", "unknown")
    metrics.CELERY_TASKS.labels(task=name, state=state or "unknown").inc()
    from . import watchdog

    watchdog.loop_finished()  # a finished loop task hands the systemd watchdog back
