"""The context a loop gathers while it waits for the candle close (runner/entry.py) must never
let a trade use stale facts: the risk settings are read on the close itself, and an account
event (an order appearing, a fill) drops what was read of the account before it."""

from __future__ import annotations

import itertools
import threading
from decimal import Decimal

import pytest

from apps.brokers.base import OrderRequest, Side
from apps.orders.models import Bracket
from apps.risk.services import risk_settings_update
from apps.strategies.models import RunState, StrategyRun
from apps.strategies.runner.loop import Loop, run_loop_forever
from apps.strategies.tests.runner_kit import Driver, make_run, paper_gateway, run_driven

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_loop")]


@pytest.fixture
def gathered(monkeypatch):
    """Set once the loop has gathered a context while waiting (and holds it)."""
    event = threading.Event()
    original = Loop._prepare

    def spy(self) -> None:
        original(self)
        if self.ready is not None:
            event.set()

    monkeypatch.setattr(Loop, "_prepare", spy)
    return event


def test_settings_changed_after_the_context_was_gathered_size_the_trade(gathered):
    risk_settings_update(mode="percent", value=Decimal("1"))
    gateway = paper_gateway()

    def change_settings() -> None:
        assert gathered.wait(10), "the loop never gathered a context"
        risk_settings_update(mode="fixed", value=Decimal("50"))

    run_driven(gateway, change_settings)
    bracket = Bracket.objects.get()
    assert bracket.risk_settings["mode"] == "fixed"
    assert bracket.risk_settings["value"] == "50"
    assert Decimal("49") < Decimal(bracket.sizing["risk_usd"]) <= Decimal("50")  # amount floored


def test_an_order_that_appears_after_the_context_was_gathered_blocks_the_entry(gathered):
    """A stop of ours left without its bracket (an orphan) shows up between the gathering and
    the close: the account event drops the gathered pre-flight, the close reads the account
    again, and the placement is blocked (ORPHANS_DETECTED) instead of trading next to it."""
    gateway = paper_gateway()

    def orphan_appears() -> None:
        assert gathered.wait(10), "the loop never gathered a context"
        price = gateway.on_loop(lambda: gateway.broker.engine.last_price("BTC-PERPETUAL"))
        request = OrderRequest(
            instrument="BTC-PERPETUAL",
            side=Side.SELL,
            amount=Decimal("10"),
            order_type="stop_market",
            label="tb-0rphan0000000000-sl",
            trigger_price=(Decimal(str(price)) * Decimal("0.5")).quantize(Decimal("1")),
            trigger="last_price",
        )
        gateway.run(gateway.broker.place_order(request))

    outcome = run_driven(gateway, orphan_appears)
    assert outcome == "paused"
    run = StrategyRun.objects.get()
    assert run.state == RunState.PAUSED
    assert run.pause_reason == "ORPHANS_DETECTED"
    assert not Bracket.objects.exists()  # nothing was written or sent


def test_the_entry_path_takes_only_moves_run_transition_allows():
    from apps.strategies.services import Step, run_path

    path = run_path(
        run_id=1,
        start=RunState.ANALYZING,
        steps=[Step(RunState.SIGNAL_DETECTED, "signal"), Step(RunState.ENTERING_POSITION, "x")],
        fence=3,
    )
    assert path.final == RunState.ENTERING_POSITION
    assert path.guard.where == {"id": 1, "state": "ANALYZING", "is_active": True, "fence": 3}
    assert [(r.from_state, r.to_state) for r in path.rows] == [
        ("ANALYZING", "SIGNAL_DETECTED"),
        ("SIGNAL_DETECTED", "ENTERING_POSITION"),
    ]
    with pytest.raises(ValueError):  # the signal step cannot be skipped
        run_path(
            run_id=1,
            start=RunState.ANALYZING,
            steps=[Step(RunState.ENTERING_POSITION, "x")],
            fence=3,
        )
    with pytest.raises(ValueError):  # a pause is run_transition's (it alerts)
        run_path(run_id=1, start=RunState.ANALYZING, steps=[Step(RunState.PAUSED, "x")], fence=3)


def spy(monkeypatch, owner, name: str, calls: list, note: str | None = None) -> None:
    """Replace ``owner.name`` by a pass-through that appends to ``calls`` the call's result or,
    with ``note``, the note when the call starts (to see which of two calls came first)."""
    real = getattr(owner, name)

    def passing(*args, **kwargs):
        if note is not None:
            calls.append(note)
        result = real(*args, **kwargs)
        if note is None:
            calls.append(result)
        return result

    monkeypatch.setattr(owner, name, passing)


