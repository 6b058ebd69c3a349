"""Manual actions on the exchange: the kill switch keeps a position's protection unless it
closes the position, cancels what protects nothing, and reports what it did."""

from __future__ import annotations

from decimal import Decimal

import pytest

from apps.brokers.base import OrderRequest, Side
from apps.monitoring.models import Event
from apps.orders import manual
from apps.orders.brackets import bracket_place
from apps.orders.gateway import BrokerGateway
from apps.orders.tests.faulty import FaultyPaperBroker
from apps.orders.tests.test_brackets import INSTRUMENT, live_orders, plan_for, position_size
from apps.strategies.models import StrategyRun
from apps.strategies.services import run_start
from tradebaas.redis import redis_client, rkey

pytestmark = pytest.mark.django_db


@pytest.fixture
def make_gateway():
    made: list[BrokerGateway] = []

    def make() -> BrokerGateway:
        gateway = BrokerGateway(FaultyPaperBroker(linked=True, warmup=5))
        gateway.connect()
        made.append(gateway)
        return gateway

    yield make
    for gateway in made:
        gateway.close()


def _stray_limit(gateway) -> None:
    gateway.call(
        "place_order",
        OrderRequest(
            INSTRUMENT,
            Side.BUY,
            Decimal("100"),
            "limit",
            label="manual-stray",
            price=Decimal("1000"),
        ),
    )


def test_kill_without_closing_keeps_the_stop_and_target_and_cancels_the_rest(make_gateway):
    gateway = make_gateway()
    bracket_place(gateway=gateway, plan=plan_for(gateway))
    _stray_limit(gateway)
    result = manual.perform(gateway.call, {"action": "kill", "close_position": False})
    assert result["ok"], result
    labels = sorted(o.label for o in live_orders(gateway))
    assert len(labels) == 2 and all(label.endswith(("-sl", "-tp")) for label in labels)
    assert position_size(gateway) != 0
    assert "Kept 2 order(s)" in result["message"]
    assert Event.objects.filter(kind="manual.kill").exists()


def test_kill_with_closing_leaves_nothing(make_gateway):
    gateway = make_gateway()
    bracket_place(gateway=gateway, plan=plan_for(gateway))
    _stray_limit(gateway)
    result = manual.perform(gateway.call, {"action": "kill", "close_position": True})
    assert result["ok"], result
    assert live_orders(gateway) == [] and position_size(gateway) == 0


def test_close_position_without_a_position_says_so(make_gateway):
    gateway = make_gateway()
    result = manual.perform(gateway.call, {"action": "close_position"})
    assert not result["ok"] and "no open position" in result["message"]


def test_the_loop_drains_a_kill_settles_then_stops_the_run(
    make_gateway, django_capture_on_commit_callbacks
):
    gateway = make_gateway()
    with django_capture_on_commit_callbacks(execute=False):
        run = run_start(strategy="fast_test", params={}, instrument=INSTRUMENT)
    bracket_place(gateway=gateway, plan=plan_for(gateway))
    redis_client().rpush(
        rkey(manual.COMMANDS_KEY),
        '{"id": "k1", "action": "kill", "close_position": true, "stop_run": true}',
    )
    settled = []
    assert manual.manual_commands_waiting()
    assert (
        manual.drain_commands(
            gateway.call,
            settle=lambda: settled.append(StrategyRun.objects.get(pk=run.pk).is_active),
        )
        == 1
    )
    assert settled == [True]  # the trade is recorded while the run is still active
    run.refresh_from_db()
    assert not run.is_active
    answer = redis_client().lpop(rkey("runner:result:k1"))
    assert b"stopped" in answer and position_size(gateway) == 0


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_kill_switch_without_a_loop_runs_on_the_runner_worker(tmp_path, settings):
    """No run is active: the runner worker connects to the account and cleans it."""
    from apps.brokers.deribit import DeribitBroker
    from apps.brokers.models import BrokerAccount
    from apps.brokers.simulator.testing import deribit_sim_thread
    from apps.orders.brackets import BracketPlan
    from tradebaas.testing import celery_argv, child_env, running_process

    with deribit_sim_thread(speed=None) as sim:
        settings.TRADEBAAS_DERIBIT_URL = sim.ws_url
        account = BrokerAccount(broker="deribit", testnet=True, is_active=True, state="connected")
        account.set_credentials(api_key=sim.client_id, api_secret=sim.client_secret)
        account.save()
        gateway = BrokerGateway(DeribitBroker(sim.client_id, sim.client_secret, url=sim.ws_url))
        try:
            gateway.connect()
            last = gateway.call("ticker", INSTRUMENT).last_price
            plan = BracketPlan(
                instrument=INSTRUMENT,
                side=Side.BUY,
                amount=Decimal("100"),
                stop_price=(last * Decimal("0.95") / 2).to_integral_value() * 2,
                take_profit_price=(last * Decimal("1.05") / 2).to_integral_value() * 2,
            )
            bracket_place(gateway=gateway, plan=plan)
        finally:
            gateway.close()
        assert sim.state()["open_orders"]
        env = child_env(TRADEBAAS_DERIBIT_URL=sim.ws_url)
        with running_process(celery_argv("runner", "manual-runner"), env, tmp_path / "runner.log"):
            report = manual.kill_switch_execute(user=None, close_position=True)
        assert "Closed BTC-PERPETUAL" in report, report
        state = sim.state()
        assert state["open_orders"] == []
        assert all(Decimal(str(p["size"])) == 0 for p in state["positions"])


