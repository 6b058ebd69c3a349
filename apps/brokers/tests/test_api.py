"""The /api/v2 broker endpoints, end to end against the Deribit simulator on loopback.

Every test also checks that no response body and no captured log line holds the secret.
"""

from __future__ import annotations

import json
import logging

import pytest

from apps.brokers.models import BrokerAccount
from apps.brokers.simulator.instruments import DEFAULT_BALANCES, DEFAULT_SPECS
from apps.brokers.simulator.testing import deribit_sim_thread
from apps.strategies.models import StrategyRun

pytestmark = pytest.mark.django_db

CLIENT_ID = "api-client-id-4242"
CLIENT_SECRET = "api-secret-never-in-a-response-8d7f"
WRONG_SECRET = "wrong-api-secret-never-echoed-1b2c"
SECRETS = (CLIENT_SECRET, WRONG_SECRET)


@pytest.fixture
def sim(settings):
    with deribit_sim_thread(client_id=CLIENT_ID, client_secret=CLIENT_SECRET) as running:
        settings.TRADEBAAS_DERIBIT_URL = running.ws_url
        yield running


@pytest.fixture
def leaks(caplog):
    """Collects every response body; the test ends by asserting no secret is in any of them."""
    caplog.set_level(logging.DEBUG)
    bodies: list[str] = []
    yield bodies
    everything = "\n".join([*bodies, caplog.text])
    for secret in SECRETS:
        assert secret not in everything, "a secret leaked into a response or a log line"


def _post(client, url, body, bodies):
    response = client.post(url, data=json.dumps(body), content_type="application/json")
    bodies.append(response.content.decode())
    return response


def _get(client, url, bodies):
    response = client.get(url)
    bodies.append(response.content.decode())
    return response


def _body(secret=CLIENT_SECRET, **overrides):
    return {
        "broker": "deribit",
        "api_key": CLIENT_ID,
        "api_secret": secret,
        "testnet": True,
        **overrides,
    }


def test_brokers_lists_the_registry(api_client, leaks):
    response = _get(api_client, "/api/v2/brokers", leaks)
    assert response.status_code == 200
    brokers = response.json()
    assert len(brokers) == 15 and brokers[0]["id"] == "deribit"
    assert brokers[0]["linked_orders"] is True and brokers[0]["adapter"] == "native"
    assert brokers[1]["adapter"] == "ccxt" and brokers[1]["linked_orders"] is False
    assert brokers[0]["logo"].endswith("img/brokers/deribit.svg")


def test_every_endpoint_needs_authentication(anon_api_client, leaks):
    for url in ("/api/v2/brokers", "/api/v2/broker/active", "/api/v2/instruments"):
        response = _get(anon_api_client, url, leaks)
        assert response.status_code == 401, url
        assert response.json()["error"]["code"] == "NOT_AUTHENTICATED"
    for url in ("connect", "test", "reconnect", "disconnect"):
        response = _post(anon_api_client, f"/api/v2/broker/{url}", _body(), leaks)
        assert response.status_code == 401, url
    assert not BrokerAccount.objects.exists()


def test_active_is_paper_when_nothing_is_connected(api_client, leaks):
    body = _get(api_client, "/api/v2/broker/active", leaks).json()
    assert body["paper"] is True and body["broker"] == "paper" and body["id"] is None


def test_connect_then_active_shows_state_and_masked_key(api_client, sim, leaks):
    response = _post(api_client, "/api/v2/broker/connect", _body(label="Main"), leaks)
    assert response.status_code == 200, response.content
    active = _get(api_client, "/api/v2/broker/active", leaks).json()
    assert active["broker"] == "deribit" and active["label"] == "Main"
    assert active["state"] == "connected" and active["testnet"] is True
    assert active["since"] and active["last_error"] == ""
    assert active["masked_key"] == "****4242"
    assert CLIENT_ID not in json.dumps(active)
    assert active["snapshot"]["equity"] == str(DEFAULT_BALANCES["USDC"])
    assert active["auto_reconnect"] is False


def test_connect_with_a_wrong_secret_is_422_and_stores_nothing(api_client, sim, leaks):
    response = _post(api_client, "/api/v2/broker/connect", _body(WRONG_SECRET), leaks)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "BROKER_AUTH_FAILED" and "refused" in error["message"]
    assert not BrokerAccount.objects.exists()
    assert _get(api_client, "/api/v2/broker/active", leaks).json()["paper"] is True


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (_body(broker="ftx"), "broker"),
        (_body(broker="paper"), "broker"),
        ({k: v for k, v in _body().items() if k != "api_secret"}, "api_secret"),
        (_body(api_key=""), "api_key"),
        (_body(testnet="maybe"), "testnet"),
    ],
)
def test_connect_bad_input_is_400_naming_the_field(api_client, leaks, body, field):
    response = _post(api_client, "/api/v2/broker/connect", body, leaks)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "INVALID_INPUT" and field in error["fields"]
    assert not BrokerAccount.objects.exists()


