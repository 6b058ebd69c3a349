"""Every method the Deribit client uses, answered by the simulator with Deribit's shapes.

Shapes are checked against Deribit's OpenAPI description (skipped when it is not on disk) and
against the field values the client reads.
"""

from __future__ import annotations

import asyncio
import itertools
from decimal import Decimal

import pytest

from apps.brokers.base import Candle
from apps.brokers.simulator.testing import running_deribit_sim
from apps.brokers.simulator.wire.chart import ChartBook
from apps.brokers.tests.deribit_raw import RawClient
from apps.brokers.tests.openapi_shapes import assert_deribit_shape

BTC = "BTC-PERPETUAL"


@pytest.fixture
async def client(deribit_sim):
    raw = await RawClient.connect(deribit_sim.ws_url)
    await raw.auth()
    yield raw
    await raw.close()


def otoco(amount: int, stop: float, take: float, *, side: str = "buy", entry: str = "market"):
    exit_side = "sell" if side == "buy" else "buy"
    params = {
        "instrument_name": BTC,
        "amount": amount,
        "type": entry,
        "label": "tb-7-entry",
        "linked_order_type": "one_triggers_one_cancels_other",
        "trigger_fill_condition": "first_hit",
        "otoco_config": [
            {
                "direction": exit_side,
                "type": "stop_market",
                "trigger_price": stop,
                "trigger": "mark_price",
                "reduce_only": True,
                "label": "tb-7-sl",
            },
            {
                "direction": exit_side,
                "type": "take_limit",
                "price": take,
                "trigger_price": take,
                "trigger": "mark_price",
                "reduce_only": True,
                "label": "tb-7-tp",
            },
        ],
    }
    return f"private/{side}", params


# -- market data ---------------------------------------------------------------------------------


async def test_get_instruments_by_settlement_currency(client):
    btc = await client.result("public/get_instruments", {"currency": "BTC", "kind": "future"})
    assert_deribit_shape("public/get_instruments", btc)
    assert [i["instrument_name"] for i in btc] == [BTC]
    spec = btc[0]
    assert spec["instrument_type"] == "reversed"
    assert spec["settlement_period"] == "perpetual"
    assert (spec["contract_size"], spec["tick_size"], spec["min_trade_amount"]) == (10, 0.5, 10)
    usdc = await client.result("public/get_instruments", {"currency": "USDC"})
    assert {i["instrument_name"] for i in usdc} == {"BTC_USDC-PERPETUAL", "ETH_USDC-PERPETUAL"}
    assert {i["instrument_type"] for i in usdc} == {"linear"}
    assert (
        await client.result("public/get_instruments", {"currency": "BTC", "kind": "option"}) == []
    )
    bad = await client.request("public/get_instruments", {"currency": "DOGE"})
    assert bad["error"]["data"] == {"reason": "invalid currency", "param": "currency"}


async def test_get_instrument_and_unknown_instrument(client):
    eth = await client.result("public/get_instrument", {"instrument_name": "ETH-PERPETUAL"})
    assert_deribit_shape("public/get_instrument", eth)
    assert (eth["contract_size"], eth["tick_size"], eth["settlement_currency"]) == (1, 0.05, "ETH")
    missing = await client.request("public/get_instrument", {"instrument_name": "XRP-PERPETUAL"})
    assert missing["error"] == {
        "code": -32602,
        "message": "Invalid params",
        "data": {"reason": "instrument not found", "param": "instrument_name"},
    }


async def test_ticker_shape_and_prices(client, deribit_sim):
    deribit_sim.set_price(BTC, 30000)
    ticker = await client.result("public/ticker", {"instrument_name": BTC})
    assert_deribit_shape("public/ticker", ticker)
    assert ticker["last_price"] == ticker["mark_price"] == ticker["index_price"] == 30000
    assert ticker["best_bid_price"] < ticker["best_ask_price"]
    index = await client.result("public/get_index_price", {"index_name": "btc_usd"})
    assert index["index_price"] == 30000


