"""What the trading page shows, read from the database in one place.

The page renders it on load, and ``apps.web.live`` renders the same pieces as out-of-band
fragments whenever something changes, and in full when a socket (re)connects.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from apps.brokers import registry
from apps.brokers.models import BrokerAccount
from apps.brokers.selectors import active_account
from apps.monitoring.models import Event
from apps.orders.models import LIVE_BRACKET_STATES, Bracket, Order, Trade
from apps.strategies.models import RunState, StrategyRun
from apps.strategies.selectors import active_run, latest_run
from tradebaas.redis import redis_client, rkey

ROLE_LABELS = {
    "entry": "Entry",
    "stop": "Stop-loss",
    "sl": "Stop-loss",
    "take": "Take-profit",
    "tp": "Take-profit",
}
DEFAULT_INSTRUMENT = "BTC-PERPETUAL"


@dataclass
class PageState:
    account: BrokerAccount | None
    broker_id: str
    broker_name: str
    testnet: bool
    connection: str
    connection_since: Any
    connection_detail: str
    run: StrategyRun | None
    run_state: str
    run_state_label: str
    analysis: dict | None
    bracket: Bracket | None
    legs: list[Order] = field(default_factory=list)
    position: dict = field(default_factory=dict)
    levels: dict = field(default_factory=dict)
    markers_json: str = "[]"
    chart_instrument: str = DEFAULT_INSTRUMENT
    error_context_json: str = ""
    error_log: list[str] = field(default_factory=list)


def _connection(account: BrokerAccount | None) -> tuple[str, str, bool, str, Any, str]:
    if account is None:
        return (
            "paper",
            "Paper",
            False,
            "connected",
            None,
            "Paper trading on the built-in simulator",
        )
    info = registry.get_broker_info(account.broker)
    detail = account.last_error or f"{info.name} account {account.masked_key}"
    return (account.broker, info.name, account.testnet, account.state, account.state_since, detail)


def _analysis(run: StrategyRun | None) -> dict | None:
    """The strategy's state after its last analysis, as the loop stored it."""
    if run is None:
        return None
    from apps.strategies.runner.loop import CHECKPOINTS_KEY

    raw = redis_client().get(rkey(CHECKPOINTS_KEY))
    if not raw:
        return None
    data = json.loads(raw)
    if data.get("run_id") != run.pk:
        return None
    signal = data.get("last_signal") or {}
    return {
        "run_id": run.pk,
        "at": data.get("at", ""),
        "summary": f"{data.get('status', '')} · {data.get('candles', 0)} candles"
        + (f" · last signal: {signal.get('reason')}" if signal.get("reason") else ""),
        "checkpoints": data.get("checkpoints", []),
    }


def _markers(instrument: str) -> str:
    trades = Trade.objects.filter(instrument=instrument).order_by("-closed_at")[:50]
    markers = []
    for trade in reversed(list(trades)):
        long = trade.side == "buy"
        markers.append(
            {
                "time": int(trade.opened_at.timestamp()) // 60 * 60,
                "position": "belowBar" if long else "aboveBar",
                "color": "#22c55e" if long else "#ef4444",
                "shape": "arrowUp" if long else "arrowDown",
                "text": "L" if long else "S",
            }
        )
        markers.append(
            {
                "time": int(trade.closed_at.timestamp()) // 60 * 60,
                "position": "aboveBar" if long else "belowBar",
                "color": "#8b98a5",
                "shape": "circle",
                "text": f"{trade.exit_reason} {trade.pnl_usd:+.2f}$",
            }
        )
    markers.sort(key=lambda m: m["time"])
    return json.dumps(markers)


def page_state() -> PageState:
    account = active_account()
    broker_id, broker_name, testnet, connection, since, detail = _connection(account)
    run = active_run() or latest_run()
    run_state = run.state if run and run.is_active else "STOPPED"
    label = RunState(run.state).label if run and run.is_active else "Stopped"
    if run and run.is_active and run.state == RunState.PAUSED and run.pause_reason:
        label = f"Paused: {run.pause_reason}"
    bracket = (
        Bracket.objects.filter(state__in=LIVE_BRACKET_STATES)
        .prefetch_related("orders")
        .order_by("-id")
        .first()
    )
    legs: list[Order] = []
    position: dict = {}
    levels: dict = {}
    if bracket is not None:
        order_rank = {"entry": 0, "stop": 1, "sl": 1, "take": 2, "tp": 2}
        legs = sorted(bracket.orders.all(), key=lambda o: order_rank.get(o.role, 9))
        for leg in legs:
            leg.role_label = ROLE_LABELS.get(leg.role, leg.role)
        entry = next((leg for leg in legs if leg.role == "entry"), None)
        entry_price = entry.average_price if entry and entry.average_price else bracket.signal_price
        position = {"entry": entry_price, "pnl": None, "pnl_negative": False}
        levels = {
            "entry": entry_price,
            "stop": bracket.stop_price,
            "target": bracket.take_profit_price,
        }
    instrument = (bracket.instrument if bracket else None) or (
        run.instrument if run else DEFAULT_INSTRUMENT
    )
    state = PageState(
        account=account,
        broker_id=broker_id,
        broker_name=broker_name,
        testnet=testnet,
        connection=connection,
        connection_since=since,
        connection_detail=detail,
        run=run if run and run.is_active else None,
        run_state=run_state,
        run_state_label=label,
        analysis=_analysis(run if run and run.is_active else None),
        bracket=bracket,
        legs=legs,
        position=position,
        levels=levels,
        markers_json=_markers(instrument),
        chart_instrument=instrument,
    )
    if state.run and state.run.error_message:
        context = dict(state.run.error_context or {})
        state.error_log = [str(line) for line in context.pop("log", [])]
        state.error_context_json = json.dumps(context, indent=2, default=str)
    return state


def recent_events(limit: int = 30):
    return Event.objects.order_by("-id")[:limit]
