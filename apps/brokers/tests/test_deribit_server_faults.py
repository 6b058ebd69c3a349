"""Fault injection: what each fault does on the wire, through the test helpers and ``/_sim/``."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import aiohttp
import pytest
import websockets
from websockets.sync.client import connect as sync_connect

from apps.brokers.simulator.testing import SimControl, deribit_sim_thread, running_deribit_sim
from apps.brokers.tests.deribit_raw import RawClient

pytestmark = pytest.mark.chaos

BTC = "BTC-PERPETUAL"
MARKET_BUY = {"instrument_name": BTC, "amount": 10, "type": "market", "label": "f1"}
BRACKET = {
    "instrument_name": BTC,
    "amount": 100,
    "type": "market",
    "label": "tb-9-entry",
    "linked_order_type": "one_triggers_one_cancels_other",
    "otoco_config": [
        {
            "direction": "sell",
            "type": "stop_market",
            "trigger_price": 24000,
            "trigger": "mark_price",
            "reduce_only": True,
            "label": "tb-9-sl",
        },
        {
            "direction": "sell",
            "type": "take_limit",
            "price": 26000,
            "trigger_price": 26000,
            "trigger": "mark_price",
            "reduce_only": True,
            "label": "tb-9-tp",
        },
    ],
}


@pytest.fixture
async def client(deribit_sim):
    raw = await RawClient.connect(deribit_sim.ws_url)
    await raw.auth()
    yield raw
    await raw.close()


async def closed(client: RawClient, timeout: float = 2.0) -> bool:
    """Whether the server cut the socket within ``timeout`` (reading whatever still arrives)."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                await client.ws.recv()
    except websockets.ConnectionClosed:
        return True
    except TimeoutError:
        return False


async def test_drop_now_cuts_every_socket_and_new_ones_are_served(deribit_sim, client):
    other = await RawClient.connect(deribit_sim.ws_url)
    deribit_sim.faults.drop_now()
    assert await closed(client)
    assert await closed(other)
    fresh = await RawClient.connect(deribit_sim.ws_url)
    try:
        assert (await fresh.result("public/test"))["version"]
    finally:
        await fresh.close()


async def test_drop_after_n_answers(deribit_sim, client):
    deribit_sim.faults.drop_after(2)
    assert "result" in await client.request("public/test")
    assert "result" in await client.request("public/get_time")
    assert await closed(client)
    assert deribit_sim.faults.drop_after_answers is None  # used up


async def test_drop_before_the_order_reaches_the_engine(deribit_sim, client):
    deribit_sim.faults.drop_on_next_order(when="before")
    await client.send({"jsonrpc": "2.0", "id": 1, "method": "private/buy", "params": MARKET_BUY})
    assert await closed(client)
    assert deribit_sim.engine.all_orders() == []


async def test_drop_after_the_order_reached_the_engine(deribit_sim, client):
    deribit_sim.faults.drop_on_next_order(when="after")
    await client.send({"jsonrpc": "2.0", "id": 1, "method": "private/buy", "params": MARKET_BUY})
    assert await closed(client)
    [order] = deribit_sim.engine.all_orders()
    assert (order.label, order.order_state) == ("f1", "filled")
    # the client can find out what happened by label on a new socket
    again = await RawClient.connect(deribit_sim.ws_url)
    try:
        await again.auth()
        found = await again.result(
            "private/get_order_state_by_label", {"currency": "BTC", "label": "f1"}
        )
        assert [o["order_state"] for o in found] == ["filled"]
    finally:
        await again.close()


async def test_drop_on_order_of_a_kind_skips_other_kinds(deribit_sim, client):
    deribit_sim.faults.drop_on_next_order(when="before", kind="stop")
    assert "result" in await client.request("private/buy", MARKET_BUY)
    stop = {
        "instrument_name": BTC,
        "amount": 10,
        "type": "stop_market",
        "trigger_price": 24000,
        "trigger": "last_price",
        "reduce_only": True,
        "label": "f1-sl",
    }
    await client.send({"jsonrpc": "2.0", "id": 9, "method": "private/sell", "params": stop})
    assert await closed(client)
    assert [o.label for o in deribit_sim.engine.all_orders()] == ["f1"]


