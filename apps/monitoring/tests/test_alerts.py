"""The named alerts: wording, level, Telegram delivery, metrics; and the daily summary."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from apps.monitoring import alerts, metrics, notify
from apps.monitoring.models import Event
from apps.monitoring.tasks import daily_summary, daily_summary_text
from apps.monitoring.testing import configure_telegram
from apps.orders.models import Bracket, Trade


def _value(counter, **labels) -> float:
    return counter.labels(**labels)._value.get()


@pytest.mark.django_db(transaction=True)
def test_bracket_closed_alert_carries_pnl_and_counts_the_trade(telegram):
    configure_telegram(telegram)
    wins = _value(metrics.TRADES, result="win")
    alerts.bracket_closed(
        run_id=4,
        bracket_id="tb-4-1",
        instrument="BTC-PERPETUAL",
        side="buy",
        amount=Decimal("100"),
        entry_price=Decimal("65000"),
        exit_price=Decimal("65650"),
        pnl=Decimal("0.00001523"),
        currency="BTC",
        pnl_usd=Decimal("0.999"),
        exit_reason="take_profit",
    )
    assert notify.flush(10)
    (text,) = telegram.texts()
    assert text == (
        "[INFO] Closed buy 100 BTC-PERPETUAL 65000 → 65650 (take_profit): "
        "P&L +1.00 USD (+0.00001523 BTC) (run 4, bracket tb-4-1)"
    )
    assert _value(metrics.TRADES, result="win") == wins + 1


@pytest.mark.django_db(transaction=True)
def test_rollback_failure_is_critical_and_names_what_is_left(telegram):
    configure_telegram(telegram)
    alerts.bracket_failed(
        run_id=1, bracket_id="tb-1-2", error="timeout", rolled_back=False, left_open=["tb-1-2-sl"]
    )
    alerts.bracket_failed(
        run_id=1, bracket_id="tb-1-3", error="rejected", rolled_back=True, left_open=[]
    )
    assert notify.flush(10)
    (text,) = telegram.texts()  # a clean rollback is recorded, not alerted
    assert text.startswith("🚨 [CRITICAL] Bracket tb-1-2 failed and its rollback FAILED")
    assert "tb-1-2-sl" in text
    assert Event.objects.filter(kind="bracket_failed", bracket_id="tb-1-3").exists()


@pytest.mark.django_db(transaction=True)
def test_disconnect_orphans_and_protection_alerts(telegram):
    configure_telegram(telegram, alert_protections=False)
    alerts.broker_disconnected(
        account="deribit testnet", reason="socket closed", auto_reconnect=False
    )
    alerts.orphans_cancelled(account="deribit testnet", labels=["tb-3-1-tp"])
    alerts.protection_tripped(run_id=3, protection="daily_loss", detail="-3 % today")
    assert notify.flush(10)
    texts = telegram.texts()
    assert len(texts) == 2
    assert "disconnected: socket closed — trading stopped, reconnect manually" in texts[0]
    assert "Cancelled 1 orphan order(s) on deribit testnet: tb-3-1-tp" in texts[1]
    assert Event.objects.filter(kind="protection_tripped").count() == 1


@pytest.mark.django_db
def test_daily_summary_counts_the_last_24_hours():
    now = timezone.now()
    for n, (hours_ago, pnl) in enumerate([(1, "5.50"), (2, "-1.25"), (30, "100")]):
        bracket = Bracket.objects.create(
            bracket_id=f"b{n}",
            broker="paper",
            instrument="BTC-PERPETUAL",
            side="buy",
            amount=Decimal("10"),
            stop_price=Decimal("1"),
            take_profit_price=Decimal("2"),
        )
        Trade.objects.create(
            bracket=bracket,
            instrument="BTC-PERPETUAL",
            side="buy",
            amount=Decimal("10"),
            entry_price=Decimal("1"),
            exit_price=Decimal("2"),
            pnl=Decimal(pnl),
            pnl_usd=Decimal(pnl),
            fees=Decimal("0"),
            currency="BTC",
            opened_at=now - timedelta(hours=hours_ago, minutes=5),
            closed_at=now - timedelta(hours=hours_ago),
            duration_seconds=Decimal("300"),
            exit_reason="take_profit",
        )
    text = daily_summary_text(now=now)
    assert "Trades: 2 (1 won, 1 lost), P&L +4.25 USD" in text
    assert "No active run" in text


@pytest.mark.django_db(transaction=True)
def test_daily_summary_task_alerts(telegram):
    configure_telegram(telegram)
    daily_summary.apply()
    assert notify.flush(10)
    (text,) = telegram.texts()
    assert "Daily summary" in text and "Trades: none" in text
    configure_telegram(telegram, alert_daily_summary=False)
    daily_summary.apply()
    assert notify.flush(10)
    assert len(telegram.texts()) == 1
