"""The paper broker: the Broker protocol over the simulator engine, fed by the shipped sample candles."""

from __future__ import annotations

import asyncio
import itertools
from decimal import Decimal as D

import pytest

from apps.brokers.base import (
    BracketRequest,
    Broker,
    ConnectionState,
    EventKind,
    NotFound,
    OrderRejected,
    OrderRequest,
    OrderState,
    Side,
)
from apps.brokers.paper import PaperBroker

BTC = "BTC-PERPETUAL"
BTC_USDC = "BTC_USDC-PERPETUAL"


def on_tick(value: D, tick: D = D("0.5")) -> D:
    return (value / tick).to_integral_value() * tick


@pytest.fixture
async def paper():
    broker = PaperBroker(manual=True)
    await broker.connect()
    yield broker
    await broker.disconnect()


def drain(stream) -> list:
    items = []
    while not stream.queue.empty():
        items.append(stream.queue.get_nowait())
    return items


async def test_paper_is_a_broker_with_linked_orders():
    broker = PaperBroker(manual=True)
    assert isinstance(broker, Broker)
    assert broker.broker_id == "paper" and broker.supports_linked_orders
    assert broker.state is ConnectionState.DISCONNECTED
    assert {spec.name for spec in await broker.instruments()} == {
        "BTC-PERPETUAL",
        "BTC_USDC-PERPETUAL",
        "ETH-PERPETUAL",
        "ETH_USDC-PERPETUAL",
    }
    with pytest.raises(NotFound):
        await broker.instrument("DOGE-PERPETUAL")


async def test_connect_replays_the_warm_up_so_history_is_there(paper):
    assert paper.state is ConnectionState.CONNECTED
    history = await paper.candles(BTC, 1, 0, 2**62)
    assert len(history) == 200
    assert all(b.open_time_ms - a.open_time_ms == 60_000 for a, b in itertools.pairwise(history))
    ticker = await paper.ticker(BTC)
    assert ticker.last_price == on_tick(D(repr(history[-1].close)))
    eth = await paper.ticker("ETH-PERPETUAL")
    assert eth.mark_price == pytest.approx(ticker.mark_price * D("0.07"), rel=D("1e-6"))
    summary = await paper.account_summary("BTC")
    assert summary.balance == D(1) and summary.equity == D(1)


async def test_a_bracket_is_one_otoco_whose_legs_close_the_position(paper):
    events = paper.events()
    price = (await paper.ticker(BTC)).last_price
    request = BracketRequest(
        bracket_id="b1",
        instrument=BTC,
        side=Side.BUY,
        amount=D(1_000),
        stop_price=on_tick(price * D("0.995")),
        take_profit_price=on_tick(price * D("1.005")),
    )
    result = await paper.place_bracket(request)
    assert result.entry.state is OrderState.FILLED and result.entry.label == "tb-b1-entry"
    assert result.entry.linked_order_ids == (result.stop_loss.order_id, result.take_profit.order_id)
    for leg, label in ((result.stop_loss, "tb-b1-sl"), (result.take_profit, "tb-b1-tp")):
        assert leg.state is OrderState.UNTRIGGERED and leg.is_secondary and leg.reduce_only
        assert leg.primary_order_id == result.entry.order_id and leg.label == label
        assert leg.direction is Side.SELL and leg.amount == D(1_000)
    assert result.stop_loss.order_type == "stop_market"
    assert result.take_profit.order_type == "take_limit"
    wire = paper.engine.get_order(result.entry.order_id)
    assert wire.is_primary_otoco and wire.trigger_fill_condition == "incremental"
    legs = await paper.open_orders(BTC, label_prefix="tb-b1")
    assert {o.order_id for o in legs} == {result.stop_loss.order_id, result.take_profit.order_id}
    assert (await paper.positions("BTC"))[0].size == D(1_000)

    for _ in range(2_000):
        await paper.step(1)
        if not (await paper.positions("BTC")):
            break
    assert await paper.positions("BTC") == []
    stop = await paper.order_state(result.stop_loss.order_id)
    take = await paper.order_state(result.take_profit.order_id)
    assert {stop.state, take.state} == {OrderState.FILLED, OrderState.CANCELLED}
    cancelled = stop if stop.state is OrderState.CANCELLED else take
    assert cancelled.cancel_reason == "oco_other_closed"
    fills = await paper.fills(BTC)
    assert next(f.label for f in fills) == "tb-b1-entry" and len(fills) == 2
    seen = drain(events)
    kinds = {event.kind for event in seen}
    assert {EventKind.ORDER, EventKind.FILL, EventKind.POSITION, EventKind.CANDLE} <= kinds
    assert [e.payload.label for e in seen if e.kind is EventKind.FILL] == [f.label for f in fills]
    summary = await paper.account_summary("BTC")
    fees = sum((f.fee for f in fills), D(0))
    assert summary.balance == D(1) + paper.engine.realized_pnl("BTC") - fees


