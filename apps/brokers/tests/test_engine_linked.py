"""Linked orders of the simulator engine, as Deribit documents them: OTO, OCO, OTOCO."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from apps.brokers.simulator.engine import ExchangeEngine
from apps.brokers.simulator.errors import ExchangeError

BTC = "BTC-PERPETUAL"
OTOCO = "one_triggers_one_cancels_other"


@pytest.fixture
def engine() -> ExchangeEngine:
    return ExchangeEngine(prices={BTC: 50_000}, now_ms=0)


def bracket(
    engine,
    *,
    entry="limit",
    price=49_000,
    amount=100,
    condition=None,
    stop=48_000,
    take=52_000,
    stop_amount=None,
    take_amount=None,
    stop_trigger="last_price",
):
    params = {
        "type": entry,
        "label": "tb-1-entry",
        "linked_order_type": OTOCO,
        "otoco_config": [
            {
                "direction": "sell",
                "type": "stop_market",
                "trigger_price": stop,
                "trigger": stop_trigger,
                "reduce_only": True,
                "label": "tb-1-sl",
                "amount": stop_amount or amount,
            },
            {
                "direction": "sell",
                "type": "take_limit",
                "price": take,
                "trigger_price": take,
                "trigger": "last_price",
                "reduce_only": True,
                "label": "tb-1-tp",
                "amount": take_amount or amount,
            },
        ],
    }
    if entry == "limit":
        params["price"] = price
    if condition:
        params["trigger_fill_condition"] = condition
    result = engine.buy(BTC, amount, **params)
    stop_id, take_id = result.order.oto_order_ids
    return result.order.order_id, stop_id, take_id


def states(engine, *ids):
    return tuple(engine.get_order(i).order_state for i in ids)


def test_otoco_secondaries_exist_at_once_untriggered_and_linked(engine):
    entry_id, stop_id, take_id = bracket(engine)
    entry = engine.get_order(entry_id)
    assert entry.is_primary_otoco and entry.oto_order_ids == (stop_id, take_id)
    stop, take = engine.get_order(stop_id), engine.get_order(take_id)
    for leg in (stop, take):
        assert leg.order_state == "untriggered"
        assert leg.is_secondary_oto and leg.primary_order_id == entry_id
    assert stop.oco_ref == take.oco_ref is not None
    assert {o.order_id for o in engine.open_orders()} == {entry_id, stop_id, take_id}
    wire = engine.get_order(stop_id).to_deribit()
    assert wire["is_secondary_oto"] is True and wire["trigger_fill_condition"] == "first_hit"
    assert wire["price"] == "market_price"


def test_otoco_legs_must_trade_the_other_direction(engine):
    with pytest.raises(ExchangeError) as info:
        engine.buy(
            BTC,
            100,
            type="market",
            linked_order_type=OTOCO,
            otoco_config=[
                {
                    "direction": "buy",
                    "type": "stop_market",
                    "trigger_price": 48_000,
                    "trigger": "last_price",
                },
            ],
        )
    assert info.value.code == -32602
    assert info.value.data["reason"] == "different orders directions are required"
    with pytest.raises(ExchangeError) as missing:
        engine.buy(
            BTC,
            100,
            type="market",
            linked_order_type=OTOCO,
            otoco_config=[
                {"type": "stop_market", "trigger_price": 48_000, "trigger": "last_price"},
            ],
        )
    assert missing.value.data == {"reason": "value is required", "param": "direction"}
    assert engine.all_orders() == []


def test_cancelling_the_unfilled_primary_cancels_the_secondaries(engine):
    entry_id, stop_id, take_id = bracket(engine)
    engine.cancel(entry_id)
    assert states(engine, entry_id, stop_id, take_id) == ("cancelled",) * 3
    assert engine.get_order(stop_id).cancel_reason == "oto_primary_closed"
    assert engine.get_order(take_id).cancel_reason == "oto_primary_closed"
    assert engine.open_orders() == []


def test_secondaries_do_not_act_before_the_primary_fills(engine):
    entry_id, stop_id, take_id = bracket(engine, price=45_000, stop=44_000, take=52_000)
    engine.step_candle(BTC, 50_000, 52_500, 49_900, 52_000, 60_000)  # through the target
    assert states(engine, entry_id, stop_id, take_id) == ("open", "untriggered", "untriggered")
    assert engine.trades() == []


def test_primary_fill_activates_the_pair_and_the_target_cancels_the_stop(engine):
    entry_id, stop_id, take_id = bracket(engine)
    engine.step_candle(BTC, 50_000, 50_100, 48_900, 49_200, 60_000)
    assert states(engine, entry_id, stop_id, take_id) == ("filled", "untriggered", "untriggered")
    assert engine.position(BTC).size == 100
    engine.step_candle(BTC, 49_200, 52_100, 49_100, 52_000, 120_000)
    assert states(engine, entry_id, stop_id, take_id) == ("filled", "cancelled", "filled")
    assert engine.get_order(stop_id).cancel_reason == "oco_other_closed"
    assert engine.position(BTC).size == 0
    assert engine.trades(order_id=take_id)[0].price == D("52000")


def test_the_stop_filling_cancels_the_target(engine):
    entry_id, stop_id, take_id = bracket(engine, entry="market")
    engine.step_candle(BTC, 50_000, 50_100, 47_500, 47_800, 60_000)
    assert states(engine, entry_id, stop_id, take_id) == ("filled", "filled", "cancelled")
    assert engine.get_order(take_id).cancel_reason == "oco_other_closed"
    assert engine.trades(order_id=stop_id)[0].price == D("48000")
    assert engine.position(BTC).size == 0


def test_market_entry_stop_and_target_in_one_candle_follow_the_path():
    # the low (2,100 away) is nearer the open than the high (2,500): the stop fills first
    engine = ExchangeEngine(prices={BTC: 50_000}, now_ms=0)
    _, stop_id, take_id = bracket(engine, entry="market")
    engine.step_candle(BTC, 50_000, 52_500, 47_900, 51_000, 60_000)
    assert states(engine, stop_id, take_id) == ("filled", "cancelled")
    # the high (2,100 away) is nearer than the low (2,500): the target fills first
    engine = ExchangeEngine(prices={BTC: 50_000}, now_ms=0)
    _, stop_id, take_id = bracket(engine, entry="market")
    engine.step_candle(BTC, 50_000, 52_100, 47_500, 49_000, 60_000)
    assert states(engine, stop_id, take_id) == ("cancelled", "filled")


def test_cancelling_one_leg_of_the_pair_cancels_the_other(engine):
    _, stop_id, take_id = bracket(engine, entry="market")
    engine.cancel(take_id)
    assert engine.get_order(stop_id).order_state == "cancelled"
    assert engine.get_order(stop_id).cancel_reason == "oco_other_closed"


def partial_engine(cap: int) -> ExchangeEngine:
    return ExchangeEngine(prices={BTC: 50_000}, fill_cap={BTC: cap}, now_ms=0)


def dip(engine, minute):
    engine.step_candle(BTC, 49_500, 49_600, 48_900, 49_500, minute * 60_000)


def test_first_hit_places_the_whole_secondaries_on_the_first_partial_fill():
    engine = partial_engine(30)
    entry_id, stop_id, take_id = bracket(engine, condition="first_hit", stop_trigger="mark_price")
    dip(engine, 1)
    assert engine.get_order(entry_id).filled_amount == 30
    assert engine.get_order(stop_id).amount == 100
    assert states(engine, entry_id, stop_id, take_id) == ("open", "untriggered", "untriggered")
    # active at once: the mark through the stop fires it, capped to the position of 30
    engine.set_prices(BTC, mark=47_900)
    assert engine.trades(order_id=stop_id)[0].amount == 30
    assert engine.position(BTC).size == 0
    assert engine.get_order(take_id).cancel_reason == "oco_other_closed"


def test_complete_fill_waits_until_the_primary_is_filled():
    engine = partial_engine(60)
    entry_id, stop_id, _ = bracket(engine, condition="complete_fill", stop_trigger="mark_price")
    dip(engine, 1)
    assert engine.get_order(entry_id).filled_amount == 60
    engine.set_prices(BTC, mark=47_900)  # the mark passes the stop: not active yet, nothing fires
    assert engine.trades(order_id=stop_id) == []
    dip(engine, 2)
    assert engine.get_order(entry_id).order_state == "filled"
    engine.set_prices(BTC, mark=47_900)
    assert engine.trades(order_id=stop_id)[0].amount == 100


def test_incremental_places_proportional_parts_rounded_down_to_the_contract_size():
    engine = partial_engine(10)
    entry_id, stop_id, take_id = bracket(
        engine, amount=30, condition="incremental", stop_amount=20, take_amount=20
    )
    amounts = []
    for minute in (1, 2, 3):
        dip(engine, minute)
        amounts.append(
            (
                engine.get_order(entry_id).filled_amount,
                engine.get_order(stop_id).amount,
                engine.get_order(stop_id).order_state,
            )
        )
    # 20 × 10/30 = 6.7 → 0 (not placed yet); 20 × 20/30 = 13.3 → 10; 20 × 30/30 = 20
    assert amounts == [
        (D(10), D(20), "untriggered"),
        (D(20), D(10), "untriggered"),
        (D(30), D(20), "untriggered"),
    ]
    engine.set_price(BTC, 52_500)
    assert engine.trades(order_id=take_id)[0].amount == 20
    assert engine.get_order(stop_id).order_state == "cancelled"


def test_incremental_oco_fill_reduces_the_other_leg():
    engine = ExchangeEngine(prices={BTC: 50_000}, fill_cap={BTC: 40}, now_ms=0)
    engine.buy(BTC, 100, type="market")
    take = engine.sell(
        BTC,
        100,
        type="limit",
        price=51_000,
        reduce_only=True,
        linked_order_type="one_cancels_other",
        trigger_fill_condition="incremental",
        otoco_config=[
            {
                "direction": "sell",
                "type": "stop_market",
                "trigger_price": 49_000,
                "trigger": "last_price",
                "reduce_only": True,
            }
        ],
    ).order
    (stop,) = [o for o in engine.open_orders() if o.order_id != take.order_id]
    assert stop.order_state == "untriggered" and stop.oco_ref == take.oco_ref
    engine.move_price(BTC, 51_100)
    assert engine.get_order(take.order_id).filled_amount == 40
    assert engine.get_order(stop.order_id).amount == 60
    # a new price event: the take (still beyond its price) fills 40 more, the stop shrinks to 20
    engine.move_price(BTC, 48_000)
    assert engine.get_order(take.order_id).filled_amount == 80
    assert engine.trades(order_id=stop.order_id)[0].amount == 20
    assert engine.get_order(take.order_id).order_state == "cancelled"
    assert engine.position(BTC).size == 0


def test_standalone_oco_one_fill_cancels_the_other(engine):
    engine.buy(BTC, 100, type="market")
    take = engine.sell(
        BTC,
        100,
        type="take_limit",
        price=52_000,
        trigger_price=52_000,
        trigger="last_price",
        reduce_only=True,
        linked_order_type="one_cancels_other",
        otoco_config=[
            {
                "direction": "sell",
                "type": "stop_market",
                "trigger_price": 48_000,
                "trigger": "last_price",
                "reduce_only": True,
            }
        ],
    ).order
    (stop,) = [o for o in engine.open_orders() if o.order_id != take.order_id]
    engine.move_price(BTC, 52_100)
    assert engine.get_order(take.order_id).order_state == "filled"
    assert engine.get_order(stop.order_id).cancel_reason == "oco_other_closed"


def test_oto_with_a_limit_secondary_rests_it_when_the_primary_fills(engine):
    result = engine.buy(
        BTC,
        100,
        type="limit",
        price=49_000,
        linked_order_type="one_triggers_other",
        otoco_config=[{"direction": "sell", "type": "limit", "price": 51_000, "reduce_only": True}],
    )
    (secondary_id,) = result.order.oto_order_ids
    assert not result.order.is_primary_otoco
    assert engine.get_order(secondary_id).order_state == "untriggered"
    engine.move_price(BTC, 48_900)
    assert engine.get_order(secondary_id).order_state == "open"
    engine.move_price(BTC, 51_000)
    assert engine.get_order(secondary_id).order_state == "filled"


def test_secondaries_can_be_edited_before_activation_but_not_with_post_only(engine):
    _, stop_id, _ = bracket(engine)
    moved = engine.edit(stop_id, trigger_price=47_500).order
    assert moved.trigger_price == D("47500") and moved.order_state == "untriggered"
    with pytest.raises(ExchangeError) as info:
        engine.edit(stop_id, post_only=True)
    assert info.value.data["reason"] == "post_only not allowed for secondary orders"


def test_a_rejected_stop_leg_leaves_the_position_unprotected(engine):
    engine.faults.reject_next("stop", 10009)
    entry_id, stop_id, take_id = bracket(engine, entry="market")
    assert engine.position(BTC).size == 100
    assert states(engine, entry_id, stop_id, take_id) == ("filled", "rejected", "cancelled")
    assert engine.get_order(take_id).cancel_reason == "oco_other_closed"


def test_incremental_both_ways_keeps_the_stop_equal_to_the_position():
    engine = partial_engine(30)
    result = engine.buy(
        BTC,
        100,
        type="limit",
        price=49_000,
        linked_order_type=OTOCO,
        trigger_fill_condition="incremental",
        otoco_config=[
            {
                "direction": "sell",
                "type": "stop_market",
                "trigger_price": 47_000,
                "trigger": "last_price",
                "reduce_only": True,
            },
            {"direction": "sell", "type": "limit", "price": 51_000, "reduce_only": True},
        ],
    )
    entry_id = result.order.order_id
    stop_id, take_id = result.order.oto_order_ids
    dip(engine, 1)
    dip(engine, 2)
    assert engine.get_order(entry_id).filled_amount == 60
    engine.set_price(BTC, 51_500)  # the target fills 30 of its 60: the stop loses 30
    assert engine.get_order(take_id).filled_amount == 30
    assert engine.get_order(stop_id).amount == 30 == engine.position(BTC).size
    dip(engine, 3)  # the entry fills 30 more: the stop grows with it, less what was taken
    assert engine.get_order(entry_id).filled_amount == 90
    assert engine.position(BTC).size == 60
    assert engine.get_order(stop_id).amount == 60
