"""Money rounding never depends on the thread's decimal context (ccxt sets ROUND_HALF_UP on it)."""

from __future__ import annotations

import decimal
from decimal import Decimal

import pytest

from apps.brokers.simulator.contract import money
from apps.strategies.base import price_on_tick


@pytest.fixture
def half_up_context():
    with decimal.localcontext() as context:
        context.rounding = decimal.ROUND_HALF_UP  # what ccxt's decimal_to_precision leaves behind
        yield


def test_prices_go_to_the_nearest_tick_half_even_whatever_the_context(half_up_context):
    assert price_on_tick(Decimal("100.25"), Decimal("0.5")) == Decimal("100.0")
    assert price_on_tick(Decimal("100.75"), Decimal("0.5")) == Decimal("101.0")


def test_engine_money_rounds_half_even_whatever_the_context(half_up_context):
    quantum_places = abs(money(Decimal("1"), "BTC").as_tuple().exponent)
    half = Decimal(1).scaleb(-quantum_places) / 2  # exactly half a quantum
    assert money(Decimal("0.1") + half, "BTC") == Decimal("0.1")  # to even, not up
