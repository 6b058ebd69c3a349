"""The trader's pages render from the real services and keep what the trader typed on errors."""

from __future__ import annotations

import pytest

from apps.risk.services import risk_settings_get
from apps.strategies.models import StrategyRun
from apps.web.models import TraderPreferences

pytestmark = pytest.mark.django_db


def test_dashboard_lists_every_registered_strategy_with_its_description(auth_client):
    from apps.strategies.registry import list_strategies

    html = auth_client.get("/").content.decode()
    for strategy in list_strategies():
        assert f'value="{strategy["id"]}"' in html
    assert 'ws-connect="/ws/live/"' in html
    assert "vendor/htmx-2.0.11.min.js" in html
    assert 'id="connection-pill"' in html


def test_strategy_params_partial_follows_the_schema(auth_client):
    html = auth_client.get("/web/strategy/params", {"strategy": "ma_cross"}).content.decode()
    assert 'name="param_fast"' in html
    assert 'name="param_slow"' in html
    assert "SMA" in html  # the chosen strategy's description comes with its parameters


def test_start_with_a_bad_risk_value_keeps_the_input_and_names_the_field(auth_client):
    response = auth_client.post(
        "/web/strategy/start",
        {
            "strategy": "fast_test",
            "instrument": "BTC-PERPETUAL",
            "risk_mode": "percent",
            "risk_value": "250",
            "max_open_trades": "1",
        },
    )
    html = response.content.decode()
    assert 'data-field="risk_value"' in html
    assert 'value="250"' in html
    assert not StrategyRun.objects.exists()


def test_start_creates_one_run_saves_risk_and_remembers_the_choice(
    auth_client, user, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        response = auth_client.post(
            "/web/strategy/start",
            {
                "strategy": "ma_cross",
                "instrument": "BTC-PERPETUAL",
                "risk_mode": "percent",
                "risk_value": "5",
                "max_open_trades": "1",
                "param_fast": "8",
                "param_slow": "21",
                "param_stop_loss_pct": "2",
                "param_take_profit_pct": "6",
            },
        )
    assert response.status_code == 200
    run = StrategyRun.objects.get(is_active=True)
    assert run.strategy == "ma_cross" and run.params["fast"] == 8
    assert risk_settings_get().value == 5
    assert TraderPreferences.objects.get(user=user).strategy == "ma_cross"
    assert 'id="stop-button"' in response.content.decode()
    # a second start is refused with the reason, not a second run
    with django_capture_on_commit_callbacks(execute=False):
        again = auth_client.post(
            "/web/strategy/start",
            {
                "strategy": "ma_cross",
                "instrument": "BTC-PERPETUAL",
                "risk_mode": "percent",
                "risk_value": "9",
                "max_open_trades": "1",
            },
        )
    assert "already active" in again.content.decode()
    assert risk_settings_get().value == 5  # the refused start did not change the running risk
    assert StrategyRun.objects.count() == 1


def test_risk_preview_sizes_a_five_percent_example(auth_client):
    html = auth_client.post(
        "/web/risk/preview",
        {
            "instrument": "BTC-PERPETUAL",
            "risk_mode": "percent",
            "risk_value": "5",
            "param_stop_loss_pct": "1",
        },
    ).content.decode()
    assert 'id="preview-result" data-amount="' in html
    assert "BTC" in html


def test_risk_preview_shows_a_refusal_with_its_code(auth_client):
    html = auth_client.post(
        "/web/risk/preview",
        {"instrument": "BTC-PERPETUAL", "risk_mode": "fixed", "risk_value": "0.0001"},
    ).content.decode()
    assert "Refused" in html


def test_settings_tabs_render(auth_client):
    for tab in ("broker", "risk", "notifications"):
        response = auth_client.get(f"/web/settings/{tab}")
        assert response.status_code == 200, tab
    html = auth_client.get("/web/settings/broker").content.decode()
    assert html.count('class="broker-choice') == 15


def test_risk_tab_rejects_a_bad_value_next_to_its_field(auth_client):
    data = {
        "mode": "percent",
        "value": "150",
        "leverage_cap": "10",
        "max_open_trades": "1",
        "cooldown_minutes": "0",
        "daily_loss_limit_pct": "",
        "max_drawdown_pct": "",
    }
    html = auth_client.post("/web/settings/risk", data).content.decode()
    assert 'data-field="value"' in html
    assert 'value="150"' in html
    assert risk_settings_get().value != 150


def test_notifications_tab_saves_token_masked(auth_client):
    token = "123456789:AAbbCCddEEffGGhhIIjjKKllMMnnOOpp"
    html = auth_client.post(
        "/web/settings/notifications",
        {"telegram_enabled": "1", "bot_token": token, "chat_id": "4242", "alert_run_errors": "1"},
    ).content.decode()
    assert token not in html
    assert "…OOpp" in html


def test_trades_metrics_and_backtest_pages_render(auth_client):
    for url in ("/web/trades/", "/web/metrics/", "/web/backtest/"):
        assert auth_client.get(url).status_code == 200, url
    csv = auth_client.get("/web/trades.csv")
    assert b"".join(csv.streaming_content).startswith(b"closed_at,")


def test_backtest_form_errors_name_the_field(auth_client):
    response = auth_client.post(
        "/web/backtest/",
        {
            "strategy": "ma_cross",
            "data": "nope.csv",
            "instrument": "BTC-PERPETUAL",
            "risk_mode": "percent",
            "risk_value": "1",
            "equity": "-1",
            "params": "{bad",
        },
    )
    html = response.content.decode()
    assert response["HX-Retarget"] == "#backtest-form"
    for field in ("data", "equity", "params"):
        assert f'data-field="{field}"' in html


def test_checkpoints_of_the_last_analysis_show_on_the_page(
    auth_client, django_capture_on_commit_callbacks
):
    import json

    from apps.strategies.runner.loop import CHECKPOINTS_KEY
    from apps.strategies.services import run_start
    from tradebaas.redis import redis_client, rkey

    with django_capture_on_commit_callbacks(execute=False):
        run = run_start(strategy="ma_cross", params={}, instrument="BTC-PERPETUAL")
    state = {
        "run_id": run.pk,
        "at": "2026-11-25T10:00:00+00:00",
        "status": "analyzing",
        "candles": 40,
        "checkpoints": [
            {"name": "fast above slow", "value": "23001.5", "passed": True},
            {"name": "bullish cross", "value": "no", "passed": False},
        ],
    }
    redis_client().set(rkey(CHECKPOINTS_KEY), json.dumps(state))
    html = auth_client.get("/").content.decode()
    assert '<li class="checkpoint passed"><span>fast above slow</span> <b>23001.5</b></li>' in html
    assert '<li class="checkpoint failed"><span>bullish cross</span>' in html
