"""Prometheus metrics of web and workers.

Web: ``/metrics`` (allowed addresses or a logged-in operator) shows this process's metrics plus
``StateCollector``: numbers read from the database and Redis at scrape time (trades, brackets by
state, the active run's state and heartbeat, every process's heartbeat age), so they are right
whichever process changed them.

Workers: Celery runs tasks in child processes, so workers use prometheus_client's multiprocess
mode. Set ``PROMETHEUS_MULTIPROC_DIR`` (an empty directory per worker service, wiped at start)
and ``TRADEBAAS_METRICS_PORT``; the worker's main process then serves the sum of all its
children at ``http://127.0.0.1:$TRADEBAAS_METRICS_PORT/metrics`` (see ``worker_metrics.py``).
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

WEBSOCKET_CLIENTS = Gauge(
    "tradebaas_websocket_clients",
    "Open live-page WebSockets in this process",
    multiprocess_mode="livesum",
)
WEBSOCKET_REFUSED = Counter(
    "tradebaas_websocket_refused_total", "WebSocket connections refused", ["reason"]
)
TRADES = Counter("tradebaas_trades_total", "Closed trades recorded", ["result"])
BRACKETS = Counter("tradebaas_brackets_total", "Brackets by outcome", ["outcome"])
ORPHANS = Counter("tradebaas_orphan_orders_total", "Orphan orders", ["action"])
LOOP_STATE = Gauge(
    "tradebaas_run_state",
    "1 for the active run's current state",
    ["state"],
    multiprocess_mode="livemostrecent",
)
LOCK_HELD = Gauge(
    "tradebaas_runner_lock_held",
    "1 while this process holds the runner lock",
    multiprocess_mode="livemax",
)
HEARTBEAT_AGE = Gauge(
    "tradebaas_runner_heartbeat_age_seconds",
    "Seconds since the loop's last heartbeat",
    multiprocess_mode="livemostrecent",
)
CANDLE_TO_BRACKET = Histogram(
    "tradebaas_candle_to_bracket_seconds",
    "Time from the candle-close message to the exchange's acknowledgement of the bracket",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
BROKER_REQUEST = Histogram(
    "tradebaas_broker_request_seconds",
    "Broker request latency",
    ["method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
CELERY_TASKS = Counter(
    "tradebaas_celery_tasks_total", "Celery tasks finished, by task and state", ["task", "state"]
)


class StateCollector(Collector):
    """Scrape-time numbers from the database and Redis (web's /metrics only)."""

    def collect(self):
        try:
            yield from self._database()
        except Exception:
            log.warning("metrics: database numbers unavailable", exc_info=True)
        try:
            yield from self._heartbeats()
        except Exception:
            log.warning("metrics: heartbeats unavailable", exc_info=True)

    def _database(self):
        from django.db.models import Count, Q
        from django.utils import timezone

        from apps.orders.models import Bracket, Trade
        from apps.strategies.models import RunState, StrategyRun

        trades = Trade.objects.aggregate(wins=Count("id", filter=Q(pnl__gt=0)), all=Count("id"))
        family = GaugeMetricFamily(
            "tradebaas_db_trades", "Trades in the database by result", labels=["result"]
        )
        family.add_metric(["win"], trades["wins"] or 0)
        family.add_metric(["loss"], (trades["all"] or 0) - (trades["wins"] or 0))
        yield family

        family = GaugeMetricFamily(
            "tradebaas_db_brackets", "Brackets in the database by state", labels=["state"]
        )
        counts = dict(Bracket.objects.values_list("state").annotate(n=Count("id")))
        for state in Bracket._meta.get_field("state").choices or []:
            family.add_metric([state[0]], counts.get(state[0], 0))
        yield family

        run = StrategyRun.objects.filter(is_active=True).first()
        family = GaugeMetricFamily(
            "tradebaas_active_run_state", "1 for the active run's state", labels=["state"]
        )
        for state in RunState:
            family.add_metric([state.value], 1 if run is not None and run.state == state else 0)
        yield family
        if run is not None and run.heartbeat_at is not None:
            age = (timezone.now() - run.heartbeat_at).total_seconds()
            yield GaugeMetricFamily(
                "tradebaas_active_run_heartbeat_age_seconds",
                "Seconds since the active run's loop stamped its heartbeat",
                value=age,
            )

    def _heartbeats(self):
        from .health import heartbeats

        family = GaugeMetricFamily(
            "tradebaas_process_heartbeat_age_seconds",
            "Seconds since each worker / beat process wrote its heartbeat",
            labels=["process"],
        )
        for name, age in sorted(heartbeats().items()):
            family.add_metric([name], age)
        yield family


STATE_COLLECTOR = StateCollector()
