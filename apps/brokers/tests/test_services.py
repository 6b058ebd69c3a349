"""Broker account services against the Deribit simulator over a real socket (loopback)."""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest
from django.db import connection

from apps.brokers import services
from apps.brokers.models import BrokerAccount
from apps.brokers.simulator.instruments import DEFAULT_BALANCES, DEFAULT_SPECS
from apps.brokers.simulator.testing import deribit_sim_thread
from apps.strategies.models import StrategyRun
from tradebaas.testing import free_port

pytestmark = pytest.mark.django_db

CLIENT_ID = "tb-client-7788"
CLIENT_SECRET = "sim-secret-do-not-leak-5a9c1e"
OTHER_ID = "other-client-4411"
OTHER_SECRET = "other-secret-do-not-leak-77ab"


@pytest.fixture
def sim(settings):
    with deribit_sim_thread(client_id=CLIENT_ID, client_secret=CLIENT_SECRET) as running:
        settings.TRADEBAAS_DERIBIT_URL = running.ws_url
        yield running


def _connect(**overrides) -> BrokerAccount:
    values = {
        "broker_id": "deribit",
        "api_key": CLIENT_ID,
        "api_secret": CLIENT_SECRET,
        "testnet": True,
    }
    values.update(overrides)
    return services.broker_account_connect(**values)


def _all_text(account_rows, caplog) -> str:
    return " ".join([*(repr(vars(row)) for row in account_rows), caplog.text])


