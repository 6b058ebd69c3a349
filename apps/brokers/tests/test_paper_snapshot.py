"""The simulator's snapshot: an engine and its feed to JSON and back, exactly (no Django here)."""

from __future__ import annotations

import json
import math
from decimal import Decimal as D

import pytest

from apps.brokers.base import Candle
from apps.brokers.simulator.engine import ExchangeEngine
from apps.brokers.simulator.feed import CandleFeed
from apps.brokers.simulator.orders import WorkingOrder
from apps.brokers.simulator.snapshot import (
    FORMAT_VERSION,
    ORDER_FIELDS,
    SnapshotError,
    engine_restore,
    engine_snapshot,
)

BTC = "BTC-PERPETUAL"
USDC = "BTC_USDC-PERPETUAL"
OTOCO = "one_triggers_one_cancels_other"
SCALES = {BTC: 1.0, USDC: 1.0}


def wave(n: int = 120) -> list[Candle]:
    """Minute candles swinging ±800 around 50,000 (a period of 40 minutes): stops and targets
    a few hundred away are reached within a period, either way."""
    candles = []
    for i in range(n):
        open_ = 50_000 + 800 * math.sin(i * 2 * math.pi / 40)
        close = 50_000 + 800 * math.sin((i + 1) * 2 * math.pi / 40)
        candles.append(
            Candle(i * 60_000, open_, max(open_, close) + 25, min(open_, close) - 25, close, 1.0)
        )
    return candles


def market(
    candles: list[Candle] | None = None, **engine_kwargs
) -> tuple[ExchangeEngine, CandleFeed]:
    candles = candles or wave()
    engine = ExchangeEngine(now_ms=0, **engine_kwargs)
    feed = CandleFeed(engine, candles, SCALES, loop=True, time_offset_ms=3_600_000)
    for name in SCALES:
        engine.set_price(name, candles[0].open, candles[0].open_time_ms + 3_600_000)
    return engine, feed


def on_tick(value: float, tick: str = "0.5") -> D:
    step = D(tick)
    return (D(repr(value)) / step).to_integral_value() * step


def bracket(engine: ExchangeEngine, name: str, n: int, *, side: str = "buy", entry: str = "market"):
    """An OTOCO like PaperBroker.place_bracket: entry, reduce-only stop_market and take_limit."""
    last = float(engine.ticker(name).last_price)
    tick = "0.5" if name == BTC else "1"
    sign = 1 if side == "buy" else -1
    opposite = "sell" if side == "buy" else "buy"
    amount = 100 if name == BTC else D("0.01")
    params = {
        "type": entry,
        "label": f"tb-b{n}-entry",
        "linked_order_type": OTOCO,
        "trigger_fill_condition": "incremental",
        "otoco_config": [
            {
                "direction": opposite,
                "amount": amount,
                "type": "stop_market",
                "trigger_price": on_tick(last - sign * 500, tick),
                "trigger": "last_price",
                "reduce_only": True,
                "label": f"tb-b{n}-sl",
            },
            {
                "direction": opposite,
                "amount": amount,
                "type": "take_limit",
                "price": on_tick(last + sign * 400, tick),
                "trigger_price": on_tick(last + sign * 400, tick),
                "trigger": "last_price",
                "reduce_only": True,
                "label": f"tb-b{n}-tp",
            },
        ],
    }
    if entry == "limit":
        params["price"] = on_tick(last - sign * 100, tick)
    return engine.place_order(name, side, amount, **params)


def busy_market() -> tuple[ExchangeEngine, CandleFeed]:
    """An account with history and every kind of live order: closed brackets with fills, an
    open bracket (entry filled, stop and target untriggered), a resting limit entry whose legs
    wait, an OCO pair, an edited order and a position on a linear instrument."""
    engine, feed = market()
    feed.step(3)
    for n in range(6):  # closed brackets: fills, realized P&L, fees, cancelled legs
        bracket(engine, BTC, n, side="buy" if n % 2 else "sell")
        feed.step(25)
    feed.step(5)
    bracket(engine, BTC, 10)  # open: entry filled, legs untriggered
    bracket(engine, USDC, 11, side="sell", entry="limit")  # entry resting, legs waiting
    last = float(engine.ticker(BTC).last_price)
    engine.place_order(
        BTC,
        "sell",
        50,
        type="limit",
        price=on_tick(last + 3000),
        label="oco-a",
        linked_order_type="one_cancels_other",
        otoco_config=[
            {
                "direction": "sell",
                "amount": 50,
                "type": "stop_market",
                "trigger_price": on_tick(last - 3000),
                "trigger": "mark_price",
                "label": "oco-b",
            }
        ],
    )
    edited = engine.place_order(BTC, "buy", 30, type="limit", price=on_tick(last - 4000), label="x")
    engine.edit(edited.order.order_id, price=on_tick(last - 4200), amount=40)
    engine.cancel(
        engine.place_order(BTC, "buy", 10, type="limit", price=on_tick(last - 4500)).order.order_id
    )
    return engine, feed


def round_trip(
    engine: ExchangeEngine, feed: CandleFeed, **kwargs
) -> tuple[ExchangeEngine, CandleFeed]:
    """Snapshot through JSON text (as the database stores it) into a fresh engine and feed."""
    data = json.loads(json.dumps(engine_snapshot(engine, feed, **kwargs)))
    fresh, fresh_feed = market(feed.candles)
    engine_restore(data, fresh, fresh_feed)
    return fresh, fresh_feed