def test_the_loop_sends_with_intents_armed_ahead_and_leaves_none_behind(monkeypatch):
    """The next bracket's intent is written while the loop waits (apps/orders/armed.py); the
    close fills it in and sends. A loop that ends deletes the one it did not use."""
    from apps.orders.models import BracketState
    from apps.strategies.runner import loop as runner_loop

    intents: list = []
    spy(monkeypatch, runner_loop, "bracket_arm", intents)
    run = make_run()
    gateway = paper_gateway()
    stop = threading.Event()

    def exits(engine) -> int:
        return sum(1 for t in engine.trades() if t.label.endswith(("-sl", "-tp")))

    with Driver(gateway, stop, until=lambda e: exits(e) >= 3) as driver:
        run_loop_forever(run.id, gateway_factory=lambda r: gateway, stop=stop, max_seconds=60)
    assert driver.error is None
    placed = set(
        Bracket.objects.exclude(state=BracketState.ARMED).values_list("bracket_id", flat=True)
    )
    assert len(placed) >= 3
    armed_ids = {intent.bracket_id for intent in intents}
    assert placed & armed_ids, "no bracket went out with an intent armed ahead"
    assert not Bracket.objects.filter(state=BracketState.ARMED).exists()
    for bracket in Bracket.objects.filter(bracket_id__in=armed_ids):  # filled in after the answer
        assert bracket.side in ("buy", "sell") and bracket.amount > 0
        assert bracket.risk_settings["mode"] in ("percent", "fixed")
    gateway.close()


def _order(label: str, state, filled: str = "0"):
    from apps.brokers.base import Order as BrokerOrder

    return BrokerOrder(
        order_id="1",
        instrument="BTC-PERPETUAL",
        direction=Side.SELL,
        order_type="stop_market",
        amount=Decimal("10"),
        filled_amount=Decimal(filled),
        state=state,
        label=label,
    )


def _fill(label: str):
    from apps.brokers.base import Fill

    return Fill("t", "1", "BTC-PERPETUAL", Side.SELL, Decimal("1"), Decimal("10"),
                Decimal("0"), "BTC", "T", label, 0)  # fmt: skip


def test_only_events_that_may_close_the_bracket_check_it_at_once():
    """Our own entry filling and a leg resting do not cost a check of the bracket (several round
    trips); a leg filling, triggered or cancelled, and anything not ours, do."""
    from apps.brokers.base import OrderState
    from apps.strategies.runner.loop import _may_close

    bracket = Bracket(bracket_id="abc")
    entry, stop, target = "tb-abc-entry", "tb-abc-sl", "tb-abc-tp"
    assert not _may_close(bracket, _fill(entry))
    assert not _may_close(bracket, _order(entry, OrderState.FILLED, "10"))
    assert not _may_close(bracket, _order(stop, OrderState.UNTRIGGERED))
    assert not _may_close(bracket, _order(target, OrderState.OPEN))
    assert _may_close(bracket, _order(entry, OrderState.CANCELLED))
    assert _may_close(bracket, _order(stop, OrderState.TRIGGERED))
    assert _may_close(bracket, _order(stop, OrderState.FILLED, "10"))
    assert _may_close(bracket, _order(stop, OrderState.CANCELLED))
    assert _may_close(bracket, _order(target, OrderState.OPEN, "3"))  # partly filled
    assert _may_close(bracket, _fill(target))
    assert _may_close(bracket, _fill("manual"))
    assert _may_close(bracket, _order("tb-other-sl", OrderState.UNTRIGGERED))


def test_a_trade_closed_on_the_candle_is_written_before_the_next_entry_and_announced_after():
    """The candle on which the stop or target filled is also the next decision's: the trade's
    rows (trade, bracket closed, the run's moves) are written before that decision; its events
    (history line, alert) are sent once the next bracket is out, and none is lost."""
    from apps.monitoring.models import Event
    from apps.orders.gateway import BrokerGateway
    from apps.orders.models import BracketState, Trade

    seen: list[tuple[int, int, int]] = []  # at each send: (brackets closed, trades, events)
    place = BrokerGateway.place_bracket

    def spy(self, request):
        seen.append(
            (
                Bracket.objects.filter(state=BracketState.CLOSED).count(),
                Trade.objects.count(),
                Event.objects.filter(kind="bracket_closed").count(),
            )
        )
        return place(self, request)

    run = make_run()
    gateway = paper_gateway()
    stop = threading.Event()

    def exits(engine) -> int:
        return sum(1 for t in engine.trades() if t.label.endswith(("-sl", "-tp")))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(BrokerGateway, "place_bracket", spy)
        with Driver(gateway, stop, until=lambda e: exits(e) >= 4) as driver:
            run_loop_forever(run.id, gateway_factory=lambda r: gateway, stop=stop, max_seconds=60)
    assert driver.error is None
    assert len(seen) >= 4
    for closed, trades, events in seen:
        assert closed == trades  # every closed bracket's trade was written before the send
    assert any(events < trades for _, trades, events in seen), "no event was sent after the entry"
    trades = Trade.objects.count()
    assert trades >= 3
    assert Event.objects.filter(kind="bracket_closed").count() == trades  # none lost
    moves = list(run.transitions.order_by("id").values_list("from_state", "to_state"))
    assert ("POSITION_OPEN", "CLOSING") in moves
    for (_, to), (frm, _) in itertools.pairwise(moves):
        assert to == frm  # the run's moves chain, in order
    gateway.close()