async def test_drop_on_a_named_request(deribit_sim, client):
    placed = await client.result(
        "private/buy", {"instrument_name": BTC, "amount": 10, "type": "limit", "price": 20000}
    )
    deribit_sim.faults.drop_on_next_request("private/cancel", when="after")
    order_id = placed["order"]["order_id"]
    await client.send(
        {"jsonrpc": "2.0", "id": 3, "method": "private/cancel", "params": {"order_id": order_id}}
    )
    assert await closed(client)
    assert deribit_sim.engine.get_order(order_id).order_state == "cancelled"


async def test_reject_next_primary_order_with_a_deribit_code(deribit_sim, client):
    deribit_sim.faults.reject_next_order(kind="primary", code=10009)
    refused = await client.request("private/buy", MARKET_BUY)
    assert refused["error"]["code"] == 10009
    assert refused["error"]["message"] == "not_enough_funds"
    assert deribit_sim.engine.all_orders() == []
    assert "result" in await client.request("private/buy", MARKET_BUY)


async def test_rejected_stop_leg_leaves_the_filled_entry_unprotected(deribit_sim, client):
    deribit_sim.faults.reject_next_order(kind="stop", code=11035)
    answer = await client.result("private/buy", BRACKET)
    stop_id, take_id = answer["order"]["oto_order_ids"]
    assert answer["order"]["order_state"] == "filled"
    stop = await client.result("private/get_order_state", {"order_id": stop_id})
    take = await client.result("private/get_order_state", {"order_id": take_id})
    assert stop["order_state"] == "rejected"
    assert take["order_state"] == "cancelled"
    position = await client.result("private/get_position", {"instrument_name": BTC})
    assert position["size"] == 100


async def test_fail_next_request_answers_the_error_and_does_nothing(deribit_sim, client):
    placed = await client.result(
        "private/buy", {"instrument_name": BTC, "amount": 10, "type": "limit", "price": 20000}
    )
    order_id = placed["order"]["order_id"]
    deribit_sim.faults.fail_next_request("private/cancel", code=10028, count=2)
    for _ in range(2):
        refused = await client.request("private/cancel", {"order_id": order_id})
        assert refused["error"] == {"code": 10028, "message": "too_many_requests"}
    assert deribit_sim.engine.get_order(order_id).order_state == "open"
    cancelled = await client.result("private/cancel", {"order_id": order_id})
    assert cancelled["order_state"] == "cancelled"


async def test_delay_answers_while_the_engine_acts_at_once(deribit_sim, client):
    deribit_sim.faults.delay(300, methods=["private/buy"])
    started = time.monotonic()
    request = asyncio.ensure_future(client.request("private/buy", MARKET_BUY))
    await asyncio.sleep(0.1)
    assert [o.label for o in deribit_sim.engine.all_orders()] == ["f1"]
    assert not request.done()
    answer = await request
    assert "result" in answer
    assert time.monotonic() - started >= 0.3
    quick = time.monotonic()
    await client.result("public/test")
    assert time.monotonic() - quick < 0.25


async def test_silenced_heartbeats_send_nothing_and_ignore_public_test(deribit_sim, client):
    await client.result("public/set_heartbeat", {"interval": 0.05})
    await client.notification(method="heartbeat", timeout=2)
    await client.result("public/test")
    deribit_sim.faults.silence_heartbeats()
    client.notifications.clear()
    unanswered = await client.request("public/get_time")  # other methods still answer
    assert "result" in unanswered
    with pytest.raises(TimeoutError):
        await client.request("public/test", timeout=0.3)
    assert not [n for n in client.notifications if n.get("method") == "heartbeat"]
    deribit_sim.faults.silence_heartbeats(False)
    await client.notification(method="heartbeat", timeout=2)


async def test_maintenance_refuses_private_methods_only(deribit_sim, client):
    deribit_sim.faults.set_maintenance(True)
    refused = await client.request("private/get_account_summary", {"currency": "BTC"})
    assert refused["error"] == {"code": 11051, "message": "system_maintenance"}
    assert "result" in await client.request("public/ticker", {"instrument_name": BTC})
    deribit_sim.faults.set_maintenance(False)
    assert "result" in await client.request("private/get_account_summary", {"currency": "BTC"})


async def test_freeze_answers_nothing_until_thawed(deribit_sim, client):
    deribit_sim.faults.freeze()
    await client.send({"jsonrpc": "2.0", "id": 77, "method": "public/test"})
    await client.send({"jsonrpc": "2.0", "id": 78, "method": "public/unknown"})
    await client.send("{garbage")
    with pytest.raises(TimeoutError):
        await client.next_message(timeout=0.3)
    deribit_sim.faults.freeze(False)
    assert "result" in await client.request("public/test")