async def test_chart_data_from_history_and_resolutions():
    start = 1_700_000_000_000 - 1_700_000_000_000 % 3_600_000
    candles = [
        Candle(start + i * 60_000, 100.0 + i, 101.0 + i, 99.0 + i, 100.5 + i, 2.0)
        for i in range(30)
    ]
    async with running_deribit_sim(candles=candles, history_candles=20, speed=None) as sim:
        client = await RawClient.connect(sim.ws_url)
        try:
            data = await client.result(
                "public/get_tradingview_chart_data",
                {
                    "instrument_name": BTC,
                    "start_timestamp": 0,
                    "end_timestamp": 2**50,
                    "resolution": "1",
                },
            )
            assert_deribit_shape("public/get_tradingview_chart_data", data)
            assert data["status"] == "ok"
            # 20 candles of history, then the current minute: no trade yet, a flat filler
            assert len(data["ticks"]) == 21
            assert all(b - a == 60_000 for a, b in itertools.pairwise(data["ticks"]))
            assert data["open"][0] == 100.0 and data["close"][-2] == 119.5
            now = await client.result("public/get_time")
            assert data["ticks"][-1] <= now < data["ticks"][-1] + 60_000
            assert data["open"][-1] == data["high"][-1] == data["low"][-1] == 119.5
            assert data["volume"][-1] == 0
            five = await client.result(
                "public/get_tradingview_chart_data",
                {
                    "instrument_name": BTC,
                    "start_timestamp": 0,
                    "end_timestamp": 2**50,
                    "resolution": "5",
                },
            )
            buckets: dict[int, list[int]] = {}
            for index, tick in enumerate(data["ticks"]):
                buckets.setdefault(tick - tick % 300_000, []).append(index)
            assert five["ticks"] == sorted(buckets)
            for position, members in enumerate(buckets.values()):
                assert five["open"][position] == data["open"][members[0]]
                assert five["close"][position] == data["close"][members[-1]]
                assert five["high"][position] == max(data["high"][i] for i in members)
                assert five["low"][position] == min(data["low"][i] for i in members)
                assert five["volume"][position] == sum(data["volume"][i] for i in members)
            eth = await client.result(
                "public/get_tradingview_chart_data",
                {
                    "instrument_name": "ETH-PERPETUAL",
                    "start_timestamp": 0,
                    "end_timestamp": 2**50,
                    "resolution": "1",
                },
            )
            assert eth["open"][0] == 7.0  # 100 × 0.07 on ETH's 0.05 tick
            empty = await client.result(
                "public/get_tradingview_chart_data",
                {
                    "instrument_name": BTC,
                    "start_timestamp": 0,
                    "end_timestamp": 1,
                    "resolution": "1",
                },
            )
            assert empty["status"] == "no_data" and empty["ticks"] == []
            bad = await client.request(
                "public/get_tradingview_chart_data",
                {
                    "instrument_name": BTC,
                    "start_timestamp": 0,
                    "end_timestamp": 1,
                    "resolution": "7",
                },
            )
            assert bad["error"]["data"]["param"] == "resolution"
        finally:
            await client.close()


def test_minutes_without_a_price_point_are_flat_filler_candles():
    book = ChartBook()
    t0 = 1_700_000_040_000 - 1_700_000_040_000 % 60_000
    book.record(BTC, t0 + 5_000, Decimal(100))
    book.record(BTC, t0 + 3 * 60_000 + 1, Decimal(103))
    data = book.chart_data(BTC, 0, 2**50, 1, until_ms=t0 + 5 * 60_000 + 10)
    assert data["ticks"] == [t0 + i * 60_000 for i in range(6)]
    assert data["close"] == [100, 100, 100, 103, 103, 103]
    assert data["volume"] == [0] * 6
    # a window that starts after the last price point still shows the flat minutes
    late = book.chart_data(BTC, t0 + 4 * 60_000, 2**50, 1, until_ms=t0 + 5 * 60_000)
    assert late["ticks"] == [t0 + 4 * 60_000, t0 + 5 * 60_000]
    assert late["open"] == [103, 103]
    # without until_ms nothing is invented after the last point
    assert book.chart_data(BTC, 0, 2**50, 1)["ticks"][-1] == t0 + 3 * 60_000


# -- account -------------------------------------------------------------------------------------


async def test_account_summary_default_balances(client):
    for currency, balance in (("BTC", 1), ("ETH", 10), ("USDC", 100000)):
        summary = await client.result("private/get_account_summary", {"currency": currency})
        assert_deribit_shape("private/get_account_summary", summary)
        assert summary["currency"] == currency
        assert summary["balance"] == summary["equity"] == summary["available_funds"] == balance
    bad = await client.request("private/get_account_summary", {"currency": "XRP"})
    assert bad["error"]["code"] == -32602