def account_view(engine: ExchangeEngine) -> dict:
    return {
        "accounts": [engine.account(c).to_deribit() for c in engine.currencies()],
        "positions": [p.to_deribit() for p in engine.positions(include_flat=True)],
        "open": [o.to_deribit() for o in engine.open_orders()],
        "orders": [o.to_deribit() for o in engine.all_orders()],
        "trades": [t.to_deribit() for t in engine.trades()],
        "labels": [o.to_deribit() for o in engine.orders_by_label("tb-b10-sl")],
        "tickers": [engine.ticker(name).to_deribit() for name in SCALES],
    }


def test_every_order_slot_is_in_the_snapshot():
    # a slot added to WorkingOrder without a place in the snapshot would be lost on restore
    assert set(ORDER_FIELDS) | {"book", "th", "up"} == set(WorkingOrder.__slots__)


def test_snapshot_restore_snapshot_is_the_same_and_the_account_reads_the_same():
    engine, feed = busy_market()
    assert engine.position(BTC).size and len(engine.open_orders()) >= 6  # the story is there
    data = engine_snapshot(engine, feed)
    assert json.loads(json.dumps(data)) == data  # JSON-able as it is
    assert data["format"] == FORMAT_VERSION
    restored, restored_feed = round_trip(engine, feed)
    assert engine_snapshot(restored, restored_feed) == data
    assert account_view(restored) == account_view(engine)
    assert (restored_feed.position, restored_feed.rounds, restored_feed.stepped) == (
        feed.position,
        feed.rounds,
        feed.stepped,
    )


def test_a_restored_engine_fills_the_same_for_the_same_candles():
    engine, feed = busy_market()
    restored, restored_feed = round_trip(engine, feed)
    before = engine.trade_count
    # on through the end of the series and around: the stop or target of the open bracket,
    # the resting limit entry and its legs, the OCO pair
    feed.step(150)
    restored_feed.step(150)
    assert engine.trade_count > before + 2
    assert account_view(restored) == account_view(engine)
    assert restored.now_ms == engine.now_ms
    # new ids continue the same counters: never one that was used before
    a = bracket(engine, BTC, 20)
    b = bracket(restored, BTC, 20)
    assert a.to_deribit() == b.to_deribit()
    assert engine_snapshot(restored, restored_feed) == engine_snapshot(engine, feed)


def test_history_is_bounded_but_an_open_bracket_keeps_its_entry_and_fills():
    engine, feed = busy_market()
    open_entry = next(o for o in engine.all_orders() if o.label == "tb-b10-entry")
    assert open_entry.order_state == "filled"
    newest_closed = [o for o in engine.all_orders() if not o.is_live][-1]
    assert newest_closed.order_id != open_entry.order_id
    data = engine_snapshot(engine, feed, max_closed_orders=1, max_trades=1)
    kept_ids = [row[1] for row in data["engine"]["orders"]]
    assert open_entry.order_id in kept_ids  # the filled entry of live legs
    assert newest_closed.order_id in kept_ids
    assert len(kept_ids) == len(engine.open_orders()) + 2  # live + newest closed + the entry
    kept_trades = {row[2] for row in data["engine"]["trades"]}  # order ids of the fills kept
    assert open_entry.order_id in kept_trades
    restored, restored_feed = market()
    engine_restore(json.loads(json.dumps(data)), restored, restored_feed)
    assert engine_snapshot(restored, restored_feed, max_closed_orders=1, max_trades=1) == data
    assert [t.to_deribit() for t in restored.trades(order_id=open_entry.order_id)] == [
        t.to_deribit() for t in engine.trades(order_id=open_entry.order_id)
    ]
    # an id that was forgotten is still never handed out again
    oldest = engine.all_orders()[0].order_id
    assert oldest not in kept_ids
    new = restored.place_order(BTC, "buy", 10, type="limit", price=1000).order.order_id
    assert new not in {o.order_id for o in engine.all_orders()}
    assert int(new) == engine._order_seq + 1


def test_feed_recent_and_next_open_follow_the_replay_across_a_loop():
    _, feed = market(wave(50))
    closed = [item.candle for item in feed.step(70) if item.instrument == BTC]  # wraps once
    assert feed.rounds == 1
    assert feed.recent(5) == closed[-5:]
    assert feed.recent(500) == closed  # never more than were stepped
    expected = feed.next_open_ms()
    (following,) = [item.candle for item in feed.step(1) if item.instrument == BTC]
    assert following.open_time_ms == expected > closed[-1].open_time_ms


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (lambda d: d.update(format=99), "unknown snapshot format 99"),
        (lambda d: d["engine"]["orders"][0].pop(), "order row has"),
        (lambda d: d["engine"]["balances"].update(BTC="lots"), "InvalidOperation"),
        (lambda d: d["engine"]["live"].append("nope"), "live orders do not match"),
        (lambda d: d["engine"].update(order_seq=1), "ids would repeat"),
        (lambda d: d["feed"]["series"].update(count=7), "another candle series"),
        (lambda d: d["engine"]["books"].pop(USDC), "instruments"),
        (lambda d: d.pop("feed"), "corrupt snapshot: KeyError"),
    ],
)
def test_a_bad_snapshot_is_refused_by_name_and_leaves_the_fresh_engine_untouched(spoil, message):
    engine, feed = busy_market()
    data = json.loads(json.dumps(engine_snapshot(engine, feed)))
    spoil(data)
    fresh, fresh_feed = market()
    untouched = engine_snapshot(fresh, fresh_feed)
    with pytest.raises(SnapshotError, match=message):
        engine_restore(data, fresh, fresh_feed)
    assert engine_snapshot(fresh, fresh_feed) == untouched


def test_restore_refuses_an_engine_that_already_trades():
    engine, feed = busy_market()
    data = engine_snapshot(engine, feed)
    with pytest.raises(RuntimeError, match="fresh engine"):
        engine_restore(data, engine, feed)