async def test_freeze_holds_http_requests_open(deribit_sim):
    deribit_sim.faults.freeze()
    async with aiohttp.ClientSession() as http:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                async with http.get(f"{deribit_sim.api_url}/public/test") as response:
                    await response.read()
        deribit_sim.faults.freeze(False)
        async with http.get(f"{deribit_sim.api_url}/public/test") as response:
            assert response.status == 200


async def test_moving_the_price_triggers_the_stop(deribit_sim, client):
    answer = await client.result("private/buy", BRACKET)
    stop_id, take_id = answer["order"]["oto_order_ids"]
    deribit_sim.set_price(BTC, 23990)
    stop = await client.result("private/get_order_state", {"order_id": stop_id})
    take = await client.result("private/get_order_state", {"order_id": take_id})
    assert take["cancel_reason"] == "oco_other_closed"
    assert stop["order_state"] == "filled"
    assert stop["average_price"] == 24000  # a continuous move fills the stop at its trigger


async def test_gap_fills_the_stop_at_the_new_price(deribit_sim, client):
    answer = await client.result("private/buy", BRACKET)
    stop_id = answer["order"]["oto_order_ids"][0]
    deribit_sim.set_price(BTC, 23000, gap=True)
    stop = await client.result("private/get_order_state", {"order_id": stop_id})
    assert stop["average_price"] == 23000


async def test_reset_clears_faults_and_optionally_the_account(deribit_sim, client):
    deribit_sim.faults.set_maintenance(True)
    deribit_sim.faults.reject_next_order(kind="any", code=10040)
    deribit_sim.faults.drop_on_next_order()
    deribit_sim.reset()
    assert deribit_sim.faults.snapshot() == {
        "maintenance": False,
        "heartbeats_silent": False,
        "frozen": False,
        "delay_ms": 0.0,
        "delay_methods": None,
        "drop_after_answers": None,
        "drops": [],
        "failures": [],
        "rejects": [],
    }
    assert "result" in await client.request("private/buy", MARKET_BUY)
    deribit_sim.reset(engine=True)
    assert deribit_sim.engine.all_orders() == []
    assert deribit_sim.state()["positions"] == []


# -- the /_sim/ HTTP interface ---------------------------------------------------------------


async def test_http_control_interface(deribit_sim, client):
    base = f"{deribit_sim.http_url}/_sim"
    async with aiohttp.ClientSession() as http:

        async def post(path, body=None):
            async with http.post(f"{base}/{path}", json=body or {}) as response:
                return response.status, await response.json()

        status, table = await post("maintenance", {"on": True})
        assert status == 200 and table["maintenance"] is True
        refused = await client.request("private/get_positions")
        assert refused["error"]["code"] == 11051
        await post("maintenance", {"on": False})

        status, table = await post("reject", {"kind": "take", "code": 10040})
        assert table["rejects"] == [
            {"kind": "take", "code": 10040, "message": "retry", "remaining": 1}
        ]
        status, error = await post("reject", {"kind": "sideways", "code": 1})
        assert status == 400 and "kind" in error["error"]
        status, table = await post("delay", {"ms": 50, "methods": ["public/test"]})
        assert table["delay_ms"] == 50 and table["delay_methods"] == ["public/test"]
        status, table = await post("drop_on_order", {"when": "after", "kind": "primary"})
        assert table["drops"][0]["when"] == "after"
        status, table = await post("fail", {"method": "private/cancel", "code": 10047})
        assert table["failures"][0]["message"] == "matching_engine_queue_full"
        status, table = await post("heartbeats", {"answer": False})
        assert table["heartbeats_silent"] is True
        status, table = await post("reset")
        assert table["drops"] == [] and table["rejects"] == [] and table["failures"] == []
        assert not table["heartbeats_silent"]

        await client.result("private/buy", BRACKET)
        status, state = await post("price", {"instrument": BTC, "price": 23900})
        assert status == 200
        assert state["prices"][BTC] == 23900
        assert state["positions"] == []
        assert {o["label"]: o["order_state"] for o in state["orders"]} == {
            "tb-9-entry": "filled",
            "tb-9-sl": "filled",
            "tb-9-tp": "cancelled",
        }
        status, error = await post("price", {"instrument": "NOPE", "price": 1})
        assert status == 400
        async with http.get(f"{base}/state") as response:
            state = await response.json()
        assert set(state) >= {"orders", "open_orders", "positions", "accounts", "prices", "faults"}
        assert state["accounts"]["BTC"]["balance"] < 1
        assert state["sessions"] == 1

        status, _ = await post("drop")
        assert await closed(client)
        async with http.post(f"{base}/reset", data=b"[1]") as response:
            assert response.status == 400