async def test_account_summary_with_configured_balance():
    async with running_deribit_sim(balances={"BTC": Decimal("2.5"), "USDC": Decimal(0)}) as sim:
        client = await RawClient.connect(sim.ws_url)
        try:
            await client.auth()
            summary = await client.result("private/get_account_summary", {"currency": "BTC"})
            assert summary["balance"] == 2.5
        finally:
            await client.close()


# -- orders --------------------------------------------------------------------------------------


async def test_market_buy_answers_order_and_trades_and_opens_a_position(client):
    answer = await client.result(
        "private/buy",
        {"instrument_name": BTC, "amount": 100, "type": "market", "label": "m1"},
    )
    assert_deribit_shape("private/buy", answer)
    order = answer["order"]
    assert (order["order_state"], order["filled_amount"], order["average_price"]) == (
        "filled",
        100,
        25000,
    )
    assert order["direction"] == "buy" and order["label"] == "m1"
    [trade] = answer["trades"]
    assert (trade["amount"], trade["price"], trade["liquidity"]) == (100, 25000, "T")
    assert trade["fee_currency"] == "BTC"
    assert trade["fee"] == pytest.approx(0.0005 * 100 / 25000)
    positions = await client.result("private/get_positions", {"currency": "BTC", "kind": "future"})
    assert_deribit_shape("private/get_positions", positions)
    [position] = positions
    assert (position["size"], position["direction"], position["average_price"]) == (
        100,
        "buy",
        25000,
    )
    single = await client.result("private/get_position", {"instrument_name": BTC})
    assert_deribit_shape("private/get_position", single)
    trades = await client.result("private/get_user_trades_by_instrument", {"instrument_name": BTC})
    assert_deribit_shape("private/get_user_trades_by_instrument", trades)
    assert [t["order_id"] for t in trades["trades"]] == [order["order_id"]]
    assert trades["has_more"] is False
    by_currency = await client.result("private/get_user_trades_by_currency", {"currency": "BTC"})
    assert len(by_currency["trades"]) == 1


async def test_limit_order_rests_is_edited_and_cancelled(client):
    placed = await client.result(
        "private/sell",
        {"instrument_name": BTC, "amount": 50, "type": "limit", "price": 26000, "label": "l1"},
    )
    order_id = placed["order"]["order_id"]
    assert placed["order"]["order_state"] == "open" and placed["trades"] == []
    assert placed["order"]["average_price"] == 0
    open_orders = await client.result(
        "private/get_open_orders_by_instrument", {"instrument_name": BTC}
    )
    assert_deribit_shape("private/get_open_orders_by_instrument", open_orders)
    assert [o["order_id"] for o in open_orders] == [order_id]
    assert [o["order_id"] for o in await client.result("private/get_open_orders")] == [order_id]
    edited = await client.result("private/edit", {"order_id": order_id, "price": 26500})
    assert_deribit_shape("private/edit", edited)
    assert edited["order"]["price"] == 26500 and edited["order"]["replaced"] is True
    state = await client.result("private/get_order_state", {"order_id": order_id})
    assert_deribit_shape("private/get_order_state", state)
    assert state["price"] == 26500
    cancelled = await client.result("private/cancel", {"order_id": order_id})
    assert_deribit_shape("private/cancel", cancelled)
    assert cancelled["order_state"] == "cancelled"
    assert cancelled["cancel_reason"] == "user_request"
    again = await client.request("private/cancel", {"order_id": order_id})
    assert again["error"]["code"] == 11044
    unknown = await client.request("private/get_order_state", {"order_id": "nope"})
    assert unknown["error"]["code"] == 10004
    assert (
        await client.result("private/get_open_orders_by_instrument", {"instrument_name": BTC}) == []
    )