def test_test_endpoint_returns_the_balance_without_activating(api_client, sim, leaks):
    response = _post(api_client, "/api/v2/broker/test", _body(), leaks)
    assert response.status_code == 200
    balance = response.json()["balance"]
    assert balance["currency"] == "USDC" and balance["equity"] == str(DEFAULT_BALANCES["USDC"])
    assert not BrokerAccount.objects.exists()
    bad = _post(api_client, "/api/v2/broker/test", _body(WRONG_SECRET), leaks)
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "BROKER_AUTH_FAILED"
    assert _post(api_client, "/api/v2/broker/test", _body(broker="x"), leaks).status_code == 400


def test_connect_is_409_while_a_run_is_active(api_client, sim, leaks):
    assert _post(api_client, "/api/v2/broker/connect", _body(), leaks).status_code == 200
    StrategyRun.objects.create(strategy="razor", instrument="BTC-PERPETUAL", state="ANALYZING")
    response = _post(api_client, "/api/v2/broker/connect", _body(testnet=False), leaks)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "BROKER_BUSY"
    assert "razor" in response.json()["error"]["message"]
    disconnect = _post(api_client, "/api/v2/broker/disconnect", {}, leaks)
    assert disconnect.status_code == 409
    assert BrokerAccount.objects.get().state == "connected"


def test_disconnect_then_reconnect(api_client, sim, leaks):
    assert _post(api_client, "/api/v2/broker/reconnect", {}, leaks).status_code == 409
    assert _post(api_client, "/api/v2/broker/disconnect", {}, leaks).status_code == 409
    _post(api_client, "/api/v2/broker/connect", _body(), leaks)
    response = _post(api_client, "/api/v2/broker/disconnect", {}, leaks)
    assert response.status_code == 200 and response.json()["state"] == "disconnected"
    assert _get(api_client, "/api/v2/broker/active", leaks).json()["state"] == "disconnected"
    response = _post(api_client, "/api/v2/broker/reconnect", {}, leaks)
    assert response.status_code == 200 and response.json()["state"] == "connected"


def test_reconnect_against_a_dead_exchange_is_502_with_the_error_recorded(
    api_client, sim, settings, leaks
):
    from tradebaas.testing import free_port

    _post(api_client, "/api/v2/broker/connect", _body(), leaks)
    settings.TRADEBAAS_DERIBIT_URL = f"ws://127.0.0.1:{free_port()}/ws/api/v2"
    response = _post(api_client, "/api/v2/broker/reconnect", {}, leaks)
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "BROKER_UNREACHABLE"
    active = _get(api_client, "/api/v2/broker/active", leaks).json()
    assert active["state"] == "error" and "could not be reached" in active["last_error"]


def test_auto_reconnect_toggle(api_client, sim, leaks):
    assert (
        _post(api_client, "/api/v2/broker/auto-reconnect", {"enabled": True}, leaks).status_code
        == 409
    )
    _post(api_client, "/api/v2/broker/connect", _body(), leaks)
    response = _post(api_client, "/api/v2/broker/auto-reconnect", {"enabled": True}, leaks)
    assert response.status_code == 200 and response.json()["auto_reconnect"] is True
    assert BrokerAccount.objects.get().auto_reconnect is True
    bad = _post(api_client, "/api/v2/broker/auto-reconnect", {}, leaks)
    assert bad.status_code == 400 and "enabled" in bad.json()["error"]["fields"]


def test_instruments_simulator_then_the_brokers(api_client, sim, leaks):
    body = _get(api_client, "/api/v2/instruments", leaks).json()
    assert body["source"] == "simulator" and body["broker"] == "paper"
    assert {i["name"] for i in body["instruments"]} == set(DEFAULT_SPECS)
    _post(api_client, "/api/v2/broker/connect", _body(), leaks)
    body = _get(api_client, "/api/v2/instruments", leaks).json()
    assert body["source"] == "broker" and body["broker"] == "deribit"
    btc = next(i for i in body["instruments"] if i["name"] == "BTC-PERPETUAL")
    expected = DEFAULT_SPECS["BTC-PERPETUAL"]
    assert btc["kind"] == "inverse" and btc["settlement_currency"] == "BTC"
    assert btc["contract_size"] == str(expected.contract_size)
    assert btc["min_amount"] == str(expected.min_amount)
    assert btc["amount_step"] == str(expected.amount_step)
    assert btc["tick_size"] == str(expected.tick_size)
    assert btc["max_leverage"] == str(expected.max_leverage)
    assert _get(api_client, "/api/v2/instruments", leaks).json()["source"] == "cache"


def test_the_api_key_is_never_logged_in_full(api_client, sim, caplog):
    caplog.set_level(logging.DEBUG)
    _post(api_client, "/api/v2/broker/connect", _body(), [])
    _post(api_client, "/api/v2/broker/reconnect", {}, [])
    assert CLIENT_ID not in caplog.text


def test_the_browsable_api_never_echoes_a_secret(auth_client, sim, leaks):
    for url in ("/api/v2/broker/connect", "/api/v2/broker/test"):
        for secret in (WRONG_SECRET, CLIENT_SECRET):
            response = auth_client.post(
                url, data=_body(secret, api_key=""), HTTP_ACCEPT="text/html"
            )
            leaks.append(response.content.decode())
            assert response.status_code == 400
            assert response["Content-Type"].startswith("text/html")
        response = auth_client.post(url, data=_body(WRONG_SECRET), HTTP_ACCEPT="text/html")
        leaks.append(response.content.decode())
        assert response.status_code == 422
