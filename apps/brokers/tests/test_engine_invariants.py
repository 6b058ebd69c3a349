"""Invariants of the simulator engine over random orders, brackets and price paths.

After any replay, for every currency: balance = initial balance + realized P&L − fees; no order is
ever filled beyond its amount (and its fills add up to its filled amount); a reduce-only fill never
grows a position.
"""

from __future__ import annotations

import random
from decimal import Decimal as D
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.brokers.simulator.engine import ExchangeEngine
from apps.brokers.simulator.errors import ExchangeError
from apps.brokers.simulator.feed import load_candles

SHARED_FILE = (
    Path(__file__).resolve().parents[4] / "shared" / "data" / "btcusdt-1m-2023-03-01_21.csv"
)
BTC = "BTC-PERPETUAL"
BTC_USDC = "BTC_USDC-PERPETUAL"
INSTRUMENTS = (BTC, BTC_USDC)
UNIT = {BTC: D(10), BTC_USDC: D("0.001")}
TICK = {BTC: D("0.5"), BTC_USDC: D(1)}


def on_tick(instrument: str, price: float) -> D:
    tick = TICK[instrument]
    return max(tick, (D(repr(price)) / tick).to_integral_value() * tick)


def assert_invariants(engine: ExchangeEngine) -> None:
    trades = engine.trades()
    for currency in engine.currencies():
        realized = engine.realized_pnl(currency)
        fees = engine.fees_paid(currency)
        balance = engine.account(currency).balance
        assert balance == engine.initial_balance(currency) + realized - fees, currency
        mine = [t for t in trades if t.fee_currency == currency]
        assert realized == sum((t.profit_loss for t in mine), D(0))
        assert fees == sum((t.fee for t in mine), D(0))
    filled: dict[str, D] = {}
    for trade in trades:
        filled[trade.order_id] = filled.get(trade.order_id, D(0)) + trade.amount
    for order in engine.all_orders():
        assert order.filled_amount <= order.amount, order
        assert filled.get(order.order_id, D(0)) == order.filled_amount, order
    sizes = {name: D(0) for name in INSTRUMENTS}
    for trade in trades:
        before = sizes[trade.instrument_name]
        after = before + (trade.amount if trade.direction == "buy" else -trade.amount)
        if trade.reduce_only:
            assert abs(after) < abs(before), trade
            assert after == 0 or (after > 0) == (before > 0), trade
        sizes[trade.instrument_name] = after
    for name, size in sizes.items():
        assert engine.position(name).size == size


prices = st.floats(min_value=-0.03, max_value=0.03, allow_nan=False)
amounts = st.integers(min_value=1, max_value=40)
sides = st.sampled_from(("buy", "sell"))
action = st.one_of(
    st.tuples(
        st.just("candle"),
        st.sampled_from(INSTRUMENTS),
        prices,
        st.floats(0, 0.02),
        st.floats(0, 0.02),
        prices,
    ),
    st.tuples(st.just("market"), st.sampled_from(INSTRUMENTS), sides, amounts, st.booleans()),
    st.tuples(
        st.just("limit"),
        st.sampled_from(INSTRUMENTS),
        sides,
        amounts,
        prices,
        st.booleans(),
        st.sampled_from(("good_til_cancelled", "immediate_or_cancel", "fill_or_kill")),
    ),
    st.tuples(
        st.just("stop"),
        st.sampled_from(INSTRUMENTS),
        sides,
        amounts,
        prices,
        st.booleans(),
        st.sampled_from(("stop_market", "take_market", "stop_limit", "take_limit")),
    ),
    st.tuples(
        st.just("bracket"),
        st.sampled_from(INSTRUMENTS),
        sides,
        amounts,
        st.sampled_from(("market", "limit")),
        prices,
        st.floats(0.002, 0.05),
        st.floats(0.002, 0.05),
        st.sampled_from(("first_hit", "complete_fill", "incremental")),
    ),
    st.tuples(st.just("cancel"), st.integers(0, 50)),
    st.tuples(st.just("edit"), st.integers(0, 50), amounts, prices),
    st.tuples(st.just("mark"), st.sampled_from(INSTRUMENTS), prices),
    st.tuples(st.just("close"), st.sampled_from(INSTRUMENTS)),
)