async def test_order_validation_errors(client):
    async def error(params):
        answer = await client.request("private/buy", {"instrument_name": BTC, **params})
        return answer["error"]

    assert (await error({"amount": 15, "type": "market"}))["code"] == 10021
    assert (await error({"amount": 5, "type": "market"}))["code"] == 10002
    assert (await error({"amount": 10, "type": "limit", "price": 100.3}))["code"] == 10043
    assert (await error({"type": "market"}))["data"] == {
        "reason": "value is required",
        "param": "amount",
    }
    assert (await error({"amount": "ten", "type": "market"}))["data"]["param"] == "amount"
    assert (await error({"amount": 10, "type": "iceberg"}))["data"]["param"] == "type"
    assert (await error({"amount": 10, "contracts": 2, "type": "market"}))["data"][
        "param"
    ] == "contracts"
    assert (await error({"amount": 10, "type": "market", "valid_until": 1}))["code"] == 13888
    assert (await error({"amount": 10**9, "type": "market"}))["code"] == 10009
    missing = await client.request("private/buy", {"amount": 10, "type": "market"})
    assert missing["error"]["data"] == {"reason": "value is required", "param": "instrument_name"}
    stop_wrong_side = await client.request(
        "private/sell",
        {
            "instrument_name": BTC,
            "amount": 10,
            "type": "stop_market",
            "trigger_price": 26000,
            "trigger": "last_price",
        },
    )
    assert stop_wrong_side["error"]["code"] == 11036
    # contracts alone work: 3 contracts of 10 USD
    ok = await client.result(
        "private/buy", {"instrument_name": BTC, "contracts": 3, "type": "market"}
    )
    assert ok["order"]["amount"] == 30


async def test_otoco_bracket_stop_fills_and_cancels_the_target(client, deribit_sim):
    method, params = otoco(200, 24000, 26000)
    answer = await client.result(method, params)
    assert_deribit_shape("private/buy", answer)
    primary = answer["order"]
    assert primary["order_state"] == "filled"
    assert primary["is_primary_otoco"] is True
    stop_id, take_id = primary["oto_order_ids"]
    secondaries = await client.result(
        "private/get_open_orders_by_instrument", {"instrument_name": BTC, "type": "all"}
    )
    by_id = {o["order_id"]: o for o in secondaries}
    assert set(by_id) == {stop_id, take_id}
    assert by_id[stop_id]["order_type"] == "stop_market"
    assert by_id[stop_id]["is_secondary_oto"] is True
    assert by_id[stop_id]["primary_order_id"] == primary["order_id"]
    assert by_id[stop_id]["oco_ref"] == by_id[take_id]["oco_ref"]
    labelled = await client.result(
        "private/get_order_state_by_label", {"currency": "BTC", "label": "tb-7-sl"}
    )
    assert_deribit_shape("private/get_order_state_by_label", labelled)
    assert [o["order_id"] for o in labelled] == [stop_id]

    deribit_sim.set_price(BTC, 23800)
    stop = await client.result("private/get_order_state", {"order_id": stop_id})
    take = await client.result("private/get_order_state", {"order_id": take_id})
    assert stop["order_state"] == "filled"
    assert take["order_state"] == "cancelled" and take["cancel_reason"] == "oco_other_closed"
    assert await client.result("private/get_positions", {"currency": "BTC"}) == []
    trades = await client.result(
        "private/get_user_trades_by_instrument", {"instrument_name": BTC, "sorting": "asc"}
    )
    assert [t["order_id"] for t in trades["trades"]] == [primary["order_id"], stop_id]
    assert trades["trades"][1]["profit_loss"] < 0


async def test_cancelling_an_unfilled_otoco_primary_cancels_its_secondaries(client):
    method, params = otoco(100, 23000, 25500, entry="limit")
    params["price"] = 24000
    answer = await client.result(method, params)
    primary = answer["order"]
    assert primary["order_state"] == "open"
    await client.result("private/cancel", {"order_id": primary["order_id"]})
    for order_id in primary["oto_order_ids"]:
        order = await client.result("private/get_order_state", {"order_id": order_id})
        assert (order["order_state"], order["cancel_reason"]) == ("cancelled", "oto_primary_closed")


async def test_cancel_all_variants_count_what_they_cancel(client):
    async def rest(price, label, instrument=BTC):
        await client.result(
            "private/buy",
            {
                "instrument_name": instrument,
                "amount": 10,
                "type": "limit",
                "price": price,
                "label": label,
            },
        )

    await rest(20000, "a")
    await rest(20100, "a")
    await rest(20200, "b")
    assert await client.result("private/cancel_by_label", {"label": "a"}) == 2
    assert await client.result("private/cancel_all_by_instrument", {"instrument_name": BTC}) == 1
    await rest(20000, "c")
    await rest(1500, "d", "ETH-PERPETUAL")
    assert await client.result("private/cancel_all_by_currency", {"currency": "ETH"}) == 1
    assert await client.result("private/cancel_all") == 1
    assert await client.result("private/cancel_all") == 0
    history = await client.result(
        "private/get_order_history_by_instrument",
        {"instrument_name": BTC, "include_unfilled": True},
    )
    assert len(history) == 4


