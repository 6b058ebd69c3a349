"""DeribitClient against a tiny local WebSocket server that speaks Deribit's JSON-RPC.

The server here is deliberately small (answers scripted per method); the end-to-end tests
against the exchange simulator are in test_deribit_broker.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from apps.brokers.base import (
    AuthenticationFailed,
    ConnectionLost,
    ConnectionState,
    EventKind,
    NotFound,
    OrderOutcomeUnknown,
    OrderRejected,
    RetryableError,
)
from apps.brokers.deribit import DeribitBroker
from apps.brokers.deribit.client import DeribitClient

SECRET = "top-secret-value-123"
Responder = Callable[[dict[str, Any], ServerConnection], Awaitable[Any] | Any]


class RpcError(Exception):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.error = {"code": code, "message": message}
        if data is not None:
            self.error["data"] = data


class FakeDeribit:
    """Answers public/auth (client_credentials, refresh_token) and whatever a test scripts."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.connections: list[ServerConnection] = []
        self.responders: dict[str, Responder] = {}
        self.expires_in = 900
        self.url = ""
        self._server: Any = None

    def methods(self) -> list[str]:
        return [m for m, _ in self.received]

    async def start(self) -> FakeDeribit:
        self._server = await serve(self._handle, "127.0.0.1", 0, compression=None)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/ws/api/v2"
        return self

    async def stop(self) -> None:
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, ws: ServerConnection) -> None:
        self.connections.append(ws)
        async for raw in ws:
            message = json.loads(raw)
            asyncio.get_running_loop().create_task(self._answer(ws, message))

    async def _answer(self, ws: ServerConnection, message: dict[str, Any]) -> None:
        method, params = message["method"], message.get("params", {})
        self.received.append((method, params))
        reply: dict[str, Any] = {"jsonrpc": "2.0", "id": message["id"]}
        try:
            result = self._default(method, params)
            if method in self.responders:
                result = self.responders[method](params, ws)
                if asyncio.iscoroutine(result):
                    result = await result
            reply["result"] = result
        except RpcError as exc:
            reply["error"] = exc.error
        with contextlib.suppress(Exception):  # the socket was closed on purpose by the test
            await ws.send(json.dumps(reply))

    def _default(self, method: str, params: dict[str, Any]) -> Any:
        if method == "public/auth":
            grant = params["grant_type"]
            if grant == "client_credentials" and params.get("client_secret") != SECRET:
                raise RpcError(13004, "invalid_credentials")
            n = sum(1 for m in self.methods() if m == "public/auth")
            return {
                "access_token": f"access-{n}",
                "refresh_token": f"refresh-{n}",
                "expires_in": self.expires_in,
                "scope": "connection mainaccount trade:read_write",
                "token_type": "bearer",
            }
        if method in ("private/subscribe", "public/subscribe"):
            return params["channels"]
        if method == "private/unsubscribe":
            return params["channels"]
        if method in ("public/set_heartbeat", "public/disable_heartbeat"):
            return "ok"
        if method == "public/test":
            return {"version": "fake"}
        return None


@pytest.fixture
async def server():
    fake = await FakeDeribit().start()
    yield fake
    await fake.stop()


def _client(server: FakeDeribit, **options: Any) -> DeribitClient:
    options.setdefault("request_timeout", 2.0)
    return DeribitClient(server.url, "client-id", SECRET, **options)


