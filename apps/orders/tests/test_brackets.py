"""The bracket service: a complete set or nothing, on linked and emulated brokers, with faults."""

from __future__ import annotations

from decimal import Decimal

import pytest

from apps.brokers.base import OrderRequest, Side
from apps.monitoring.models import Event
from apps.orders.brackets import (
    BracketBroken,
    BracketPlan,
    BracketRefused,
    BracketRolledBack,
    OrphansDetected,
    PositionExists,
    bracket_place,
)
from apps.orders.gateway import BrokerGateway
from apps.orders.models import Bracket, BracketState, OrderRole, OrderStatus
from apps.orders.orphans import find_orphans, orphan_sweep_once
from apps.orders.tests.faulty import FaultyPaperBroker

pytestmark = pytest.mark.django_db

INSTRUMENT = "BTC-PERPETUAL"


@pytest.fixture
def make_gateway():
    made: list[BrokerGateway] = []

    def make(linked: bool = True) -> BrokerGateway:
        gateway = BrokerGateway(FaultyPaperBroker(linked=linked, warmup=5))
        gateway.connect()
        made.append(gateway)
        return gateway

    yield make
    for gateway in made:
        gateway.close()


def price(gateway: BrokerGateway) -> Decimal:
    return gateway.call("ticker", INSTRUMENT).last_price


def plan_for(gateway: BrokerGateway, side: Side = Side.BUY, amount: str = "1000") -> BracketPlan:
    last = price(gateway)
    tick = Decimal("0.5")
    down = (last * Decimal("0.99") / tick).to_integral_value() * tick
    up = (last * Decimal("1.01") / tick).to_integral_value() * tick
    stop, target = (down, up) if side is Side.BUY else (up, down)
    return BracketPlan(
        instrument=INSTRUMENT,
        side=side,
        amount=Decimal(amount),
        stop_price=stop,
        take_profit_price=target,
        risk_settings={"mode": "percent", "value": "1"},
    )


def engine(gateway):
    return gateway.broker.engine


def live_orders(gateway):
    return engine(gateway).open_orders()


def position_size(gateway) -> Decimal:
    return engine(gateway).position(INSTRUMENT).size


def assert_nothing_left(gateway):
    assert live_orders(gateway) == [], "orders left behind"
    assert position_size(gateway) == 0, "position left behind"


@pytest.mark.parametrize("linked", [True, False])
@pytest.mark.parametrize("side", [Side.BUY, Side.SELL])
def test_a_bracket_is_a_complete_labelled_set(make_gateway, linked, side):
    gateway = make_gateway(linked)
    plan = plan_for(gateway, side)
    bracket = bracket_place(gateway=gateway, plan=plan)
    assert bracket.state == BracketState.OPEN
    assert bracket.linked is linked
    size = position_size(gateway)
    assert size == (plan.amount if side is Side.BUY else -plan.amount)
    legs = {o.label: o for o in live_orders(gateway)}
    assert set(legs) == {f"tb-{plan.bracket_id}-sl", f"tb-{plan.bracket_id}-tp"}
    assert all(o.reduce_only for o in legs.values())
    rows = {row.role: row for row in bracket.orders.all()}
    assert set(rows) == {OrderRole.ENTRY, OrderRole.STOP_LOSS, OrderRole.TAKE_PROFIT}
    assert rows[OrderRole.ENTRY].status == OrderStatus.FILLED
    assert rows[OrderRole.STOP_LOSS].exchange_id == legs[f"tb-{plan.bracket_id}-sl"].order_id
    assert Event.objects.filter(kind="bracket_opened", bracket_id=plan.bracket_id).exists()


def test_orphans_block_placement_and_the_sweep_cancels_them(make_gateway):
    gateway = make_gateway()
    last = price(gateway)
    stray = gateway.call(
        "place_order",
        OrderRequest(
            instrument=INSTRUMENT,
            side=Side.SELL,
            amount=Decimal("100"),
            order_type="stop_market",
            label="tb-deadbeef-sl",
            trigger_price=(last * Decimal("0.9")).quantize(Decimal("1")),
            reduce_only=True,
        ),
    )
    assert [o.order_id for o in find_orphans(gateway)] == [stray.order_id]
    with pytest.raises(OrphansDetected) as caught:
        bracket_place(gateway=gateway, plan=plan_for(gateway))
    assert caught.value.code == "ORPHANS_DETECTED"
    assert any(stray.order_id in name for name in caught.value.orders)
    assert not Bracket.objects.exists()  # nothing written, nothing sent
    assert Event.objects.filter(kind="orphans_detected").exists()
    done = orphan_sweep_once(gateway)
    assert done["cancelled"] == [f"tb-deadbeef-sl:{stray.order_id}"]
    assert live_orders(gateway) == []
    assert Event.objects.filter(kind="orphan_cancelled").exists()
    assert bracket_place(gateway=gateway, plan=plan_for(gateway)).state == BracketState.OPEN


def test_legs_of_an_open_position_are_not_orphans(make_gateway):
    gateway = make_gateway()
    bracket_place(gateway=gateway, plan=plan_for(gateway))
    assert find_orphans(gateway) == []