async def test_close_position_reduces_to_flat(client):
    await client.result("private/sell", {"instrument_name": BTC, "amount": 40, "type": "market"})
    closed = await client.result(
        "private/close_position", {"instrument_name": BTC, "type": "market"}
    )
    assert_deribit_shape("private/close_position", closed)
    assert closed["order"]["direction"] == "buy"
    assert closed["order"]["reduce_only"] is True
    assert closed["order"]["filled_amount"] == 40
    assert (await client.result("private/get_position", {"instrument_name": BTC}))["size"] == 0
    again = await client.request(
        "private/close_position", {"instrument_name": BTC, "type": "market"}
    )
    assert again["error"]["code"] == 10010
    bad = await client.request("private/close_position", {"instrument_name": BTC})
    assert bad["error"]["data"] == {"reason": "value is required", "param": "type"}


async def test_linear_instrument_amounts_in_the_coin(client):
    answer = await client.result(
        "private/buy", {"instrument_name": "BTC_USDC-PERPETUAL", "amount": 0.003, "type": "market"}
    )
    assert answer["order"]["amount"] == 0.003
    assert answer["trades"][0]["fee_currency"] == "USDC"
    odd = await client.request(
        "private/buy", {"instrument_name": "BTC_USDC-PERPETUAL", "amount": 0.0015, "type": "market"}
    )
    assert odd["error"]["code"] == 10021


# -- subscriptions -------------------------------------------------------------------------------


async def test_user_channels_deliver_deribit_payload_shapes(client):
    channels = [
        "user.orders.BTC-PERPETUAL.raw",
        "user.orders.BTC-PERPETUAL.100ms",
        "user.trades.BTC-PERPETUAL.raw",
        "user.changes.future.BTC.raw",
        "user.portfolio.btc",
        "user.orders.future.ETH.raw",
    ]
    assert await client.result("private/subscribe", {"channels": channels}) == channels
    answer = await client.result(
        "private/buy", {"instrument_name": BTC, "amount": 10, "type": "market"}
    )
    order_id = answer["order"]["order_id"]
    raw = await client.notification("user.orders.BTC-PERPETUAL.raw")
    assert raw["params"]["data"]["order_id"] == order_id  # one object per message
    batched = await client.notification("user.orders.BTC-PERPETUAL.100ms")
    assert [o["order_id"] for o in batched["params"]["data"]] == [order_id]  # an array
    trades = await client.notification("user.trades.BTC-PERPETUAL.raw")
    assert isinstance(trades["params"]["data"], list)
    assert trades["params"]["data"][0]["order_id"] == order_id
    changes = (await client.notification("user.changes.future.BTC.raw"))["params"]["data"]
    assert set(changes) == {"instrument_name", "orders", "trades", "positions"}
    assert changes["positions"][0]["size"] == 10
    assert_deribit_shape("private/get_positions", changes["positions"])
    assert_deribit_shape("private/get_open_orders", changes["orders"])
    assert_deribit_shape(
        "private/get_user_trades_by_instrument", {"trades": changes["trades"], "has_more": False}
    )
    portfolio = (await client.notification("user.portfolio.btc"))["params"]["data"]
    assert portfolio["currency"] == "BTC" and portfolio["balance"] < 1
    await asyncio.sleep(0.05)
    await client.result("public/test")
    assert not [n for n in client.notifications if "ETH" in n["params"]["channel"]]


