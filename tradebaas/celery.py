"""The Celery app: JSON only, two queues (``default`` and ``runner``), the beat schedule in code.

The ``runner`` queue is served by one worker process that hosts the strategy loop (no time limit,
acknowledged early: a redelivered loop would be a second loop). Every worker process writes a
heartbeat to Redis from a thread, and beat writes its own on every tick, so ``/readyz`` can tell
both are alive even while the runner's only process is busy in the loop.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading

from celery import Celery, signals
from celery.beat import PersistentScheduler
from celery.schedules import crontab
from kombu import Exchange, Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tradebaas.settings.base")

app = Celery("tradebaas")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = (
    Queue("default", Exchange("default"), routing_key="default"),
    Queue("runner", Exchange("runner"), routing_key="runner"),
)
app.conf.task_routes = {
    "apps.strategies.tasks.run_loop": {
        "queue": "runner",
        "exchange": "runner",
        "routing_key": "runner",
    }
}
app.conf.beat_scheduler = "tradebaas.celery:HeartbeatScheduler"
app.conf.beat_schedule = {
    "orphan-sweep": {"task": "apps.orders.tasks.orphan_sweep", "schedule": 60.0},
    "run-supervisor": {"task": "apps.strategies.tasks.supervise_runs", "schedule": 10.0},
    # Telegram daily summary at DAILY_SUMMARY_HOUR:00 UTC (default 20).
    "daily-summary": {
        "task": "apps.monitoring.tasks.daily_summary",
        "schedule": crontab(hour=int(os.environ.get("DAILY_SUMMARY_HOUR", "20")), minute=0),
    },
}
app.autodiscover_tasks()

HEARTBEAT_INTERVAL = 5.0


class HeartbeatScheduler(PersistentScheduler):
    """The default scheduler, plus a beat heartbeat in Redis on every tick."""

    def tick(self, *args, **kwargs):
        from apps.monitoring.health import record_heartbeat

        with contextlib.suppress(Exception):  # a heartbeat must never stop beat
            record_heartbeat("beat")
        return min(super().tick(*args, **kwargs), HEARTBEAT_INTERVAL)


@signals.worker_ready.connect
def _start_worker_heartbeat(sender=None, **_kwargs) -> None:
    queues = ",".join(sorted(q.name for q in sender.app.amqp.queues.consume_from.values()))
    name = f"worker:{queues}:{socket.gethostname()}:{os.getpid()}"

    def beat_forever() -> None:
        from apps.monitoring.health import record_heartbeat

        stop = threading.Event()
        while not stop.wait(HEARTBEAT_INTERVAL / 2):
            try:
                record_heartbeat(name)
            except Exception:  # noqa: S112 - Redis may be restarting; try again next time
                continue

    from apps.monitoring.health import record_heartbeat

    record_heartbeat(name)
    threading.Thread(target=beat_forever, name="tradebaas-heartbeat", daemon=True).start()
