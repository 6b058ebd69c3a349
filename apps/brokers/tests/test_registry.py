from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import ccxt
import pytest

from apps.brokers import registry
from apps.brokers.base import BrokerInfo

STATIC = Path(__file__).resolve().parents[3] / "static"

ORIGINAL_ORDER = [
    "deribit",
    "binance",
    "bybit",
    "okx",
    "kraken",
    "bitget",
    "kucoin",
    "mexc",
    "gateio",
    "bitmex",
    "huobi",
    "phemex",
    "coinbase",
    "bitstamp",
    "bitfinex",
]


def test_the_fifteen_brokers_of_the_original_system_in_its_order():
    assert [info.id for info in registry.BROKERS] == ORIGINAL_ORDER
    assert all(isinstance(info, BrokerInfo) for info in registry.BROKERS)


def test_max_leverage_matches_the_original_registry():
    expected = {"deribit": 50, "binance": 125, "mexc": 200, "coinbase": 5, "bitstamp": 3}
    for broker_id, leverage in expected.items():
        assert registry.get_broker_info(broker_id).max_leverage == leverage


def test_only_deribit_places_exchange_linked_brackets():
    linked = [info.id for info in registry.BROKERS if info.linked_orders]
    assert linked == ["deribit"]
    # every broker says what its exchange offers, so the emulation choice is documented
    assert set(registry.LINKED_ORDER_NOTES) == set(ORIGINAL_ORDER)


def test_adapters_deribit_native_others_ccxt():
    assert registry.get_broker_info("deribit").adapter == "apps.brokers.deribit.DeribitBroker"
    for info in registry.BROKERS[1:]:
        assert info.adapter == "apps.brokers.ccxt_broker.CcxtBroker"
        assert info.ccxt_id


@pytest.mark.parametrize("info", registry.BROKERS[1:], ids=lambda i: i.id)
def test_testnet_flag_is_what_ccxt_can_reach(info):
    exchange_class = getattr(ccxt, info.ccxt_id, None)
    if exchange_class is None:
        # the pinned ccxt lacks the class: the registry must say so
        assert info.id in registry.TESTNET_NOTES
        return
    has_sandbox = bool(exchange_class().urls.get("test"))
    assert info.testnet == has_sandbox, f"{info.id}: testnet flag disagrees with ccxt"


def test_paper_is_built_in_but_not_listed():
    paper = registry.get_broker_info("paper")
    assert paper.adapter == "apps.brokers.paper.PaperBroker"
    assert "paper" not in registry.BROKER_IDS
    assert not registry.is_listed("paper")
    assert registry.is_listed("deribit")


def test_unknown_broker_names_the_known_ones():
    with pytest.raises(registry.UnknownBroker) as excinfo:
        registry.get_broker_info("ftx")
    assert "ftx" in str(excinfo.value) and "deribit" in str(excinfo.value)


@pytest.mark.parametrize("info", [*registry.BROKERS, registry.PAPER], ids=lambda i: i.id)
def test_every_logo_is_a_well_formed_svg(info):
    path = STATIC / info.logo
    assert path.exists(), path
    root = ET.parse(path).getroot()
    assert root.tag.endswith("svg")


def test_choices_follow_the_registry():
    assert registry.BROKER_CHOICES[0] == ("deribit", "Deribit")
    assert len(registry.BROKER_CHOICES) == 15


@pytest.mark.parametrize("info", registry.BROKERS[1:], ids=lambda i: i.id)
def test_linked_order_notes_agree_with_what_ccxt_declares(info):
    exchange_class = getattr(ccxt, info.ccxt_id, None)
    if exchange_class is None:
        return
    has = exchange_class().has
    note = registry.LINKED_ORDER_NOTES[info.id]
    attached = bool(has.get("createOrderWithTakeProfitAndStopLoss"))
    assert ("createOrderWithTakeProfitAndStopLoss" in note) == attached, info.id
    if not (has.get("createStopLossOrder") or has.get("createTriggerOrder")):
        assert "no trigger orders" in note or "No stop or trigger" in note or "not exposed" in note
