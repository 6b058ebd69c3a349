"""Telegram commands through the Bot API (a local fake): configured chat only, remote start gated."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.utils import timezone

from apps.monitoring import telegram_bot
from apps.monitoring.models import NotificationSettings
from apps.monitoring.testing import configure_telegram
from apps.orders.models import Bracket, Trade
from apps.strategies import services
from apps.strategies.models import RunState, StrategyRun

pytestmark = pytest.mark.django_db

CHAT = "4242"


def _ask(telegram, text: str, chat_id: str = CHAT) -> list[str]:
    before = len(telegram.sent)
    telegram.push_update(text, chat_id=chat_id)
    telegram_bot.poll_once(timeout=0)
    return telegram.texts()[before:]


def _start_run() -> StrategyRun:
    return services.run_start(strategy="fast_test", params={}, instrument="BTC-PERPETUAL")


def _trade(run_id: int, n: int, pnl: str) -> Trade:
    now = timezone.now()
    bracket = Bracket.objects.create(
        bracket_id=f"tb-{run_id}-{n}",
        run_id=run_id,
        broker="paper",
        instrument="BTC-PERPETUAL",
        side="buy",
        amount=Decimal("100"),
        stop_price=Decimal("64000"),
        take_profit_price=Decimal("66000"),
    )
    return Trade.objects.create(
        bracket=bracket,
        run_id=run_id,
        instrument="BTC-PERPETUAL",
        side="buy",
        amount=Decimal("100"),
        entry_price=Decimal("65000"),
        exit_price=Decimal("66000"),
        pnl=Decimal(pnl) / Decimal("65000"),
        pnl_usd=Decimal(pnl),
        fees=Decimal("0.0000001"),
        currency="BTC",
        opened_at=now - timedelta(minutes=5),
        closed_at=now - timedelta(minutes=n),
        duration_seconds=Decimal("300"),
        exit_reason="take_profit",
    )


def test_status_answers_the_configured_chat(telegram):
    configure_telegram(telegram, chat_id=CHAT)
    assert _ask(telegram, "/status") == ["No run yet."]
    run = _start_run()
    (reply,) = _ask(telegram, "/status@TradebaasBot")
    assert f"Run {run.id}: fast_test on BTC-PERPETUAL" in reply
    assert "State: IDLE" in reply
    assert telegram.sent[-1]["chat_id"] == CHAT


def test_commands_from_other_chats_are_ignored_and_not_acted_on(telegram):
    configure_telegram(telegram, chat_id=CHAT)
    run = _start_run()
    assert _ask(telegram, "/stop", chat_id="666") == []
    run.refresh_from_db()
    assert run.is_active


def test_offset_is_stored_so_a_command_is_never_replayed(telegram):
    configure_telegram(telegram, chat_id=CHAT)
    _start_run()
    assert len(_ask(telegram, "/stop")) == 1
    offset = NotificationSettings.load().telegram_update_offset
    assert offset == telegram.updates[-1]["update_id"] + 1
    assert telegram_bot.poll_once(timeout=0) == 0  # nothing new


def test_stop_and_pause_act_on_the_run(telegram):
    configure_telegram(telegram, chat_id=CHAT)
    run = _start_run()
    StrategyRun.objects.filter(id=run.id).update(state=RunState.ANALYZING)
    (reply,) = _ask(telegram, "/pause")
    assert reply == f"Run {run.id} paused (state PAUSED)."
    (reply,) = _ask(telegram, "/stop")
    assert reply.startswith(f"Run {run.id} stopped.")
    run.refresh_from_db()
    assert not run.is_active
    assert run.transitions.filter(message="stopped from Telegram").exists()
    assert _ask(telegram, "/stop") == ["No strategy run is active"]


def test_start_and_restart_need_remote_start(telegram):
    configure_telegram(telegram, chat_id=CHAT, remote_start_enabled=False)
    run = _start_run()
    services.run_transition(run_id=run.id, to=RunState.ERROR, reason="boom", message="lost")
    (reply,) = _ask(telegram, "/restart")
    assert "disabled" in reply
    run.refresh_from_db()
    assert run.state == RunState.ERROR
    assert "manual restart required" in _ask(telegram, "/status")[0]

    configure_telegram(telegram, chat_id=CHAT, remote_start_enabled=True)
    (reply,) = _ask(telegram, "/restart")
    assert reply.startswith(f"Run {run.id} restarted")
    run.refresh_from_db()
    assert run.state == RunState.IDLE


def test_start_repeats_the_last_run_when_enabled(telegram):
    configure_telegram(telegram, chat_id=CHAT, remote_start_enabled=True)
    first = _start_run()
    services.run_stop(reason="test")
    (reply,) = _ask(telegram, "/start")
    new = StrategyRun.objects.get(is_active=True)
    assert new.id != first.id
    assert reply == f"Run {new.id} started: fast_test on BTC-PERPETUAL (as run {first.id})."


def test_profit_and_trades(telegram):
    configure_telegram(telegram, chat_id=CHAT)
    assert _ask(telegram, "/trades") == ["No trades yet."]
    run = _start_run()
    _trade(run.id, 1, "12.50")
    _trade(run.id, 2, "-2.25")
    (reply,) = _ask(telegram, "/profit")
    assert f"Run {run.id}: 2 trades, 1 won (50.0 %), P&L +10.25 USD" in reply
    (reply,) = _ask(telegram, "/trades")
    assert reply.splitlines()[0] == "Last 2 trades:"
    assert "+12.50 USD (take_profit)" in reply


def test_balance_without_an_account_says_paper(telegram):
    configure_telegram(telegram, chat_id=CHAT)
    assert _ask(telegram, "/balance") == ["No broker account connected: trading on paper."]


def test_unknown_command_gets_help(telegram):
    configure_telegram(telegram, chat_id=CHAT)
    (reply,) = _ask(telegram, "/moon")
    assert reply.startswith("Unknown command /moon.") and "/status" in reply


@pytest.mark.django_db(transaction=True)
def test_management_command_runs_one_pass(telegram):
    configure_telegram(telegram, chat_id=CHAT)
    telegram.push_update("/status", chat_id=CHAT)
    call_command("telegram_bot", "--once", "--poll-timeout", "0")
    assert telegram.texts() == ["No run yet."]
