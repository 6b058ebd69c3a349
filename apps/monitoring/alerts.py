"""The alerting events the issue names, with one wording each. Call these from the services.

Each records an audit ``Event`` (saved, logged, pushed to the page) with ``alert=True`` (sent to
Telegram after commit when the trader enabled that kind) and counts it in Prometheus. Sync
functions; from async code wrap them: ``await sync_to_async(bracket_closed)(...)``.
Run errors need no helper: ``apps.strategies.services.run_transition(to=ERROR)`` records them.
"""

from __future__ import annotations

from decimal import Decimal

from . import metrics
from .events import event_record
from .models import Event


def _money(value: Decimal | str | float | int, places: str = "0.01") -> str:
    return f"{Decimal(str(value)).quantize(Decimal(places)):+}"


def broker_disconnected(*, account: str, reason: str, auto_reconnect: bool) -> Event:
    action = "reconnecting automatically" if auto_reconnect else "reconnect manually"
    return event_record(
        kind="broker_disconnect",
        level="error",
        message=f"Broker {account} disconnected: {reason} — trading stopped, {action}",
        context={"account": account, "reason": reason, "auto_reconnect": auto_reconnect},
        alert=True,
    )


def bracket_opened(
    *,
    run_id: int | None,
    bracket_id: str,
    instrument: str,
    side: str,
    amount: Decimal,
    entry_price: Decimal | None,
    stop_price: Decimal,
    take_profit_price: Decimal,
) -> Event:
    metrics.BRACKETS.labels(outcome="placed").inc()
    entry = f" @ {entry_price}" if entry_price is not None else ""
    return event_record(
        kind="bracket_opened",
        message=(
            f"Opened {side} {amount} {instrument}{entry} — SL {stop_price}, TP {take_profit_price}"
        ),
        context={
            "instrument": instrument,
            "side": side,
            "amount": amount,
            "entry_price": entry_price,
            "stop_price": stop_price,
            "take_profit_price": take_profit_price,
        },
        run_id=run_id,
        bracket_id=bracket_id,
        alert=True,
    )


def bracket_closed(
    *,
    run_id: int | None,
    bracket_id: str,
    instrument: str,
    side: str,
    amount: Decimal,
    entry_price: Decimal,
    exit_price: Decimal,
    pnl: Decimal,
    currency: str,
    pnl_usd: Decimal,
    exit_reason: str,
) -> Event:
    metrics.TRADES.labels(result="win" if pnl > 0 else "loss").inc()
    return event_record(
        kind="bracket_closed",
        message=(
            f"Closed {side} {amount} {instrument} {entry_price} → {exit_price} ({exit_reason}): "
            f"P&L {_money(pnl_usd)} USD ({Decimal(str(pnl)).normalize():+f} {currency})"
        ),
        context={
            "instrument": instrument,
            "side": side,
            "amount": amount,
            "entry_price": entry_price,
            "exit_price": exit_price,
            "pnl": pnl,
            "currency": currency,
            "pnl_usd": pnl_usd,
            "exit_reason": exit_reason,
        },
        run_id=run_id,
        bracket_id=bracket_id,
        alert=True,
    )


def bracket_failed(
    *, run_id: int | None, bracket_id: str, error: str, rolled_back: bool, left_open: list[str]
) -> Event:
    """Placement failed. ``rolled_back``: every placed order was cancelled and verified."""
    metrics.BRACKETS.labels(outcome="failed").inc()
    if rolled_back:
        metrics.BRACKETS.labels(outcome="rolled_back").inc()
        return event_record(
            kind="bracket_failed",
            level="warning",
            message=f"Bracket {bracket_id} failed and was rolled back: {error}",
            context={"error": error},
            run_id=run_id,
            bracket_id=bracket_id,
        )
    metrics.BRACKETS.labels(outcome="rollback_failed").inc()
    return event_record(
        kind="rollback_failed",
        level="critical",
        message=(
            f"Bracket {bracket_id} failed and its rollback FAILED: {error}. Orders possibly "
            f"still on the exchange: {', '.join(left_open) or 'unknown'} — check the account now"
        ),
        context={"error": error, "left_open": left_open},
        run_id=run_id,
        bracket_id=bracket_id,
        alert=True,
    )


def orphans_found(*, account: str, labels: list[str]) -> None:
    metrics.ORPHANS.labels(action="found").inc(len(labels))


def orphans_cancelled(*, account: str, labels: list[str], run_id: int | None = None) -> Event:
    metrics.ORPHANS.labels(action="cancelled").inc(len(labels))
    return event_record(
        kind="orphan_cancelled",
        level="warning",
        message=f"Cancelled {len(labels)} orphan order(s) on {account}: {', '.join(labels)}",
        context={"account": account, "labels": labels},
        run_id=run_id,
        alert=True,
    )


def protection_tripped(
    *, run_id: int | None, protection: str, detail: str, context: dict | None = None
) -> Event:
    return event_record(
        kind="protection_tripped",
        level="warning",
        message=f"Protection {protection} tripped: {detail}",
        context={"protection": protection, **(context or {})},
        run_id=run_id,
        alert=True,
    )