def test_wrong_secret_is_a_clear_error_and_nothing_is_stored(sim, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-secret-never-echo-3141"
    with pytest.raises(services.BrokerAuthFailed) as excinfo:
        _connect(api_secret=wrong)
    error = excinfo.value
    assert error.status == 422 and error.code == "BROKER_AUTH_FAILED"
    assert "refused the API key and secret" in error.message
    assert wrong not in error.message and wrong not in caplog.text
    assert not BrokerAccount.objects.exists()


def test_connect_stores_ciphertext_marks_connected_and_shows_the_balance(sim, caplog):
    caplog.set_level(logging.DEBUG)
    account = _connect(label="main")
    account.refresh_from_db()
    assert account.is_active and account.state == "connected"
    assert account.last_connected_at is not None and account.last_error == ""
    assert account.snapshot_currency == "USDC"
    assert account.snapshot_equity == DEFAULT_BALANCES["USDC"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT api_key_encrypted, api_secret_encrypted FROM brokers_brokeraccount")
        key_column, secret_column = cursor.fetchone()
    assert CLIENT_ID not in key_column and CLIENT_SECRET not in secret_column
    assert account.api_secret == CLIENT_SECRET
    assert CLIENT_SECRET not in caplog.text


def test_test_connection_returns_the_balance_without_storing(sim):
    summary = services.broker_test_connection(
        broker_id="deribit", api_key=CLIENT_ID, api_secret=CLIENT_SECRET, testnet=True
    )
    assert summary.currency == "USDC"
    assert summary.equity == DEFAULT_BALANCES["USDC"]
    assert not BrokerAccount.objects.exists()


def test_connecting_another_account_disconnects_the_old_one_first(sim, settings):
    first = _connect()
    with deribit_sim_thread(client_id=OTHER_ID, client_secret=OTHER_SECRET) as other:
        settings.TRADEBAAS_DERIBIT_URL = other.ws_url
        second = _connect(api_key=OTHER_ID, api_secret=OTHER_SECRET, testnet=False)
    first.refresh_from_db()
    assert (first.is_active, first.state) == (False, "disconnected")
    assert (second.is_active, second.state) == (True, "connected")
    assert services.active_account() == second
    assert BrokerAccount.objects.filter(is_active=True).count() == 1


def test_reconnecting_the_same_credentials_reuses_the_account(sim):
    first = _connect()
    again = _connect(label="renamed")
    assert again.pk == first.pk and again.label == "renamed"
    assert BrokerAccount.objects.count() == 1


def test_switching_is_refused_while_a_bracket_of_ours_is_live(sim):
    from apps.orders.models import LIVE_BRACKET_STATES, Bracket

    _connect()
    Bracket.objects.create(
        bracket_id="b1",
        broker="deribit",
        instrument="BTC-PERPETUAL",
        side="buy",
        amount=Decimal("10"),
        stop_price=Decimal("1"),
        take_profit_price=Decimal("2"),
        state=LIVE_BRACKET_STATES[-1],
    )
    with pytest.raises(services.BrokerBusy) as excinfo:
        _connect(testnet=False)
    assert "position is open" in excinfo.value.message


@pytest.mark.parametrize("state", ["ANALYZING", "POSITION_OPEN"])
def test_switching_is_refused_while_a_run_is_active(sim, state):
    first = _connect()
    StrategyRun.objects.create(strategy="razor", instrument="BTC-PERPETUAL", state=state)
    with pytest.raises(services.BrokerBusy) as excinfo:
        _connect(testnet=False)
    assert excinfo.value.status == 409
    expected = "position is open" if state == "POSITION_OPEN" else "strategy run is active"
    assert expected in excinfo.value.message
    with pytest.raises(services.BrokerBusy):
        services.broker_account_disconnect()
    first.refresh_from_db()
    assert first.is_active and first.state == "connected"


def test_a_dropped_socket_marks_disconnected_once_with_a_scrubbed_reason(sim):
    account = _connect()
    reason = f"socket closed while authenticating {CLIENT_ID}:{CLIENT_SECRET}"
    assert services.broker_account_mark_disconnected(account=account, reason=reason)
    assert not services.broker_account_mark_disconnected(account=account, reason="again")
    account.refresh_from_db()
    assert account.state == "disconnected" and account.is_active
    assert CLIENT_SECRET not in account.last_error and CLIENT_ID not in account.last_error
    assert CLIENT_SECRET[-4:] not in account.last_error  # not even a hint of the secret
    assert "socket closed" in account.last_error
    # stays down until asked: a manual reconnect tests the credentials and marks connected
    reconnected = services.broker_account_reconnect()
    assert reconnected.state == "connected" and reconnected.last_error == ""


def test_reconnect_with_revoked_credentials_records_a_safe_error(sim):
    account = _connect()
    account.set_credentials(api_key=CLIENT_ID, api_secret="revoked-secret-99999")
    account.save()
    with pytest.raises(services.BrokerAuthFailed):
        services.broker_account_reconnect()
    account.refresh_from_db()
    assert account.state == "error"
    assert "refused" in account.last_error and "revoked-secret-99999" not in account.last_error


def test_unreachable_broker_is_a_clear_error(settings, db):
    settings.TRADEBAAS_DERIBIT_URL = f"ws://127.0.0.1:{free_port()}/ws/api/v2"
    with pytest.raises(services.BrokerUnreachable) as excinfo:
        _connect()
    assert excinfo.value.status == 502 and "Deribit" in excinfo.value.message
    assert not BrokerAccount.objects.exists()


def test_reconnect_without_an_account_is_refused(db):
    with pytest.raises(services.NoActiveAccount):
        services.broker_account_reconnect()


def test_disconnect_keeps_the_account_selected(sim):
    _connect()
    account = services.broker_account_disconnect()
    assert account.state == "disconnected" and account.is_active


def test_instrument_specs_come_from_the_broker_and_are_cached(sim):
    assert services.instrument_specs_read().source == "simulator"  # nothing connected
    _connect()
    first = services.instrument_specs_read()
    assert first.source == "broker"
    names = {spec.name for spec in first.specs}
    assert "BTC-PERPETUAL" in names and "BTC_USDC-PERPETUAL" in names
    btc = next(spec for spec in first.specs if spec.name == "BTC-PERPETUAL")
    assert btc.tick_size == DEFAULT_SPECS["BTC-PERPETUAL"].tick_size
    second = services.instrument_specs_read()
    assert second.source == "cache" and second.read_at == first.read_at
    assert services.instrument_specs_read(refresh=True).source == "broker"


def test_instrument_specs_with_no_broker_are_the_simulators(db):
    specs = services.instrument_specs()
    assert {spec.name for spec in specs} == set(DEFAULT_SPECS)


def test_equity_paper_default_then_the_connected_accounts_snapshot(sim):
    assert services.active_broker_equity(currency="BTC") == DEFAULT_BALANCES["BTC"]
    _connect()
    assert services.active_broker_equity(currency="USDC") == DEFAULT_BALANCES["USDC"]
    # another currency is read live and stored as the new snapshot
    assert services.active_broker_equity(currency="BTC") == DEFAULT_BALANCES["BTC"]
    assert services.active_account().snapshot_currency == "BTC"


def test_reconcile_at_start_retests_a_connected_account(sim, settings):
    account = _connect()
    settings.TRADEBAAS_DERIBIT_URL = f"ws://127.0.0.1:{free_port()}/ws/api/v2"
    reconciled = services.broker_accounts_reconcile()
    assert reconciled.pk == account.pk and reconciled.state == "error"
    assert "could not be reached" in reconciled.last_error


def test_broker_build_decrypts_and_points_deribit_at_the_configured_url(sim):
    account = _connect()
    broker = services.broker_build(account=account)
    assert broker.broker_id == "deribit" and broker.supports_linked_orders
    assert broker.url == sim.ws_url


def test_broker_build_without_an_account_is_paper():
    pytest.importorskip("apps.brokers.paper")
    broker = services.broker_build(account=None)
    assert broker.broker_id == "paper"
    assert broker._store is not None  # the stored paper account: a restarted loop finds it


def test_paper_equity_is_the_stored_paper_accounts(db):
    """The risk preview on paper sizes on the paper account as the loop left it, not on the
    starting balance."""
    import asyncio

    from apps.brokers.models import PaperExchangeState
    from apps.brokers.paper import PaperBroker
    from apps.brokers.simulator.snapshot import FORMAT_VERSION, engine_snapshot

    assert services.paper_equity("BTC") == DEFAULT_BALANCES["BTC"]  # nothing stored yet
    broker = PaperBroker(manual=True, warmup=30, speed="max")
    asyncio.run(broker.connect())
    broker.engine.place_order("BTC-PERPETUAL", "buy", Decimal("1000"), type="market")
    broker.engine.place_order("BTC-PERPETUAL", "sell", Decimal("1000"), type="market")
    expected = broker.engine.account("BTC").equity  # two taker fees paid
    assert expected < DEFAULT_BALANCES["BTC"]
    PaperExchangeState.objects.create(
        data=engine_snapshot(broker.engine, broker.feed), format_version=FORMAT_VERSION
    )
    assert services.paper_equity("BTC") == expected
    assert services.active_broker_equity(currency="BTC") == expected  # no account connected
    PaperExchangeState.objects.update(data={"format": FORMAT_VERSION, "engine": "garbage"})
    assert services.paper_equity("BTC") == DEFAULT_BALANCES["BTC"]  # unreadable: logged


@pytest.mark.django_db(transaction=True)
def test_testing_the_paper_connection_leaves_the_stored_paper_account_alone():
    """The loop's paper broker owns the stored account; a "Test connection" of paper from the
    page must not take it over (the loop's broker would lose it and stop)."""
    from apps.brokers.models import PaperExchangeState

    PaperExchangeState.claim("the-loop")
    summary = services.broker_test_connection(
        broker_id="paper", api_key="", api_secret="", testnet=True
    )
    assert summary.equity > 0
    row = PaperExchangeState.objects.get()
    assert row.owner == "the-loop" and row.writes == 0


def test_rotate_keeps_connected_accounts_readable(sim, settings):
    from cryptography.fernet import Fernet

    _connect()
    settings.CREDENTIALS_KEYS = [Fernet.generate_key().decode(), *settings.CREDENTIALS_KEYS]
    assert services.credentials_rotate() == 1
    settings.CREDENTIALS_KEYS = settings.CREDENTIALS_KEYS[:1]
    assert services.active_account().api_secret == CLIENT_SECRET
    assert services.broker_account_reconnect().state == "connected"


def test_snapshot_written_by_the_runner_is_used_for_equity(sim):
    from apps.brokers.base import AccountSummary

    account = _connect()
    summary = AccountSummary("USDC", Decimal("123.45"), Decimal("120.5"), Decimal("100"))
    services.broker_account_record_snapshot(account=account, summary=summary)
    assert services.active_broker_equity(currency="USDC") == Decimal("120.5")


def test_specs_are_re_read_after_the_refresh_interval_and_kept_when_it_fails(
    sim, settings, monkeypatch
):
    _connect()
    first = services.instrument_specs_read()
    monkeypatch.setattr(services, "SPECS_REFRESH_SECONDS", 0)
    again = services.instrument_specs_read()
    assert again.source == "broker" and again.read_at >= first.read_at
    # the exchange goes away: the last specs read stay in use rather than none or made-up ones
    settings.TRADEBAAS_DERIBIT_URL = f"ws://127.0.0.1:{free_port()}/ws/api/v2"
    stale = services.instrument_specs_read()
    assert stale.source == "cache" and stale.read_at == again.read_at
    assert {s.name for s in stale.specs} == {s.name for s in again.specs}


def test_specs_with_nothing_cached_and_the_exchange_down_is_a_clear_error(sim, settings):
    _connect()
    settings.TRADEBAAS_DERIBIT_URL = f"ws://127.0.0.1:{free_port()}/ws/api/v2"
    with pytest.raises(services.BrokerUnreachable):
        services.instrument_specs()
