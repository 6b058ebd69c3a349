"""GET/PUT /api/v2/risk-settings and POST /api/v2/risk/preview."""

from __future__ import annotations

from decimal import Decimal

import pytest

from apps.risk.models import RiskSettings

pytestmark = pytest.mark.django_db
SETTINGS_URL = "/api/v2/risk-settings"
PREVIEW_URL = "/api/v2/risk/preview"


def test_anonymous_callers_are_refused(anon_api_client):
    response = anon_api_client.get(SETTINGS_URL)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "NOT_AUTHENTICATED"
    assert anon_api_client.post(PREVIEW_URL, {}, format="json").status_code == 401


def test_get_returns_the_defaults_as_decimal_strings(api_client):
    body = api_client.get(SETTINGS_URL).json()
    assert body["mode"] == "percent" and body["value"] == "1" and body["leverage_cap"] == "10"
    assert body["max_open_trades"] == 1 and body["include_fees"] is False
    assert body["daily_loss_limit_pct"] is None


def test_put_changes_the_fields_sent_and_they_persist(api_client):
    response = api_client.put(
        SETTINGS_URL,
        {"value": "5", "cooldown_minutes": 30, "max_drawdown_pct": "20"},
        format="json",
    )
    assert response.status_code == 200, response.json()
    assert response.json()["value"] == "5"
    stored = RiskSettings.objects.get()
    assert stored.value == Decimal("5") and stored.cooldown_minutes == 30
    assert stored.max_drawdown_pct == Decimal("20") and stored.mode == "percent"
    assert api_client.get(SETTINGS_URL).json()["max_drawdown_pct"] == "20"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"value": "101"}, "value"),
        ({"value": "abc"}, "value"),
        ({"value": "NaN"}, "value"),
        ({"mode": "martingale"}, "mode"),
        ({"leverage_cap": "0"}, "leverage_cap"),
        ({"max_open_trades": 0}, "max_open_trades"),
        ({"daily_loss_limit_pct": "-3"}, "daily_loss_limit_pct"),
        ({"max_drawdown_pct": "100.5"}, "max_drawdown_pct"),
        ({"cooldown_minutes": -5}, "cooldown_minutes"),
    ],
)
def test_put_with_a_bad_value_is_a_400_naming_the_field(api_client, body, field):
    response = api_client.put(SETTINGS_URL, body, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "INVALID_INPUT"
    assert field in error["fields"], error
    assert RiskSettings.objects.get().value == Decimal("1")


def preview(api_client, **body):
    payload = {
        "instrument": "BTC-PERPETUAL",
        "side": "buy",
        "entry": "50000",
        "stop": "49000",
        "mode": "percent",
        "value": "1",
        "equity": "1",
    }
    payload.update(body)
    return api_client.post(
        PREVIEW_URL, {k: v for k, v in payload.items() if v is not None}, format="json"
    )


def test_preview_returns_what_the_sizer_would_do(api_client):
    # 1 % of 1 BTC with a stop 1000 below 50 000: A = 24 500 USD, loss 0.01 BTC = 490 USD.
    response = preview(api_client)
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["amount"] == "24500"
    assert body["risk"] == "0.01" and body["risk_currency"] == "BTC" and body["risk_usd"] == "490"
    assert body["leverage"] == "0.49"
    assert body["warnings"] == []


def test_preview_fixed_usd_on_a_linear_instrument(api_client):
    # $50 on ETH_USDC with a 40 USDC stop distance: q = 1.25 ETH.
    response = preview(
        api_client,
        instrument="ETH_USDC-PERPETUAL",
        side="sell",
        entry="2000",
        stop="2040",
        mode="fixed",
        value="50",
        equity="5000",
    )
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["amount"], body["risk"], body["risk_currency"]) == ("1.25", "50", "USDC")


def test_preview_uses_the_saved_settings_and_the_paper_balance_by_default(api_client):
    RiskSettings.objects.create(mode="percent", value=Decimal("2"), leverage_cap=Decimal("50"))
    # No broker connected: the paper simulator's starting balance, 1 BTC. 2 % → A = 49 000.
    response = preview(api_client, mode=None, value=None, equity=None)
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["equity"] == "1" and body["equity_source"] == "broker"
    assert body["amount"] == "49000" and body["value"] == "2"


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"stop": "51000"}, "STOP_WRONG_SIDE", "stop"),
        ({"stop": "50000"}, "STOP_WRONG_SIDE", "stop"),
        ({"equity": "0.0001"}, "MIN_AMOUNT_EXCEEDS_RISK", "value"),
        (
            {"stop": "49900", "value": "5", "leverage_cap": "10"},
            "LEVERAGE_ABOVE_CAP",
            "leverage_cap",
        ),
        (
            {"stop": "49950", "value": "10", "leverage_cap": "100"},
            "LEVERAGE_ABOVE_INSTRUMENT_MAX",
            "stop",
        ),
        ({"available_funds": "0.001"}, "INSUFFICIENT_FUNDS", "available_funds"),
        ({"entry": "-5"}, "INVALID_INPUT", "entry"),
        ({"value": "150"}, "INVALID_INPUT", "value"),
    ],
)
def test_preview_refusals_are_422_with_their_code(api_client, body, code, field):
    response = preview(api_client, **body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == code
    assert field in error["fields"]
    assert error["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"instrument": "DOGE-PERPETUAL"}, "instrument"),
        ({"entry": "fifty"}, "entry"),
        ({"stop": None}, "stop"),
        ({"side": "long"}, "side"),
        ({"mode": "kelly"}, "mode"),
    ],
)
def test_preview_malformed_input_is_a_400(api_client, body, field):
    response = preview(api_client, **body)
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
