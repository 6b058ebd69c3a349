"""The run API and the one-active-run rule: a database constraint, conditional transitions."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, transaction
from rest_framework.authtoken.models import Token

from apps.monitoring.models import Event
from apps.strategies import services
from apps.strategies.models import RunState, RunTransition, StrategyRun

pytestmark = pytest.mark.django_db

START = {"strategy": "fast_test", "params": {}, "instrument": "BTC-PERPETUAL"}


def _start(api_client, body=None):
    return api_client.post("/api/v2/strategy/start", body or START, format="json")


def test_start_creates_the_active_run_and_its_first_transition(api_client):
    response = _start(api_client)
    assert response.status_code == 201, response.content
    data = response.json()
    assert data["active"] is True
    assert data["run"]["strategy"] == "fast_test"
    assert data["run"]["state"] == RunState.IDLE
    run = StrategyRun.objects.get(is_active=True)
    assert run.params["first_side"] == "buy"  # defaults filled in
    assert run.transitions.filter(reason="started").exists()
    assert Event.objects.filter(kind="run_started", run_id=run.id).exists()


def test_unknown_strategy_is_400_naming_the_field(api_client):
    response = _start(api_client, {**START, "strategy": "no_such"})
    assert response.status_code == 400
    assert "strategy" in response.json()["error"]["fields"]
    assert not StrategyRun.objects.exists()


def test_invalid_params_are_400_naming_the_parameter(api_client):
    response = _start(api_client, {**START, "strategy": "ma_cross", "params": {"fast": 1}})
    assert response.status_code == 400
    assert "params.fast" in response.json()["error"]["fields"]
    response = _start(api_client, {**START, "params": {"bogus": 1}})
    assert response.status_code == 400
    assert "params.bogus" in response.json()["error"]["fields"]


def test_missing_instrument_is_400(api_client):
    response = _start(api_client, {"strategy": "fast_test"})
    assert response.status_code == 400
    assert "instrument" in response.json()["error"]["fields"]


def test_second_start_is_409(api_client):
    assert _start(api_client).status_code == 201
    response = _start(api_client)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "RUN_ACTIVE"
    assert StrategyRun.objects.filter(is_active=True).count() == 1


def test_the_database_refuses_a_second_active_run():
    StrategyRun.objects.create(strategy="fast_test", instrument="BTC-PERPETUAL")
    with pytest.raises(IntegrityError), transaction.atomic():
        StrategyRun.objects.create(strategy="fast_test", instrument="BTC-PERPETUAL")
    StrategyRun.objects.create(strategy="fast_test", instrument="X", is_active=False)
    assert StrategyRun.objects.count() == 2


def test_stop_then_start_again(api_client):
    _start(api_client)
    response = api_client.post("/api/v2/strategy/stop")
    assert response.status_code == 200
    assert response.json()["active"] is False
    assert api_client.post("/api/v2/strategy/stop").status_code == 409
    assert _start(api_client).status_code == 201
    assert StrategyRun.objects.count() == 2


def test_error_leaves_only_by_restart(api_client):
    _start(api_client)
    run = StrategyRun.objects.get(is_active=True)
    assert services.run_transition(
        run_id=run.id,
        to=RunState.ERROR,
        reason="exception",
        message="boom",
        context={"where": "test"},
    )
    status = api_client.get("/api/v2/strategy/status").json()
    assert status["run"]["state"] == "ERROR"
    assert status["run"]["error"]["message"] == "boom"
    # resume, a loop transition, a second error: none leaves ERROR
    assert api_client.post("/api/v2/strategy/resume").status_code == 409
    assert not services.run_transition(run_id=run.id, to=RunState.ANALYZING, reason="x")
    assert api_client.post("/api/v2/strategy/restart").status_code == 200
    run.refresh_from_db()
    assert run.state == RunState.IDLE
    assert run.error_message == ""
    assert api_client.post("/api/v2/strategy/restart").status_code == 409
    reasons = list(run.transitions.order_by("id").values_list("reason", flat=True))
    assert reasons == ["started", "exception", "restarted"]
    assert Event.objects.filter(kind="run_error", run_id=run.id, level="error").exists()


def test_pause_and_resume(api_client):
    _start(api_client)
    assert api_client.post("/api/v2/strategy/pause").status_code == 200
    run = StrategyRun.objects.get(is_active=True)
    assert run.state == RunState.PAUSED
    assert run.pause_reason == "paused_by_trader"
    assert api_client.post("/api/v2/strategy/pause").status_code == 409
    assert api_client.post("/api/v2/strategy/restart").status_code == 409
    assert api_client.post("/api/v2/strategy/resume").status_code == 200
    run.refresh_from_db()
    assert run.state == RunState.IDLE and run.pause_reason == ""


def test_transition_is_conditional_and_fenced():
    run = StrategyRun.objects.create(
        strategy="fast_test", instrument="BTC-PERPETUAL", state=RunState.ANALYZING, fence=7
    )
    # wrong fence: a stale loop cannot move the run
    assert not services.run_transition(
        run_id=run.id, to=RunState.SIGNAL_DETECTED, reason="signal", fence=6
    )
    assert services.run_transition(
        run_id=run.id, to=RunState.SIGNAL_DETECTED, reason="signal", fence=7
    )
    # the same move twice: the second finds the state changed
    assert not services.run_transition(
        run_id=run.id, to=RunState.SIGNAL_DETECTED, reason="signal", fence=7
    )
    row = RunTransition.objects.get(run=run)
    assert (row.from_state, row.to_state, row.reason) == ("ANALYZING", "SIGNAL_DETECTED", "signal")


def test_a_stopped_run_never_moves_again():
    run = StrategyRun.objects.create(strategy="fast_test", instrument="BTC-PERPETUAL")
    services.run_stop()
    assert not services.run_transition(run_id=run.id, to=RunState.ANALYZING, reason="x")
    assert not services.run_transition(run_id=run.id, to=RunState.ERROR, reason="x")


def test_events_and_trades_endpoints(api_client):
    _start(api_client)
    events = api_client.get("/api/v2/events").json()["events"]
    assert events[0]["kind"] == "run_started"
    trades = api_client.get("/api/v2/trades").json()
    assert trades["trades"] == []
    assert trades["summary"]["count"] == 0
    assert api_client.get("/api/v2/bracket/current").json() == {"bracket": None}


def test_run_api_needs_authentication(anon_api_client):
    assert _start(anon_api_client).status_code in (401, 403)
    assert anon_api_client.get("/api/v2/strategy/status").status_code in (401, 403)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_100_concurrent_starts_make_exactly_one_run(user):
    if connection.vendor != "postgresql":
        pytest.skip("concurrency proof needs PostgreSQL (SQLite serialises writers)")
    from apps.strategies.tests.runner_kit import start_concurrently

    token, _ = Token.objects.get_or_create(user=user)
    statuses = start_concurrently(token.key, 100)
    assert len(statuses) == 100
    assert sorted(set(statuses)) == [201, 409]
    assert statuses.count(201) == 1
    assert StrategyRun.objects.count() == 1


def test_status_shows_the_current_bracket_and_trades_their_summary(api_client):
    from decimal import Decimal

    from django.utils import timezone

    from apps.orders.models import Bracket, Order, Trade

    _start(api_client)
    run = StrategyRun.objects.get(is_active=True)
    bracket = Bracket.objects.create(
        bracket_id="abc123",
        run_id=run.id,
        broker="paper",
        instrument="BTC-PERPETUAL",
        side="buy",
        amount=Decimal("100"),
        stop_price=Decimal("19000"),
        take_profit_price=Decimal("21000"),
        state="OPEN",
    )
    Order.objects.create(
        bracket=bracket,
        role="sl",
        label="tb-abc123-sl",
        exchange_id="X1",
        status="untriggered",
        order_type="stop_market",
        side="sell",
        amount=Decimal("100"),
        trigger_price=Decimal("19000"),
        reduce_only=True,
    )
    status = api_client.get("/api/v2/strategy/status").json()
    assert status["bracket"]["bracket_id"] == "abc123"
    assert status["bracket"]["orders"][0]["exchange_id"] == "X1"
    assert api_client.get("/api/v2/bracket/current").json()["bracket"]["state"] == "OPEN"
    from apps.orders.selectors import open_position_exists

    assert open_position_exists()
    closed = Bracket.objects.create(
        bracket_id="def456",
        run_id=run.id,
        broker="paper",
        instrument="BTC-PERPETUAL",
        side="sell",
        amount=Decimal("100"),
        stop_price=Decimal("21000"),
        take_profit_price=Decimal("19000"),
        state="CLOSED",
    )
    Trade.objects.create(
        bracket=closed,
        run_id=run.id,
        instrument="BTC-PERPETUAL",
        side="sell",
        amount=Decimal("100"),
        entry_price=Decimal("20000"),
        exit_price=Decimal("19000"),
        pnl=Decimal("0.00026"),
        pnl_usd=Decimal("4.94"),
        fees=Decimal("0.00001"),
        currency="BTC",
        opened_at=timezone.now(),
        closed_at=timezone.now(),
        duration_seconds=Decimal("60"),
        exit_reason="take_profit",
    )
    data = api_client.get(f"/api/v2/trades?run={run.id}").json()
    assert data["trades"][0]["bracket_id"] == "def456"
    assert data["trades"][0]["pnl_usd"] == "4.94000000"
    assert data["summary"]["count"] == 1 and data["summary"]["wins"] == 1
    assert api_client.get("/api/v2/trades?limit=x").status_code == 400
    assert api_client.get("/api/v2/events?run=1&kind=run_started").status_code == 200
