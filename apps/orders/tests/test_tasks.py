"""The orphan sweep beat task against the Deribit simulator over a real socket."""

from __future__ import annotations

from decimal import Decimal

import pytest

from apps.brokers.models import BrokerAccount
from apps.brokers.simulator.testing import deribit_sim_thread
from apps.monitoring.models import Event
from apps.orders.tasks import orphan_sweep
from apps.strategies.runner.lock import RunnerLock
from apps.strategies.runner.loop import SWEEP_REQUEST_KEY
from tradebaas.redis import redis_client, rkey

pytestmark = pytest.mark.django_db


@pytest.fixture
def sim(settings):
    with deribit_sim_thread(speed=None) as running:
        settings.TRADEBAAS_DERIBIT_URL = running.ws_url
        account = BrokerAccount(broker="deribit", testnet=True, state="connected", is_active=True)
        account.set_credentials(api_key=running.client_id, api_secret=running.client_secret)
        account.save()
        yield running


def _stray_stop(sim, label: str):
    def place():
        price = sim.engine.last_price("BTC-PERPETUAL")
        return sim.engine.place_order(
            "BTC-PERPETUAL",
            "sell",
            Decimal("100"),
            type="stop_market",
            trigger_price=Decimal(int(price * 0.9)),
            trigger="mark_price",
            label=label,
            reduce_only=True,
        ).order

    return sim.call(place)


def test_the_sweep_cancels_orphans_by_label_and_records_it(sim):
    stray = _stray_stop(sim, "tb-0rphan-sl")
    foreign = _stray_stop(sim, "someone-else")  # not ours: never touched
    result = orphan_sweep()
    assert result["cancelled"] == [f"tb-0rphan-sl:{stray.order_id}"]
    live = {o.order_id for o in sim.call(lambda: sim.engine.open_orders())}
    assert stray.order_id not in live
    assert foreign.order_id in live
    event = Event.objects.get(kind="orphan_cancelled")
    assert stray.order_id in event.message
    assert orphan_sweep() == {"cancelled": [], "failed": []}


def test_while_a_loop_runs_the_sweep_is_delegated_to_it(sim):
    lock = RunnerLock(1)
    assert lock.acquire()
    try:
        assert orphan_sweep() == {"delegated": True}
        assert redis_client().get(rkey(SWEEP_REQUEST_KEY)) == b"1"
    finally:
        lock.release()