def _holding_lock(run_id: int):
    from apps.strategies.runner.lock import RunnerLock

    lock = RunnerLock(run_id)
    assert lock.acquire()
    return lock


def test_with_a_loop_alive_dispatch_waits_for_the_loops_answer(make_gateway):
    import threading

    gateway = make_gateway()
    bracket_place(gateway=gateway, plan=plan_for(gateway))
    lock = _holding_lock(1)
    stop = threading.Event()

    def loop_side():  # what the loop does each pass
        while not stop.is_set():
            if manual.manual_commands_waiting():
                manual.drain_commands(gateway.call)
            stop.wait(0.05)

    worker = threading.Thread(target=loop_side)
    worker.start()
    try:
        report = manual.position_close_execute(user=None)
    finally:
        stop.set()
        worker.join()
        lock.release()
    assert report.startswith("Closed BTC-PERPETUAL")
    assert position_size(gateway) == 0 and live_orders(gateway) == []


def test_a_refusal_reaches_the_trader_as_an_error(make_gateway):
    import threading

    gateway = make_gateway()  # flat: nothing to close
    lock = _holding_lock(1)
    worker = threading.Timer(0.2, lambda: manual.drain_commands(gateway.call))
    worker.start()
    try:
        with pytest.raises(manual.ActionFailed, match="no open position"):
            manual.position_close_execute(user=None)
    finally:
        worker.join()
        lock.release()


def test_a_failing_broker_call_is_reported_not_raised():
    def broken(method, *args):
        raise RuntimeError("exchange on fire")

    result = manual.perform(broken, {"action": "kill"})
    assert result == {"ok": False, "message": "kill failed: exchange on fire"}
    assert Event.objects.filter(kind="manual.kill", level="error").exists()


@pytest.mark.django_db(transaction=True)
def test_kill_switch_through_a_live_loop_records_then_stops(make_gateway):
    import threading

    gateway = make_gateway()
    run = StrategyRun.objects.create(
        strategy="fast_test", instrument=INSTRUMENT, state="POSITION_OPEN"
    )
    bracket_place(gateway=gateway, plan=plan_for(gateway))
    lock = _holding_lock(run.pk)
    seen = []
    worker = threading.Timer(
        0.2,
        lambda: manual.drain_commands(
            gateway.call, settle=lambda: seen.append(StrategyRun.objects.get(pk=run.pk).is_active)
        ),
    )
    worker.start()
    try:
        report = manual.kill_switch_execute(user=None, close_position=True)
    finally:
        worker.join()
        lock.release()
    assert report.startswith(f"Run {run.pk} stopped. Closed BTC-PERPETUAL")
    assert seen == [True]
    run.refresh_from_db()
    assert not run.is_active and position_size(gateway) == 0


@pytest.mark.django_db(transaction=True)
def test_without_a_loop_the_runner_side_connects_to_the_active_account(settings):
    from apps.brokers.deribit import DeribitBroker
    from apps.brokers.models import BrokerAccount
    from apps.brokers.simulator.testing import deribit_sim_thread

    with deribit_sim_thread(speed=None) as sim:
        settings.TRADEBAAS_DERIBIT_URL = sim.ws_url
        account = BrokerAccount(broker="deribit", testnet=True, is_active=True, state="connected")
        account.set_credentials(api_key=sim.client_id, api_secret=sim.client_secret)
        account.save()
        gateway = BrokerGateway(DeribitBroker(sim.client_id, sim.client_secret, url=sim.ws_url))
        try:
            gateway.connect()
            gateway.call(
                "place_order",
                OrderRequest(
                    INSTRUMENT, Side.BUY, Decimal("100"), "limit", label="x", price=Decimal("1000")
                ),
            )
        finally:
            gateway.close()
        result = manual.execute_here({"action": "kill", "stop_run": True, "by": ""})
        assert result["ok"], result
        assert result["message"].startswith(
            "No strategy was running. Closed no position; cancelled 1"
        )
        assert sim.state()["open_orders"] == []


def test_the_broker_inbox_is_bounded_and_keeps_the_end_of_stream(monkeypatch):
    from apps.orders import gateway as gateway_module
    from apps.orders.gateway import StreamItem

    monkeypatch.setattr(gateway_module, "INBOX_LIMIT", 3)
    gateway = BrokerGateway(FaultyPaperBroker(linked=True, warmup=5))
    try:
        gateway._enqueue(StreamItem("stream_end", "first stream ended", 0.0))
        for n in range(5):
            gateway._enqueue(StreamItem("candle", n, 0.0))
        kinds = [(item.kind, item.payload) for item in list(gateway.inbox.queue)]
        assert kinds == [("stream_end", "first stream ended"), ("candle", 3), ("candle", 4)]
        assert gateway.dropped == 3
    finally:
        gateway.close()


def test_close_position_touches_only_the_instrument_it_names(make_gateway):
    gateway = make_gateway()
    bracket_place(gateway=gateway, plan=plan_for(gateway))
    gateway.call(
        "place_order",
        OrderRequest(
            "ETH-PERPETUAL", Side.BUY, Decimal("10"), "limit", label="other", price=Decimal("100")
        ),
    )
    result = manual.perform(gateway.call, {"action": "close_position", "instrument": INSTRUMENT})
    assert result["ok"], result
    assert position_size(gateway) == 0
    assert [o.label for o in live_orders(gateway)] == [
        "other"
    ]  # the other instrument's order stays
