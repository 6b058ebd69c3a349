"""CcxtBroker end to end: ccxt's own ``deribit`` class pointed at the simulator's HTTP endpoint."""

from __future__ import annotations

import json
from decimal import Decimal

import aiohttp
import pytest

from apps.brokers.base import (
    AuthenticationFailed,
    BracketRequest,
    BrokerError,
    ConnectionLost,
    ConnectionState,
    OrderRequest,
    OrderState,
    Side,
)
from apps.brokers.ccxt_broker import CcxtBroker
from apps.brokers.simulator.testing import running_deribit_sim
from tradebaas.testing import free_port

CLIENT_ID = "ccxt-client-id-5150"
CLIENT_SECRET = "ccxt-secret-never-shown-aa11"


async def _missing_methods(sim) -> list[str]:
    """What ccxt's deribit calls to load markets that the simulator does not answer."""
    missing = []
    async with aiohttp.ClientSession() as session:
        for path in ("public/get_currencies", "public/get_instruments"):
            async with session.get(f"{sim.api_url}/{path}") as response:
                body = json.loads(await response.text())
            if "error" in body:
                missing.append(f"{path} -> {body['error'].get('message')}")
    return missing


def _broker(sim, secret: str = CLIENT_SECRET) -> CcxtBroker:
    return CcxtBroker(CLIENT_ID, secret, broker_id="deribit", api_url=sim.http_url)


async def test_ccxt_deribit_loads_markets_from_the_simulator_unpatched():
    async with running_deribit_sim(client_id=CLIENT_ID, client_secret=CLIENT_SECRET) as sim:
        assert await _missing_methods(sim) == []
        broker = _broker(sim)
        await broker.connect()
        try:
            names = {spec.name for spec in await broker.instruments()}
            assert {"BTC-PERPETUAL", "BTC_USDC-PERPETUAL"} <= names
        finally:
            await broker.disconnect()


async def test_ccxt_order_lifecycle_against_the_simulator():
    async with running_deribit_sim(client_id=CLIENT_ID, client_secret=CLIENT_SECRET) as sim:
        broker = _broker(sim)
        await broker.connect()
        assert broker.state is ConnectionState.CONNECTED
        try:
            before = await broker.account_summary("BTC")
            assert before.currency == "BTC" and before.balance == Decimal("1")

            specs = {spec.name: spec for spec in await broker.instruments()}
            assert specs["BTC-PERPETUAL"].tick_size == Decimal("0.5")
            assert specs["BTC-PERPETUAL"].min_amount == Decimal("10")
            assert specs["BTC-PERPETUAL"].is_inverse

            # a resting limit order: placed, read back, listed by label prefix, cancelled
            limit = await broker.place_order(
                OrderRequest(
                    "BTC-PERPETUAL",
                    Side.BUY,
                    Decimal("100"),
                    "limit",
                    label="tb-b1-entry",
                    price=Decimal("1000"),
                )
            )
            assert limit.state is OrderState.OPEN and limit.label == "tb-b1-entry"
            on_exchange = {o["order_id"]: o for o in sim.state()["open_orders"]}
            assert on_exchange[limit.order_id]["label"] == "tb-b1-entry"
            assert (await broker.order_state(limit.order_id)).price == Decimal("1000")
            listed = await broker.open_orders(label_prefix="tb-b1-")
            assert [o.order_id for o in listed] == [limit.order_id]
            cancelled = await broker.cancel(limit.order_id)
            assert cancelled.state is OrderState.CANCELLED
            assert sim.state()["open_orders"] == []

            # a market entry fills; its position, fill and label are visible
            entry = await broker.place_order(
                OrderRequest("BTC-PERPETUAL", Side.BUY, Decimal("100"), label="tb-b2-entry")
            )
            assert entry.state is OrderState.FILLED and entry.filled_amount == Decimal("100")
            positions = await broker.positions("BTC")
            assert [(p.instrument, p.size) for p in positions] == [
                ("BTC-PERPETUAL", Decimal("100"))
            ]
            fills = await broker.fills("BTC-PERPETUAL")
            assert [f.order_id for f in fills] == [entry.order_id] and fills[0].fee > 0
            by_label = await broker.orders_by_label("tb-b2-entry", "BTC")
            assert [o.order_id for o in by_label] == [entry.order_id]

            # the emulated bracket's protective leg: a reduce-only stop, untriggered
            stop = await broker.place_order(
                OrderRequest(
                    "BTC-PERPETUAL",
                    Side.SELL,
                    Decimal("100"),
                    "stop_market",
                    label="tb-b2-sl",
                    trigger_price=Decimal("20000"),
                    trigger="mark_price",
                    reduce_only=True,
                )
            )
            assert stop.state is OrderState.UNTRIGGERED and stop.reduce_only
            assert stop.trigger_price == Decimal("20000")
            await broker.cancel(stop.order_id)

            closing = await broker.close_position("BTC-PERPETUAL")
            assert closing is not None and closing.reduce_only
            assert await broker.positions("BTC") == []
            after = await broker.account_summary("BTC")
            assert after.balance < before.balance  # two taker fees paid
        finally:
            await broker.disconnect()
        assert broker.state is ConnectionState.DISCONNECTED


