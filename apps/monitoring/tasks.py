from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from celery import shared_task
from django.db.models import Count, Q, Sum
from django.utils import timezone


@shared_task(name="apps.monitoring.tasks.ping")
def ping(value: str = "pong") -> dict:
    """Proves a worker runs tasks (used by tests and by `manage.py` diagnostics)."""
    import os

    return {"value": value, "pid": os.getpid()}


def daily_summary_text(*, now=None) -> str:
    """The last 24 hours: trades, wins, P&L, fees, the run's state and the account's equity."""
    from apps.brokers.selectors import active_account
    from apps.orders.models import Trade
    from apps.strategies.selectors import active_run

    now = now or timezone.now()
    since = now - timedelta(hours=24)
    totals = Trade.objects.filter(closed_at__gte=since, closed_at__lt=now).aggregate(
        count=Count("id"), wins=Count("id", filter=Q(pnl__gt=0)), pnl_usd=Sum("pnl_usd")
    )
    count, wins = totals["count"] or 0, totals["wins"] or 0
    pnl = (totals["pnl_usd"] or Decimal("0")).quantize(Decimal("0.01"))
    lines = [f"Daily summary {since:%Y-%m-%d %H:%M} → {now:%Y-%m-%d %H:%M} UTC"]
    if count:
        lines.append(f"Trades: {count} ({wins} won, {count - wins} lost), P&L {pnl:+} USD")
    else:
        lines.append("Trades: none")
    run = active_run()
    lines.append(
        f"Run {run.id}: {run.strategy} on {run.instrument}, {run.state}" if run else "No active run"
    )
    account = active_account()
    snapshot = account.snapshot if account else None
    if snapshot:
        lines.append(f"Equity: {snapshot['equity']} {snapshot['currency']}")
    return "\n".join(lines)


@shared_task(name="apps.monitoring.tasks.daily_summary")
def daily_summary() -> str:
    from .events import event_record

    text = daily_summary_text()
    event_record(kind="daily_summary", message=text, alert=True)
    return text