async def test_subscription_rules_private_raw_and_unsubscribe(deribit_sim):
    client = await RawClient.connect(deribit_sim.ws_url)
    try:
        accepted = await client.result(
            "public/subscribe",
            {
                "channels": [
                    "ticker.BTC-PERPETUAL.100ms",
                    "ticker.BTC-PERPETUAL.raw",
                    "user.orders.BTC-PERPETUAL.raw",
                    "ticker.NOPE.100ms",
                    "chart.trades.BTC-PERPETUAL.1",
                ]
            },
        )
        assert accepted == ["ticker.BTC-PERPETUAL.100ms", "chart.trades.BTC-PERPETUAL.1"]
        unauth = await client.request("private/subscribe", {"channels": ["user.portfolio.btc"]})
        assert unauth["error"]["code"] == 13009
        # right after subscribing: the current state
        now = await client.notification("ticker.BTC-PERPETUAL.100ms")
        assert now["params"]["data"]["last_price"] == 25000
        forming = await client.notification("chart.trades.BTC-PERPETUAL.1")
        assert forming["params"]["data"]["close"] == 25000
        deribit_sim.set_price(BTC, 25100)
        ticker = await client.notification("ticker.BTC-PERPETUAL.100ms")
        assert ticker["params"]["data"]["last_price"] == 25100
        assert_deribit_shape("public/ticker", ticker["params"]["data"])
        candle = (await client.notification("chart.trades.BTC-PERPETUAL.1"))["params"]["data"]
        assert set(candle) == {"tick", "open", "high", "low", "close", "volume", "cost"}
        assert candle["close"] == 25100 and candle["high"] >= 25100
        removed = await client.result(
            "public/unsubscribe", {"channels": ["ticker.BTC-PERPETUAL.100ms", "ticker.X.raw"]}
        )
        assert removed == ["ticker.BTC-PERPETUAL.100ms"]
        deribit_sim.set_price(BTC, 25200)
        await client.notification("chart.trades.BTC-PERPETUAL.1")
        assert not [n for n in client.notifications if n["params"]["channel"].startswith("ticker")]
    finally:
        await client.close()


