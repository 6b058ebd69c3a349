"""The loop on the paper broker: analyse → size → bracket → position → trade → analyse."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
from django.db import connection

from apps.monitoring.models import Event
from apps.monitoring.testing import telegram  # noqa: F401 - the fake Bot API fixture
from apps.orders.models import Bracket, BracketState, Trade
from apps.strategies.models import RunState, StrategyRun
from apps.strategies.runner.loop import run_loop_forever
from apps.strategies.tests.runner_kit import Driver, make_run, open_orders, paper_gateway, positions

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_loop")]


def exits(engine) -> int:
    return sum(1 for t in engine.trades() if t.label.endswith(("-sl", "-tp")))


def test_paper_run_trades_and_records_each_trade_from_fills():
    run = make_run()
    gateway = paper_gateway()
    stop = threading.Event()
    with Driver(gateway, stop, until=lambda e: exits(e) >= 3) as driver:
        outcome = run_loop_forever(
            run.id, gateway_factory=lambda r: gateway, stop=stop, max_seconds=60
        )
    assert driver.error is None
    assert outcome == "shutdown"
    engine = gateway.broker.engine
    trades = list(Trade.objects.order_by("closed_at"))
    assert len(trades) >= 3
    sides = [t.side for t in trades]
    assert sides[:3] == ["buy", "sell", "buy"]  # fast_test alternates after each closed trade
    for trade in trades:
        fills = [
            f for f in engine.trades() if f.label.startswith(f"tb-{trade.bracket.bracket_id}-")
        ]
        assert {f.trade_id for f in fills} == set(trade.fill_ids)
        assert trade.fees == sum(Decimal(str(f.fee)) for f in fills)
        assert trade.exit_reason in ("stop_loss", "take_profit")
        assert trade.risk_settings["mode"] in ("percent", "fixed")
        assert trade.bracket.state == BracketState.CLOSED
        assert trade.duration_seconds >= 0
    # the whole path is in the transition rows
    reasons = list(run.transitions.order_by("id").values_list("to_state", flat=True))
    assert reasons[:5] == [
        "ANALYZING",
        "SIGNAL_DETECTED",
        "ENTERING_POSITION",
        "POSITION_OPEN",
        "CLOSING",
    ]
    assert Event.objects.filter(kind="bracket_opened").count() >= 3
    assert Event.objects.filter(kind="bracket_closed").count() == len(trades)
    run.refresh_from_db()
    assert run.heartbeat_at is not None
    gateway.close()


def test_losing_the_lock_stops_trading_at_once():
    from tradebaas.redis import redis_client, rkey

    run = make_run()
    gateway = paper_gateway()
    stop = threading.Event()

    def steal(step: int) -> None:
        if step == 3:
            redis_client().set(rkey("lock:runner"), "999:999")

    with Driver(gateway, stop, until=lambda e: False, before_step=steal, limit=200):
        outcome = run_loop_forever(
            run.id, gateway_factory=lambda r: gateway, stop=stop, max_seconds=30
        )
    assert outcome == "lock-lost"
    assert Event.objects.filter(kind="lock_lost").exists()
    gateway.close()


def test_a_held_lock_means_a_second_loop_does_nothing():
    from apps.strategies.runner.lock import RunnerLock

    run = make_run()
    other = RunnerLock(run.id)
    assert other.acquire()
    assert (
        run_loop_forever(run.id, gateway_factory=lambda r: pytest.fail("must not connect"))
        == "busy"
    )
    other.release()


def test_an_exception_in_the_loop_is_error_with_context_and_stops():
    run = make_run(strategy="fast_test")
    gateway = paper_gateway()

    class Boom(Exception):
        pass

    async def failing_summary(*args, **kwargs):
        raise Boom("equity unreadable")

    gateway.broker.account_summary = failing_summary  # read alone or with other reads
    stop = threading.Event()
    with Driver(gateway, stop, until=lambda e: False, limit=10):
        outcome = run_loop_forever(
            run.id, gateway_factory=lambda r: gateway, stop=stop, max_seconds=30
        )
    assert outcome == "error"
    run.refresh_from_db()
    assert run.state == RunState.ERROR
    assert "equity unreadable" in run.error_message
    assert run.error_context["exception"] == "Boom"
    assert any("equity unreadable" in line for line in run.error_context["traceback"])
    # the loop's own log lines (the equity is read while it waits for the candle)
    assert any("→ ANALYZING" in line for line in run.error_context["log"])
    assert Event.objects.filter(kind="run_error", level="error").exists()
    assert not positions(gateway)
    assert not open_orders(gateway)
    # ERROR is not left by starting the loop again
    assert run_loop_forever(run.id, gateway_factory=lambda r: gateway) == "not-runnable"
    gateway.close()


@pytest.mark.django_db(transaction=True)
def test_stopping_the_run_ends_the_loop():
    run = make_run()
    gateway = paper_gateway()
    stop = threading.Event()

    def stop_run(step: int) -> None:
        if step == 2:
            StrategyRun.objects.filter(id=run.id).update(is_active=False)
            connection.close()

    with Driver(gateway, stop, until=lambda e: False, before_step=stop_run, limit=200):
        outcome = run_loop_forever(
            run.id, gateway_factory=lambda r: gateway, stop=stop, max_seconds=30
        )
    assert outcome == "stopped"
    gateway.close()


def test_a_tripped_protection_pauses_the_run_with_its_reason():
    from django.utils import timezone

    from apps.orders.models import Bracket
    from apps.risk.models import RiskSettings

    RiskSettings.objects.update_or_create(pk=1, defaults={"cooldown_minutes": 60})
    bracket = Bracket.objects.create(
        bracket_id="old1",
        broker="paper",
        instrument="BTC-PERPETUAL",
        side="buy",
        amount=1,
        stop_price=1,
        take_profit_price=2,
        state="CLOSED",
    )
    Trade.objects.create(
        bracket=bracket,
        instrument="BTC-PERPETUAL",
        side="buy",
        amount=1,
        entry_price=2,
        exit_price=1,
        pnl=Decimal("-0.001"),
        pnl_usd=-20,
        fees=0,
        currency="BTC",
        opened_at=timezone.now(),
        closed_at=timezone.now(),
        duration_seconds=1,
        exit_reason="stop_loss",
    )
    run = make_run()
    gateway = paper_gateway()
    stop = threading.Event()
    with Driver(gateway, stop, until=lambda e: False, limit=10):
        outcome = run_loop_forever(
            run.id, gateway_factory=lambda r: gateway, stop=stop, max_seconds=30
        )
    assert outcome == "paused"
    run.refresh_from_db()
    assert run.state == RunState.PAUSED
    assert "COOLDOWN" in run.pause_reason.upper()
    assert Event.objects.filter(kind="protection_tripped").exists()
    assert not positions(gateway)


def test_a_refused_size_is_not_traded_and_analysis_goes_on():
    from apps.risk.models import RiskSettings

    RiskSettings.objects.update_or_create(
        pk=1, defaults={"mode": "fixed", "value": Decimal("0.01")}
    )
    run = make_run()
    gateway = paper_gateway()
    stop = threading.Event()
    with Driver(gateway, stop, until=lambda e: False, limit=8):
        outcome = run_loop_forever(
            run.id, gateway_factory=lambda r: gateway, stop=stop, max_seconds=30
        )
    assert outcome == "shutdown"
    run.refresh_from_db()
    assert run.state == RunState.ANALYZING
    assert Event.objects.filter(kind="trade_refused").count() >= 2
    assert not Bracket.objects.exists()
    assert not positions(gateway)


def test_checkpoints_of_each_analysis_are_kept_for_the_page():
    import json

    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    from apps.strategies.runner.loop import CHECKPOINTS_KEY
    from tradebaas.redis import redis_client, rkey

    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)("live", channel)
    run = make_run()
    gateway = paper_gateway()
    stop = threading.Event()
    with Driver(gateway, stop, until=lambda e: len(e.trades()) > 0, limit=20):
        run_loop_forever(run.id, gateway_factory=lambda r: gateway, stop=stop, max_seconds=30)
    stored = json.loads(redis_client().get(rkey(CHECKPOINTS_KEY)))
    assert stored["run_id"] == run.id
    assert {c["name"] for c in stored["checkpoints"]} >= {"flat", "next side"}
    from apps.strategies.selectors import run_status

    assert run_status()["analysis"]["run_id"] == run.id

    # and each analysis went to the open pages as a fragment
    async def drain() -> list[str]:
        import asyncio

        out: list[str] = []
        while len(out) < 500:
            try:
                message = await asyncio.wait_for(layer.receive(channel), 1.0)
            except TimeoutError:
                break
            out.append(message.get("html", ""))
        return out

    pushed = async_to_sync(drain)()
    assert any('id="run-checkpoints"' in html and "next side" in html for html in pushed)


def test_the_loop_trades_through_the_emulated_bracket_too():
    run = make_run()
    gateway = paper_gateway(linked=False)
    stop = threading.Event()
    with Driver(gateway, stop, until=lambda e: exits(e) >= 1):
        run_loop_forever(run.id, gateway_factory=lambda r: gateway, stop=stop, max_seconds=60)
    trade = Trade.objects.order_by("closed_at").first()
    assert trade is not None
    assert trade.bracket.linked is False
    assert trade.exit_reason in ("stop_loss", "take_profit")


@pytest.mark.django_db(transaction=True)  # the alert thread reads the settings on its own
@pytest.mark.parametrize(
    ("to", "reason", "words"),
    [(RunState.ERROR, "exception", "boom"), (RunState.PAUSED, "disconnected", "socket gone")],
)
def test_error_and_pause_alert_over_telegram(
    telegram,  # noqa: F811 - the fixture imported above
    django_capture_on_commit_callbacks,
    to,
    reason,
    words,
):
    from apps.monitoring.testing import configure_telegram
    from apps.strategies.services import run_transition

    configure_telegram(telegram)
    run = make_run(state=RunState.ANALYZING)
    with django_capture_on_commit_callbacks(execute=True):
        assert run_transition(run_id=run.id, to=to, reason=reason, message=words)
    sent = telegram.wait_for_sent(1)
    assert words in sent[0]["text"]
    assert str(to) in sent[0]["text"]


def _foreign_open_bracket() -> Bracket:
    """A live bracket of ours on the same account (another instrument): it counts as open."""
    return Bracket.objects.create(
        bracket_id="elsewhere1",
        broker="paper",
        instrument="ETH-PERPETUAL",
        side="buy",
        amount=1,
        stop_price=1,
        take_profit_price=2,
        state=BracketState.OPEN,
    )


@pytest.mark.parametrize(("limit", "trades"), [(1, False), (2, True)])
def test_max_open_trades_counts_our_live_brackets_before_any_entry(limit, trades):
    from apps.risk.models import RiskSettings

    RiskSettings.objects.update_or_create(pk=1, defaults={"max_open_trades": limit})
    _foreign_open_bracket()
    run = make_run()
    gateway = paper_gateway()
    stop = threading.Event()
    with Driver(gateway, stop, until=lambda e: bool(positions(gateway)), limit=8):
        outcome = run_loop_forever(
            run.id, gateway_factory=lambda r: gateway, stop=stop, max_seconds=30
        )
    assert outcome == "shutdown"
    placed = Bracket.objects.filter(run_id=run.id)
    if trades:
        assert placed.exists()
        assert not Event.objects.filter(kind="trade_refused").exists()
    else:
        assert not placed.exists()
        assert not positions(gateway) and not open_orders(gateway)
        refused = Event.objects.filter(kind="trade_refused")
        assert refused.count() >= 2  # each signal, not a pause: analysis goes on
        assert refused.first().context["code"] == "MAX_OPEN_TRADES"
        run.refresh_from_db()
        assert run.state == RunState.ANALYZING
    gateway.close()


def test_loop_metrics_state_lock_and_a_real_heartbeat_age():
    import time

    from prometheus_client import REGISTRY

    def sample(name: str, **labels) -> float | None:
        return REGISTRY.get_sample_value(name, labels)

    run = make_run()
    gateway = paper_gateway()
    stop = threading.Event()
    seen: dict[str, float | None] = {}

    def look(step: int) -> None:  # from the driver's thread, while the loop runs
        if step == 4:
            seen["lock"] = sample("tradebaas_runner_lock_held")
            seen["age"] = sample("tradebaas_runner_heartbeat_age_seconds")
            seen["states"] = sum(
                sample("tradebaas_run_state", state=s.value) or 0 for s in RunState
            )

    with Driver(gateway, stop, until=lambda e: False, before_step=look, limit=6):
        run_loop_forever(run.id, gateway_factory=lambda r: gateway, stop=stop, max_seconds=30)
    assert seen["lock"] == 1
    assert 0 <= seen["age"] < 2.5  # stamped about every second
    assert seen["states"] == 1  # exactly one state is 1
    # after the loop: no lock, the run's state shown, and the heartbeat only gets older
    assert sample("tradebaas_runner_lock_held") == 0
    run.refresh_from_db()
    assert sample("tradebaas_run_state", state=run.state) == 1
    first = sample("tradebaas_runner_heartbeat_age_seconds")
    time.sleep(0.3)
    assert sample("tradebaas_runner_heartbeat_age_seconds") >= first + 0.25
    gateway.close()
