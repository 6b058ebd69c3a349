"""The simulator engine's orders: validation with Deribit's codes, fills, triggers, edits, cancels, events."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from apps.brokers.base import Candle
from apps.brokers.simulator.engine import ExchangeEngine, intra_candle_path
from apps.brokers.simulator.errors import ExchangeError
from apps.brokers.simulator.faults import move_price
from apps.brokers.simulator.feed import CandleArrays

BTC = "BTC-PERPETUAL"
BTC_USDC = "BTC_USDC-PERPETUAL"


@pytest.fixture
def engine() -> ExchangeEngine:
    return ExchangeEngine(prices={BTC: 50_000, BTC_USDC: 50_000}, now_ms=0)


def code_of(call) -> int:
    with pytest.raises(ExchangeError) as info:
        call()
    return info.value.code


# --- validation -----------------------------------------------------------------------------


def test_amount_and_prices_off_the_grid_are_rejected_not_rounded(engine):
    assert code_of(lambda: engine.buy(BTC, 15, type="market")) == 10021  # not a multiple of 10
    assert code_of(lambda: engine.buy(BTC, 5, type="market")) == 10002  # below the minimum
    assert code_of(lambda: engine.buy(BTC, 10, type="limit", price="49000.3")) == 10043
    assert (
        code_of(
            lambda: engine.buy(
                BTC, 10, type="stop_market", trigger_price="51000.25", trigger="last_price"
            )
        )
        == 10044
    )
    assert code_of(lambda: engine.buy(BTC_USDC, "0.0015", type="market")) == 10021
    assert code_of(lambda: engine.buy(BTC, 10, type="limit", price=0)) == 10023
    assert engine.all_orders() == []


def test_bad_parameters_answer_invalid_params_with_reason_and_param(engine):
    with pytest.raises(ExchangeError) as info:
        engine.buy(BTC, 10, type="limit")
    assert info.value.code == -32602
    assert info.value.data == {"reason": "value is required", "param": "price"}
    assert code_of(lambda: engine.buy(BTC, 10, type="iceberg")) == -32602
    assert code_of(lambda: engine.buy(BTC, 10, type="market", label="x" * 65)) == -32602
    assert code_of(lambda: engine.buy(BTC, 10, type="stop_market", trigger_price=51_000)) == -32602
    assert code_of(lambda: engine.buy("DOGE-PERPETUAL", 10, type="market")) == 10020
    assert engine.buy(BTC, 10, type="market", label="x" * 64).order.label == "x" * 64


def test_orders_the_margin_cannot_carry_are_refused_with_not_enough_funds():
    engine = ExchangeEngine(balances={"BTC": D("0.001")}, prices={BTC: 50_000}, now_ms=0)
    # 10,000 USD at 50,000 is 0.2 BTC; its initial margin at 50× is 0.004 BTC > 0.001
    with pytest.raises(ExchangeError) as info:
        engine.buy(BTC, 10_000, type="market")
    assert (info.value.code, info.value.message) == (10009, "not_enough_funds")
    assert engine.buy(BTC, 2_000, type="market").order.order_state == "filled"
    # the opposite side reduces the exposure: never refused for margin
    assert engine.sell(BTC, 2_000, type="limit", price=60_000).order.order_state == "open"


def test_a_stop_on_the_wrong_side_of_the_price_is_refused(engine):
    wrong = lambda: engine.sell(  # noqa: E731
        BTC, 10, type="stop_market", trigger_price=51_000, trigger="last_price"
    )
    assert code_of(wrong) == 11036


# --- fills ----------------------------------------------------------------------------------


def test_market_order_fills_at_the_price_with_configured_slippage():
    engine = ExchangeEngine(prices={BTC: 50_000.2}, slippage_ticks=2, now_ms=0)
    buy = engine.buy(BTC, 100, type="market")
    assert buy.order.order_state == "filled"
    assert buy.trades[0].price == D("50001")  # 50000.0 on the tick + 2 × 0.5
    assert engine.sell(BTC, 100, type="market").trades[0].price == D("49999")


def test_a_resting_limit_fills_at_its_price_when_the_candle_reaches_it(engine):
    placed = engine.buy(BTC, 100, type="limit", price=49_000, label="dip")
    assert placed.order.order_state == "open" and placed.trades == ()
    engine.step_candle(BTC, 50_000, 50_200, 49_100, 49_500, 60_000)
    assert engine.get_order(placed.order.order_id).order_state == "open"
    engine.step_candle(BTC, 49_500, 49_600, 48_500, 48_800, 120_000)
    order = engine.get_order(placed.order.order_id)
    assert order.order_state == "filled" and order.average_price == D("49000")
    trade = engine.trades()[0]
    assert (trade.liquidity, trade.label, trade.price) == ("M", "dip", D("49000"))


def test_a_crossing_limit_takes_at_the_current_price(engine):
    taken = engine.buy(BTC, 100, type="limit", price=51_000)
    assert taken.trades[0].price == D("50000") and taken.trades[0].liquidity == "T"


def test_post_only_that_would_take_is_refused(engine):
    assert (
        code_of(lambda: engine.buy(BTC, 100, type="limit", price=50_000, post_only=True)) == 11054
    )
    rests = engine.buy(BTC, 100, type="limit", price=49_999.5, post_only=True)
    assert rests.order.order_state == "open" and rests.order.post_only


def test_immediate_or_cancel_and_fill_or_kill(engine):
    ioc = engine.buy(BTC, 100, type="limit", price=49_000, time_in_force="immediate_or_cancel")
    assert ioc.order.order_state == "cancelled" and ioc.order.filled_amount == 0
    fok = engine.buy(BTC, 100, type="limit", price=49_000, time_in_force="fill_or_kill")
    assert fok.order.order_state == "cancelled"
    filled = engine.buy(BTC, 100, type="limit", price=50_500, time_in_force="fill_or_kill")
    assert filled.order.order_state == "filled"
    assert engine.open_orders() == []


def test_stop_market_fills_at_its_trigger_on_a_continuous_path_and_worse_on_a_gap(engine):
    engine.buy(BTC, 1_000, type="market")
    stop = engine.sell(BTC, 1_000, type="stop_market", trigger_price=49_000, trigger="last_price")
    assert stop.order.order_state == "untriggered"
    engine.step_candle(BTC, 50_000, 50_100, 48_000, 48_500, 60_000)
    assert engine.get_order(stop.order.order_id).order_state == "filled"
    assert engine.trades(order_id=stop.order.order_id)[0].price == D("49000")

    engine.buy(BTC, 1_000, type="market")
    gapped = engine.sell(BTC, 1_000, type="stop_market", trigger_price=48_000, trigger="last_price")
    engine.step_candle(BTC, 47_000, 47_500, 46_800, 47_200, 120_000)  # opens below the stop
    assert engine.trades(order_id=gapped.order.order_id)[0].price == D("47000")


def test_stop_limit_becomes_a_limit_when_triggered(engine):
    order = engine.buy(
        BTC, 100, type="stop_limit", trigger_price=51_000, price=51_500, trigger="last_price"
    ).order
    engine.move_price(BTC, 51_200)
    # triggered at 51,000 with the price at 51,000: the limit 51,500 crosses and takes
    state = engine.get_order(order.order_id)
    assert state.triggered is True and state.order_state == "filled"
    assert engine.trades(order_id=order.order_id)[0].price == D("51000")
    high = engine.buy(
        BTC, 100, type="stop_limit", trigger_price=52_000, price=51_800, trigger="last_price"
    ).order
    engine.set_price(BTC, 53_000)  # gaps past the limit: rests as a limit
    rested = engine.get_order(high.order_id)
    assert (rested.triggered, rested.order_state, rested.filled_amount) == (True, "open", 0)


def test_triggers_follow_the_price_they_name(engine):
    engine.buy(BTC, 200, type="market")
    on_mark = engine.sell(BTC, 100, type="stop_market", trigger_price=49_000, trigger="mark_price")
    on_last = engine.sell(BTC, 100, type="stop_market", trigger_price=49_000, trigger="last_price")
    engine.set_prices(BTC, mark=48_900)
    assert engine.get_order(on_mark.order.order_id).order_state == "filled"
    assert engine.get_order(on_last.order.order_id).order_state == "untriggered"
    assert engine.trades(order_id=on_mark.order.order_id)[0].price == D("50000")  # at last


def test_fill_cap_gives_partial_fills_never_beyond_the_amount():
    engine = ExchangeEngine(prices={BTC: 50_000}, fill_cap={BTC: 30}, now_ms=0)
    order = engine.buy(BTC, 100, type="limit", price=49_000).order
    for minute in range(1, 6):
        engine.step_candle(BTC, 49_500, 49_600, 48_900, 49_500, minute * 60_000)
    state = engine.get_order(order.order_id)
    assert state.filled_amount == 100 and state.order_state == "filled"
    assert [t.amount for t in engine.trades()] == [D(30), D(30), D(30), D(10)]


# --- reduce-only ----------------------------------------------------------------------------


def test_reduce_only_never_grows_a_position(engine):
    assert code_of(lambda: engine.sell(BTC, 100, type="market", reduce_only=True)) == 11030
    engine.buy(BTC, 100, type="market")
    capped = engine.sell(BTC, 300, type="market", reduce_only=True)
    assert capped.order.filled_amount == 100
    assert capped.order.order_state == "cancelled"
    assert engine.position(BTC).size == 0
    # a reduce-only stop whose position is gone is rejected when it fires
    engine.buy(BTC, 100, type="market")
    stop = engine.sell(
        BTC, 100, type="stop_market", trigger_price=49_000, trigger="last_price", reduce_only=True
    )
    engine.sell(BTC, 100, type="market")
    engine.move_price(BTC, 48_000)
    assert engine.get_order(stop.order.order_id).order_state == "rejected"
    assert engine.position(BTC).size == 0


# --- edit, cancel, reads ----------------------------------------------------------------------


def test_edit_moves_an_order_in_place(engine):
    order = engine.buy(BTC, 100, type="limit", price=48_000, label="e").order
    edited = engine.edit(order.order_id, amount=200, price=48_500).order
    assert (edited.amount, edited.price, edited.replaced) == (D(200), D("48500"), True)
    assert edited.order_id == order.order_id
    engine.step_candle(BTC, 50_000, 50_000, 48_400, 48_600, 60_000)
    assert engine.get_order(order.order_id).filled_amount == 200
    assert code_of(lambda: engine.edit(order.order_id, price=48_000)) == 11044
    assert code_of(lambda: engine.edit("nope", price=48_000)) == 10004
    stop = engine.sell(BTC, 100, type="stop_market", trigger_price=47_000, trigger="last_price")
    moved = engine.edit(stop.order.order_id, trigger_price=47_500).order
    assert moved.trigger_price == D("47500")
    assert code_of(lambda: engine.edit(stop.order.order_id, trigger_price="47500.2")) == 10044


def test_editing_a_post_only_limit_across_the_price_cancels_it(engine):
    order = engine.buy(BTC, 100, type="limit", price=49_000, post_only=True).order
    edited = engine.edit(order.order_id, price=50_500).order
    assert edited.order_state == "cancelled"
    assert edited.cancel_reason == "edit_post_only_reject"


def test_cancel_variants_and_order_reads(engine):
    a = engine.buy(BTC, 100, type="limit", price=48_000, label="a").order
    engine.buy(BTC, 100, type="limit", price=47_000, label="b")
    engine.sell(BTC, 100, type="take_market", trigger_price=55_000, trigger="last_price", label="b")
    engine.buy(BTC_USDC, "0.01", type="limit", price=40_000, label="b")
    assert len(engine.open_orders()) == 4
    assert len(engine.open_orders(BTC, type="trigger_all")) == 1
    assert len(engine.open_orders(BTC, type="limit")) == 2
    assert len(engine.open_orders(type="take_all")) == 1
    cancelled = engine.cancel(a.order_id)
    assert (cancelled.order_state, cancelled.cancel_reason) == ("cancelled", "user_request")
    assert code_of(lambda: engine.cancel(a.order_id)) == 11044
    assert code_of(lambda: engine.cancel("missing")) == 10004
    assert engine.cancel_all_by_instrument(BTC, type="take") == 1
    assert engine.cancel_by_label("b", currency="USDC") == 1
    assert [o.label for o in engine.open_orders()] == ["b"]
    assert engine.cancel_all() == 1
    assert engine.open_orders() == []
    assert [o.order_state for o in engine.orders_by_label("b")] == ["cancelled"] * 3
    assert engine.get_order(a.order_id).order_state == "cancelled"
    assert len(engine.order_history(include_unfilled=False)) == 0
    assert len(engine.order_history()) == 4


def test_close_position_reduces_to_zero(engine):
    assert code_of(lambda: engine.close_position(BTC)) == 10010
    engine.sell(BTC, 500, type="market")
    closed = engine.close_position(BTC)
    assert closed.order.direction == "buy" and closed.order.reduce_only
    assert engine.position(BTC).size == 0
    assert engine.positions() == []


def test_every_change_is_reported_to_subscribers(engine):
    seen = []
    unsubscribe = engine.subscribe(seen.append)
    engine.buy(BTC, 100, type="market", label="m")
    assert len(seen) == 1
    change = seen[0]
    assert change.instrument_name == BTC and change.currency == "BTC"
    assert [o.order_state for o in change.orders] == ["filled"]
    assert [t.amount for t in change.trades] == [D(100)]
    assert change.positions[0].size == D(100)
    body = change.to_deribit()
    assert set(body) == {"instrument_name", "orders", "trades", "positions"}
    assert body["trades"][0]["fee_currency"] == "BTC"
    engine.buy(BTC, 100, type="limit", price=40_000)
    assert len(seen) == 2 and seen[1].trades == () and seen[1].positions == ()
    unsubscribe()
    engine.buy(BTC, 100, type="market")
    assert len(seen) == 2


def test_faults_reject_the_next_order_of_a_kind_and_move_the_price(engine):
    engine.faults.reject_next("stop", 10040)
    engine.buy(BTC, 100, type="market")  # a primary: not the armed kind
    with pytest.raises(ExchangeError) as info:
        engine.sell(BTC, 100, type="stop_market", trigger_price=49_000, trigger="last_price")
    assert (info.value.code, info.value.message) == (10040, "retry")
    engine.sell(BTC, 100, type="stop_market", trigger_price=49_000, trigger="last_price")
    move_price(engine, BTC, 48_000)
    assert engine.position(BTC).size == 0
    assert engine.trades()[-1].price == D("48000")  # the gap fills the stop at the new price


# --- the intra-candle path --------------------------------------------------------------------


def test_intra_candle_path_visits_the_nearer_extreme_first_with_documented_ties():
    assert intra_candle_path(100, 101, 95, 99) == (100, 101, 95, 99)
    assert intra_candle_path(100, 110, 99, 105) == (100, 99, 110, 105)
    assert intra_candle_path(100, 102, 98, 99) == (100, 102, 98, 99)  # tie, closes lower
    assert intra_candle_path(100, 102, 98, 101) == (100, 98, 102, 101)  # tie, closes higher
    assert intra_candle_path(100, 102, 98, 100) == (100, 98, 102, 100)  # tie, flat


def test_stop_and_target_in_one_candle_resolve_by_the_path(engine):
    def bracket(open_, high, low, close):
        engine.set_price(BTC, open_)
        engine.buy(BTC, 100, type="market")
        stop = engine.sell(
            BTC,
            100,
            type="stop_market",
            trigger_price=49_000,
            trigger="last_price",
            reduce_only=True,
        ).order
        take = engine.sell(BTC, 100, type="limit", price=51_000, reduce_only=True).order
        engine.step_candle(BTC, open_, high, low, close, engine.now_ms + 60_000)
        result = (
            engine.get_order(stop.order_id).order_state,
            engine.get_order(take.order_id).order_state,
        )
        engine.cancel_all()
        return result

    # the low is nearer the open: the stop fills first, the target then cannot reduce anything
    assert bracket(49_500, 51_500, 48_900, 50_000) == ("filled", "open")
    # the high is nearer: the target fills first, then the stop has nothing left to reduce
    assert bracket(50_500, 51_500, 48_500, 50_000) == ("rejected", "filled")


def test_bulk_replay_equals_candle_by_candle_replay():
    candles = [Candle(i * 60_000, 50_000 + 40 * ((i * 7) % 13 - 6), 0, 0, 0) for i in range(400)]
    candles = [
        Candle(c.open_time_ms, c.open, c.open + 60, c.open - 55, c.open + 10) for c in candles
    ]
    arrays = CandleArrays.from_candles(candles)

    def setup() -> ExchangeEngine:
        engine = ExchangeEngine(prices={BTC: 50_000}, now_ms=0)
        for step in range(1, 6):
            engine.buy(BTC, 100, type="limit", price=50_000 - 50 * step)
            engine.sell(BTC, 100, type="limit", price=50_000 + 50 * step)
        return engine

    one = setup()
    one.replay(BTC, candles)
    bulk = setup()
    assert bulk.replay_arrays(
        BTC, arrays.times, arrays.opens, arrays.highs, arrays.lows, arrays.closes
    ) == len(candles)
    assert [t.to_deribit() for t in one.trades()] == [t.to_deribit() for t in bulk.trades()]
    assert len(one.trades()) == 10
    assert one.account("BTC") == bulk.account("BTC")


def test_price_driven_fills_are_reported_as_one_change_each(engine):
    engine.buy(BTC, 100, type="market")
    stop = engine.sell(
        BTC,
        100,
        type="stop_market",
        trigger_price=49_000,
        trigger="last_price",
        reduce_only=True,
        linked_order_type="one_cancels_other",
        otoco_config=[{"direction": "sell", "type": "limit", "price": 52_000, "reduce_only": True}],
    ).order
    seen = []
    engine.subscribe(seen.append)
    engine.step_candle(BTC, 50_000, 50_100, 48_500, 48_800, 60_000)
    assert len(seen) == 1
    change = seen[0]
    first = change.orders[0]
    assert (first.order_id, first.order_state) == (stop.order_id, "filled")
    assert [o.cancel_reason for o in change.orders[1:]] == ["oco_other_closed"]
    assert [t.price for t in change.trades] == [D("49000")]
    assert change.positions[0].size == 0
    assert change.timestamp == 60_000 + 40_000  # reached on the way to the low


def test_replay_arrays_stops_right_after_a_change(engine):
    candles = [Candle(i * 60_000, 50_000, 50_050, 49_950, 50_000) for i in range(100)]
    candles[60] = Candle(60 * 60_000, 50_000, 50_050, 48_000, 48_500)
    arrays = CandleArrays.from_candles(candles)
    engine.buy(BTC, 100, type="limit", price=49_000)
    args = (BTC, arrays.times, arrays.opens, arrays.highs, arrays.lows, arrays.closes)
    assert engine.replay_arrays(*args, until_change=True) == 61
    assert engine.trades()[0].timestamp == 60 * 60_000 + 40_000
    assert engine.last_price(BTC) == 48_500
    assert engine.replay_arrays(*args, 61, until_change=True) == 100
    assert engine.now_ms == 99 * 60_000 + 59_999 and engine.last_price(BTC) == 50_000


def test_open_orders_take_margin_from_the_available_funds(engine):
    before = engine.account("BTC")
    engine.buy(BTC, 10_000, type="limit", price=40_000)
    after = engine.account("BTC")
    assert after.balance == before.balance
    assert after.initial_margin == (D(10_000) / D(50_000) / 50).quantize(D("1e-10"))
    assert after.available_funds == after.equity - after.initial_margin
    engine.sell(BTC, 10_000, type="limit", price=60_000)  # the other side: no more margin
    assert engine.account("BTC").initial_margin == after.initial_margin
    engine.buy(
        BTC, 10, type="take_market", trigger_price=45_000, trigger="last_price", reduce_only=True
    )
    assert engine.account("BTC").initial_margin == after.initial_margin


def test_snapshots_speak_deribit(engine):
    placed = engine.buy(BTC, 100, type="market", label="w")
    body = placed.to_deribit()
    order = body["order"]
    assert order["order_state"] == "filled" and order["amount"] == 100
    assert order["average_price"] == 50_000 and order["price"] == "market_price"
    assert order["contracts"] == 10 and order["label"] == "w"
    trade = body["trades"][0]
    assert trade["liquidity"] == "T" and trade["fee"] == 0.000001 and trade["fee_currency"] == "BTC"
    position = engine.position(BTC).to_deribit()
    assert position["direction"] == "buy" and position["size"] == 100
    assert position["size_currency"] == 0.002 and position["kind"] == "future"
    account = engine.account("BTC").to_deribit()
    assert account["currency"] == "BTC" and account["balance"] == 0.999999
    ticker = engine.ticker(BTC).to_deribit()
    assert ticker["last_price"] == 50_000 and ticker["best_ask_price"] == 50_000.5
    error = ExchangeError(10009)
    assert error.to_deribit() == {"code": 10009, "message": "not_enough_funds"}
    assert str(error) == "[10009] not_enough_funds"
    assert placed.order.to_order().average_price == D("50000")


def test_trade_queries_by_order_instrument_and_time(engine):
    for minute in range(1, 6):
        engine.now_ms = minute * 60_000
        engine.buy(BTC if minute % 2 else BTC_USDC, 10 if minute % 2 else "0.001", type="market")
    assert [t.timestamp for t in engine.trades(BTC)] == [60_000, 180_000, 300_000]
    window = engine.trades(start_ms=120_000, end_ms=240_000)
    assert [t.timestamp for t in window] == [120_000, 180_000, 240_000]
    assert [t.timestamp for t in engine.trades(BTC_USDC, start_ms=200_000)] == [240_000]
    first = engine.trades()[0]
    assert engine.trades(order_id=first.order_id) == [first]
    assert engine.trades(BTC_USDC, order_id=first.order_id) == []
    engine.now_ms = 30_000  # a clock set back: the slow path still answers right
    engine.buy(BTC, 10, type="market")
    assert [t.timestamp for t in engine.trades(BTC, end_ms=60_000)] == [60_000, 30_000]


def test_armed_rejections_count_down_by_kind(engine):
    engine.faults.reject_next("primary", 10040, count=2)
    engine.faults.reject_next("any", 11051, "system_maintenance")
    codes = []
    for _ in range(4):
        try:
            engine.buy(BTC, 10, type="market")
            codes.append(None)
        except ExchangeError as error:
            codes.append(error.code)
    assert codes == [10040, 10040, 11051, None]
    with pytest.raises(ValueError):
        engine.faults.reject_next("iceberg", 10040)
    engine.faults.reject_next("take", 10009)
    engine.faults.clear()
    engine.sell(BTC, 10, type="take_market", trigger_price=51_000, trigger="last_price")


def test_trigger_orders_can_be_capped_per_instrument():
    engine = ExchangeEngine(prices={BTC: 50_000}, max_trigger_orders=2, now_ms=0)
    engine.buy(BTC, 10, type="stop_market", trigger_price=51_000, trigger="last_price")
    with pytest.raises(ExchangeError) as info:  # a bracket would bring two more
        engine.buy(
            BTC,
            10,
            type="market",
            linked_order_type="one_triggers_one_cancels_other",
            otoco_config=[
                {
                    "direction": "sell",
                    "type": "stop_market",
                    "trigger_price": 49_000,
                    "trigger": "last_price",
                },
                {
                    "direction": "sell",
                    "type": "take_market",
                    "trigger_price": 52_000,
                    "trigger": "last_price",
                },
            ],
        )
    assert (info.value.code, info.value.message) == (11035, "no_more_triggers 2")
    engine.buy(BTC, 10, type="stop_market", trigger_price=51_500, trigger="last_price")
    assert (
        code_of(
            lambda: engine.buy(
                BTC, 10, type="stop_market", trigger_price=52_000, trigger="last_price"
            )
        )
        == 11035
    )
    engine.buy(BTC, 10, type="limit", price=49_000)  # plain limits are not capped