def test_a_second_entry_on_an_open_position_is_refused(make_gateway):
    gateway = make_gateway()
    bracket_place(gateway=gateway, plan=plan_for(gateway))
    with pytest.raises(PositionExists):
        bracket_place(gateway=gateway, plan=plan_for(gateway))
    assert len([t for t in engine(gateway).trades() if t.label.endswith("-entry")]) == 1


@pytest.mark.parametrize("linked", [True, False])
def test_an_entry_refused_leaves_nothing(make_gateway, linked):
    gateway = make_gateway(linked)
    gateway.broker.inject("bracket" if linked else "entry", "reject")
    plan = plan_for(gateway)
    with pytest.raises(BracketRefused):
        bracket_place(gateway=gateway, plan=plan)
    bracket = Bracket.objects.get(bracket_id=plan.bracket_id)
    assert bracket.state == BracketState.FAILED
    assert_nothing_left(gateway)
    assert set(bracket.orders.values_list("status", flat=True)) <= {
        OrderStatus.NOT_PLACED,
        OrderStatus.REJECTED,
        OrderStatus.INTENT,
    }


@pytest.mark.parametrize(
    ("leg", "kind"),
    [
        ("sl", "reject"),
        ("tp", "reject"),
        ("sl", "lost_before"),
        ("tp", "lost_before"),
    ],
)
def test_emulated_leg_failure_rolls_everything_back(make_gateway, leg, kind):
    gateway = make_gateway(linked=False)
    gateway.broker.inject(leg, kind)
    plan = plan_for(gateway)
    with pytest.raises(BracketRolledBack):
        bracket_place(gateway=gateway, plan=plan)
    bracket = Bracket.objects.get(bracket_id=plan.bracket_id)
    assert bracket.state == BracketState.ROLLED_BACK
    assert_nothing_left(gateway)
    assert Event.objects.filter(kind="bracket_rolled_back", bracket_id=plan.bracket_id).exists()


@pytest.mark.parametrize("leg", ["entry", "sl", "tp"])
def test_emulated_lost_answer_is_resolved_by_label_not_resent(make_gateway, leg):
    gateway = make_gateway(linked=False)
    gateway.broker.inject(leg, "lost_after")
    plan = plan_for(gateway)
    bracket = bracket_place(gateway=gateway, plan=plan)
    assert bracket.state == BracketState.OPEN
    assert gateway.broker.sent.count(f"tb-{plan.bracket_id}-{leg}") == 1  # never sent twice
    assert len(live_orders(gateway)) == 2
    assert position_size(gateway) == plan.amount


def test_emulated_lost_entry_that_never_arrived_is_nothing(make_gateway):
    gateway = make_gateway(linked=False)
    gateway.broker.inject("entry", "lost_before")
    with pytest.raises(BracketRefused):
        bracket_place(gateway=gateway, plan=plan_for(gateway))
    assert_nothing_left(gateway)


def test_guard_failure_rolls_back_then_propagates(make_gateway):
    gateway = make_gateway(linked=False)
    calls = []

    class Lost(Exception):
        pass

    def guard():
        calls.append(1)
        if len(calls) == 2:  # before the stop: the entry is already filled
            raise Lost("lock lost")

    plan = plan_for(gateway)
    with pytest.raises(Lost):
        bracket_place(gateway=gateway, plan=plan, guard=guard)
    assert_nothing_left(gateway)
    assert Bracket.objects.get(bracket_id=plan.bracket_id).state == BracketState.ROLLED_BACK


def test_a_rollback_that_leaves_orders_is_broken_and_alerts_critically(make_gateway):
    gateway = make_gateway(linked=False)
    gateway.broker.inject("tp", "reject")
    gateway.broker.inject("cancel", "fail", count=10)
    plan = plan_for(gateway)
    with pytest.raises(BracketBroken) as caught:
        bracket_place(gateway=gateway, plan=plan)
    bracket = Bracket.objects.get(bracket_id=plan.bracket_id)
    assert bracket.state == BracketState.BROKEN
    stop_id = next(o.order_id for o in live_orders(gateway) if o.label.endswith("-sl"))
    assert any(stop_id in name for name in caught.value.orders)
    event = Event.objects.get(kind="rollback_failed", bracket_id=plan.bracket_id)
    assert event.level == "critical"
    assert stop_id in event.message


@pytest.mark.parametrize("kind", ["lost_before", "lost_after"])
def test_linked_lost_answer_is_resolved_by_label_never_twice(make_gateway, kind):
    gateway = make_gateway(linked=True)
    gateway.broker.inject("bracket", kind)
    plan = plan_for(gateway)
    if kind == "lost_before":
        with pytest.raises(BracketRefused):
            bracket_place(gateway=gateway, plan=plan)
        assert_nothing_left(gateway)
        assert Bracket.objects.get(bracket_id=plan.bracket_id).state == BracketState.FAILED
    else:
        bracket = bracket_place(gateway=gateway, plan=plan)
        assert bracket.state == BracketState.OPEN
        assert len(live_orders(gateway)) == 2
    assert gateway.broker.sent.count(f"tb-{plan.bracket_id}-entry") == 1
