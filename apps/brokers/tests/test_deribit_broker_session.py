"""DeribitBroker's connection against the exchange simulator over a real socket:
credentials, heartbeats, token refresh, dropped sockets, manual and automatic reconnects."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from apps.brokers.base import (
    AuthenticationFailed,
    BracketRequest,
    Broker,
    ConnectionLost,
    ConnectionState,
    EventKind,
    RetryableError,
    Side,
)
from apps.brokers.deribit import DeribitBroker
from apps.brokers.simulator.testing import RunningSim, running_deribit_sim


def make_broker(sim: RunningSim, **options: Any) -> DeribitBroker:
    options.setdefault("request_timeout", 3.0)
    return DeribitBroker(sim.client_id, sim.client_secret, url=sim.ws_url, **options)


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def next_event(stream: Any, timeout: float = 5.0) -> Any:
    async with asyncio.timeout(timeout):
        return await anext(stream)


def test_deribit_broker_implements_the_broker_protocol():
    broker = DeribitBroker("id", "secret", testnet=True)
    assert isinstance(broker, Broker)
    assert broker.supports_linked_orders and broker.broker_id == "deribit"
    assert broker.url == "wss://test.deribit.com/ws/api/v2"
    assert DeribitBroker("id", "secret", testnet=False).url == "wss://www.deribit.com/ws/api/v2"
    assert "secret" not in repr(broker) and "secret" not in repr(broker.client)


async def test_wrong_secret_is_refused_and_nothing_stays_connected(deribit_sim):
    broker = DeribitBroker(deribit_sim.client_id, "not-the-secret", url=deribit_sim.ws_url)
    with pytest.raises(AuthenticationFailed) as caught:
        await broker.connect()
    assert caught.value.code == 13004
    assert "not-the-secret" not in str(caught.value)
    assert broker.state is ConnectionState.DISCONNECTED
    await wait_for(lambda: deribit_sim.session_count == 0)
    with pytest.raises(ConnectionLost):
        await broker.account_summary("BTC")


async def test_connect_subscribes_to_user_changes_and_disconnect_closes(deribit_sim):
    broker = make_broker(deribit_sim)
    await broker.connect()
    assert broker.state is ConnectionState.CONNECTED
    assert deribit_sim.session_count == 1
    (session,) = deribit_sim.server.sessions
    assert set(session.subscriptions) >= set(broker.event_channels)
    await broker.disconnect()
    assert broker.state is ConnectionState.DISCONNECTED
    await wait_for(lambda: deribit_sim.session_count == 0)


async def test_heartbeat_test_requests_are_answered_so_the_socket_stays_open(deribit_sim):
    broker = make_broker(deribit_sim, heartbeat_interval=0.1)
    await broker.connect()
    try:
        await asyncio.sleep(1.0)  # ten test_requests; one unanswered would close the socket
        assert broker.state is ConnectionState.CONNECTED and deribit_sim.session_count == 1
    finally:
        await broker.disconnect()


async def test_token_is_refreshed_before_expiry_and_private_calls_keep_working():
    async with running_deribit_sim(token_ttl=0.6) as sim:
        broker = make_broker(sim, refresh_fraction=0.5)
        await broker.connect()
        try:
            await asyncio.sleep(1.5)  # two token lifetimes
            await broker.open_orders()  # a private call: 13009 if the token had lapsed
            assert broker.state is ConnectionState.CONNECTED
        finally:
            await broker.disconnect()


async def test_dropped_socket_leaves_the_broker_disconnected_until_asked(deribit_sim):
    broker = make_broker(deribit_sim)
    await broker.connect()
    events = broker.events()
    deribit_sim.drop_connections()
    event = await next_event(events)
    assert event.kind is EventKind.DISCONNECTED and isinstance(event.payload, str)
    assert broker.state is ConnectionState.DISCONNECTED
    await asyncio.sleep(1.0)
    assert deribit_sim.session_count == 0  # no reconnect by itself
    with pytest.raises(ConnectionLost):
        await broker.open_orders()
    await broker.connect()  # the trader's manual reconnect
    assert broker.state is ConnectionState.CONNECTED and deribit_sim.session_count == 1
    (session,) = deribit_sim.server.sessions
    assert set(session.subscriptions) >= set(broker.event_channels)
    await broker.disconnect()


async def test_auto_reconnect_comes_back_resubscribed_and_says_so(deribit_sim):
    broker = make_broker(deribit_sim, auto_reconnect=True, reconnect_base_delay=0.05)
    await broker.connect()
    events = broker.events()
    deribit_sim.drop_connections()
    lost = await next_event(events)
    back = await next_event(events)
    assert (lost.kind, back.kind) == (EventKind.DISCONNECTED, EventKind.RECONNECTED)
    assert back.payload == 1  # the attempt that worked
    assert broker.state is ConnectionState.CONNECTED
    (session,) = deribit_sim.server.sessions
    assert set(session.subscriptions) >= set(broker.event_channels)
    await broker.open_orders()  # authenticated again
    await broker.disconnect()


async def test_auto_reconnect_can_be_switched_on_after_connecting(deribit_sim):
    broker = make_broker(deribit_sim, reconnect_base_delay=0.05)
    await broker.connect()
    assert broker.auto_reconnect is False
    broker.auto_reconnect = True
    events = broker.events()
    deribit_sim.drop_connections()
    kinds = [(await next_event(events)).kind, (await next_event(events)).kind]
    assert kinds == [EventKind.DISCONNECTED, EventKind.RECONNECTED]
    await broker.disconnect()


async def test_maintenance_answers_are_retryable(deribit_sim):
    broker = make_broker(deribit_sim)
    await broker.connect()
    try:
        deribit_sim.faults.set_maintenance(True)
        with pytest.raises(RetryableError) as caught:
            await broker.open_orders()
        assert caught.value.code == 11051
    finally:
        deribit_sim.faults.set_maintenance(False)
        await broker.disconnect()


async def test_a_half_open_link_is_detected_by_heartbeat_silence(deribit_sim):
    broker = make_broker(deribit_sim, heartbeat_interval=0.2)
    await broker.connect()
    events = broker.events()
    deribit_sim.faults.freeze()  # the socket stays open; nothing is answered or pushed
    event = await next_event(events, timeout=5)
    assert event.kind is EventKind.DISCONNECTED and "heartbeat" in event.payload
    assert broker.state is ConnectionState.DISCONNECTED
    deribit_sim.faults.freeze(False)
    await asyncio.sleep(0.5)
    assert broker.state is ConnectionState.DISCONNECTED  # still no reconnect until asked
    await broker.connect()
    assert broker.state is ConnectionState.CONNECTED
    await broker.disconnect()


async def test_placing_while_disconnected_is_connection_lost_not_unknown(deribit_sim):
    broker = make_broker(deribit_sim)
    request = BracketRequest(
        bracket_id="nc1",
        instrument="BTC-PERPETUAL",
        side=Side.BUY,
        amount=Decimal("10"),
        stop_price=Decimal("40000"),
        take_profit_price=Decimal("60000"),
    )
    with pytest.raises(ConnectionLost) as caught:  # nothing was sent: known not placed
        await broker.place_bracket(request)
    assert caught.value.code == "connection_lost" or "not connected" in str(caught.value)


async def test_cancel_on_disconnect_set_for_the_account_is_off_on_our_connection(deribit_sim):
    other = make_broker(deribit_sim)
    await other.connect()
    await other.client.call("private/enable_cancel_on_disconnect", {"scope": "account"})
    await other.disconnect()
    broker = make_broker(deribit_sim)
    await broker.connect()
    try:
        (session,) = deribit_sim.server.sessions
        assert session.cancel_on_disconnect is False
        got = await broker.client.call("private/get_cancel_on_disconnect", {"scope": "connection"})
        assert got["enabled"] is False
    finally:
        await broker.disconnect()