async def _wait_for(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_connect_authenticates_and_asks_for_heartbeats(server):
    client = _client(server, heartbeat_interval=15)
    await client.connect()
    try:
        assert client.state is ConnectionState.CONNECTED
        auth = server.received[0]
        assert auth[0] == "public/auth"
        assert auth[1]["grant_type"] == "client_credentials"
        assert auth[1]["client_id"] == "client-id"
        assert ("public/set_heartbeat", {"interval": 15}) in server.received
        assert "trade:read_write" in client.scope
    finally:
        await client.close()
    assert client.state is ConnectionState.DISCONNECTED


async def test_wrong_secret_raises_authentication_failed_and_leaves_nothing_connected(server):
    client = DeribitClient(server.url, "client-id", "wrong-secret", request_timeout=2)
    with pytest.raises(AuthenticationFailed) as caught:
        await client.connect()
    assert caught.value.code == 13004 and caught.value.message == "invalid_credentials"
    assert client.state is ConnectionState.DISCONNECTED
    await _wait_for(lambda: server.connections[0].close_code is not None)
    with pytest.raises(ConnectionLost):
        await client.call("public/test")


async def test_answers_are_matched_to_requests_by_id_even_out_of_order(server):
    async def slow(params, ws):
        await asyncio.sleep(0.2)
        return "slow"

    server.responders["public/slow"] = slow
    server.responders["public/fast"] = lambda params, ws: {"echo": params["x"]}
    client = _client(server)
    await client.connect()
    try:
        results = await asyncio.gather(
            client.call("public/slow"),
            *(client.call("public/fast", {"x": i}) for i in range(20)),
        )
        assert results[0] == "slow"
        assert [r["echo"] for r in results[1:]] == list(range(20))
    finally:
        await client.close()


async def test_error_answers_become_typed_exceptions_with_code_message_data(server):
    def reject(params, ws):
        raise RpcError(10009, "not_enough_funds", {"needed": 1})

    def missing(params, ws):
        raise RpcError(10004, "order_not_found")

    def busy(params, ws):
        raise RpcError(10028, "too_many_requests")

    server.responders.update(
        {"private/buy": reject, "private/get_order_state": missing, "public/ticker": busy}
    )
    client = _client(server)
    await client.connect()
    try:
        with pytest.raises(OrderRejected) as rejected:
            await client.call("private/buy", {"instrument_name": "BTC-PERPETUAL"})
        assert (rejected.value.code, rejected.value.data) == (10009, {"needed": 1})
        with pytest.raises(NotFound):
            await client.call("private/get_order_state", {"order_id": "1"})
        with pytest.raises(RetryableError) as busy_exc:
            await client.call("public/ticker")
        assert busy_exc.value.code == 10028
    finally:
        await client.close()


async def test_timeout_of_an_order_request_is_unknown_outcome_and_of_a_read_is_retryable(server):
    async def never(params, ws):
        await asyncio.sleep(10)

    server.responders["private/buy"] = never
    server.responders["public/ticker"] = never
    client = _client(server)
    await client.connect()
    try:
        with pytest.raises(OrderOutcomeUnknown) as unknown:
            await client.call("private/buy", {"label": "tb-1-entry"}, timeout=0.2)
        assert unknown.value.code == "timeout"
        with pytest.raises(RetryableError) as retry:
            await client.call("public/ticker", timeout=0.2)
        assert retry.value.code == "timeout"
        assert client.state is ConnectionState.CONNECTED  # a timeout does not drop the socket
        assert await client.call("public/test") == {"version": "fake"}
    finally:
        await client.close()


async def test_test_request_heartbeat_is_answered_with_public_test(server):
    client = _client(server)
    await client.connect()
    try:
        await server.connections[0].send(
            json.dumps(
                {"jsonrpc": "2.0", "method": "heartbeat", "params": {"type": "test_request"}}
            )
        )
        await _wait_for(lambda: "public/test" in server.methods())
    finally:
        await client.close()


async def test_token_is_refreshed_before_it_expires(server):
    server.expires_in = 1
    client = _client(server, refresh_fraction=0.5)
    await client.connect()
    try:
        await _wait_for(
            lambda: any(
                m == "public/auth" and p["grant_type"] == "refresh_token"
                for m, p in server.received
            )
        )
        refresh = next(p for m, p in server.received if p.get("grant_type") == "refresh_token")
        assert refresh["refresh_token"] == "refresh-1"
        assert client.state is ConnectionState.CONNECTED
    finally:
        await client.close()


async def test_subscription_notifications_reach_their_handler(server):
    client = _client(server)
    await client.connect()
    got: list[Any] = []
    try:
        await client.subscribe(["chart.trades.BTC-PERPETUAL.1"], got.append)
        assert ("private/subscribe", {"channels": ["chart.trades.BTC-PERPETUAL.1"]}) in (
            server.received
        )
        for channel, value in (("chart.trades.BTC-PERPETUAL.1", 1), ("other", 2)):
            await server.connections[0].send(
                json.dumps(
                    {
                        "jsonrpc": "2.0",
                        "method": "subscription",
                        "params": {"channel": channel, "data": {"v": value}},
                    }
                )
            )
        await _wait_for(lambda: got == [{"v": 1}])
    finally:
        await client.close()


async def test_refused_subscription_raises(server):
    server.responders["private/subscribe"] = lambda params, ws: []
    client = _client(server)
    await client.connect()
    try:
        with pytest.raises(Exception, match="subscription refused"):
            await client.subscribe(["user.changes.nonsense"], print)
    finally:
        await client.close()


async def test_dropped_socket_disconnects_fails_pending_and_stays_down(server):
    async def hang(params, ws):
        await asyncio.sleep(10)

    server.responders["private/buy"] = hang
    server.responders["public/ticker"] = hang
    client = _client(server, request_timeout=5)
    events = []
    client.add_listener(events.append)
    await client.connect()
    buy = asyncio.create_task(client.call("private/buy", {"label": "tb-9-entry"}))
    read = asyncio.create_task(client.call("public/ticker"))
    await _wait_for(
        lambda: "public/ticker" in server.methods() and "private/buy" in server.methods()
    )
    await server.connections[0].close()
    with pytest.raises(OrderOutcomeUnknown):
        await buy
    with pytest.raises(ConnectionLost):
        await read
    assert client.state is ConnectionState.DISCONNECTED
    assert [e.kind for e in events] == [EventKind.DISCONNECTED]
    await asyncio.sleep(1.0)
    assert len(server.connections) == 1  # no reconnect until asked
    with pytest.raises(ConnectionLost):
        await client.call("public/test")
    await client.connect()  # the manual reconnect
    assert client.state is ConnectionState.CONNECTED and len(server.connections) == 2
    await client.close()


async def test_auto_reconnect_backs_off_reauthenticates_resubscribes_and_says_so(server):
    client = _client(server, auto_reconnect=True, reconnect_base_delay=0.05)
    events = []
    client.add_listener(events.append)
    await client.connect()
    got: list[Any] = []
    await client.subscribe(["user.changes.future.BTC.raw"], got.append)
    await server.stop()  # the exchange goes away: the first attempts fail
    await _wait_for(lambda: client.state is not ConnectionState.CONNECTED)
    await asyncio.sleep(0.3)
    assert client.reconnecting
    port = int(server.url.rsplit(":", 1)[1].split("/")[0])
    server._server = await serve(server._handle, "127.0.0.1", port, compression=None)
    try:
        await _wait_for(lambda: client.state is ConnectionState.CONNECTED, timeout=10)
        kinds = [e.kind for e in events]
        assert kinds == [EventKind.DISCONNECTED, EventKind.RECONNECTED]
        assert isinstance(events[1].payload, int) and events[1].payload >= 2
        auths = [p["grant_type"] for m, p in server.received if m == "public/auth"]
        assert auths == ["client_credentials", "client_credentials"]
        subs = [p["channels"] for m, p in server.received if m == "private/subscribe"]
        assert subs[-1] == ["user.changes.future.BTC.raw"]
        await server.connections[-1].send(
            json.dumps(
                {
                    "jsonrpc": "2.0",
                    "method": "subscription",
                    "params": {"channel": "user.changes.future.BTC.raw", "data": 7},
                }
            )
        )
        await _wait_for(lambda: got == [7])
    finally:
        await client.close()
    assert not client.reconnecting


async def test_close_on_purpose_does_not_reconnect_even_with_auto_reconnect(server):
    client = _client(server, auto_reconnect=True, reconnect_base_delay=0.05)
    events = []
    client.add_listener(events.append)
    await client.connect()
    await client.close()
    await asyncio.sleep(0.3)
    assert len(server.connections) == 1 and client.state is ConnectionState.DISCONNECTED
    assert [(e.kind, e.payload) for e in events] == [(EventKind.DISCONNECTED, "closed by client")]


async def test_never_enables_cancel_on_disconnect(server):
    client = _client(server)
    await client.connect()
    await client.subscribe(["user.orders.any.any.raw"], print)
    await client.close()
    assert "private/get_cancel_on_disconnect" in server.methods()  # checked, and it is off
    assert not [m for m in server.methods() if "enable_cancel_on_disconnect" in m]


async def test_cancel_on_disconnect_switched_on_by_the_account_is_switched_off(server):
    server.responders["private/get_cancel_on_disconnect"] = lambda params, ws: {
        "scope": params["scope"],
        "enabled": True,
    }
    server.responders["private/disable_cancel_on_disconnect"] = lambda params, ws: "ok"
    client = _client(server)
    await client.connect()
    await client.close()
    assert ("private/disable_cancel_on_disconnect", {"scope": "connection"}) in server.received
    assert not [m for m in server.methods() if m == "private/enable_cancel_on_disconnect"]


async def test_connect_fails_if_cancel_on_disconnect_cannot_be_switched_off(server):
    server.responders["private/get_cancel_on_disconnect"] = lambda params, ws: {"enabled": True}

    def refuse(params, ws):
        raise RpcError(13021, "forbidden")

    server.responders["private/disable_cancel_on_disconnect"] = refuse
    client = _client(server)
    with pytest.raises(AuthenticationFailed):
        await client.connect()
    assert client.state is ConnectionState.DISCONNECTED


async def test_secret_and_tokens_stay_out_of_repr_errors_and_logs(server, caplog):
    caplog.set_level(logging.DEBUG)
    client = DeribitClient(server.url, "client-id", SECRET, request_timeout=2)
    assert SECRET not in repr(client) and SECRET not in repr(vars(client))
    await client.connect()
    await client.close()
    bad = DeribitClient(server.url, "client-id", SECRET + "x", request_timeout=2)
    with pytest.raises(AuthenticationFailed) as caught:
        await bad.connect()
    text = caplog.text + str(caught.value) + repr(caught.value.data) + repr(vars(client))
    assert SECRET not in text and "access-1" not in text and "refresh-1" not in text
    assert "client-id" not in caplog.text + repr(client)  # the key: last 4 characters only
    assert "…t-id" in repr(client)


async def test_unreachable_endpoint_is_connection_lost():
    client = DeribitClient("ws://127.0.0.1:9/ws/api/v2", "id", SECRET, connect_timeout=1)
    with pytest.raises(ConnectionLost):
        await client.connect()
    assert client.state is ConnectionState.DISCONNECTED


async def test_auto_reconnect_gives_up_after_max_attempts_and_says_so(server):
    client = _client(
        server, auto_reconnect=True, reconnect_base_delay=0.02, max_reconnect_attempts=3
    )
    events = []
    client.add_listener(events.append)
    await client.connect()
    await server.stop()
    await _wait_for(lambda: len(events) == 2)
    assert [e.kind for e in events] == [EventKind.DISCONNECTED, EventKind.DISCONNECTED]
    assert "gave up reconnecting after 3 attempts" in events[1].payload
    assert not client.reconnecting and client.state is ConnectionState.DISCONNECTED
    await server.start()  # the fixture stops it again


async def test_auto_reconnect_stops_when_credentials_are_refused(server):
    client = _client(server, auto_reconnect=True, reconnect_base_delay=0.02)
    events = []
    client.add_listener(events.append)
    await client.connect()

    def refuse(params, ws):
        raise RpcError(13004, "invalid_credentials")

    server.responders["public/auth"] = refuse
    await server.connections[0].close()
    await _wait_for(lambda: len(events) == 2)
    assert events[1].kind is EventKind.DISCONNECTED and "reconnect refused" in events[1].payload
    assert not client.reconnecting and client.state is ConnectionState.DISCONNECTED


# --- DeribitBroker.closed_candles over the same fake server ---------------------------------


def _chart(tick: int, close: float) -> dict[str, Any]:
    return {"tick": tick, "open": 100.0, "high": close + 1, "low": 99.0, "close": close}


async def _push(server: FakeDeribit, channel: str, data: Any) -> None:
    message = {"jsonrpc": "2.0", "method": "subscription", "params": {"channel": channel}}
    message["params"]["data"] = data
    await server.connections[-1].send(json.dumps(message))


def _broker(server: FakeDeribit, **options: Any) -> DeribitBroker:
    return DeribitBroker("client-id", SECRET, url=server.url, request_timeout=2, **options)


async def test_closed_candles_yield_the_previous_candle_when_a_new_tick_starts(server):
    broker = _broker(server)
    await broker.connect()
    channel = "chart.trades.BTC-PERPETUAL.1"
    candles = broker.closed_candles("BTC-PERPETUAL", 1)
    first = asyncio.ensure_future(anext(candles))
    await _wait_for(lambda: channel in str(server.received))
    await _push(server, channel, _chart(60_000, 100.5))
    await _push(server, channel, _chart(60_000, 101.5))  # same candle, updated
    assert not first.done()
    await _push(server, channel, _chart(120_000, 102.0))  # a new tick: 60_000 closed
    closed = await asyncio.wait_for(first, 2)
    assert (closed.open_time_ms, closed.close, closed.high) == (60_000, 101.5, 102.5)
    await _push(server, channel, _chart(60_000, 90.0))  # a late update of a closed candle
    await _push(server, channel, _chart(180_000, 103.0))
    closed = await asyncio.wait_for(anext(candles), 2)
    assert (closed.open_time_ms, closed.close) == (120_000, 102.0)
    await candles.aclose()
    await _wait_for(lambda: "private/unsubscribe" in server.methods())
    await broker.disconnect()


async def test_closed_candles_end_with_connection_lost_when_the_socket_drops(server):
    broker = _broker(server)
    await broker.connect()
    candles = broker.closed_candles("BTC-PERPETUAL", 5)
    waiting = asyncio.ensure_future(anext(candles))
    await _wait_for(lambda: "chart.trades.BTC-PERPETUAL.5" in str(server.received))
    await server.connections[-1].close()
    with pytest.raises(ConnectionLost):
        await asyncio.wait_for(waiting, 2)
    assert broker.state is ConnectionState.DISCONNECTED


async def test_closed_candles_after_auto_reconnect_fill_the_gap_from_history(server):
    server.responders["public/get_tradingview_chart_data"] = lambda params, ws: {
        "status": "ok",
        "ticks": [60_000, 120_000],
        "open": [1, 2],
        "high": [3, 4],
        "low": [0.5, 1.5],
        "close": [2.5, 3.5],
        "volume": [1, 1],
        "cost": [1, 1],
    }
    broker = _broker(server, auto_reconnect=True, reconnect_base_delay=0.02)
    await broker.connect()
    channel = "chart.trades.BTC-PERPETUAL.1"
    candles = broker.closed_candles("BTC-PERPETUAL", 1)
    first = asyncio.ensure_future(anext(candles))
    await _wait_for(lambda: channel in str(server.received))
    await _push(server, channel, _chart(60_000, 1.0))
    await server.connections[-1].close()
    await _wait_for(lambda: len(server.connections) == 2 and broker.state.value == "connected")
    await _wait_for(  # subscribed again on the new socket
        lambda: sum(channel in p.get("channels", ()) for m, p in server.received) == 2
    )
    await _push(server, channel, _chart(180_000, 9.0))  # two candles closed while away
    got = [await asyncio.wait_for(first, 2), await asyncio.wait_for(anext(candles), 2)]
    assert [(c.open_time_ms, c.close) for c in got] == [(60_000, 2.5), (120_000, 3.5)]
    history = next(p for m, p in server.received if m == "public/get_tradingview_chart_data")
    assert history["resolution"] == "1" and history["start_timestamp"] == 60_000
    await candles.aclose()
    await broker.disconnect()
