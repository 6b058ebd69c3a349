"""The simulator's Deribit wire protocol: envelopes, errors, auth, heartbeats, HTTP, bad input."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import random

import aiohttp
import pytest
import websockets

from apps.brokers.simulator.testing import running_deribit_sim
from apps.brokers.tests.deribit_raw import RawClient


@pytest.fixture
async def client(deribit_sim):
    raw = await RawClient.connect(deribit_sim.ws_url)
    yield raw
    await raw.close()


async def test_answer_carries_deribit_envelope_and_echoes_the_id(client):
    await client.send({"jsonrpc": "2.0", "id": "abc-1", "method": "public/test"})
    answer = await client.answer_to("abc-1")
    assert answer["jsonrpc"] == "2.0"
    assert answer["result"] == {"version": "1.2.26"}
    assert answer["testnet"] is True
    assert answer["usIn"] <= answer["usOut"]
    assert answer["usDiff"] == answer["usOut"] - answer["usIn"]
    assert answer["usIn"] > 1_600_000_000_000_000  # microseconds, not milliseconds


async def test_auth_with_wrong_secret_is_invalid_credentials(client):
    answer = await client.request(
        "public/auth",
        {"grant_type": "client_credentials", "client_id": "paper", "client_secret": "nope"},
    )
    assert answer["error"] == {"code": 13004, "message": "invalid_credentials"}


async def test_auth_returns_token_pair_and_refresh_rotates_it(client):
    first = await client.auth()
    assert set(first) >= {"access_token", "refresh_token", "expires_in", "scope", "token_type"}
    assert first["token_type"] == "bearer"
    assert first["expires_in"] == 900
    assert "trade:read_write" in first["scope"]
    second = await client.result(
        "public/auth", {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    )
    assert second["access_token"] != first["access_token"]
    reused = await client.request(
        "public/auth", {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    )
    assert reused["error"]["code"] == 13004


async def test_private_method_without_auth_is_unauthorized_invalid_token(client):
    answer = await client.request("private/get_cancel_on_disconnect")
    assert answer["error"] == {
        "code": 13009,
        "message": "unauthorized",
        "data": {"reason": "invalid_token"},
    }


async def test_access_token_param_authorises_a_fresh_socket(deribit_sim, client):
    token = (await client.auth())["access_token"]
    other = await RawClient.connect(deribit_sim.ws_url)
    try:
        answer = await other.request("private/get_cancel_on_disconnect", {"access_token": token})
        assert answer["result"] == {"scope": "connection", "enabled": False}
        bad = await other.request("private/get_cancel_on_disconnect", {"access_token": "x.y"})
        assert bad["error"]["code"] == 13009
    finally:
        await other.close()


async def test_expired_access_token_is_refused_until_refreshed():
    async with running_deribit_sim(token_ttl=0.2) as sim:
        client = await RawClient.connect(sim.ws_url)
        try:
            grant = await client.auth()
            assert "result" in await client.request("private/get_cancel_on_disconnect")
            await asyncio.sleep(0.3)
            expired = await client.request("private/get_cancel_on_disconnect")
            assert expired["error"]["code"] == 13009
            await client.result(
                "public/auth",
                {"grant_type": "refresh_token", "refresh_token": grant["refresh_token"]},
            )
            assert "result" in await client.request("private/get_cancel_on_disconnect")
        finally:
            await client.close()


async def test_custom_credentials_replace_the_defaults():
    async with running_deribit_sim(client_id="key", client_secret="s3cret") as sim:
        client = await RawClient.connect(sim.ws_url)
        try:
            refused = await client.request(
                "public/auth",
                {
                    "grant_type": "client_credentials",
                    "client_id": "paper",
                    "client_secret": "paper",
                },
            )
            assert refused["error"]["code"] == 13004
            assert (await client.auth("key", "s3cret"))["access_token"]
        finally:
            await client.close()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", -32700),
        ("[1, 2]", -32600),
        ('[{"jsonrpc": "2.0", "id": 1, "method": "public/test"}]', -32600),
        ('"just a string"', -32600),
        ('{"jsonrpc": "2.0", "id": 1}', -32600),
        ('{"jsonrpc": "2.0", "id": 1, "method": 5}', -32600),
        ('{"jsonrpc": "2.0", "id": 1, "method": "public/test", "params": [1]}', -32600),
        ('{"jsonrpc": "2.0", "id": 1, "method": "public/test", "params": "x"}', -32600),
        ('{"jsonrpc": "2.0", "id": 1, "method": "public/nothing_here"}', -32601),
        ('{"jsonrpc": "2.0", "id": 1, "method": "private/nothing_here"}', -32601),
        ('{"jsonrpc": "2.0", "id": {"a": 1}, "method": "public/test"}', -32600),
        ('{"jsonrpc": "2.0", "id": 1, "method": "public/test", "params": {"x": NaN}}', -32700),
    ],
)
async def test_malformed_requests_get_deribit_error_codes(client, frame, code):
    await client.send(frame)
    answer = await client.next_message()
    assert answer["error"]["code"] == code
    assert isinstance(answer["error"]["message"], str)
    assert "usIn" in answer
    assert (await client.result("public/test"))["version"]  # the socket is still served


async def test_missing_param_is_invalid_params_with_reason_and_param(client):
    answer = await client.request("public/auth", {"grant_type": "client_credentials"})
    assert answer["error"] == {
        "code": -32602,
        "message": "Invalid params",
        "data": {"reason": "value is required", "param": "client_id"},
    }
    answer = await client.request("public/auth", {"grant_type": "password"})
    assert answer["error"]["code"] == -32602
    assert answer["error"]["data"]["param"] == "grant_type"


async def test_oversized_frame_is_request_entity_too_large(client):
    await client.send(json.dumps({"id": 1, "method": "public/test", "params": {"x": "y" * 40000}}))
    answer = await client.next_message()
    assert answer["error"] == {"code": -32600, "message": "request entity too large"}


async def test_hello_get_time_and_test_exception(client):
    assert (await client.result("public/hello", {"client_name": "t", "client_version": "1"}))[
        "version"
    ]
    now = await client.result("public/get_time")
    assert isinstance(now, int) and now > 1_600_000_000_000
    forced = await client.request("public/test", {"expected_result": "exception"})
    assert forced["error"]["code"] == 11050


async def test_heartbeat_interval_below_minimum_is_invalid_params():
    async with running_deribit_sim(min_heartbeat_interval=10) as sim:
        client = await RawClient.connect(sim.ws_url)
        try:
            answer = await client.request("public/set_heartbeat", {"interval": 5})
            assert answer["error"]["code"] == -32602
            assert answer["error"]["data"]["param"] == "interval"
            assert await client.result("public/set_heartbeat", {"interval": 10}) == "ok"
        finally:
            await client.close()


async def test_answered_test_requests_keep_the_socket_open(client):
    assert await client.result("public/set_heartbeat", {"interval": 0.1}) == "ok"
    for _ in range(3):
        beat = await client.notification(method="heartbeat", timeout=2)
        assert beat == {"jsonrpc": "2.0", "method": "heartbeat", "params": {"type": "test_request"}}
        await client.result("public/test")
    assert (await client.result("public/test"))["version"]


async def test_unanswered_test_request_closes_the_socket(client):
    await client.result("public/set_heartbeat", {"interval": 0.1})
    await client.notification(method="heartbeat", timeout=2)
    with pytest.raises(websockets.ConnectionClosed):
        async with asyncio.timeout(2):
            while True:
                await client.ws.recv()


async def test_disable_heartbeat_stops_test_requests(client):
    await client.result("public/set_heartbeat", {"interval": 0.05})
    await client.notification(method="heartbeat", timeout=2)
    await client.result("public/test")
    assert await client.result("public/disable_heartbeat") == "ok"
    client.notifications.clear()
    await asyncio.sleep(0.3)
    assert (await client.result("public/test"))["version"]
    assert not [n for n in client.notifications if n["method"] == "heartbeat"]


async def test_logout_closes_the_socket_without_an_answer(client):
    await client.auth()
    await client.send({"jsonrpc": "2.0", "id": 99, "method": "private/logout"})
    with pytest.raises(websockets.ConnectionClosed):
        async with asyncio.timeout(2):
            while True:
                message = json.loads(await client.ws.recv())
                assert message.get("id") != 99


async def test_fuzzed_frames_never_kill_the_server(deribit_sim):
    rng = random.Random(1234)
    methods = ["public/test", "public/auth", "private/buy", "public/subscribe", "x", "", None, 7]
    values = [None, True, -1, 0, 1.5, 10**30, "", "x" * 300, [], {}, [{}], {"a": [1]}, "NaN"]
    client = await RawClient.connect(deribit_sim.ws_url)
    try:
        for index in range(300):
            kind = rng.random()
            if kind < 0.2:
                frame = "".join(chr(rng.randrange(1, 0x2FF)) for _ in range(rng.randrange(0, 60)))
            else:
                params = {
                    rng.choice(["grant_type", "instrument_name", "amount", "channels", "id"]): (
                        rng.choice(values)
                    )
                    for _ in range(rng.randrange(0, 4))
                }
                message = {"jsonrpc": "2.0", "id": index, "method": rng.choice(methods)}
                if rng.random() < 0.8:
                    message["params"] = params if rng.random() < 0.8 else rng.choice(values)
                frame = json.dumps(message)
            await client.send(frame)
            answer = await client.next_message()
            assert "result" in answer or "error" in answer
        assert (await client.result("public/test"))["version"]
    finally:
        await client.close()


# -- HTTP ------------------------------------------------------------------------------------


async def test_http_get_answers_with_envelope_and_status(deribit_sim):
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{deribit_sim.api_url}/public/test") as response:
            assert response.status == 200
            body = await response.json()
            assert body["result"] == {"version": "1.2.26"}
            assert {"usIn", "usOut", "usDiff", "testnet"} <= set(body)
        async with http.get(f"{deribit_sim.api_url}/public/nope") as response:
            assert response.status == 400
            assert (await response.json())["error"]["code"] == -32601
        async with http.get(
            f"{deribit_sim.api_url}/public/set_heartbeat", params={"interval": "10"}
        ) as response:
            assert response.status == 400
            assert (await response.json())["error"] == {
                "code": 10030,
                "message": "must_be_websocket_request",
            }


async def test_http_auth_by_query_bearer_and_basic(deribit_sim):
    url = f"{deribit_sim.api_url}/private/get_cancel_on_disconnect"
    async with aiohttp.ClientSession() as http:
        async with http.get(url, params={"scope": "account"}) as response:
            assert response.status == 400
            assert (await response.json())["error"]["code"] == 13009
        async with http.get(
            f"{deribit_sim.api_url}/public/auth",
            params={
                "grant_type": "client_credentials",
                "client_id": "paper",
                "client_secret": "paper",
            },
        ) as response:
            token = (await response.json())["result"]["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        async with http.get(url, params={"scope": "account"}, headers=headers) as response:
            assert response.status == 200
            assert (await response.json())["result"] == {"scope": "account", "enabled": False}
        basic = base64.b64encode(b"paper:paper").decode()
        async with http.get(
            url, params={"scope": "account"}, headers={"Authorization": f"Basic {basic}"}
        ) as response:
            assert response.status == 200
        wrong = base64.b64encode(b"paper:wrong").decode()
        async with http.get(
            url, params={"scope": "account"}, headers={"Authorization": f"Basic {wrong}"}
        ) as response:
            assert response.status == 400
        async with http.get(url, params={"scope": "account", "access_token": token}) as response:
            assert response.status == 200


async def test_http_get_carries_an_otoco_bracket_as_json_text(deribit_sim):
    config = [
        {
            "direction": "sell",
            "type": "stop_market",
            "trigger_price": 24000,
            "trigger": "mark_price",
        },
        {
            "direction": "sell",
            "type": "take_limit",
            "price": 26000,
            "trigger_price": 26000,
            "trigger": "mark_price",
        },
    ]
    params = {
        "instrument_name": "BTC-PERPETUAL",
        "amount": "10",
        "type": "market",
        "reduce_only": "false",
        "linked_order_type": "one_triggers_one_cancels_other",
        "otoco_config": json.dumps(config),
    }
    basic = {"Authorization": "Basic " + base64.b64encode(b"paper:paper").decode()}
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{deribit_sim.api_url}/private/buy", params=params, headers=basic) as response,
    ):
        body = await response.json()
    assert response.status == 200, body
    assert len(body["result"]["order"]["oto_order_ids"]) == 2
    assert body["result"]["order"]["reduce_only"] is False


async def test_http_signature_header(deribit_sim):
    path = "/api/v2/private/get_cancel_on_disconnect?scope=account"

    def header(secret: str) -> str:
        stamp, nonce = "1700000000000", "abc"
        payload = f"{stamp}\n{nonce}\nGET\n{path}\n\n"
        sig = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        return f"deri-hmac-sha256 id=paper,ts={stamp},sig={sig},nonce={nonce}"

    async with aiohttp.ClientSession() as http:
        url = f"{deribit_sim.http_url}{path}"
        async with http.get(url, headers={"Authorization": header("paper")}) as response:
            assert response.status == 200
        async with http.get(url, headers={"Authorization": header("wrong")}) as response:
            assert response.status == 400
            assert (await response.json())["error"]["code"] == 13009


async def test_http_post_json_rpc_body(deribit_sim):
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{deribit_sim.api_url}/public/auth",
            json={
                "jsonrpc": "2.0",
                "id": 5,
                "method": "public/auth",
                "params": {
                    "grant_type": "client_credentials",
                    "client_id": "paper",
                    "client_secret": "paper",
                },
            },
        ) as response:
            body = await response.json()
            assert response.status == 200
            assert body["id"] == 5
            assert body["result"]["token_type"] == "bearer"
        async with http.post(f"{deribit_sim.api_url}/public/test", data=b"{oops") as response:
            assert response.status == 400
            assert (await response.json())["error"]["code"] == -32700
        async with http.post(f"{deribit_sim.api_url}/public/test", data=b"[]") as response:
            assert response.status == 400
            assert (await response.json())["error"]["code"] == -32600


async def test_fuzzed_method_params_get_deribit_errors_never_internal_ones(deribit_sim):
    """Random parameters for every method: each answer is a result or a Deribit error; none is
    10001 (an exception inside the simulator), and the server still trades afterwards."""
    from apps.brokers.simulator.wire.registry import METHODS

    rng = random.Random(99)
    values = [None, True, False, -1, 0, 1, 10, 100, 0.5, 1e30, -1e-9, "", "x", "BTC", "ETH"]
    values += ["any", "BTC-PERPETUAL", "ETH_USDC-PERPETUAL", "market", "limit", "stop_market"]
    values += ["take_limit", "mark_price", "buy", "sell", "all", "1", "1D", [], {}, [{}]]
    values += [[{"direction": "sell"}], "one_triggers_one_cancels_other", "incremental", 25000]
    values += [[{"direction": "sell", "type": "stop_market", "trigger_price": 1, "trigger": "x"}]]
    names = ["instrument_name", "amount", "contracts", "type", "price", "trigger_price"]
    names += ["trigger", "label", "reduce_only", "post_only", "time_in_force", "otoco_config"]
    names += ["linked_order_type", "trigger_fill_condition", "order_id", "currency", "kind"]
    names += ["channels", "count", "start_timestamp", "end_timestamp", "resolution", "sorting"]
    names += ["index_name", "grant_type", "scope", "start_seq", "valid_until", "depth"]
    methods = sorted(set(METHODS) - {"private/logout", "public/set_heartbeat"})
    client = await RawClient.connect(deribit_sim.ws_url)
    try:
        await client.auth()
        internal = []
        for _ in range(1500):
            method = rng.choice(methods)
            params = {rng.choice(names): rng.choice(values) for _ in range(rng.randrange(0, 7))}
            if rng.random() < 0.5:
                params["instrument_name"] = "BTC-PERPETUAL"
            if rng.random() < 0.3 and deribit_sim.engine.all_orders():
                params["order_id"] = rng.choice(deribit_sim.engine.all_orders()).order_id
            answer = await client.request(method, params)
            if answer.get("error", {}).get("code") == 10001:
                internal.append((method, params, answer["error"]))
            if rng.random() < 0.05:
                deribit_sim.set_price("BTC-PERPETUAL", rng.choice([23000, 24000, 25000, 26000]))
        assert internal == []
        assert "result" in await client.request(
            "private/buy", {"instrument_name": "BTC-PERPETUAL", "amount": 10, "type": "market"}
        )
    finally:
        await client.close()
