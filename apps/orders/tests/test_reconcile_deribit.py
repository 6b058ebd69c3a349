"""Reconcile after a restart against the Deribit simulator (real socket, real DeribitBroker): a
bracket whose answer was lost is looked up by label only once its request can no longer execute.
"""

from __future__ import annotations

import threading
import time

import pytest

from apps.brokers.simulator.testing import deribit_sim_thread
from apps.orders.brackets import _write_intent
from apps.orders.models import BracketState
from apps.orders.reconcile import reconcile
from apps.orders.tests.test_brackets import INSTRUMENT, plan_for
from apps.strategies.tests.sim_kit import deribit_gateway, entries, sim_options

pytestmark = pytest.mark.django_db

ORDER_TIMEOUT = 1.0  # the request's valid_until is this long after it was sent


@pytest.fixture
def sim():
    with deribit_sim_thread(**sim_options()) as running:
        yield running


def test_after_a_restart_a_bracket_still_in_flight_is_found_not_declared_absent(sim):
    gateway = deribit_gateway(sim, timeout=ORDER_TIMEOUT)  # the restarted process's broker
    late = deribit_gateway(sim, timeout=5.0)  # stands for the lost request, arriving late
    gateway.connect()
    late.connect()
    try:
        plan = plan_for(gateway)
        bracket, _ = _write_intent(plan, gateway)  # the intent the crashed process wrote
        bracket.state = BracketState.UNKNOWN
        bracket.save(update_fields=["state"])
        sent_at = bracket.created_at.timestamp()
        arrival = threading.Timer(0.4, lambda: late.place_bracket(plan.request()))
        arrival.start()
        report = reconcile(gateway, instrument=INSTRUMENT, run_id=None, account_id=None)
        looked_at = time.time()
        arrival.join()
        bracket.refresh_from_db()
        # it waited out valid_until (sent + order timeout) before reading the labels ...
        assert looked_at >= sent_at + ORDER_TIMEOUT
        # ... so the request that executed meanwhile is found: an open, protected bracket
        assert report.resolved == [f"{plan.bracket_id}:open"]
        assert bracket.state == BracketState.OPEN
        assert report.open_bracket == bracket
        assert len(entries(sim)) == 1  # and nothing was sent twice
    finally:
        late.close()
        gateway.close()