def apply(engine: ExchangeEngine, step: tuple, minute: list[int]) -> None:
    kind, *args = step
    if kind == "candle":
        name, o, up, down, c = args
        last = engine.last_price(name)
        open_ = last * (1 + o)
        close = last * (1 + c)
        high = max(open_, close) * (1 + up)
        low = min(open_, close) * (1 - down)
        minute[0] += 1
        engine.step_candle(name, open_, high, low, close, minute[0] * 60_000)
        return
    if kind == "mark":
        name, offset = args
        engine.set_prices(name, mark=engine.last_price(name) * (1 + offset))
        return
    if kind == "close":
        engine.close_position(args[0])
        return
    if kind in ("cancel", "edit"):
        live = engine.open_orders()
        if not live:
            return
        order = live[args[0] % len(live)]
        if kind == "cancel":
            engine.cancel(order.order_id)
        else:
            _, units, offset = args
            reference = float(order.price or order.trigger_price or 1)
            engine.edit(
                order.order_id,
                amount=UNIT[order.instrument_name] * units,
                price=None
                if order.price is None
                else on_tick(order.instrument_name, reference * (1 + offset)),
            )
        return
    name, side, units = args[0], args[1], args[2]
    last = engine.last_price(name)
    amount = UNIT[name] * units
    if kind == "market":
        engine.place_order(name, side, amount, type="market", reduce_only=args[3])
    elif kind == "limit":
        offset, post_only, tif = args[3:]
        engine.place_order(
            name,
            side,
            amount,
            type="limit",
            price=on_tick(name, last * (1 + offset)),
            post_only=post_only,
            time_in_force=tif,
        )
    elif kind == "stop":
        offset, reduce_only, order_type = args[3:]
        level = on_tick(name, last * (1 + offset))
        engine.place_order(
            name,
            side,
            amount,
            type=order_type,
            trigger_price=level,
            price=level,
            trigger="last_price",
            reduce_only=reduce_only,
        )
    elif kind == "bracket":
        entry_type, offset, stop_distance, take_distance, condition = args[3:]
        entry = last * (1 + offset) if entry_type == "limit" else last
        sign = 1 if side == "buy" else -1
        exit_side = "sell" if side == "buy" else "buy"
        stop = on_tick(name, entry * (1 - sign * stop_distance))
        take = on_tick(name, entry * (1 + sign * take_distance))
        engine.place_order(
            name,
            side,
            amount,
            type=entry_type,
            price=on_tick(name, entry) if entry_type == "limit" else None,
            linked_order_type="one_triggers_one_cancels_other",
            trigger_fill_condition=condition,
            otoco_config=[
                {
                    "direction": exit_side,
                    "type": "stop_market",
                    "trigger_price": stop,
                    "trigger": "mark_price",
                    "reduce_only": True,
                },
                {
                    "direction": exit_side,
                    "type": "take_limit",
                    "price": take,
                    "trigger_price": take,
                    "trigger": "last_price",
                    "reduce_only": True,
                },
            ],
        )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(action, min_size=1, max_size=60),
    cap=st.sampled_from((None, 2, 5)),
    slippage=st.integers(0, 2),
)
def test_random_orders_and_brackets_keep_the_invariants(steps, cap, slippage):
    fill_cap = None if cap is None else {BTC: UNIT[BTC] * cap, BTC_USDC: UNIT[BTC_USDC] * cap}
    engine = ExchangeEngine(
        prices={BTC: 25_000, BTC_USDC: 25_000}, fill_cap=fill_cap, slippage_ticks=slippage, now_ms=0
    )
    minute = [0]
    for step in steps:
        try:
            apply(engine, step, minute)
        except ExchangeError as error:
            assert error.code in {
                -32602,
                10002,
                10009,
                10010,
                10021,
                10043,
                10044,
                11030,
                11036,
                11044,
                11054,
            }, error
        assert_invariants(engine)


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_FILE.exists(), reason="shared candle file absent")
def test_full_replay_with_random_brackets_keeps_the_balance_invariant():
    candles = load_candles(SHARED_FILE)
    assert len(candles) == 30_240
    rng = random.Random(2023)
    engine = ExchangeEngine(
        prices={BTC: candles[0].open, BTC_USDC: candles[0].open},
        balances={"BTC": D(1), "USDC": D(50_000)},
        now_ms=0,
    )
    brackets = 0
    for candle in candles:
        for name in INSTRUMENTS:
            engine.step_candle(
                name, candle.open, candle.high, candle.low, candle.close, candle.open_time_ms
            )
        for name in INSTRUMENTS:
            if engine.position(name).size:
                continue
            if engine.open_orders(name):
                if rng.random() < 0.02:  # a limit entry that did not fill: give up on it
                    engine.cancel_all_by_instrument(name)
                continue
            if rng.random() > 0.05:
                continue
            side = rng.choice(("buy", "sell"))
            try:
                apply(
                    engine,
                    (
                        "bracket",
                        name,
                        side,
                        rng.randint(1, 50),
                        rng.choice(("market", "limit")),
                        rng.uniform(-0.003, 0.003),
                        rng.uniform(0.002, 0.02),
                        rng.uniform(0.002, 0.03),
                        rng.choice(("first_hit", "complete_fill", "incremental")),
                    ),
                    [0],
                )
                brackets += 1
            except ExchangeError as error:
                assert error.code in {10009, 11036}
    assert brackets > 150
    assert engine.trade_count > 300
    assert_invariants(engine)
    for currency in ("BTC", "USDC"):
        account = engine.account(currency)
        assert account.balance == account.equity - account.session_upl