def test_the_protections_history_in_one_query_is_what_the_orm_reads():
    """The trades (newest first, the model's order) and the live brackets' count that the
    protections use: one PostgreSQL query, the same rows as through the ORM."""
    from datetime import timedelta

    from django.db import connection
    from django.utils import timezone

    from apps.orders.models import BracketState, Trade
    from apps.strategies.runner.entry import TRADES_LOOKBACK, _history_one_query, _history_orm

    if connection.vendor != "postgresql":
        pytest.skip("the one-query form is PostgreSQL's")
    now = timezone.now()
    numbers = itertools.count()

    def a_bracket(state=BracketState.CLOSED, broker="deribit", account=None) -> Bracket:
        return Bracket.objects.create(
            bracket_id=f"h{next(numbers)}", broker=broker, broker_account_id=account,
            instrument="BTC-PERPETUAL", side="buy", amount=10, stop_price=1,
            take_profit_price=2, state=state,
        )  # fmt: skip

    def a_trade(closed_ago, instrument="BTC-PERPETUAL", reason="stop_loss", pnl="-1"):
        return Trade.objects.create(
            bracket=a_bracket(), instrument=instrument, side="buy", amount=10,
            entry_price=1, exit_price=1, pnl=Decimal(pnl), pnl_usd=0, fees=0, currency="BTC",
            opened_at=now - closed_ago - timedelta(minutes=5), closed_at=now - closed_ago,
            duration_seconds=300, exit_reason=reason,
        )  # fmt: skip

    a_trade(timedelta(hours=1))
    a_trade(timedelta(hours=1), reason="take_profit", pnl="2")  # same time: newest id first
    a_trade(timedelta(hours=30), pnl="-0.5")
    a_trade(timedelta(days=3))  # older than the lookback
    a_trade(timedelta(hours=2), instrument="ETH-PERPETUAL")  # another instrument
    for state in (BracketState.OPEN, BracketState.PLACING, BracketState.UNKNOWN):
        a_bracket(state)
    a_bracket(BracketState.OPEN, account=5)
    a_bracket(BracketState.OPEN, broker="paper")
    since = now - TRADES_LOOKBACK
    for account, live in ((None, 3), (5, 1)):
        fast = _history_one_query(since, "BTC-PERPETUAL", "deribit", account)
        assert fast == _history_orm(since, "BTC-PERPETUAL", "deribit", account)
        rows, count = fast
        assert count == live
        assert [(reason, pnl) for _, pnl, reason in rows] == [
            ("take_profit", Decimal("2")), ("stop_loss", Decimal("-1")),
            ("stop_loss", Decimal("-0.5")),
        ]  # fmt: skip


def test_a_close_without_a_signal_keeps_its_intent_armed_for_the_next(monkeypatch):
    """The intent's fire is sent as the candle arrives (RunnerLock.fire_ahead). A close that
    trades nothing arms the intent again, and the next signal goes out with that same intent."""
    from apps.orders import brackets
    from apps.orders.gateway import BrokerGateway
    from apps.orders.models import BracketState
    from apps.strategies.library.fast_test import FastTest
    from apps.strategies.runner import loop as runner_loop
    from apps.strategies.runner.lock import FireAhead, RunnerLock

    intents: list = []
    aheads: list = []
    taken: list = []
    forgotten: list = []  # the fire found the intent not armed: it was written anew
    order: list[str] = []  # the request, and the run's path rows: which came first
    spy(monkeypatch, runner_loop, "bracket_arm", intents)
    spy(monkeypatch, RunnerLock, "fire_ahead", aheads)
    spy(monkeypatch, FireAhead, "take", taken)
    spy(monkeypatch, brackets, "armed_forget", forgotten)
    spy(monkeypatch, runner_loop, "run_path", order, note="path rows")
    spy(monkeypatch, BrokerGateway, "place_bracket", order, note="request")
    quiet = itertools.count()
    decide = FastTest.decide

    def first_closes_quiet(self, candles):
        return None if next(quiet) < 3 else decide(self, candles)

    monkeypatch.setattr(FastTest, "decide", first_closes_quiet)
    run = make_run()
    gateway = paper_gateway()
    stop = threading.Event()
    with Driver(gateway, stop, until=lambda e: len(e.trades()) >= 1) as driver:
        run_loop_forever(run.id, gateway_factory=lambda r: gateway, stop=stop, max_seconds=60)
    gateway.close()
    assert driver.error is None
    assert len(aheads) >= 3 and all(ahead.settled for ahead in aheads)
    assert len(taken) == 1  # the signal went out on a fire sent ahead
    first = Bracket.objects.exclude(state=BracketState.ARMED).order_by("pk").first()
    assert first is not None
    assert first.bracket_id == intents[0].bracket_id  # armed before the quiet closes, used after
    assert forgotten == []  # each quiet close armed it again
    # with an intent armed ahead, the run's path rows are made once the exchange has answered
    assert order[:2] == ["request", "path rows"], order
    assert not Bracket.objects.filter(state=BracketState.ARMED).exists()