async def test_orders_cancels_and_typed_errors(paper):
    price = (await paper.ticker(BTC)).last_price
    order = await paper.place_order(
        OrderRequest(
            BTC, Side.BUY, D(100), order_type="limit", price=on_tick(price * D("0.9")), label="x"
        )
    )
    assert order.state is OrderState.OPEN
    assert (await paper.orders_by_label("x", "BTC"))[0].order_id == order.order_id
    cancelled = await paper.cancel(order.order_id)
    assert cancelled.state is OrderState.CANCELLED
    again = await paper.cancel(order.order_id)  # already gone: returned, not raised
    assert again.state is OrderState.CANCELLED
    with pytest.raises(NotFound) as missing:
        await paper.order_state("nope")
    assert missing.value.code == 10004
    with pytest.raises(OrderRejected) as odd:
        await paper.place_order(OrderRequest(BTC, Side.BUY, D(15)))
    assert odd.value.code == 10021
    with pytest.raises(OrderRejected) as funds:
        await paper.place_order(OrderRequest(BTC, Side.BUY, D(10_000_000)))
    assert funds.value.code == 10009
    stop = await paper.place_order(
        OrderRequest(
            BTC, Side.BUY, D(100), order_type="stop_market", trigger_price=on_tick(price * D("1.2"))
        )
    )
    assert stop.state is OrderState.UNTRIGGERED
    assert paper.engine.get_order(stop.order_id).trigger == "mark_price"


async def test_close_position(paper):
    assert await paper.close_position(BTC_USDC) is None
    await paper.place_order(OrderRequest(BTC_USDC, Side.SELL, D("0.01")))
    closing = await paper.close_position(BTC_USDC)
    assert closing is not None and closing.reduce_only and closing.direction is Side.BUY
    assert await paper.positions("USDC") == []


async def test_closed_candles_in_steps_and_merged_resolutions():
    broker = PaperBroker(manual=True, rebase_time=False)
    await broker.connect()
    ones = broker.closed_candles(BTC, 1)
    fives = broker.closed_candles(BTC, 5)
    first = asyncio.ensure_future(ones.__anext__())
    five = asyncio.ensure_future(fives.__anext__())
    await asyncio.sleep(0)
    await broker.step(10)
    one_minute = await first
    merged = await five
    history = await broker.candles(BTC, 1, 0, 2**62)
    assert one_minute == history[200]
    assert merged.open_time_ms % 300_000 == 0
    parts = [
        c for c in history if merged.open_time_ms <= c.open_time_ms < merged.open_time_ms + 300_000
    ]
    assert len(parts) == 5
    assert merged.high == max(c.high for c in parts) and merged.close == parts[-1].close
    assert merged in await broker.candles(BTC, 5, 0, 2**62)
    await broker.disconnect()
    rest = [candle async for candle in ones]  # what was queued, then the stream ends
    assert rest == history[201:210]


async def test_the_feed_task_replays_on_its_own_and_stops_on_disconnect():
    broker = PaperBroker(speed="max", warmup=10)
    await broker.connect()
    got = []
    async for candle in broker.closed_candles(BTC, 1):
        got.append(candle)
        if len(got) == 25:
            break
    assert [b.open_time_ms - a.open_time_ms for a, b in itertools.pairwise(got)] == [60_000] * 24
    events = broker.events()
    await broker.disconnect()
    assert broker.state is ConnectionState.DISCONNECTED
    remaining = [event async for event in events]
    assert all(event.kind is EventKind.CANDLE for event in remaining)


async def test_replay_times_start_at_the_current_minute():
    import time

    def minute() -> int:
        return int(time.time() * 1000) // 60_000 * 60_000

    before = minute()
    broker = PaperBroker(manual=True, warmup=20)
    after = minute()
    await broker.connect()
    history = await broker.candles(BTC, 1, 0, 2**62)
    assert len(history) == 20
    closed = await broker.step(1)
    # the warm-up ends just before the current minute; the first live candle opens at it
    assert closed[0].candle.open_time_ms in (before, after)
    assert history[-1].open_time_ms == closed[0].candle.open_time_ms - 60_000
    await broker.disconnect()