async def test_http_order_request_dropped_before_answer(deribit_sim):
    # POST: aiohttp's client silently retries a GET on a dropped connection, which would
    # place the order twice (a real hazard for an HTTP client of an exchange)
    deribit_sim.faults.drop_on_next_order(when="after")
    async with aiohttp.ClientSession() as http:
        basic = {"Authorization": "Basic " + base64.b64encode(b"paper:paper").decode()}
        with pytest.raises(aiohttp.ClientError):
            async with http.post(
                f"{deribit_sim.api_url}/private/buy",
                json={"instrument_name": BTC, "amount": 10, "type": "market", "label": "h1"},
                headers=basic,
            ) as response:
                await response.read()
        assert [o.label for o in deribit_sim.engine.all_orders()] == ["h1"]
        async with http.get(f"{deribit_sim.api_url}/public/test") as response:
            assert response.status == 200


# -- the thread helper, for synchronous tests --------------------------------------------------


def test_thread_helper_serves_sync_clients_and_takes_faults_from_this_thread():
    with deribit_sim_thread() as sim:
        with sync_connect(sim.ws_url) as ws:
            ws.send(
                json.dumps(
                    {
                        "jsonrpc": "2.0",
                        "id": 1,
                        "method": "public/auth",
                        "params": {
                            "grant_type": "client_credentials",
                            "client_id": sim.client_id,
                            "client_secret": sim.client_secret,
                        },
                    }
                )
            )
            assert "access_token" in json.loads(ws.recv(timeout=5))["result"]
            ws.send(
                json.dumps({"jsonrpc": "2.0", "id": 2, "method": "private/buy", "params": BRACKET})
            )
            answer = json.loads(ws.recv(timeout=5))
            assert answer["result"]["order"]["order_state"] == "filled"
            sim.set_price(BTC, 26100)
            state = sim.state()
            assert {o["label"]: o["order_state"] for o in state["orders"]}["tb-9-tp"] == "filled"
            sim.drop_connections()
            with pytest.raises(websockets.ConnectionClosed):
                ws.recv(timeout=5)
        assert sim.session_count == 0 or sim.call(lambda: len(sim.server.sessions)) == 0


def test_sim_control_steers_a_simulator_over_http():
    with deribit_sim_thread() as sim:
        control = SimControl(sim.http_url)
        assert control.set_maintenance(True)["maintenance"] is True
        assert sim.faults.maintenance
        table = control.reject_next_order(kind="stop", code=11035)
        assert table["rejects"][0]["kind"] == "stop"
        assert control.fail_next_request("private/cancel", code=10047)["failures"]
        assert control.drop_on_next_order(when="after", kind="primary")["drops"]
        assert control.delay(20)["delay_ms"] == 20
        assert control.silence_heartbeats()["heartbeats_silent"] is True
        assert control.freeze()["frozen"] is True
        table = control.reset()
        assert not table["frozen"] and not table["maintenance"] and table["drops"] == []
        state = control.set_price(BTC, 24321)
        assert state["prices"][BTC] == 24321
        assert control.state()["prices"][BTC] == 24321
        assert control.faults()["delay_ms"] == 0


async def test_rate_limit_answers_too_many_requests_and_ends_the_session():
    async with running_deribit_sim(rate_limits=((1, 3), (1000, 1000))) as sim:
        client = await RawClient.connect(sim.ws_url)
        await client.auth()
        for _ in range(3):
            assert "result" in await client.request(
                "private/cancel_all_by_instrument", {"instrument_name": BTC}
            )
        for _ in range(5):  # other requests have their own bucket
            assert "result" in await client.request("public/test")
        limited = await client.request("private/cancel_all")
        assert limited["error"] == {"code": 10028, "message": "too_many_requests"}
        assert await closed(client)


async def test_helper_options_reach_the_server():
    async with running_deribit_sim(testnet=False, client_id="k", client_secret="s") as sim:
        assert sim.ws_url.startswith("ws://127.0.0.1:") and sim.ws_url.endswith("/ws/api/v2")
        client = await RawClient.connect(sim.ws_url)
        try:
            answer = await client.request("public/test")
            assert answer["testnet"] is False
            await client.auth("k", "s")
        finally:
            await client.close()