async def test_replay_pushes_candles_and_a_new_tick_closes_the_previous():
    start = 1_700_000_000_000 - 1_700_000_000_000 % 60_000
    candles = [
        Candle(start + i * 60_000, 100.0 + i, 102.0 + i, 98.0 + i, 101.0 + i, 4.0)
        for i in range(12)
    ]
    async with running_deribit_sim(candles=candles, history_candles=2, speed=600) as sim:
        client = await RawClient.connect(sim.ws_url)
        try:
            history = await client.result(
                "public/get_tradingview_chart_data",
                {
                    "instrument_name": BTC,
                    "start_timestamp": 0,
                    "end_timestamp": 2**50,
                    "resolution": "1",
                },
            )
            first_replayed_tick = history["ticks"][1] + 60_000
            await client.result("public/subscribe", {"channels": ["chart.trades.BTC-PERPETUAL.1"]})
            updates = []
            async with asyncio.timeout(5):
                while len({u["tick"] for u in updates}) < 3:
                    message = await client.notification("chart.trades.BTC-PERPETUAL.1")
                    updates.append(message["params"]["data"])
            ticks = sorted({u["tick"] for u in updates})
            assert all(b - a == 60_000 for a, b in itertools.pairwise(ticks))
            # the middle candle was seen from its open to the update with the next tick: closed
            closed = [u for u in updates if u["tick"] == ticks[1]]
            candle = candles[2 + (ticks[1] - first_replayed_tick) // 60_000]
            assert closed[0]["open"] == candle.open
            final = closed[-1]
            assert (final["open"], final["high"], final["low"], final["close"]) == (
                candle.open,
                candle.high,
                candle.low,
                candle.close,
            )
            assert final["volume"] == pytest.approx(candle.volume)
        finally:
            await client.close()


async def test_looping_replay_keeps_time_increasing():
    start = 1_700_000_000_000 - 1_700_000_000_000 % 60_000
    candles = [Candle(start + i * 60_000, 100.0, 101.0, 99.0, 100.0, 1.0) for i in range(3)]
    async with running_deribit_sim(candles=candles, history_candles=1, speed=0, loop=True) as sim:
        async with asyncio.timeout(5):
            while sim.server.market.replayed < 12:
                await asyncio.sleep(0.01)
        data = sim.server.market.chart.chart_data(BTC, 0, 2**50, 1)
        assert len(data["ticks"]) >= 12
        assert all(b - a == 60_000 for a, b in itertools.pairwise(data["ticks"]))


async def test_step_candles_walks_the_data_on_demand_and_loops():
    start = 1_700_000_000_000 - 1_700_000_000_000 % 60_000
    candles = [
        Candle(start + i * 60_000, 100.0 + i, 101.0 + i, 99.0 + i, 100.5 + i) for i in range(3)
    ]
    async with running_deribit_sim(candles=candles, history_candles=1, loop=True) as sim:
        client = await RawClient.connect(sim.ws_url)
        try:
            await client.auth()
            # a resting sell at 102.5 fills when the third candle (high 103) is walked
            await client.result(
                "private/sell",
                {"instrument_name": BTC, "amount": 10, "type": "limit", "price": 102.5},
            )
            assert sim.step_candles(1) == 1
            assert sim.engine.position(BTC).size == 0
            assert sim.step_candles(1) == 1
            assert sim.engine.position(BTC).size == -10
            before = await client.result("public/get_time")
            assert sim.step_candles(3) == 3  # past the end: the data starts again, later
            assert await client.result("public/get_time") > before
            data = sim.server.market.chart.chart_data(BTC, 0, 2**50, 1)
            assert len(data["ticks"]) == 6
            assert all(b - a == 60_000 for a, b in itertools.pairwise(data["ticks"]))
        finally:
            await client.close()
    async with running_deribit_sim(candles=candles, history_candles=1) as sim:
        assert sim.step_candles(5) == 2  # without loop the data ends


# -- cancel on disconnect ------------------------------------------------------------------------


async def test_cancel_on_disconnect_cancels_orders_of_that_connection_only(deribit_sim):
    keeper = await RawClient.connect(deribit_sim.ws_url)
    leaver = await RawClient.connect(deribit_sim.ws_url)
    try:
        await keeper.auth()
        await leaver.auth()
        kept = await keeper.result(
            "private/buy", {"instrument_name": BTC, "amount": 10, "type": "limit", "price": 20000}
        )
        assert await leaver.result("private/enable_cancel_on_disconnect") == "ok"
        assert (await leaver.result("private/get_cancel_on_disconnect"))["enabled"] is True
        gone = await leaver.result(
            "private/buy", {"instrument_name": BTC, "amount": 10, "type": "limit", "price": 20500}
        )
        await leaver.close()
        async with asyncio.timeout(2):
            while True:
                state = await keeper.result(
                    "private/get_order_state", {"order_id": gone["order"]["order_id"]}
                )
                if state["order_state"] == "cancelled":
                    break
                await asyncio.sleep(0.02)
        kept_state = await keeper.result(
            "private/get_order_state", {"order_id": kept["order"]["order_id"]}
        )
        assert kept_state["order_state"] == "open"
    finally:
        await keeper.close()


async def test_logout_does_not_cancel_on_disconnect(deribit_sim):
    client = await RawClient.connect(deribit_sim.ws_url)
    await client.auth()
    await client.result("private/enable_cancel_on_disconnect")
    placed = await client.result(
        "private/buy", {"instrument_name": BTC, "amount": 10, "type": "limit", "price": 20000}
    )
    await client.send({"jsonrpc": "2.0", "id": 5, "method": "private/logout"})
    async with asyncio.timeout(2):
        while deribit_sim.session_count:
            await asyncio.sleep(0.02)
    order = deribit_sim.engine.get_order(placed["order"]["order_id"])
    assert order.order_state == "open"


async def test_account_scope_cancel_on_disconnect_applies_to_new_connections(deribit_sim):
    setup = await RawClient.connect(deribit_sim.ws_url)
    await setup.auth()
    await setup.result("private/enable_cancel_on_disconnect", {"scope": "account"})
    await setup.close()
    client = await RawClient.connect(deribit_sim.ws_url)
    await client.auth()
    assert (await client.result("private/get_cancel_on_disconnect"))["enabled"] is True
    placed = await client.result(
        "private/buy", {"instrument_name": BTC, "amount": 10, "type": "limit", "price": 20000}
    )
    deribit_sim.drop_connections()
    order_id = placed["order"]["order_id"]
    async with asyncio.timeout(2):
        while deribit_sim.engine.get_order(order_id).order_state != "cancelled":
            await asyncio.sleep(0.02)


async def test_every_method_answers_in_deribits_documented_shape(deribit_sim, client):
    """One call of each method (after some trading) checked against Deribit's OpenAPI."""
    method, params = otoco(100, 24000, 26000)
    primary = (await client.result(method, params))["order"]
    resting = (
        await client.result(
            "private/sell",
            {"instrument_name": BTC, "amount": 10, "type": "limit", "price": 27000, "label": "r"},
        )
    )["order"]
    calls = [
        (
            "public/auth",
            {"grant_type": "client_credentials", "client_id": "paper", "client_secret": "paper"},
        ),
        ("public/test", {}),
        ("public/get_time", {}),
        ("public/status", {}),
        ("public/hello", {"client_name": "t", "client_version": "1"}),
        ("public/get_instruments", {"currency": "BTC"}),  # 2.1.1 predates linear perps
        ("public/get_currencies", {}),
        ("public/get_instrument", {"instrument_name": BTC}),
        ("public/get_contract_size", {"instrument_name": BTC}),
        ("public/ticker", {"instrument_name": BTC}),
        ("public/get_order_book", {"instrument_name": BTC}),
        ("public/get_index_price", {"index_name": "btc_usd"}),
        (
            "public/get_tradingview_chart_data",
            {
                "instrument_name": BTC,
                "start_timestamp": 0,
                "end_timestamp": 2**50,
                "resolution": "60",
            },
        ),
        ("private/get_account_summary", {"currency": "BTC"}),
        ("private/get_account_summaries", {}),
        ("private/get_positions", {"currency": "any"}),
        ("private/get_position", {"instrument_name": BTC}),
        ("private/get_open_orders", {"type": "all"}),
        ("private/get_open_orders_by_instrument", {"instrument_name": BTC, "type": "trigger_all"}),
        ("private/get_open_orders_by_currency", {"currency": "BTC"}),
        ("private/get_open_orders_by_label", {"currency": "BTC", "label": "r"}),
        ("private/get_order_state", {"order_id": primary["oto_order_ids"][0]}),
        ("private/get_order_state_by_label", {"currency": "BTC", "label": "tb-7-entry"}),
        ("private/get_order_history_by_instrument", {"instrument_name": BTC}),
        ("private/get_user_trades_by_instrument", {"instrument_name": BTC}),
        ("private/get_user_trades_by_currency", {"currency": "BTC"}),
        ("private/get_user_trades_by_order", {"order_id": primary["order_id"]}),
        ("private/get_cancel_on_disconnect", {}),
        ("private/enable_cancel_on_disconnect", {}),
        ("private/disable_cancel_on_disconnect", {}),
        ("private/subscribe", {"channels": ["user.portfolio.btc"]}),
        ("private/unsubscribe", {"channels": ["user.portfolio.btc"]}),
        ("public/subscribe", {"channels": ["ticker.BTC-PERPETUAL.100ms"]}),
        ("public/unsubscribe", {"channels": ["ticker.BTC-PERPETUAL.100ms"]}),
        ("private/edit", {"order_id": resting["order_id"], "amount": 20}),
        (
            "private/edit_by_label",
            {"label": "r", "instrument_name": BTC, "amount": 20, "price": 27500},
        ),
        ("private/cancel", {"order_id": resting["order_id"]}),
        ("private/close_position", {"instrument_name": BTC, "type": "market"}),
        ("private/cancel_by_label", {"label": "nothing"}),
        ("private/cancel_all_by_instrument", {"instrument_name": BTC, "type": "stop"}),
        ("private/cancel_all_by_currency", {"currency": "BTC", "type": "take"}),
        ("private/cancel_all_by_kind_or_type", {"currency": ["BTC"], "kind": "future"}),
        ("private/cancel_all", {}),
        ("public/set_heartbeat", {"interval": 10}),
        ("public/disable_heartbeat", {}),
        ("private/buy", {"instrument_name": BTC, "amount": 10, "type": "market"}),
        ("private/sell", {"instrument_name": BTC, "amount": 10, "type": "market"}),
    ]
    from apps.brokers.simulator.wire.registry import METHODS

    untested = (
        set(METHODS)
        - {name for name, _ in calls}
        - {"private/logout", "public/unsubscribe_all", "private/unsubscribe_all"}
    )
    assert untested == set(), f"add these methods to the table: {sorted(untested)}"
    for name, call_params in calls:
        answer = await client.request(name, call_params)
        assert "result" in answer, (name, answer)
        if name in ("public/status", "public/get_contract_size", "private/get_account_summaries"):
            continue  # not described (status, contract size) or described loosely
        assert_deribit_shape(name, answer["result"])


async def test_cancel_on_disconnect_names_its_reason(deribit_sim):
    client = await RawClient.connect(deribit_sim.ws_url)
    await client.auth()
    await client.result("private/enable_cancel_on_disconnect")
    placed = await client.result(
        "private/buy", {"instrument_name": BTC, "amount": 10, "type": "limit", "price": 20000}
    )
    await client.close()
    order_id = placed["order"]["order_id"]
    async with asyncio.timeout(2):
        while deribit_sim.engine.get_order(order_id).order_state != "cancelled":
            await asyncio.sleep(0.02)
    assert deribit_sim.engine.get_order(order_id).cancel_reason == "cancel_on_disconnect"
