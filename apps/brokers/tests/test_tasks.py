"""At start-up a remembered "connected" account is tested again against the broker."""

from __future__ import annotations

import pytest

from apps.brokers.base import ConnectionState
from apps.brokers.models import BrokerAccount
from apps.brokers.simulator.testing import deribit_sim_thread
from apps.brokers.tasks import broker_reconcile

pytestmark = pytest.mark.django_db


def _account(**fields) -> BrokerAccount:
    account = BrokerAccount(broker="deribit", testnet=True, is_active=True, **fields)
    account.set_credentials(api_key="paper", api_secret="paper")
    account.save()
    return account


def test_without_an_account_paper_is_reported():
    assert broker_reconcile() == "paper"


def test_a_remembered_connection_that_no_longer_works_is_marked_so(settings):
    settings.TRADEBAAS_DERIBIT_URL = "ws://127.0.0.1:9/ws/api/v2"  # nothing listens there
    account = _account(state=ConnectionState.CONNECTED.value)
    assert broker_reconcile() != "connected"
    account.refresh_from_db()
    assert account.state != ConnectionState.CONNECTED.value


def test_a_remembered_connection_is_confirmed_against_the_broker(settings):
    with deribit_sim_thread(speed=None) as sim:
        settings.TRADEBAAS_DERIBIT_URL = sim.ws_url
        account = _account(state=ConnectionState.CONNECTED.value)
        assert broker_reconcile() == "connected"
        account.refresh_from_db()
        assert account.snapshot_equity is not None


def test_a_disconnected_account_stays_down_until_the_trader_reconnects():
    account = _account(state=ConnectionState.DISCONNECTED.value)
    assert broker_reconcile() == "disconnected"
    account.refresh_from_db()
    assert account.state == ConnectionState.DISCONNECTED.value
