"""GET /api/v2/strategies and /api/v2/strategies/{id}: the catalogue, 404 in the shared shape."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def test_list_shows_the_eight_strategies_with_their_schemas(api_client):
    response = api_client.get("/api/v2/strategies")
    assert response.status_code == 200
    strategies = response.json()["strategies"]
    assert [s["id"] for s in strategies] == [
        "fast_test", "ma_cross", "price_action", "razor", "scalping", "smc", "thor", "vortex",
    ]  # fmt: skip
    ma = next(s for s in strategies if s["id"] == "ma_cross")
    params = {p["name"]: p for p in ma["params"]}
    assert params["fast"]["default"] == 10 and params["slow"]["default"] == 30
    assert params["stop_loss_pct"] == {
        "name": "stop_loss_pct",
        "type": "float",
        "default": 2.0,
        "min": 0.01,
        "max": 50.0,
        "help": "Stop-loss distance from entry, %",
    }
    assert ma["fast_backtest"] is True


def test_detail_of_one_strategy(api_client):
    response = api_client.get("/api/v2/strategies/razor")
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == "razor" and body["name"] == "Razor"
    assert any(p["name"] == "rsi_oversold" and p["default"] == 40.0 for p in body["params"])


def test_unknown_strategy_is_a_404_in_the_shared_error_shape(api_client):
    response = api_client.get("/api/v2/strategies/nope")
    assert response.status_code == 404
    assert response.json() == {
        "error": {"code": "NOT_FOUND", "message": "unknown strategy 'nope'", "fields": {}}
    }


def test_the_catalogue_needs_authentication(anon_api_client):
    assert anon_api_client.get("/api/v2/strategies").status_code == 401
