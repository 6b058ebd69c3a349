"""Prometheus metrics of web and workers. Exposed at /metrics (allowed addresses or a logged-in operator)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

WEBSOCKET_CLIENTS = Gauge(
    "tradebaas_websocket_clients", "Open live-page WebSockets in this process"
)
TRADES = Counter("tradebaas_trades_total", "Closed trades recorded", ["result"])
BRACKETS = Counter("tradebaas_brackets_total", "Brackets by outcome", ["outcome"])
ORPHANS = Counter("tradebaas_orphan_orders_total", "Orphan orders", ["action"])
LOOP_STATE = Gauge("tradebaas_run_state", "1 for the active run's current state", ["state"])
LOCK_HELD = Gauge("tradebaas_runner_lock_held", "1 while this process holds the runner lock")
HEARTBEAT_AGE = Gauge(
    "tradebaas_runner_heartbeat_age_seconds", "Seconds since the loop's last heartbeat"
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
