"""The loop against the Deribit simulator over a real WebSocket with the real DeribitClient."""

from __future__ import annotations

import threading

import pytest

from apps.brokers.simulator.testing import deribit_sim_thread
from apps.orders.models import Bracket, BracketState, Trade
from apps.strategies.models import RunState
from apps.strategies.runner.loop import run_loop_forever
from apps.strategies.tests.runner_kit import make_run
from apps.strategies.tests.sim_kit import (
    SimDriver,
    deribit_gateway,
    entries,
    live_orders,
    orphans,
    position_size,
    sim_options,
    unprotected,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_loop")]


@pytest.fixture
def sim():
    with deribit_sim_thread(**sim_options()) as running:
        yield running


def closed_legs(sim) -> int:
    return sum(1 for t in sim.call(lambda: sim.engine.trades()) if t.label.endswith(("-sl", "-tp")))


def test_deribit_round_trips_are_recorded_from_the_exchange_fills(sim):
    run = make_run()
    gateway = deribit_gateway(sim)
    stop = threading.Event()
    with SimDriver(sim, stop, until=lambda: closed_legs(sim) >= 2) as driver:
        outcome = run_loop_forever(
            run.id, gateway_factory=lambda r: gateway, stop=stop, max_seconds=90
        )
    assert driver.error is None
    assert outcome == "shutdown", outcome
    trades = list(Trade.objects.order_by("closed_at"))
    assert len(trades) >= 2
    fills = sim.call(lambda: sim.engine.trades())
    for trade in trades:
        mine = [f for f in fills if f.label.startswith(f"tb-{trade.bracket.bracket_id}-")]
        assert {f.trade_id for f in mine} == set(trade.fill_ids)
        assert trade.fees == sum(f.fee for f in mine)
        # P&L from the exchange's own realized P&L per fill
        assert abs(trade.pnl - (sum(f.profit_loss for f in mine) - trade.fees)) < 1e-8
    assert len(entries(sim)) == Bracket.objects.count()
    assert not orphans(sim)
    assert not unprotected(sim)


def test_a_dropped_socket_pauses_the_run_and_sends_nothing_until_resumed(sim, settings):
    from apps.brokers.models import BrokerAccount
    from apps.strategies import services

    account = BrokerAccount(broker="deribit", testnet=True, state="connected", is_active=True)
    account.set_credentials(api_key=sim.client_id, api_secret=sim.client_secret)
    account.save()
    run = make_run()
    run.broker_account_id = account.id
    run.save()
    gateway = deribit_gateway(sim)
    stop = threading.Event()

    def drop(step: int) -> None:
        if step == 2:
            sim.drop_connections()

    with SimDriver(sim, stop, before_step=drop, limit=6):
        outcome = run_loop_forever(
            run.id, gateway_factory=lambda r: gateway, stop=stop, max_seconds=60
        )
    assert outcome == "paused"
    run.refresh_from_db()
    assert run.state == RunState.PAUSED
    assert run.pause_reason == "disconnected"
    account.refresh_from_db()
    assert account.state == "disconnected"
    sent = len(entries(sim))
    # the loop is gone: candles close, nothing is sent
    from apps.strategies.tests.sim_kit import step

    step(sim, 3)
    assert len(entries(sim)) == sent
    assert not unprotected(sim)
    # resume is refused until the trader reconnects the account
    with pytest.raises(services.RunConflict) as refused:
        services.run_resume()
    assert refused.value.code == "BROKER_DISCONNECTED"
    from apps.brokers.services import broker_account_reconnect

    settings.TRADEBAAS_DERIBIT_URL = sim.ws_url
    broker_account_reconnect(account=account)
    account.refresh_from_db()
    assert account.state == "connected"
    # resume: a new loop reconciles first and adopts what is open
    services.run_resume()
    gateway2 = deribit_gateway(sim)
    stop2 = threading.Event()
    with SimDriver(sim, stop2, limit=3):
        outcome = run_loop_forever(
            run.id, gateway_factory=lambda r: gateway2, stop=stop2, max_seconds=60
        )
    assert outcome == "shutdown"
    run.refresh_from_db()
    assert run.state in (RunState.ANALYZING, RunState.POSITION_OPEN)
    assert not orphans(sim)
    assert not unprotected(sim)


def test_recovery_adopts_protects_and_records_what_happened_while_down(sim):
    """A loop dies with a position open; meanwhile its stop is cancelled by hand. The next loop
    re-protects the position. Then the position closes while no loop runs: the next loop records
    the trade (no trade lost)."""
    run = make_run()
    gateway = deribit_gateway(sim)
    stop = threading.Event()
    with SimDriver(sim, stop, until=lambda: position_size(sim) != 0, limit=20):
        run_loop_forever(run.id, gateway_factory=lambda r: gateway, stop=stop, max_seconds=60)
    bracket = Bracket.objects.get(state=BracketState.OPEN)
    stop_leg = next(o for o in live_orders(sim) if o.label.endswith("-sl"))
    sim.call(lambda: sim.engine.cancel(stop_leg.order_id))
    assert unprotected(sim)
    # the next loop re-protects before anything else
    gateway2 = deribit_gateway(sim)
    stop2 = threading.Event()
    stop2.set()  # reconcile, then leave
    run_loop_forever(run.id, gateway_factory=lambda r: gateway2, stop=stop2, max_seconds=30)
    assert not unprotected(sim)
    run.refresh_from_db()
    assert run.state == RunState.POSITION_OPEN
    # the position closes while no loop runs
    sim.call(lambda: sim.engine.close_position("BTC-PERPETUAL"))
    assert position_size(sim) == 0
    gateway3 = deribit_gateway(sim)
    stop3 = threading.Event()
    stop3.set()
    run_loop_forever(run.id, gateway_factory=lambda r: gateway3, stop=stop3, max_seconds=30)
    trade = Trade.objects.get(bracket=bracket)
    assert trade.recorded_by == "reconcile"
    assert not orphans(sim)
    run.refresh_from_db()
    assert run.state == RunState.ANALYZING


def test_with_auto_reconnect_on_the_loop_waits_reconciles_and_trades_on(sim):
    from apps.monitoring.models import Event

    run = make_run()
    gateway = deribit_gateway(sim, auto_reconnect=True)
    stop = threading.Event()

    def drop(step: int) -> None:
        if step in (3, 12):
            sim.drop_connections()

    with SimDriver(sim, stop, before_step=drop, until=lambda: closed_legs(sim) >= 2, limit=200):
        outcome = run_loop_forever(
            run.id, gateway_factory=lambda r: gateway, stop=stop, max_seconds=90
        )
    assert outcome == "shutdown", outcome
    run.refresh_from_db()
    assert run.state != RunState.PAUSED
    assert Event.objects.filter(kind="broker_disconnect").count() >= 1
    assert Event.objects.filter(kind="broker_reconnected").count() >= 1
    assert Trade.objects.count() >= 1
    assert not orphans(sim)
    assert not unprotected(sim)
    counts = [o.label for o in entries(sim)]
    assert len(counts) == len(set(counts))
