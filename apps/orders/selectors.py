"""Reads about brackets, orders and trades."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db.models import Count, Q, QuerySet, Sum

from apps.orders.models import LIVE_BRACKET_STATES, Bracket, BracketState, Trade


def live_brackets(*, account_id: int | None = None, any_account: bool = True) -> QuerySet[Bracket]:
    """Brackets that may have orders or a position on the exchange."""
    queryset = Bracket.objects.filter(state__in=LIVE_BRACKET_STATES)
    if not any_account:
        queryset = queryset.filter(broker_account_id=account_id)
    return queryset


def open_position_exists(*, account_id: int | None = None, any_account: bool = True) -> bool:
    """Whether a bracket of ours has (or may have) a position open: switching brokers is refused."""
    return live_brackets(account_id=account_id, any_account=any_account).exists()


def current_bracket(*, run_id: int | None = None) -> dict[str, Any] | None:
    queryset = Bracket.objects.filter(state__in=LIVE_BRACKET_STATES)
    if run_id is not None:
        queryset = queryset.filter(run_id=run_id)
    bracket = queryset.prefetch_related("orders").order_by("-id").first()
    return bracket_dict(bracket) if bracket else None


def bracket_dict(bracket: Bracket) -> dict[str, Any]:
    return {
        "bracket_id": bracket.bracket_id,
        "state": bracket.state,
        "instrument": bracket.instrument,
        "side": bracket.side,
        "amount": str(bracket.amount),
        "stop_price": str(bracket.stop_price),
        "take_profit_price": str(bracket.take_profit_price),
        "linked": bracket.linked,
        "orders": [
            {
                "role": o.role,
                "label": o.label,
                "exchange_id": o.exchange_id,
                "status": o.status,
                "type": o.order_type,
                "amount": str(o.amount),
                "filled_amount": str(o.filled_amount),
                "price": str(o.price) if o.price is not None else None,
                "trigger_price": str(o.trigger_price) if o.trigger_price is not None else None,
                "average_price": str(o.average_price) if o.average_price is not None else None,
            }
            for o in bracket.orders.all()
        ],
    }


def trades(*, run_id: int | None = None, limit: int = 100) -> QuerySet[Trade]:
    queryset = Trade.objects.all()
    if run_id is not None:
        queryset = queryset.filter(run_id=run_id)
    return queryset[: max(1, min(limit, 1000))]


def trade_dict(trade: Trade) -> dict[str, Any]:
    return {
        "bracket_id": trade.bracket.bracket_id,
        "run_id": trade.run_id,
        "instrument": trade.instrument,
        "side": trade.side,
        "amount": str(trade.amount),
        "entry_price": str(trade.entry_price),
        "exit_price": str(trade.exit_price),
        "pnl": str(trade.pnl),
        "pnl_usd": str(trade.pnl_usd),
        "fees": str(trade.fees),
        "currency": trade.currency,
        "opened_at": trade.opened_at.isoformat(),
        "closed_at": trade.closed_at.isoformat(),
        "duration_seconds": str(trade.duration_seconds),
        "exit_reason": trade.exit_reason,
        "risk_settings": trade.risk_settings,
        "recorded_by": trade.recorded_by,
    }


def trades_summary(*, run_id: int | None = None) -> dict[str, Any]:
    queryset = Trade.objects.all()
    if run_id is not None:
        queryset = queryset.filter(run_id=run_id)
    totals = queryset.aggregate(
        count=Count("id"),
        wins=Count("id", filter=Q(pnl__gt=0)),
        pnl_usd=Sum("pnl_usd"),
        fees=Sum("fees"),
    )
    count = totals["count"] or 0
    return {
        "count": count,
        "wins": totals["wins"] or 0,
        "losses": count - (totals["wins"] or 0),
        "win_rate": str(Decimal(totals["wins"] or 0) / count * 100) if count else None,
        "pnl_usd": str(totals["pnl_usd"] or Decimal("0")),
        "fees": str(totals["fees"] or Decimal("0")),
    }


def brackets_in(states: tuple[str, ...]) -> QuerySet[Bracket]:
    return Bracket.objects.filter(state__in=states).prefetch_related("orders")


__all__ = ["BracketState", "open_position_exists", "trades_summary"]
