"""Reconcile before trading: unknown outcomes by label, trades closed while down, positions without
a stop, positions nobody claims, orphans. Against the paper engine (the exchange)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from apps.brokers.base import BracketRequest, OrderRequest, Side
from apps.monitoring.models import Event
from apps.orders.brackets import BracketPlan, _write_intent
from apps.orders.gateway import BrokerGateway
from apps.orders.models import Bracket, BracketState, OrderRole, Trade
from apps.orders.reconcile import reconcile
from apps.orders.tests.faulty import FaultyPaperBroker
from apps.orders.tests.test_brackets import INSTRUMENT, plan_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def gateway():
    made = BrokerGateway(FaultyPaperBroker(linked=True, warmup=5))
    made.connect()
    yield made
    made.close()


def engine(gateway):
    return gateway.broker.engine


def _unknown(gateway, plan: BracketPlan) -> Bracket:
    """Rows as a crash after sending leaves them: written, outcome never heard."""
    bracket, _ = _write_intent(plan, gateway)
    bracket.state = BracketState.UNKNOWN
    bracket.save()
    return bracket


def _request(plan: BracketPlan) -> BracketRequest:
    return plan.request()


def _reconcile(gateway, policy: str = "protect"):
    return reconcile(gateway, instrument=INSTRUMENT, run_id=None, account_id=None, policy=policy)


def test_an_unknown_bracket_that_reached_the_exchange_is_adopted_as_open(gateway):
    plan = plan_for(gateway)
    bracket = _unknown(gateway, plan)
    gateway.place_bracket(_request(plan))
    report = _reconcile(gateway)
    bracket.refresh_from_db()
    assert bracket.state == BracketState.OPEN
    assert report.open_bracket == bracket
    assert report.resolved == [f"{plan.bracket_id}:open"]
    roles = {o.role: o for o in bracket.orders.all()}
    assert all(roles[r].exchange_id for r in (OrderRole.ENTRY, OrderRole.STOP_LOSS))


def test_an_unknown_bracket_that_never_arrived_is_failed(gateway):
    plan = plan_for(gateway)
    bracket = _unknown(gateway, plan)
    report = _reconcile(gateway)
    bracket.refresh_from_db()
    assert bracket.state == BracketState.FAILED
    assert report.resolved == [f"{plan.bracket_id}:not_placed"]
    assert report.open_bracket is None


def test_a_trade_that_closed_while_down_is_recorded(gateway):
    plan = plan_for(gateway)
    bracket = _unknown(gateway, plan)
    gateway.place_bracket(_request(plan))
    gateway.on_loop(lambda: engine(gateway).close_position(INSTRUMENT))  # by hand, meanwhile
    gateway.on_loop(lambda: engine(gateway).cancel_all())
    report = _reconcile(gateway)
    trade = Trade.objects.get(bracket=bracket)
    assert report.trades == [plan.bracket_id]
    assert trade.recorded_by == "reconcile"
    assert trade.amount == plan.amount
    assert trade.fees > 0
    bracket.refresh_from_db()
    assert bracket.state == BracketState.CLOSED


def test_legs_without_their_entry_are_cancelled(gateway):
    plan = plan_for(gateway)
    bracket = _unknown(gateway, plan)
    last = gateway.call("ticker", INSTRUMENT).last_price
    gateway.call(
        "place_order",
        OrderRequest(
            instrument=INSTRUMENT,
            side=Side.SELL,
            amount=Decimal("100"),
            order_type="stop_market",
            label=f"tb-{plan.bracket_id}-sl",
            trigger_price=(last * Decimal("0.9")).quantize(Decimal("1")),
            reduce_only=True,
        ),
    )
    _reconcile(gateway)
    bracket.refresh_from_db()
    assert bracket.state == BracketState.FAILED
    assert engine(gateway).open_orders() == []


@pytest.mark.parametrize("policy", ["protect", "close"])
def test_a_position_nobody_claims_is_adopted_and_protected_or_closed(gateway, policy):
    gateway.call(
        "place_order",
        OrderRequest(instrument=INSTRUMENT, side=Side.BUY, amount=Decimal("500"), label="manual"),
    )
    report = _reconcile(gateway, policy)
    assert len(report.adopted) == 1
    adopted = Bracket.objects.get(bracket_id=report.adopted[0])
    assert adopted.amount == Decimal("500")
    stops = [o for o in engine(gateway).open_orders() if o.order_type == "stop_market"]
    if policy == "protect":
        assert len(stops) == 1 and stops[0].reduce_only
        assert stops[0].trigger_price < gateway.call("ticker", INSTRUMENT).last_price
        assert engine(gateway).position(INSTRUMENT).size == Decimal("500")
    else:
        assert engine(gateway).position(INSTRUMENT).size == 0
    assert Event.objects.filter(kind="position_adopted").exists()


def test_a_position_with_labelled_legs_is_adopted_with_them(gateway):
    plan = plan_for(gateway)  # placed by a run whose rows are gone
    gateway.place_bracket(_request(plan))
    report = _reconcile(gateway)
    adopted = Bracket.objects.get(bracket_id=report.adopted[0])
    assert adopted.stop_price == plan.stop_price
    assert {o.label for o in adopted.orders.exclude(label="")} == {
        f"tb-{plan.bracket_id}-sl",
        f"tb-{plan.bracket_id}-tp",
    }
    assert len(engine(gateway).open_orders()) == 2  # nothing extra placed, nothing cancelled


def test_an_open_bracket_that_lost_its_stop_gets_one(gateway):
    from apps.orders.brackets import bracket_place

    bracket = bracket_place(gateway=gateway, plan=plan_for(gateway))
    stop = bracket.orders.get(role=OrderRole.STOP_LOSS)
    gateway.on_loop(lambda: engine(gateway).cancel(stop.exchange_id))
    report = _reconcile(gateway)
    assert report.protected and report.protected[0].startswith(bracket.bracket_id)
    stops = [o for o in engine(gateway).open_orders() if o.order_type == "stop_market"]
    assert len(stops) == 1
    assert stops[0].label == f"tb-{bracket.bracket_id}-sl"
    assert report.open_bracket == bracket


def test_nothing_to_do_records_nothing(gateway):
    report = _reconcile(gateway)
    assert report.as_dict()["open_bracket"] is None
    assert not Event.objects.filter(kind="reconciled").exists()


def test_a_bracket_whose_orders_vanished_no_longer_counts_as_open(gateway):
    """A paper engine starts fresh after a restart: its old brackets are not open positions."""
    from apps.orders.brackets import bracket_place
    from apps.orders.selectors import open_position_exists

    bracket = bracket_place(gateway=gateway, plan=plan_for(gateway))
    fresh = BrokerGateway(FaultyPaperBroker(linked=True, warmup=5))
    fresh.connect()
    try:
        report = reconcile(fresh, instrument=INSTRUMENT, run_id=None, account_id=None)
    finally:
        fresh.close()
    bracket.refresh_from_db()
    assert bracket.state == BracketState.FAILED
    assert report.resolved == [f"{bracket.bracket_id}:vanished"]
    assert not open_position_exists()


def test_an_entry_found_without_its_legs_is_followed_and_its_position_protected(gateway):
    plan = plan_for(gateway)
    bracket = _unknown(gateway, plan)
    gateway.call(  # only the entry made it (an emulated placement that died after one leg)
        "place_order",
        OrderRequest(
            instrument=INSTRUMENT,
            side=Side.BUY,
            amount=plan.amount,
            label=f"tb-{plan.bracket_id}-entry",
        ),
    )
    report = _reconcile(gateway)
    bracket.refresh_from_db()
    assert report.resolved == [f"{plan.bracket_id}:entry_without_legs"]
    assert bracket.state == BracketState.OPEN
    assert report.protected and "stop placed" in report.protected[0]
    assert [o.order_type for o in engine(gateway).open_orders()] == ["stop_market"]


def test_an_entry_that_never_filled_is_failed_with_its_legs_cancelled(gateway):
    last = gateway.call("ticker", INSTRUMENT).last_price
    plan = BracketPlan(
        instrument=INSTRUMENT,
        side=Side.BUY,
        amount=Decimal("1000"),
        stop_price=(last * Decimal("0.5")).quantize(Decimal("1")),
        take_profit_price=(last * Decimal("1.2")).quantize(Decimal("1")),
        entry_type="limit",
        entry_price=(last * Decimal("0.6")).quantize(Decimal("1")),
    )
    bracket = _unknown(gateway, plan)
    result = gateway.place_bracket(plan.request())
    gateway.call("cancel", result.entry.order_id)
    report = _reconcile(gateway)
    bracket.refresh_from_db()
    assert report.resolved == [f"{plan.bracket_id}:not_filled"]
    assert bracket.state == BracketState.FAILED
    assert engine(gateway).open_orders() == []


def test_policy_close_closes_an_unprotected_position_and_records_the_trade(gateway):
    from apps.orders.brackets import bracket_place

    bracket = bracket_place(gateway=gateway, plan=plan_for(gateway))
    gateway.on_loop(lambda: engine(gateway).cancel_all())  # its stop and target are gone
    report = _reconcile(gateway, policy="close")
    assert engine(gateway).position(INSTRUMENT).size == 0
    assert report.open_bracket is None
    assert Trade.objects.get(bracket=bracket).recorded_by == "reconcile"


def test_an_orphan_that_cannot_be_cancelled_is_a_critical_event(gateway):
    from apps.orders.orphans import orphan_sweep_once

    last = gateway.call("ticker", INSTRUMENT).last_price
    stray = gateway.call(
        "place_order",
        OrderRequest(
            instrument=INSTRUMENT,
            side=Side.SELL,
            amount=Decimal("100"),
            order_type="stop_market",
            label="tb-stuck-sl",
            trigger_price=(last * Decimal("0.9")).quantize(Decimal("1")),
            reduce_only=True,
        ),
    )
    gateway.broker.inject("cancel", "fail")
    done = orphan_sweep_once(gateway)
    assert done["failed"] == [f"tb-stuck-sl:{stray.order_id}"]
    event = Event.objects.get(kind="rollback_failed")
    assert event.level == "critical" and stray.order_id in event.message
    with pytest.raises(Exception, match="orphans could not be cancelled"):
        gateway.broker.inject("cancel", "fail")
        _reconcile(gateway)


def test_an_adopted_position_that_closes_becomes_a_trade(gateway):
    from apps.orders.services import bracket_check, trade_record

    gateway.call(
        "place_order",
        OrderRequest(instrument=INSTRUMENT, side=Side.BUY, amount=Decimal("500"), label="manual"),
    )
    report = _reconcile(gateway)
    adopted = Bracket.objects.get(bracket_id=report.adopted[0])
    gateway.on_loop(lambda: engine(gateway).close_position(INSTRUMENT))
    check = bracket_check(gateway, adopted)
    assert check.position_size == 0
    trade = trade_record(gateway, adopted, exit_reason="closed", recorded_by="reconcile")
    assert trade is not None
    assert trade.amount == Decimal("500")
    assert trade.entry_price > 0 and trade.exit_price > 0