def walk_by_hand(engine: ExchangeEngine, name: str, candle: tuple[int, float, float, float, float]):
    """The intra-candle path through the public price calls, never skipping a candle."""
    from apps.brokers.simulator.engine import intra_candle_path

    time_ms, open_, high, low, close = candle
    _, first, second, _ = intra_candle_path(open_, high, low, close)
    engine.set_price(name, open_, time_ms)
    engine.move_price(name, first, time_ms + 20_000)
    engine.move_price(name, second, time_ms + 40_000)
    engine.move_price(name, close, time_ms + 59_999)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    moves=st.lists(
        st.tuples(prices, st.floats(0, 0.01), st.floats(0, 0.01), prices), min_size=5, max_size=120
    ),
    orders=st.lists(
        st.tuples(
            sides,
            st.sampled_from(("limit", "stop_market", "bracket")),
            st.floats(-0.05, 0.05),
            amounts,
        ),
        max_size=12,
    ),
)
def test_skipping_quiet_candles_changes_nothing(moves, orders):
    import numpy as np

    candles = []
    price = 25_000.0
    for index, (o, up, down, c) in enumerate(moves):
        open_ = price * (1 + o / 3)
        close = price * (1 + c / 3)
        candles.append(
            (
                index * 60_000 + 60_000,
                open_,
                max(open_, close) * (1 + up),
                min(open_, close) * (1 - down),
                close,
            )
        )
        price = close

    def prepared() -> ExchangeEngine:
        engine = ExchangeEngine(prices={BTC: 25_000.0}, balances={"BTC": 100}, now_ms=0)
        for side, kind, offset, units in orders:
            level = on_tick(BTC, 25_000 * (1 + offset))
            try:
                if kind == "limit":
                    engine.place_order(BTC, side, UNIT[BTC] * units, type="limit", price=level)
                elif kind == "stop_market":
                    engine.place_order(
                        BTC,
                        side,
                        UNIT[BTC] * units,
                        type="stop_market",
                        trigger_price=level,
                        trigger="last_price",
                    )
                else:
                    apply(
                        engine,
                        ("bracket", BTC, side, units, "limit", offset, 0.01, 0.02, "first_hit"),
                        [0],
                    )
            except ExchangeError:
                pass
        return engine

    by_hand = prepared()
    for candle in candles:
        walk_by_hand(by_hand, BTC, candle)
    stepped = prepared()
    for candle in candles:
        stepped.step_candle(BTC, *candle[1:], candle[0])
    bulk = prepared()
    columns = [np.array(column) for column in zip(*candles, strict=True)]
    bulk.replay_arrays(BTC, *columns)
    expected = [t.to_deribit() for t in by_hand.trades()]
    assert [t.to_deribit() for t in stepped.trades()] == expected
    assert [t.to_deribit() for t in bulk.trades()] == expected
    assert stepped.account("BTC") == bulk.account("BTC") == by_hand.account("BTC")
    assert stepped.all_orders() == bulk.all_orders()