async def test_wrong_secret_is_authentication_failed_without_the_secret():
    async with running_deribit_sim(client_id=CLIENT_ID, client_secret=CLIENT_SECRET) as sim:
        wrong = "wrong-ccxt-secret-9090"
        broker = _broker(sim, secret=wrong)
        with pytest.raises(AuthenticationFailed) as excinfo:
            await broker.connect()
        assert wrong not in str(excinfo.value) and CLIENT_ID not in str(excinfo.value)
        assert broker.state is ConnectionState.ERROR


async def test_unreachable_exchange_is_connection_lost():
    broker = CcxtBroker("k", "s", broker_id="deribit", api_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ConnectionLost):
        await broker.connect()
    assert broker.state is ConnectionState.ERROR


async def test_place_bracket_is_left_to_the_bracket_service():
    from apps.brokers.base import Broker

    broker = CcxtBroker("k", "s", broker_id="binance")
    assert isinstance(broker, Broker)
    assert broker.supports_linked_orders is False
    request = BracketRequest("b1", "BTC/USDT:USDT", Side.BUY, Decimal(1), Decimal(1), Decimal(2))
    with pytest.raises(BrokerError) as excinfo:
        await broker.place_bracket(request)
    assert excinfo.value.code == "linked_orders_unsupported"
    await broker.disconnect()


def test_sandbox_mode_where_ccxt_has_one_refused_where_not():
    binance = CcxtBroker("k", "s", broker_id="binance", testnet=True)
    assert "testnet" in json.dumps(binance.exchange.urls["api"])
    with pytest.raises(ValueError, match="no sandbox"):
        CcxtBroker("k", "s", broker_id="bitget", testnet=True)


def test_an_exchange_missing_from_ccxt_is_a_clear_error():
    with pytest.raises(ValueError, match="has no exchange 'bitmex'"):
        CcxtBroker("k", "s", broker_id="bitmex")


def test_services_build_ccxt_brokers_and_report_unavailable_ones():
    from apps.brokers import registry, services

    broker = services._instantiate(
        registry.get_broker_info("okx"), api_key="k", api_secret="s", testnet=True
    )
    assert isinstance(broker, CcxtBroker) and broker.ccxt_id == "okx" and broker.testnet
    with pytest.raises(services.BrokerUnavailable):
        services._instantiate(
            registry.get_broker_info("bitmex"), api_key="k", api_secret="s", testnet=False
        )


async def test_events_are_polled_order_changes_and_end_on_disconnect():
    import asyncio

    from apps.brokers.base import EventKind

    async with running_deribit_sim(client_id=CLIENT_ID, client_secret=CLIENT_SECRET) as sim:
        broker = CcxtBroker(
            CLIENT_ID, CLIENT_SECRET, broker_id="deribit", api_url=sim.http_url, poll_interval=0.1
        )
        await broker.connect()
        stream = broker.events()
        first = asyncio.ensure_future(stream.__anext__())
        await asyncio.sleep(0.3)  # the first poll sees no orders
        order = await broker.place_order(
            OrderRequest(
                "BTC-PERPETUAL",
                Side.SELL,
                Decimal("10"),
                "limit",
                label="tb-e-tp",
                price=Decimal("99000"),
            )
        )
        event = await asyncio.wait_for(first, timeout=5)
        assert event.kind is EventKind.ORDER and event.payload.order_id == order.order_id
        await broker.cancel(order.order_id)
        event = await asyncio.wait_for(stream.__anext__(), timeout=5)
        assert event.payload.state is OrderState.CANCELLED
        await broker.disconnect()
        event = await asyncio.wait_for(stream.__anext__(), timeout=5)
        assert event.kind is EventKind.DISCONNECTED
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(stream.__anext__(), timeout=5)
